"""The container (spec sections 4 and 6 layout): fixed header, directory, payload layout, checksums.

Parsed once here and shared by every decoder; written here for the encoder. All checks of spec
section 9.2 steps 1 to 8 live in :func:`read_header`, in the normative order.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import crc32c as _crc32c

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
    ICQ_PARAMS_LENGTH,
    KIND_CODEBOOK,
    KIND_UNIFORM,
    MAGIC,
    MAX_BITS,
    MAX_COUNT_BITS,
    MAX_DATA_SIZE,
    MAX_DIRECTORY_SIZE,
    MAX_ELEMENTS,
    MAX_FEATURES,
    MAX_GAP_BITS,
    MAX_METADATA,
    MAX_NAME_LENGTH,
    MAX_RANK,
    MAX_SEGMENT_LOG2,
    MAX_TENSORS,
    MAX_VALUE_LENGTH,
    MIN_BITS,
    MIN_COUNT_BITS,
    MIN_GAP_BITS,
    MIN_SEGMENT_LOG2,
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

__all__ = [
    "crc32c",
    "align",
    "IcqParams",
    "TensorRecord",
    "Feature",
    "Header",
    "Layout",
    "tensor_layout",
    "read_header",
    "write_container",
    "Payload",
]

_FIXED = struct.Struct("<8sHHIQQQIIIB3sII")  # 4.1, 64 bytes
_TENSOR_FIXED = struct.Struct("<BBBBIQQII")  # 4.2.3 after the name, 32 bytes
_ICQ_PARAMS = struct.Struct("<BBBBBBHIIQ")  # 6.2, 24 bytes
_FEATURE = struct.Struct("<IIQ")  # 4.2.1

ReadAt = Callable[[int, int], bytes]


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data`` (spec section 4.4)."""
    return _crc32c.crc32c(data)


def align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


# ---- 6.2 icq coding parameters ----------------------------------------------------------------


@dataclass(frozen=True)
class IcqParams:
    """The 24-byte coding parameters of an icq tensor (spec section 6.2)."""

    bits: int
    kind: int
    gap_bits: int
    count_bits: int
    segment_log2: int
    codebook_size: int
    outliers: int
    total_symbols: int

    def to_bytes(self) -> bytes:
        return _ICQ_PARAMS.pack(
            self.bits, self.kind, self.gap_bits, self.count_bits, self.segment_log2, 0,
            self.codebook_size, self.outliers, 0, self.total_symbols,
        )  # fmt: skip

    @property
    def segment(self) -> int:
        return 1 << self.segment_log2


def codebook_size_for(bits: int, kind: int, outliers: int) -> int:
    """``codebook_size`` the spec requires (6.2)."""
    if kind == KIND_UNIFORM:
        return 0
    return (1 << bits) + ((1 << (bits - 1)) if outliers else 0)


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
     feature_count, chunk_log2, reserved, directory_crc, header_crc) = _FIXED.unpack(head)  # fmt: skip
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
        feature_id, flags, length = _FEATURE.unpack(cursor.take(_FEATURE.size, "feature record"))
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
        fixed = cursor.take(_TENSOR_FIXED.size, "tensor record")
        dtype, source_dtype, coding, rank, reserved, offset, size, table_crc, params_length = _TENSOR_FIXED.unpack(
            fixed
        )
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
        params = _check_coding(name, dtype, source_dtype, coding, shape, elements, params_raw, record_offset)
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


