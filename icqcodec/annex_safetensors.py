"""ICQ tensors in safetensors files (``spec/icq-safetensors.md``, annex 1.0): the ICQ tensor ``N`` is
the ``U8`` tensor ``N`` holding a one-tensor ICQ file; a ``U8`` vector that begins with the ICQ magic
is one, every other stored tensor is plain.
"""

from __future__ import annotations

import os

import numpy as np

from . import safetensors_format
from .constants import MAGIC
from .container import Header, ReadAt, TensorRecord, bytes_reader, read_header
from .container_writer import write_container
from .decode import check_output_size, decode_tensor
from .errors import CorruptStreamError
from .payload import Payload

__all__ = ["ANNEX_VERSION", "is_icq_tensor", "stored_bytes", "check_file_header", "open_stored", "verify_stored",
           "decode_stored", "load_file"]  # fmt: skip

ANNEX_VERSION = "1.0"
U8 = safetensors_format.DTYPES["U8"]
SECTION = "annex 4"


def is_icq_tensor(dtype: int, shape: tuple[int, ...], first_bytes: bytes) -> bool:
    """Whether a stored tensor is an ICQ tensor (annex section 3): ``U8``, rank 1, its first 8 bytes
    the ICQ magic."""
    return dtype == U8 and len(shape) == 1 and bytes(first_bytes[: len(MAGIC)]) == MAGIC


def stored_bytes(record: TensorRecord, payload: bytes | memoryview, chunk_log2: int) -> list[bytes | memoryview]:
    """The stored tensor of one ICQ tensor, in pieces: its one-tensor ICQ file (``record.table_crc``
    already set), the payload as it is."""
    return write_container([record], [payload], {}, chunk_log2=chunk_log2)


def check_file_header(name: str, header: Header) -> None:
    """The annex's rules 1 and 2, once the file's fixed header and directory have been read."""
    if len(header.tensors) != 1:
        raise CorruptStreamError(f"the ICQ tensor {name!r} holds {len(header.tensors)} tensor records, not one",
                                 section=SECTION)  # fmt: skip
    if header.tensors[0].name != name:
        raise CorruptStreamError(f"the ICQ tensor {name!r} holds a tensor named {header.tensors[0].name!r}",
                                 section=SECTION)  # fmt: skip


def open_stored(name: str, data: bytes | memoryview) -> tuple[Header, ReadAt]:
    """The ICQ file of the stored tensor ``name``, its fixed header and directory read and checked
    (format steps 1 to 8, then the annex's rules): its header and a ``read_at`` over it."""
    read_at, size = bytes_reader(data)
    parsed = read_header(read_at, size)
    check_file_header(name, parsed)
    return parsed, read_at


def verify_stored(name: str, data: bytes | memoryview) -> TensorRecord:
    """Check every checksum and padding byte of an ICQ tensor without decoding it; returns its record."""
    parsed, read_at = open_stored(name, data)
    body = Payload(parsed, parsed.tensors[0], read_at)
    body.verify_all()
    body.check_section_padding()
    return parsed.tensors[0]


def decode_stored(name: str, data: bytes | memoryview, *, backend: str = "numba",
                  max_output_size: int | None = None) -> np.ndarray:  # fmt: skip
    """Decode the ICQ tensor ``name`` from its stored bytes (FormatError for any broken rule)."""
    parsed, read_at = open_stored(name, data)
    check_output_size(parsed.tensors, max_output_size)
    return decode_tensor(parsed, parsed.tensors[0], read_at, backend=backend)


def load_file(path: str | os.PathLike, *, backend: str = "numba") -> dict[str, np.ndarray]:
    """Every tensor of a one-file checkpoint: plain tensors as stored, ICQ tensors decoded; in the
    byte order of the names. A file that breaks the safetensors format's rules is ``corrupt``."""
    try:
        stored = safetensors_format.read_file(path)
    except ValueError as error:
        raise CorruptStreamError(f"not a valid safetensors file ({error})", section="annex 6") from None
    try:
        result = {}
        for name in sorted(stored.entries, key=lambda n: n.encode("utf-8")):
            entry = stored.entries[name]
            if is_icq_tensor(entry.dtype, entry.shape, stored.read(name, 0, len(MAGIC))):
                result[name] = decode_stored(name, stored.read(name), backend=backend)
            else:
                result[name] = stored.array(name)
        return result
    finally:
        stored.close()
