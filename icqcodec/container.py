"""The container (spec sections 4 and 6): fixed header, directory, tensor records, payload layout.

Parsed once here and shared by every decoder. All checks of spec section 9.2 steps 1 to 8 live in
:func:`read_header`, in the normative order. Payload reads and their checksums are
:mod:`icqcodec.payload`; the writer is :mod:`icqcodec.container_writer`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import crc32c as crc32c_package

from . import dtypes
from .bitstream import packed_size
from .constants import (
    CHUNK_LOG2_MAX,
    CHUNK_LOG2_MIN,
    CODING_ICQ,
    CODING_RAW,
    DATA_ALIGNMENT,
    FIXED_HEADER_SIZE,
    FORMAT_MAJOR,
    KIND_CODEBOOK,
    MAGIC,
    MAX_DATA_SIZE,
    MAX_DIRECTORY_SIZE,
    MAX_ELEMENTS,
    MAX_FEATURES,
    MAX_METADATA,
    MAX_NAME_LENGTH,
    MAX_RANK,
    MAX_TENSORS,
    MAX_VALUE_LENGTH,
    SECTION_ALIGNMENT,
)
from .errors import (
    BadMagicError,
    ChecksumError,
    CorruptStreamError,
    LimitExceededError,
    TruncatedError,
    UnsupportedFeatureError,
    UnsupportedVersionError,
)
from .icq_params import IcqParams, check_coding

__all__ = [
    "FIXED_HEADER",
    "TENSOR_FIXED",
    "FEATURE_RECORD",
    "ReadAt",
    "crc32c",
    "align",
    "bytes_reader",
    "TensorRecord",
    "Feature",
    "Header",
    "Layout",
    "section_sizes",
    "tensor_layout",
    "read_header",
]

FIXED_HEADER = struct.Struct("<8sHHIQQQIIIB3sII")  # 4.1, 64 bytes
TENSOR_FIXED = struct.Struct("<BBBBIQQII")  # 4.2.3 after the name, 32 bytes
FEATURE_RECORD = struct.Struct("<IIQ")  # 4.2.1

ReadAt = Callable[[int, int], bytes]


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data`` (spec section 4.4)."""
    return crc32c_package.crc32c(data)


def align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def bytes_reader(data: bytes | bytearray | memoryview) -> tuple[ReadAt, int]:
    """A ``read_at(offset, size)`` over bytes in memory (zero-copy views), and their length."""
    view = memoryview(data).cast("B")

    def read_at(offset: int, size: int) -> memoryview:
        return view[offset : offset + size]

    return read_at, len(view)


# ---- 4.2 directory records --------------------------------------------------------------------


@dataclass(frozen=True)
class TensorRecord:
    """One tensor record of the directory (spec section 4.2.3)."""

    name: str
    dtype: int
    source_dtype: int
    coding: int
    shape: tuple[int, ...]
    offset: int = 0
    size: int = 0
    table_crc: int = 0
    params: IcqParams | None = None
    record_offset: int | None = None  # file offset of the record, for error messages

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def cols(self) -> int:
        return self.shape[-1] if self.shape else 1

    @property
    def rows(self) -> int:
        return self.elements // self.cols if self.cols else 0


@dataclass(frozen=True)
class Feature:
    feature_id: int
    required: bool
    payload: bytes


@dataclass(frozen=True)
class Header:
    """Everything before the data section, validated (spec section 9.2 steps 1 to 8)."""

    major: int
    minor: int
    chunk_log2: int
    directory_size: int
    data_offset: int
    data_size: int
    features: tuple[Feature, ...]
    metadata: dict[str, str]
    tensors: tuple[TensorRecord, ...]
    by_name: dict[str, TensorRecord] = field(repr=False, default_factory=dict)

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_log2


# ---- 6 payload layout -------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where each body section of a payload lies, relative to the payload start (spec section 6)."""

    sections: dict[str, tuple[int, int]]  # name -> (start, unpadded size)
    body_size: int
    chunk_count: int

    @property
    def payload_size(self) -> int:
        return self.body_size + 4 * self.chunk_count