def _check_coding(name, dtype, source_dtype, coding, shape, elements, params_raw, offset) -> IcqParams | None:
    """Consistency rules of spec sections 4.2.3, 6.1 and 6.2 (all ``corrupt``)."""

    def corrupt(detail: str, section: str = "6.2") -> CorruptStreamError:
        return CorruptStreamError(f"tensor {name!r}: {detail}", section=section, offset=offset)

    if coding == CODING_RAW:
        if params_raw:
            raise corrupt(f"raw coding has {len(params_raw)} bytes of parameters, expected 0", "6.1")
        if source_dtype != dtype:
            raise corrupt("raw coding with source_dtype different from dtype", "6.1")
        return None
    if len(params_raw) != ICQ_PARAMS_LENGTH:
        raise corrupt(f"icq coding has {len(params_raw)} bytes of parameters, expected {ICQ_PARAMS_LENGTH}")
    if dtype not in dtypes.ICQ_OUTPUT_CODES:
        raise corrupt(f"icq output dtype {dtypes.NAMES[dtype]} is not float16, bfloat16 or float32")
    if source_dtype not in dtypes.FLOAT_CODES:
        raise corrupt(f"icq source dtype {dtypes.NAMES[source_dtype]} is not a floating-point type")
    if not shape or elements == 0:
        raise corrupt("icq coding needs rank >= 1 and at least one element")
    bits, kind, gap_bits, count_bits, segment_log2, reserved8, codebook_size, outliers, reserved32, total_symbols = (
        _ICQ_PARAMS.unpack(params_raw)
    )
    if reserved8 or reserved32:
        raise corrupt("reserved coding parameter is not zero")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise corrupt(f"bits {bits} is outside 1..8")
    if kind not in (KIND_UNIFORM, KIND_CODEBOOK):
        raise corrupt(f"kind {kind} is not 0 (uniform) or 1 (codebook)")
    if not MIN_SEGMENT_LOG2 <= segment_log2 <= MAX_SEGMENT_LOG2:
        raise corrupt(f"segment_log2 {segment_log2} is outside 4..24")
    cols = shape[-1]
    rows = elements // cols
    if outliers > cols:
        raise corrupt(f"outliers {outliers} is above cols {cols}")
    if outliers == 0:
        if gap_bits or count_bits or total_symbols:
            raise corrupt("gap_bits, count_bits and total_symbols must be 0 without outliers")
    else:
        if not MIN_GAP_BITS <= gap_bits <= MAX_GAP_BITS:
            raise corrupt(f"gap_bits {gap_bits} is outside 1..16")
        if not MIN_COUNT_BITS <= count_bits <= MAX_COUNT_BITS:
            raise corrupt(f"count_bits {count_bits} is outside 1..32")
        if not rows * outliers <= total_symbols <= elements:
            raise corrupt(f"total_symbols {total_symbols} is outside {rows * outliers}..{elements}")
    expected_codebook = codebook_size_for(bits, kind, outliers)
    if codebook_size != expected_codebook:
        raise corrupt(f"codebook_size {codebook_size}, expected {expected_codebook}")
    return IcqParams(bits, kind, gap_bits, count_bits, segment_log2, codebook_size, outliers, total_symbols)


# ---- 4.4 chunk checksums ----------------------------------------------------------------------


def chunk_table(body: bytes | memoryview, chunk_log2: int) -> bytes:
    """The chunk table of a payload body: one CRC-32C per ``2^chunk_log2`` bytes (spec 4.4)."""
    chunk = 1 << chunk_log2
    view = memoryview(body)
    return b"".join(crc32c(view[i : i + chunk]).to_bytes(4, "little") for i in range(0, len(view), chunk))


def verify_table(record: TensorRecord, table: bytes) -> None:
    if crc32c(table) != record.table_crc:
        raise ChecksumError(f"tensor {record.name!r}: table_crc does not match its chunk table",
                            section="4.4", offset=record.record_offset)  # fmt: skip


def verify_chunks(
    record: TensorRecord, header: Header, table: bytes, read_payload: ReadAt, first: int, stop: int
) -> None:
    """Check chunks ``first`` to ``stop - 1`` of a tensor's body against its (verified) table."""
    chunk = header.chunk_size
    body_size = tensor_layout(record, header.chunk_log2).body_size
    for index in range(first, stop):
        start = index * chunk
        data = read_payload(start, min(chunk, body_size - start))
        if crc32c(data) != int.from_bytes(table[4 * index : 4 * index + 4], "little"):
            raise ChecksumError(f"tensor {record.name!r}: chunk {index} does not match its CRC-32C",
                                section="4.4", offset=header.data_offset + record.offset + start)  # fmt: skip


