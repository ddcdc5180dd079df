"""Decoding, whichever decoder runs it: the backend switch above the three decoders, the output
bound, and :func:`decode` for a file of one tensor.

The decoders: ``"numba"`` (:mod:`icqcodec.numba_decoder`, fast, parallel over rows), ``"reference"``
(:mod:`icqcodec.reference`, readable, slow) and ``"cupy"`` (:mod:`icqcodec.gpu`, imported only when
asked for). All three give the same bits and the same errors.
"""

from __future__ import annotations

import numpy as np

from . import dtypes
from .container import Header, ReadAt, TensorRecord, bytes_reader, read_header

__all__ = ["BACKENDS", "decode", "decode_tensor", "check_output_size"]

BACKENDS = ("numba", "reference", "cupy")


def decode_tensor(header: Header, record: TensorRecord, read_at: ReadAt, rows: tuple[int, int] | None = None,
                  backend: str = "numba", device_data=None):  # fmt: skip
    """Decode one tensor (or rows ``rows[0]`` to ``rows[1] - 1``) with the chosen backend.

    ``device_data`` (cupy only): the file's data section already on the GPU (:func:`icqcodec.gpu.upload`).
    """
    if backend == "numba":
        from .numba_decoder import decode_tensor as numba_decode

        return numba_decode(header, record, read_at, rows)
    if backend == "reference":
        from .reference import decode_tensor as reference_decode

        return reference_decode(header, record, read_at, rows)
    if backend == "cupy":
        from .gpu import decode_tensor as gpu_decode

        return gpu_decode(header, record, read_at, rows, device_data=device_data)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def check_output_size(records, max_output_size: int | None) -> None:
    """Refuse before allocating when the decoded tensors would exceed ``max_output_size`` bytes."""
    if max_output_size is None:
        return
    total = sum(r.elements * dtypes.item_size(r.dtype) for r in records)
    if total > max_output_size:
        raise ValueError(f"decoded size {total} bytes is above max_output_size={max_output_size}")


def decode(data: bytes | bytearray | memoryview, *, backend: str = "numba",
           max_output_size: int | None = None) -> np.ndarray:  # fmt: skip
    """Decode an ICQ file that holds exactly one tensor.

    Args:
        data: the file's bytes.
        backend: ``"numba"`` (fast, parallel), ``"reference"`` (readable, slow) or ``"cupy"``.
        max_output_size: refuse (ValueError) before decoding if the output would be larger.

    Returns:
        The decoded array, of the tensor's shape and output dtype.

    Raises:
        FormatError: the bytes are not a valid ICQ 1.x file (its subclass names the category).
        ValueError: the file holds another number of tensors than one, or is too large.

    Example:
        >>> import numpy as np, icqcodec
        >>> w = np.linspace(-1, 1, 4096, dtype=np.float32).reshape(16, 256)
        >>> icqcodec.decode(icqcodec.encode(w, bits=4)).dtype
        dtype('float32')
    """
    read_at, size = bytes_reader(data)
    header = read_header(read_at, size)
    if len(header.tensors) != 1:
        raise ValueError(f"decode() needs a file of one tensor; this one has {len(header.tensors)}: "
                         "use icqcodec.load()")  # fmt: skip
    check_output_size(header.tensors, max_output_size)
    return decode_tensor(header, header.tensors[0], read_at, backend=backend)
