"""The reference decoder of ICQ format 1.0: readable, plain Python and numpy, slow.

It follows the spec (``spec/icq-format.md``) section by section, in the spec's order; each
function's docstring names its section and the normative sentences stand above the code that obeys
them. It omits nothing the spec requires; it trades speed for clarity (one Python loop per segment).
The container (section 4, steps 1 to 8 of section 9.2) and the checksummed payload reads (4.4) are
shared with every decoder: :mod:`icqcodec.container` and :mod:`icqcodec.payload`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import dtypes
from .bitstream import bits_are_zero, packed_size, unpack
from .constants import CODING_RAW
from .container import Header, ReadAt, TensorRecord, read_header
from .errors import CorruptStreamError
from .index_coding import decode_segment, segment_bounds
from .payload import Payload
from .raw_coding import bool_error, raw_rows
from .scalar_codes import codebooks, inlier_levels, outlier_levels, to_output

if TYPE_CHECKING:  # the reference decoder itself stays plain Python and numpy
    from .column_slices import ColumnWindow

__all__ = ["load", "decode_tensor", "decode_window"]


def load(data: bytes | memoryview) -> dict[str, np.ndarray]:
    """Decode every tensor of an ICQ file (spec section 9), checks in the order of 9.2."""
    view = memoryview(data)

    def read_at(offset: int, size: int) -> bytes:
        return bytes(view[offset : offset + size])

    header = read_header(read_at, len(view))
    tensors = {record.name: decode_tensor(header, record, read_at) for record in header.tensors}
    check_payload_padding(header, read_at)
    return tensors


def decode_tensor(
    header: Header, record: TensorRecord, read_at: ReadAt, rows: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode one tensor, or its rows ``rows[0]`` to ``rows[1] - 1`` (spec sections 6 and 9.4).

    Rows are icq rows (6.2); for raw tensors, rows of the leading dimension.
    """
    # 4.4: "A decoder MUST check a chunk before it uses any byte of it"
    body = Payload(header, record, read_at)
    whole = rows is None
    if whole:
        body.verify_all()
    if record.coding == CODING_RAW:
        out = decode_raw(body, rows)
    else:
        out = decode_icq(body, rows)
    if whole:
        # 6: "Each section is padded with zero bytes to a multiple of 64 bytes"
        body.check_section_padding()
    return out


# ---- 4 Container: read_header in icqcodec/container.py, Payload in icqcodec/payload.py ----------

# ---- 5 Bit packing ------------------------------------------------------------------------------


def unpack_from_bit(data: bytes, skip: int, count: int, width: int) -> np.ndarray:
    """``count`` fields of ``width`` bits starting at stream bit ``skip`` (skip < 8), section 5:
    "field ``j`` of a packed array of width ``w`` is at bit ``j * w``"."""
    if skip == 0:
        return unpack(data, count, width)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[skip:]
    return unpack(np.packbits(bits, bitorder="little").tobytes(), count, width)


# ---- 6.1 Raw --------------------------------------------------------------------------------------


def decode_raw(body: Payload, rows: tuple[int, int] | None) -> np.ndarray:
    """6.1 Raw: "the elements in row-major (C) order, each little-endian ... copied bit for bit"
    (the rows' bytes: :func:`icqcodec.raw_coding.raw_rows`)."""
    record = body.record
    data, shape = raw_rows(body, rows)
    # 3: "byte 0x00 is false, 0x01 true; any other byte is corrupt"
    if record.dtype == dtypes.BOOL and any(byte > 1 for byte in data):
        raise bool_error(record.name)
    return np.frombuffer(data, dtype=dtypes.numpy_dtype(record.dtype)).reshape(shape).copy()


# ---- 6.2 icq ----------------------------------------------------------------------------------------


def decode_window(window: ColumnWindow) -> np.ndarray:
    """9.4: "the segments that cover them", read as a matrix of their own and decoded as any rows."""
    return decode_icq(window, None)


def decode_icq(body: Payload | ColumnWindow, rows: tuple[int, int] | None) -> np.ndarray:
    """6.2 icq: codebook, row parameters, codes, segment counts, gap symbols."""
    record, p = body.record, body.record.params
    name = record.name
    first, stop = rows if rows is not None else (0, record.rows)
    count = stop - first
    cols = record.cols

    # 1. Codebook: "Every entry MUST be finite (corrupt)"
    raw_book = None
    if "codebook" in body.layout.sections:
        raw_book = np.frombuffer(body.section("codebook"), dtype="<f2")
        require_finite(raw_book, f"tensor {name!r}: codebook holds a value that is not finite")
    inlier_book, outlier_book = codebooks(p.kind, p.bits, p.outliers, raw_book)

    # 2. Row parameters: f16 inlier_offset, inlier_scale[, outlier_offset, outlier_scale];
    # "Every value MUST be finite (corrupt)"
    per_row = 2 + (2 if p.outliers else 0)
    params = np.frombuffer(body.section("params", first * per_row * 2, count * per_row * 2), dtype="<f2")
    params = params.reshape(count, per_row)
    require_finite(params, f"tensor {name!r}: row parameters hold a value that is not finite")

    # 3. Codes: "row r starts at byte r * row_stride of the section; the code of column c is the
    # bits-wide field at bit c * bits of the row. The bits after the last column of each row are padding."
    row_stride = packed_size(cols, p.bits)
    code_bytes = body.section("codes", first * row_stride, count * row_stride)
    codes = np.empty((count, cols), dtype=np.int64)
    for r in range(count):
        row = code_bytes[r * row_stride : (r + 1) * row_stride]
        codes[r] = unpack(row, cols, p.bits)
        if not bits_are_zero(row, cols * p.bits):
            raise CorruptStreamError(
                f"tensor {name!r}: padding bits of code row {body.row_first + first + r} are not zero", section="6.2"
            )

    # 4-5. Segment counts and gap symbols: the outlier positions (section 8)
    outlier = np.zeros((count, cols), dtype=bool)
    if p.outliers:
        decode_positions(body, first, stop, outlier)

    # section 7: the levels, and the rounding to the output dtype
    values = dequantize_rows(params, codes, outlier, p.bits, p.outliers, inlier_book, outlier_book)
    shape = record.shape if rows is None else (count, cols)
    return to_output(values, record.dtype).reshape(shape)