# ---- 4.4 Checksummed payload reads -------------------------------------------------------------------


class Payload:
    """A tensor's payload body; every read first checks the chunks it touches (spec section 4.4)."""

    def __init__(self, header: Header, record: TensorRecord, read_at: ReadAt) -> None:
        self.header, self.record = header, record
        self.layout = tensor_layout(record, header.chunk_log2)
        self.start = header.data_offset + record.offset
        self.read_at = read_at
        # "table_crc: CRC-32C of the payload's chunk table"
        self.table = bytes(read_at(self.start + self.layout.body_size, 4 * self.layout.chunk_count))
        verify_table(record, self.table)
        self.verified: set[int] = set()

    def _read_payload(self, offset: int, size: int) -> bytes:
        return self.read_at(self.start + offset, size)

    def read(self, offset: int, size: int) -> bytes:
        """Body bytes ``offset`` to ``offset + size - 1``, their chunks verified first."""
        chunk = self.header.chunk_size
        for index in range(offset // chunk, -(-(offset + size) // chunk)):
            if index not in self.verified:
                verify_chunks(self.record, self.header, self.table, self._read_payload, index, index + 1)
                self.verified.add(index)
        return self._read_payload(offset, size)

    def section(self, name: str, start: int = 0, size: int | None = None) -> bytes:
        begin, length = self.layout.sections[name]
        return self.read(begin + start, length - start if size is None else size)

    def verify_all(self) -> None:
        """Check every chunk, in order (spec section 9.2 step 9)."""
        self.read(0, self.layout.body_size)

    def check_section_padding(self) -> None:
        """Each section is padded with zeros to a multiple of 64 bytes (spec section 6)."""
        for name, (begin, length) in self.layout.sections.items():
            if any(self.read(begin + length, align(length, SECTION_ALIGNMENT) - length)):
                raise CorruptStreamError(f"tensor {self.record.name!r}: padding after section {name} is not zero",
                                         section="6", offset=self.start + begin + length)  # fmt: skip


# ---- writing ----------------------------------------------------------------------------------


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "little") + raw


def build_payload(record: TensorRecord, sections: dict[str, bytes], chunk_log2: int) -> tuple[bytes, int]:
    """Join a tensor's sections with their padding and chunk table; returns (payload, table_crc)."""
    layout = tensor_layout(record, chunk_log2)
    body = bytearray(layout.body_size)
    for name, (start, size) in layout.sections.items():
        data = sections[name]
        assert len(data) == size, (name, len(data), size)
        body[start : start + size] = data
    table = chunk_table(body, chunk_log2)
    return bytes(body) + table, crc32c(table)


def _directory(records, sizes, metadata: dict[str, str], features) -> tuple[bytes, list[int]]:
    """Directory bytes for records in canonical order with payload sizes; returns it and the offsets."""
    offsets, position = [], 0
    for size in sizes:
        offsets.append(position)
        position = align(position + size, DATA_ALIGNMENT)
    directory = bytearray()
    for feature in features:
        directory += _FEATURE.pack(feature.feature_id, int(feature.required), len(feature.payload)) + feature.payload
    for key in sorted(metadata, key=lambda k: k.encode("utf-8")):
        directory += _string(key) + _string(metadata[key])
    for record, offset, size in zip(records, offsets, sizes, strict=True):
        params = record.params.to_bytes() if record.params else b""
        directory += _string(record.name)
        directory += _TENSOR_FIXED.pack(record.dtype, record.source_dtype, record.coding, len(record.shape), 0,
                                        offset, size, record.table_crc, len(params))  # fmt: skip
        directory += struct.pack(f"<{len(record.shape)}Q", *record.shape) + params
    return bytes(directory), offsets