def section_sizes(record: TensorRecord) -> list[tuple[str, int]]:
    """The body sections of a tensor and their unpadded sizes, in order (spec sections 6.1, 6.2)."""
    if record.coding == CODING_RAW:
        return [("raw", record.elements * dtypes.item_size(record.dtype))]
    p = record.params
    assert p is not None
    rows, cols = record.rows, record.cols
    outlier_params = 2 if p.outliers else 0
    segments = -(-cols // p.segment)
    sizes = []
    if p.kind == KIND_CODEBOOK:
        sizes.append(("codebook", 2 * p.codebook_size))
    sizes.append(("params", rows * 2 * (2 + outlier_params)))
    sizes.append(("codes", rows * packed_size(cols, p.bits)))
    if p.outliers:
        sizes.append(("counts", packed_size(rows * segments, p.count_bits)))
        sizes.append(("gaps", packed_size(p.total_symbols, p.gap_bits)))
    return sizes


def tensor_layout(record: TensorRecord, chunk_log2: int) -> Layout:
    """Section offsets, body size and chunk count of a tensor's payload (spec section 6)."""
    sections = {}
    position = 0
    for name, size in section_sizes(record):
        sections[name] = (position, size)
        position += align(size, SECTION_ALIGNMENT)
    chunk_count = -(-position // (1 << chunk_log2))
    return Layout(sections, position, chunk_count)


# ---- 9.2 steps 1 to 8: reading and validating the header --------------------------------------


class _DirectoryCursor:
    """Reads directory fields; running past the end is ``corrupt`` (spec section 4.2)."""

    def __init__(self, data: bytes, base: int) -> None:
        self.data, self.base, self.position = data, base, 0

    def take(self, size: int, what: str) -> bytes:
        if size > len(self.data) - self.position:
            raise CorruptStreamError(f"{what} runs past the end of the directory", section="4.2", offset=self.here)
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    @property
    def here(self) -> int:
        return self.base + self.position


def _decode_utf8(raw: bytes, what: str, offset: int) -> str:
    try:
        return raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise CorruptStreamError(f"{what} is not well-formed UTF-8", section="4.2", offset=offset) from None


def _read_string(cursor: _DirectoryCursor, what: str, limit: int, allow_empty: bool) -> tuple[bytes, str, int]:
    offset = cursor.here
    length = cursor.u32(f"{what} length")
    raw = cursor.take(length, what)
    if length == 0 and not allow_empty:
        raise CorruptStreamError(f"{what} is empty", section="4.2", offset=offset)
    if length > limit:
        raise LimitExceededError(f"{what} is {length} bytes, above the limit of {limit}", section="4.5", offset=offset)
    return raw, _decode_utf8(raw, what, offset), offset


def read_header(read_at: ReadAt, file_size: int) -> Header:
    """Validate and parse the fixed header and directory (spec section 9.2, steps 1 to 8).

    ``read_at(offset, size)`` returns up to ``size`` bytes of the input at ``offset``; only the
    first ``64 + directory_size`` bytes and the directory padding are read.
    """
    # Step 1: magic
    head = bytes(read_at(0, min(file_size, FIXED_HEADER_SIZE)))
    if head[:8] != MAGIC[: len(head[:8])]:
        raise BadMagicError("the input does not start with the ICQ magic", section="4.1", offset=0)
    if file_size < 8:
        raise TruncatedError(f"input of {file_size} bytes ends inside the magic", section="4.1", offset=0)
    # Step 2: version, before any other field
    if file_size < 12:
        raise TruncatedError(f"input of {file_size} bytes ends inside the version", section="4.1", offset=8)
    major, minor = struct.unpack_from("<HH", head, 8)
    if major != FORMAT_MAJOR:
        raise UnsupportedVersionError(
            f"format version {major}.{minor}; this decoder reads 1.x", section="4.1", offset=8
        )
    # Step 3
    if file_size < FIXED_HEADER_SIZE:
        raise TruncatedError(f"input of {file_size} bytes ends inside the fixed header", section="4.1", offset=0)
    (_, _, _, flags, directory_size, data_offset, data_size, tensor_count, metadata_count,
     feature_count, chunk_log2, reserved, directory_crc, header_crc) = FIXED_HEADER.unpack(head)  # fmt: skip
    # Step 4
    if crc32c(head[:60]) != header_crc:
        raise ChecksumError("header_crc does not match the fixed header", section="4.1", offset=60)
    # Step 5: fixed header fields
    if flags != 0:
        raise CorruptStreamError(f"reserved field flags is {flags:#x}", section="4.1", offset=12)
    if reserved != b"\0\0\0":
        raise CorruptStreamError("reserved bytes 53-55 are not zero", section="4.1", offset=53)
    if not CHUNK_LOG2_MIN <= chunk_log2 <= CHUNK_LOG2_MAX:
        raise CorruptStreamError(f"chunk_log2 {chunk_log2} is outside 12..30", section="4.1", offset=52)
    for value, limit, what, offset in (
        (directory_size, MAX_DIRECTORY_SIZE, "directory_size", 16),
        (tensor_count, MAX_TENSORS, "tensor_count", 40),
        (metadata_count, MAX_METADATA, "metadata_count", 44),
        (feature_count, MAX_FEATURES, "feature_count", 48),
        (data_size, MAX_DATA_SIZE, "data_size", 32),
    ):
        if value > limit:
            raise LimitExceededError(f"{what} {value} is above the limit of {limit}", section="4.5", offset=offset)
    expected_data_offset = align(FIXED_HEADER_SIZE + directory_size, DATA_ALIGNMENT)
    if data_offset != expected_data_offset:
        raise CorruptStreamError(
            f"data_offset is {data_offset}, expected {expected_data_offset}", section="4.1", offset=24
        )
    # Step 6: file length
    end = data_offset + data_size
    if file_size < end:
        raise TruncatedError(
            f"input of {file_size} bytes ends before the declared end {end}", section="4", offset=file_size
        )
    if file_size > end:
        raise CorruptStreamError(f"{file_size - end} trailing bytes after the data section", section="4", offset=end)
    # Step 7: directory checksum and padding
    directory = bytes(read_at(FIXED_HEADER_SIZE, directory_size))
    if crc32c(directory) != directory_crc:
        raise ChecksumError("directory_crc does not match the directory", section="4.1", offset=56)
    padding_start = FIXED_HEADER_SIZE + directory_size
    if any(read_at(padding_start, data_offset - padding_start)):
        raise CorruptStreamError("directory padding is not zero", section="4", offset=padding_start)
    # Step 8: records
    cursor = _DirectoryCursor(directory, FIXED_HEADER_SIZE)
    features = _read_features(cursor, feature_count)
    metadata = _read_metadata(cursor, metadata_count)
    tensors = _read_tensors(cursor, tensor_count, chunk_log2, data_size)
    if cursor.position != len(directory):
        raise CorruptStreamError(
            f"{len(directory) - cursor.position} bytes left over after the last directory record",
            section="4.2", offset=cursor.here,
        )  # fmt: skip
    expected_data_size = tensors[-1].offset + tensors[-1].size if tensors else 0
    if data_size != expected_data_size:
        raise CorruptStreamError(
            f"data_size is {data_size}, the payloads end at {expected_data_size}", section="4.3", offset=32
        )
    return Header(
        major, minor, chunk_log2, directory_size, data_offset, data_size,
        tuple(features), metadata, tuple(tensors), {t.name: t for t in tensors},
    )  # fmt: skip


def _read_features(cursor: _DirectoryCursor, count: int) -> list[Feature]:
    features: list[Feature] = []
    for _ in range(count):
        offset = cursor.here
        feature_id, flags, length = FEATURE_RECORD.unpack(cursor.take(FEATURE_RECORD.size, "feature record"))
        payload = cursor.take(length, "feature payload")
        if flags & ~1:
            raise CorruptStreamError(
                f"feature {feature_id} has reserved flags {flags:#x}", section="4.2.1", offset=offset
            )
        if features and feature_id <= features[-1].feature_id:
            raise CorruptStreamError(f"feature id {feature_id} is not increasing", section="4.2.1", offset=offset)
        required = bool(flags & 1)
        if required:  # version 1.0 implements no feature
            raise UnsupportedFeatureError(f"unknown required feature {feature_id}", section="4.2.1", offset=offset)
        features.append(Feature(feature_id, required, bytes(payload)))
    return features


def _read_metadata(cursor: _DirectoryCursor, count: int) -> dict[str, str]:
    metadata: dict[str, str] = {}
    previous: bytes | None = None
    for _ in range(count):
        raw_key, key, offset = _read_string(cursor, "metadata key", MAX_NAME_LENGTH, allow_empty=False)
        if previous is not None and raw_key <= previous:
            raise CorruptStreamError(f"metadata key {key!r} is not after {previous.decode('utf-8')!r}",
                                     section="4.2.2", offset=offset)  # fmt: skip
        _, value, _ = _read_string(cursor, "metadata value", MAX_VALUE_LENGTH, allow_empty=True)
        metadata[key] = value
        previous = raw_key
    return metadata


def _element_count(shape: tuple[int, ...], offset: int) -> int:
    """Running product with the 2^48 bound (spec section 4.6)."""
    count = 1
    for dim in shape:
        if dim > MAX_ELEMENTS:
            raise LimitExceededError(f"dimension {dim} is above 2^48", section="4.6", offset=offset)
        count *= dim
        if count > MAX_ELEMENTS:
            raise LimitExceededError("element count is above 2^48", section="4.6", offset=offset)
    return count


def _read_tensors(cursor: _DirectoryCursor, count: int, chunk_log2: int, data_size: int) -> list[TensorRecord]:
    tensors: list[TensorRecord] = []
    previous: bytes | None = None
    next_offset = 0
    for _ in range(count):
        record_offset = cursor.here
        raw_name, name, _ = _read_string(cursor, "tensor name", MAX_NAME_LENGTH, allow_empty=False)
        fixed = cursor.take(TENSOR_FIXED.size, "tensor record")
        dtype, source_dtype, coding, rank, reserved, offset, size, table_crc, params_length = TENSOR_FIXED.unpack(fixed)
        shape = struct.unpack(f"<{rank}Q", cursor.take(8 * rank, "tensor shape"))
        params_raw = cursor.take(params_length, "coding parameters")
        where = dict(offset=record_offset)
        if previous is not None and raw_name <= previous:
            raise CorruptStreamError(f"tensor name {name!r} is not after {previous.decode('utf-8')!r} (duplicate or out of order)",
                                     section="4.2.3", **where)  # fmt: skip
        previous = raw_name
        if reserved:
            raise CorruptStreamError(f"tensor {name!r}: reserved field is {reserved:#x}", section="4.2.3", **where)
        if rank > MAX_RANK:
            raise LimitExceededError(f"tensor {name!r}: rank {rank} is above {MAX_RANK}", section="4.5", **where)
        elements = _element_count(shape, record_offset)
        for code, what in ((dtype, "dtype"), (source_dtype, "source_dtype")):
            if not dtypes.is_known(code):
                raise UnsupportedFeatureError(f"tensor {name!r}: unknown {what} code {code}", section="3", **where)
        if coding not in (CODING_RAW, CODING_ICQ):
            raise UnsupportedFeatureError(f"tensor {name!r}: unknown coding method {coding}", section="6", **where)
        params = check_coding(name, dtype, source_dtype, coding, shape, elements, params_raw, record_offset)
        record = TensorRecord(name, dtype, source_dtype, coding, shape, offset, size, table_crc, params, record_offset)
        if offset != next_offset:
            raise CorruptStreamError(f"tensor {name!r}: payload offset is {offset}, expected {next_offset}",
                                     section="4.3", **where)  # fmt: skip
        expected_size = tensor_layout(record, chunk_log2).payload_size
        if size != expected_size:
            raise CorruptStreamError(f"tensor {name!r}: payload size is {size}, expected {expected_size}",
                                     section="6", **where)  # fmt: skip
        if offset + size > data_size:
            raise CorruptStreamError(f"tensor {name!r}: payload ends past data_size", section="4.3", **where)
        next_offset = align(offset + size, DATA_ALIGNMENT)
        tensors.append(record)
    return tensors
