"""Decoding, whichever decoder runs it: the backend switch above the three decoders, the output
bound, and :func:`decode` for a file of one tensor.

The decoders: ``"numba"`` (:mod:`icqcodec.numba_decoder`, fast, parallel over rows), ``"reference"``
(:mod:`icqcodec.reference`, readable, slow) and ``"cupy"`` (:mod:`icqcodec.gpu`, imported only when
asked for). All three give the same bits and the same errors.
"""

from __future__ import annotations

import numpy as np

from . import dtypes
from .column_slices import check_columns, column_window
from .constants import CODING_RAW
from .container import Header, ReadAt, TensorRecord, bytes_reader, read_header
from .payload import Payload

__all__ = ["BACKENDS", "decode", "decode_tensor", "check_output_size"]

BACKENDS = ("numba", "reference", "cupy")


def decode_tensor(header: Header, record: TensorRecord, read_at: ReadAt, rows: tuple[int, int] | None = None,
                  backend: str = "numba", device_data=None, columns: tuple[int, int] | None = None):  # fmt: skip
    """Decode one tensor (or rows ``rows[0]`` to ``rows[1] - 1``, or of those its columns
    ``columns[0]`` to ``columns[1] - 1``) with the chosen backend.

    ``device_data`` (cupy only): the file's data section already on the GPU (:func:`icqcodec.gpu.upload`).
    A column range of an icq tensor comes back as a matrix (rows x columns) where ``rows`` is given.
    """
    if columns is not None:
        return _decode_columns(header, record, read_at, rows, backend, device_data, columns)
    if backend == "cupy":
        return _decoder(backend).decode_tensor(header, record, read_at, rows, device_data=device_data)
    return _decoder(backend).decode_tensor(header, record, read_at, rows)


def _decoder(backend: str):
    """The decoder module of ``backend``, imported on first use (CuPy only when asked for)."""
    if backend == "numba":
        from . import numba_decoder

        return numba_decoder
    if backend == "reference":
        from . import reference

        return reference
    if backend == "cupy":
        from . import gpu

        return gpu
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _decode_columns(header, record, read_at, rows, backend, device_data, columns):
    """Spec section 9.4: an icq tensor's columns from the segments that cover them; a raw tensor's
    from its rows."""
    check_columns(record, columns)
    c0, c1 = columns
    if record.coding == CODING_RAW:
        return decode_tensor(header, record, read_at, rows, backend, device_data)[..., c0:c1].copy()
    decoder = _decoder(backend)
    # no columns: still the one covering segment read and checked, so an empty range is no blind spot
    read = (c0, c1) if c1 > c0 else (min(c0, record.cols - 1), min(c0, record.cols - 1) + 1)
    window = column_window(Payload(header, record, read_at), rows, read)
    out = decoder.decode_window(window)
    if (c0, c1) != (window.column_first, window.column_first + window.record.cols):  # else it is the window
        out = out[:, c0 - window.column_first : c1 - window.column_first].copy()
    return out.reshape((*record.shape[:-1], c1 - c0)) if rows is None else out


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