def require_finite(values: np.ndarray, message: str) -> None:
    """6.2: "Every entry MUST be finite", "Every value MUST be finite"."""
    if not np.isfinite(values.astype(np.float32)).all():
        raise CorruptStreamError(message, section="6.2")


# ---- 7 Scalar codes and dequantization ----------------------------------------------------------


def dequantize_rows(params, codes, outlier, bits, outliers, inlier_book, outlier_book) -> np.ndarray:
    """7: "An inlier with code q has the value inlier_offset + B(q) * inlier_scale"; an outlier is
    sign-magnitude, "magnitude outlier_offset + O(m) * outlier_scale", all in binary32."""
    values = np.empty(codes.shape, dtype=np.float32)
    for r in range(codes.shape[0]):
        inl = inlier_levels(params[r, 0], params[r, 1], bits, inlier_book)
        values[r] = inl[codes[r]]
        if outliers:
            out = outlier_levels(params[r, 2], params[r, 3], bits, outlier_book)
            values[r, outlier[r]] = out[codes[r, outlier[r]]]
    return values


# ---- 8 Index coding of outlier positions --------------------------------------------------------


def decode_positions(body: Payload | ColumnWindow, first: int, stop: int, outlier: np.ndarray) -> None:
    """Mark the outliers of rows ``first`` to ``stop - 1`` (spec section 8)."""
    record, p = body.record, body.record.params
    name = record.name
    bounds = segment_bounds(record.cols, p.segment)
    segments = len(bounds)

    # "A decoder MUST check that the counts sum to exactly total_symbols, keeping a running sum and
    # rejecting (corrupt) as soon as it exceeds total_symbols"
    count_data = body.section("counts")
    counts = unpack(count_data, record.rows * segments, p.count_bits)
    running = 0
    for value in counts.tolist():
        running += value
        if running > p.total_symbols:
            raise CorruptStreamError(f"tensor {name!r}: segment counts exceed total_symbols", section="8")
    if running != p.total_symbols:
        raise CorruptStreamError(f"tensor {name!r}: segment counts sum to {running}, "
                                 f"total_symbols is {p.total_symbols}", section="8")  # fmt: skip
    if not bits_are_zero(count_data, record.rows * segments * p.count_bits):
        raise CorruptStreamError(f"tensor {name!r}: padding bits of the segment counts are not zero", section="8")

    # "start(r, s): the sum of the counts of all segments before it in row-major order"
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.uint64)]).astype(np.int64)
    symbol_first, symbol_stop = int(starts[first * segments]), int(starts[stop * segments])
    bit_first = symbol_first * p.gap_bits
    byte_first = bit_first // 8
    whole = first == 0 and stop == record.rows
    gap_data = body.section("gaps", byte_first, None if whole else packed_size(symbol_stop, p.gap_bits) - byte_first)
    skip = bit_first - byte_first * 8  # symbols of row `first` may start inside a byte
    symbols = unpack_from_bit(gap_data, skip, symbol_stop - symbol_first, p.gap_bits)

    for r in range(first, stop):
        found = 0
        for s, (start, length) in enumerate(bounds):
            j = r * segments + s
            chain = symbols[starts[j] - symbol_first : starts[j + 1] - symbol_first].tolist()
            where = f"tensor {name!r} row {body.row_first + r} segment {body.segment_first + s}: "
            for position in decode_segment(chain, length, p.gap_bits, where=where):
                outlier[r - first, start + position] = True
                found += 1
        # "and that every row has exactly outliers outliers (corrupt)"; 9.4: a reader of columns
        # does not read the row's other segments and checks no count
        if body.expected_outliers is not None and found != body.expected_outliers:
            raise CorruptStreamError(
                f"tensor {name!r}: row {r} has {found} outliers, expected {p.outliers}", section="8"
            )
    # "Padding bits in every packed array are zero."
    if whole and not bits_are_zero(gap_data, p.total_symbols * p.gap_bits):
        raise CorruptStreamError(f"tensor {name!r}: padding bits of the gap symbols are not zero", section="8")


# ---- 9.2 step 10 ----------------------------------------------------------------------------------


def check_payload_padding(header: Header, read_at: ReadAt) -> None:
    """9.2 step 10: "The padding between payloads, in file order (corrupt)"."""
    for record, following in zip(header.tensors, header.tensors[1:], strict=False):
        end = record.offset + record.size
        if any(read_at(header.data_offset + end, following.offset - end)):
            raise CorruptStreamError("padding between payloads is not zero", section="4.3",
                                     offset=header.data_offset + end)  # fmt: skip
