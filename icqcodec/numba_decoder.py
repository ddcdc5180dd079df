"""The fast CPU decoder (spec section 9): numba kernels, parallel over rows.

The container checks (section 9.2 steps 1 to 8) and the checksums are shared with every decoder;
the per-row work (unpacking codes, gap chains, levels, rounding) runs in numba and reports errors
per row as flags, which :func:`icqcodec.payload_checks.raise_first` raises in the normative order.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import dtypes
from .bitstream import packed_size
from .column_slices import ColumnWindow
from .constants import CODING_RAW
from .container import Header, ReadAt, TensorRecord
from .float_bits import f16_bits_to_f32, f16_is_finite, f32_to_bf16_bits, f32_to_f16_bits
from .jit import JIT, KERNEL_LOCK, field, tail_is_zero
from .payload import Payload
from .payload_checks import (
    CHAIN_COUNT,
    CHAIN_PAST_END,
    CHAIN_TRAILING_ESCAPE,
    OUT_BF16,
    OUT_F16,
    OUT_F32,
    gap_padding_error,
    output_kind,
    raise_first,
    read_codebook,
    segment_starts,
    symbol_words,
)
from .raw_coding import decode_raw

__all__ = ["decode_tensor", "decode_window"]


@nb.njit(**JIT)
def _output_bits(value, out_kind):
    if out_kind == OUT_F16:
        return np.uint32(f32_to_f16_bits(value))
    if out_kind == OUT_BF16:
        return np.uint32(f32_to_bf16_bits(value))
    return np.array([value], dtype=np.float32).view(np.uint32)[0]


@nb.njit(**JIT)
def _decode_bytes(target, source, table_in, bits, units, byte_count, item_size):
    """Decode whole bytes of codes: each wide unit of ``target`` holds the outputs of a run of
    codes, looked up at once in a table built by doubling (pairs of codes, then pairs of pairs)."""
    codes_per_unit = target.itemsize // item_size
    field_bits = codes_per_unit * bits  # at most 8
    table = table_in.astype(np.uint64)
    run = 1
    while run < codes_per_unit:
        size = table.size
        doubled = np.empty(size * size, dtype=np.uint64)
        shift = np.uint64(run * item_size * 8)
        for high in range(size):
            for low in range(size):
                doubled[high * size + low] = table[low] | (table[high] << shift)
        table = doubled
        run *= 2
    narrow = table.astype(target.dtype)
    mask = (1 << field_bits) - 1
    for i in range(byte_count):
        b = source[i]
        for u in range(units):
            target[i * units + u] = narrow[(b >> (u * field_bits)) & mask]


@nb.njit(parallel=True, **JIT)
def _decode_rows(out, wide, units, params, code_words, code_bytes, row_words, cols, bits, inlier_book, outlier_book,
                 starts, gap_words, gap_bit_base, gap_bits, segment, outliers, expected, out_kind, chains):  # fmt: skip
    """Decode rows into ``out`` (uint16 or uint32 bit patterns); returns per-row error flags.
    Each row's outliers are checked against ``expected``, unless it is negative.

    ``wide`` is ``out`` viewed with a wider unsigned type, ``units`` of them per byte of codes, or
    an empty array when no such view exists; then codes are decoded a whole byte at a time.
    flags[r] = (non-finite parameter, code padding set, chain error code, segment of the error).
    """
    rows = out.shape[0]
    flags = np.zeros((rows, 4), dtype=np.int64)
    levels_in = inlier_book.size
    half = outlier_book.size
    segments = (cols + segment - 1) // segment
    escape = (1 << gap_bits) - 1
    for r in nb.prange(rows):
        finite = True
        for k in range(params.shape[1]):
            finite = finite and f16_is_finite(params[r, k])
        if not finite:
            flags[r, 0] = 1
            continue
        # spec section 7: binary32 levels, exact products, one rounding, then the output rounding
        offset, scale = f16_bits_to_f32(params[r, 0]), f16_bits_to_f32(params[r, 1])
        table_in = np.empty(levels_in, dtype=out.dtype)
        for q in range(levels_in):
            table_in[q] = _output_bits(offset + inlier_book[q] * scale, out_kind)
        words = code_words[r * row_words : (r + 1) * row_words]
        target = out[r]
        if wide.shape[0] > 0:  # one table lookup and `units` wide stores per byte of codes
            _decode_bytes(wide[r], code_bytes[r * row_words * 4 : (r + 1) * row_words * 4], table_in, bits,
                          units, cols * bits // 8, out.itemsize)  # fmt: skip
        elif 32 % bits == 0:  # whole codes per word: one load per 32 // bits codes
            per_word = 32 // bits
            mask = np.uint32((1 << bits) - 1)
            for w in range(row_words):
                word = words[w]
                base = w * per_word
                for k in range(min(per_word, cols - base)):
                    target[base + k] = table_in[(word >> np.uint32(k * bits)) & mask]
        else:
            for c in range(cols):
                target[c] = table_in[field(words, c * bits, bits)]
        if not tail_is_zero(words, cols * bits):
            flags[r, 1] = 1
        if outliers == 0 or not chains:
            continue
        o_offset, o_scale = f16_bits_to_f32(params[r, 2]), f16_bits_to_f32(params[r, 3])
        table_out = np.empty(2 * half, dtype=out.dtype)
        for m in range(half):
            magnitude = o_offset + outlier_book[m] * o_scale
            table_out[m] = _output_bits(magnitude, out_kind)
            table_out[half + m] = _output_bits(-magnitude, out_kind)
        found = 0
        for s in range(segments):
            length = min(segment, cols - s * segment)
            first, stop = starts[r * segments + s], starts[r * segments + s + 1]
            cursor = 0
            for i in range(first, stop):
                v = field(gap_words, i * gap_bits - gap_bit_base, gap_bits)
                if v == escape:
                    cursor += escape
                    continue
                p = cursor + v
                if p >= length:
                    flags[r, 2], flags[r, 3] = CHAIN_PAST_END, s
                    break
                c = s * segment + p
                out[r, c] = table_out[field(words, c * bits, bits)]
                found += 1
                cursor = p + 1
            if (
                flags[r, 2] == 0
                and stop > first
                and field(gap_words, (stop - 1) * gap_bits - gap_bit_base, gap_bits) == escape
            ):
                flags[r, 2], flags[r, 3] = CHAIN_TRAILING_ESCAPE, s
            if flags[r, 2]:
                break
        if flags[r, 2] == 0 and expected >= 0 and found != expected:
            flags[r, 2], flags[r, 3] = CHAIN_COUNT, found
    return flags


def _words(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u4").astype(np.uint32, copy=False)


def decode_tensor(header: Header, record: TensorRecord, read_at: ReadAt,
                  rows: tuple[int, int] | None = None) -> np.ndarray:  # fmt: skip
    """Decode one tensor, or its rows ``rows[0]`` to ``rows[1] - 1`` (spec sections 6 and 9.4)."""
    payload = Payload(header, record, read_at)
    if rows is None:
        payload.verify_all()
    out = decode_raw(payload, rows) if record.coding == CODING_RAW else _decode_icq(payload, rows)
    if rows is None:
        payload.check_section_padding()
    return out


def decode_window(window: ColumnWindow) -> np.ndarray:
    """Decode the segments of a column slice (spec section 9.4), as a matrix."""
    return _decode_icq(window, None)


def _decode_icq(payload: Payload | ColumnWindow, rows: tuple[int, int] | None) -> np.ndarray:
    record, p = payload.record, payload.record.params
    name = record.name
    first, stop = rows if rows is not None else (0, record.rows)
    count, cols = stop - first, record.cols
    per_row = 4 if p.outliers else 2

    inlier_book = np.arange(1 << p.bits, dtype=np.float32)
    outlier_book = np.arange(1 << (p.bits - 1), dtype=np.float32)
    book = read_codebook(payload)
    if book is not None:
        inlier_book = book[: 1 << p.bits]
        if p.outliers:
            outlier_book = book[1 << p.bits :]

    params = np.frombuffer(payload.section("params", first * per_row * 2, count * per_row * 2), dtype="<u2")
    params = params.astype(np.uint16).reshape(count, per_row)
    row_stride = packed_size(cols, p.bits)
    code_words = _words(payload.section("codes", first * row_stride, count * row_stride))

    segments = -(-cols // p.segment)
    starts = np.zeros(1, dtype=np.int64)
    gap_words, gap_bit_base, chain_status = np.zeros(1, dtype=np.uint32), 0, 0
    if p.outliers:
        count_words = _words(payload.section("counts"))
        starts, chain_status = segment_starts(count_words, record.rows * segments, p.count_bits, p.total_symbols)
        if chain_status == 0:
            starts = starts[first * segments : stop * segments + 1]
            word_first, word_stop = symbol_words(starts, p.gap_bits)
            gap_words = _words(payload.section("gaps", 4 * word_first, 4 * (word_stop - word_first)))
            gap_bit_base = word_first * 32
            if gap_words.size == 0:
                gap_words = np.zeros(1, dtype=np.uint32)

    out_kind = output_kind(record.dtype)
    out = np.empty((count, cols), dtype=np.uint32 if out_kind == OUT_F32 else np.uint16)
    wide, units = _wide_view(out, p.bits)
    with KERNEL_LOCK:
        flags = _decode_rows(out, wide, units, params, code_words, code_words.view(np.uint8), row_stride // 4, cols,
                             p.bits, inlier_book, outlier_book,
                             starts, gap_words, gap_bit_base, max(p.gap_bits, 1), p.segment, p.outliers,
                             -1 if payload.expected_outliers is None else payload.expected_outliers,
                             out_kind, chain_status == 0)  # fmt: skip
    raise_first(name, payload.row_first + first, flags, chain_status, payload.expected_outliers, payload.segment_first)
    if p.outliers and rows is None and not tail_is_zero(gap_words, p.total_symbols * p.gap_bits - gap_bit_base):
        raise gap_padding_error(name)
    shape = record.shape if rows is None else (count, cols)
    return out.view(dtypes.numpy_dtype(record.dtype)).reshape(shape)


def _wide_view(out: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """``out`` viewed in units of up to 8 bytes covering one byte of codes each, where possible."""
    cols = out.shape[1]
    if 8 % bits or (cols * bits) % 8:
        return np.zeros((0, 1), np.uint8), 1
    span = (8 // bits) * out.itemsize  # output bytes per byte of codes
    unit = min(8, span)
    if (cols * out.itemsize) % unit:
        return np.zeros((0, 1), np.uint8), 1
    return out.view(np.dtype(f"<u{unit}")), span // unit