def _fixed_header(directory: bytes, data_size: int, counts: tuple[int, int, int], chunk_log2: int, minor: int) -> bytes:
    data_offset = align(FIXED_HEADER_SIZE + len(directory), DATA_ALIGNMENT)
    fixed = _FIXED.pack(MAGIC, FORMAT_MAJOR, minor, 0, len(directory), data_offset, data_size, *counts,
                        chunk_log2, b"\0\0\0", crc32c(directory), 0)  # fmt: skip
    return fixed[:60] + crc32c(fixed[:60]).to_bytes(4, "little")


def write_container(
    records: list[TensorRecord],
    payloads: list[bytes],
    metadata: dict[str, str],
    *,
    chunk_log2: int,
    features: tuple[Feature, ...] = (),
    minor: int = 0,
) -> list[bytes | memoryview]:
    """Serialize a file: header and directory, then payloads; returns the pieces to write in order.

    ``records`` and ``payloads`` must be in canonical (name) order; offsets are assigned here.
    """
    sizes = [len(payload) for payload in payloads]
    directory, offsets = _directory(records, sizes, metadata, features)
    data_size = offsets[-1] + sizes[-1] if payloads else 0
    counts = (len(records), len(metadata), len(features))
    pieces: list[bytes | memoryview] = [_fixed_header(directory, data_size, counts, chunk_log2, minor), directory]
    pieces.append(bytes(align(FIXED_HEADER_SIZE + len(directory), DATA_ALIGNMENT) - FIXED_HEADER_SIZE - len(directory)))
    position = 0
    for offset, payload in zip(offsets, payloads, strict=True):
        pieces.append(bytes(offset - position))
        pieces.append(payload)
        position = offset + len(payload)
    return pieces


class StreamWriter:
    """Writes a file tensor by tensor, holding one payload at a time (bounded memory).

    The directory's length depends only on names, ranks, codings and metadata, so the data section's
    start is known before any tensor is encoded; payloads go there in canonical order, and the
    header and directory are written last.
    """

    def __init__(self, out, plan: list[TensorRecord], metadata: dict[str, str], *, chunk_log2: int) -> None:
        self.out, self.plan, self.metadata, self.chunk_log2 = out, plan, metadata, chunk_log2
        blank = IcqParams(0, 0, 0, 0, 0, 0, 0, 0)  # parameters have a fixed length: any value will do
        sized = [r if r.coding != CODING_ICQ or r.params else replace(r, params=blank) for r in plan]
        placeholder, _ = _directory(sized, [0] * len(plan), metadata, ())
        self.directory_size = len(placeholder)
        self.data_offset = align(FIXED_HEADER_SIZE + self.directory_size, DATA_ALIGNMENT)
        self.records: list[TensorRecord] = []
        self.sizes: list[int] = []
        self.position = 0

    def add(self, record: TensorRecord, payload: bytes | memoryview) -> None:
        expected = self.plan[len(self.records)]
        assert (record.name, len(record.shape), record.coding) == (expected.name, len(expected.shape), expected.coding)
        offset = align(self.position, DATA_ALIGNMENT) if self.records else 0
        self.out.seek(self.data_offset + self.position)
        self.out.write(bytes(offset - self.position))
        self.out.write(payload)
        self.records.append(record)
        self.sizes.append(len(payload))
        self.position = offset + len(payload)

    def finish(self) -> None:
        assert len(self.records) == len(self.plan), "every planned tensor must be added"
        directory, _ = _directory(self.records, self.sizes, self.metadata, ())
        assert len(directory) == self.directory_size
        counts = (len(self.records), len(self.metadata), 0)
        self.out.seek(0)
        self.out.write(_fixed_header(directory, self.position, counts, self.chunk_log2, 0))
        self.out.write(directory)
        self.out.write(bytes(self.data_offset - FIXED_HEADER_SIZE - len(directory)))
