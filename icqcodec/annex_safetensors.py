"""ICQ tensors in safetensors files (``spec/icq-safetensors.md``, annex 1.0): the ICQ tensor ``N`` as
the ``U8`` tensors ``N_icq_header`` and ``N_icq_payload``, a one-tensor ICQ file cut at its
``data_offset``; decoding joins them and decodes the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from . import safetensors_format
from .constants import FIXED_HEADER_SIZE
from .container import Header, ReadAt, TensorRecord, bytes_reader, read_header
from .container_writer import write_container
from .decode import check_output_size, decode_tensor
from .errors import CorruptStreamError, TruncatedError
from .payload import Payload

__all__ = ["ANNEX_VERSION", "HEADER_SUFFIX", "PAYLOAD_SUFFIX", "stored_names", "split", "is_guard", "find_pairs",
           "check_pair_header", "open_pair", "verify_pair", "decode_pair", "load_file"]  # fmt: skip

ANNEX_VERSION = "1.0"
HEADER_SUFFIX = "_icq_header"
PAYLOAD_SUFFIX = "_icq_payload"
U8 = safetensors_format.DTYPES["U8"]
SECTION = "annex 4"


def stored_names(name: str) -> tuple[str, str]:
    """The stored names of the pair of ICQ tensor ``name``: its header's, its payload's."""
    return name + HEADER_SUFFIX, name + PAYLOAD_SUFFIX


def split(record: TensorRecord, payload: bytes | memoryview, chunk_log2: int) -> tuple[bytes, bytes | memoryview]:
    """The pair storing one tensor: the header bytes of its one-tensor ICQ file (fixed header,
    directory, padding) and its payload (``record.table_crc`` already set)."""
    pieces = write_container([record], [payload], {}, chunk_log2=chunk_log2)
    return b"".join(pieces[:3]), payload  # the payload starts at offset 0 of the data section


def is_guard(dtype: int, shape: tuple[int, ...]) -> bool:
    """Whether a plain tensor beside a pair of its name is the pair's guard (``U8``, shape ``[0]``)."""
    return dtype == U8 and tuple(shape) == (0,)


def find_pairs(entries: Mapping[str, tuple[int, tuple[int, ...]]]) -> dict[str, tuple[str, str]]:
    """The pairs of a checkpoint's stored tensors (name -> (ICQ dtype code, shape)), checked by the
    annex's rules 1 to 3: ICQ tensor name -> (header name, payload name), in the names' byte order.
    A pair's guard (a plain tensor of its name, :func:`is_guard`) is not a tensor of the checkpoint."""
    halves: dict[str, dict[str, str]] = {}
    for stored in entries:
        for suffix in (HEADER_SUFFIX, PAYLOAD_SUFFIX):
            if stored.endswith(suffix):
                halves.setdefault(stored[: -len(suffix)], {})[suffix] = stored
    pairs = {}
    for name in sorted(halves, key=lambda n: n.encode("utf-8")):
        header, payload = stored_names(name)
        for half in (header, payload):
            if half not in entries:
                raise CorruptStreamError(f"tensor {name!r}: {half!r} is missing (the pair needs both halves)",
                                         section=SECTION)  # fmt: skip
            dtype, shape = entries[half]
            if dtype != U8 or len(shape) != 1:
                raise CorruptStreamError(f"{half!r} is {safetensors_format.NAMES[dtype]} of shape {list(shape)}, "
                                         "not a U8 tensor of rank 1", section=SECTION)  # fmt: skip
        if entries[header][1][0] < FIXED_HEADER_SIZE:
            raise TruncatedError(f"{header!r} is {entries[header][1][0]} bytes, shorter than a fixed header",
                                 section=SECTION)  # fmt: skip
        if name in entries and not is_guard(*entries[name]):
            raise CorruptStreamError(f"tensor {name!r} is stored both plain and as an ICQ pair", section=SECTION)
        pairs[name] = (header, payload)
    return pairs


def check_pair_header(name: str, header: Header) -> None:
    """The annex's rules 4 and 5, after the joined file's header and directory have been read."""
    if len(header.tensors) != 1:
        raise CorruptStreamError(f"the pair of {name!r} holds {len(header.tensors)} tensor records, not one",
                                 section=SECTION)  # fmt: skip
    if header.tensors[0].name != name:
        raise CorruptStreamError(f"the pair of {name!r} holds a tensor named {header.tensors[0].name!r}",
                                 section=SECTION)  # fmt: skip


def open_pair(name: str, header: bytes | memoryview, payload: bytes | memoryview) -> tuple[Header, ReadAt]:
    """The joined file of the pair of ``name``, its fixed header and directory read and checked
    (format steps 1 to 8, then the annex's rules 4 and 5): its header and a ``read_at`` over it."""
    read_at, size = joined_reader(header, payload)
    parsed = read_header(read_at, size)
    check_pair_header(name, parsed)
    return parsed, read_at


def joined_reader(header: bytes | memoryview, payload: bytes | memoryview) -> tuple[ReadAt, int]:
    """A ``read_at`` over the header's bytes followed by the payload's, without joining them: reads
    that fall in one half are views of it."""
    first, _ = bytes_reader(header)
    second, _ = bytes_reader(payload)
    cut = len(memoryview(header))

    def read_at(offset: int, size: int) -> bytes | memoryview:
        if offset >= cut:
            return second(offset - cut, size)
        if offset + size <= cut:
            return first(offset, size)
        return bytes(first(offset, cut - offset)) + bytes(second(0, offset + size - cut))

    return read_at, cut + len(memoryview(payload))


def verify_pair(name: str, header: bytes | memoryview, payload: bytes | memoryview) -> TensorRecord:
    """Check every checksum and padding byte of a pair without decoding it; returns its record."""
    parsed, read_at = open_pair(name, header, payload)
    body = Payload(parsed, parsed.tensors[0], read_at)
    body.verify_all()
    body.check_section_padding()
    return parsed.tensors[0]


def decode_pair(name: str, header: bytes | memoryview, payload: bytes | memoryview, *, backend: str = "numba",
                max_output_size: int | None = None) -> np.ndarray:  # fmt: skip
    """Decode the pair of ICQ tensor ``name`` (FormatError for any broken rule)."""
    parsed, read_at = open_pair(name, header, payload)
    check_output_size(parsed.tensors, max_output_size)
    return decode_tensor(parsed, parsed.tensors[0], read_at, backend=backend)


def load_file(path: str | os.PathLike, *, backend: str = "numba") -> dict[str, np.ndarray]:
    """Every tensor of a one-file checkpoint: plain tensors as stored, pairs decoded; in the byte
    order of the names. A file that breaks the safetensors format's rules is ``corrupt``."""
    try:
        stored = safetensors_format.read_file(path)
    except ValueError as error:
        raise CorruptStreamError(f"not a valid safetensors file ({error})", section="annex 6") from None
    try:
        pairs = find_pairs({n: (e.dtype, e.shape) for n, e in stored.entries.items()})
        halves = {half for pair in pairs.values() for half in pair}
        names = [n for n in stored.entries if n not in halves and n not in pairs] + list(pairs)
        result = {}
        for name in sorted(names, key=lambda n: n.encode("utf-8")):
            if name in pairs:
                header, payload = pairs[name]
                result[name] = decode_pair(name, stored.read(header), stored.read(payload), backend=backend)
            else:
                result[name] = stored.array(name)
        return result
    finally:
        stored.close()
