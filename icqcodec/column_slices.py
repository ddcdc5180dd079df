"""Column slices of an icq tensor (spec section 9.4): the segments that cover a column range, read
as a matrix of their own, which every decoder decodes as it decodes rows (and
:func:`icqcodec.sub_records.slice_record` writes as an icq tensor of its own).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numba as nb
import numpy as np

from . import payload_checks as checks
from .bitstream import packed_size
from .container import Layout, TensorRecord, tensor_layout
from .jit import JIT, KERNEL_LOCK, copy_bits, pack_fields
from .payload import Payload

__all__ = ["ColumnWindow", "column_window", "covering_columns", "check_columns"]


@dataclass(frozen=True)
class ColumnWindow:
    """Rows ``row_first`` on and the columns of segments ``segment_first`` on of an icq tensor, as
    the body sections of a matrix of their own (``record``, ``layout``, :meth:`section`: what the
    decoders read of a payload). Its symbols are the chains of those segments, unchanged."""

    record: TensorRecord
    layout: Layout
    sections: dict[str, bytes]
    row_first: int
    segment_first: int
    column_first: int
    # a row's other segments are not read, so its outlier count is not checked (spec section 9.4)
    expected_outliers: int | None = None

    def section(self, name: str, start: int = 0, size: int | None = None) -> bytes:
        data = self.sections[name]
        return data[start : len(data) if size is None else start + size]


def check_columns(record: TensorRecord, columns: tuple[int, int]) -> None:
    """``columns`` is a range ``c0 <= c1`` of the tensor's last axis (ValueError otherwise)."""
    c0, c1 = columns
    if not 0 <= c0 <= c1 <= record.cols:
        raise ValueError(f"columns {c0}:{c1} are not a range of tensor {record.name!r}'s {record.cols} columns")


def covering_columns(record: TensorRecord, columns: tuple[int, int]) -> tuple[int, int]:
    """The columns of the segments that cover ``columns`` (spec section 9.4)."""
    segment = record.params.segment
    c0, c1 = columns
    return c0 // segment * segment, min(-(-c1 // segment) * segment, record.cols)


@nb.njit(parallel=True, **JIT)
def _window_codes(codes, row_words, bit_first, bit_count, window_row_words):
    """Bits ``bit_first`` to ``bit_first + bit_count - 1`` of every code row, each row repacked
    into whole words of its own (so rows run in parallel)."""
    rows = codes.size // row_words
    out = np.zeros(rows * window_row_words, dtype=np.uint32)
    for r in nb.prange(rows):
        copy_bits(codes, r * row_words * 32 + bit_first, out, r * window_row_words * 32, bit_count)
    return out


@nb.njit(**JIT)
def _window_gaps(out, gaps, gap_bit_base, gap_bits, starts, segments, s0, s1, rows):
    """Into ``out``, the gap symbols of segments ``s0`` to ``s1 - 1`` of each row, rows one after
    another (one thread: the rows' runs share their boundary words)."""
    position = 0
    for r in range(rows):
        first, stop = starts[r * segments + s0], starts[r * segments + s1]
        copy_bits(gaps, first * gap_bits - gap_bit_base, out, position, (stop - first) * gap_bits)
        position += (stop - first) * gap_bits


def _words(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u4").astype(np.uint32, copy=False)


def column_window(payload: Payload, rows: tuple[int, int] | None, columns: tuple[int, int]) -> ColumnWindow:
    """The segments of rows ``rows`` that cover ``columns`` (all rows when None), every chunk they
    touch verified, the segment counts' running sum and padding checked, and the code padding of
    each row when the window holds its last column (spec section 9.4)."""
    record, p = payload.record, payload.record.params
    check_columns(record, columns)
    first, stop = rows if rows is not None else (0, record.rows)
    count, cols = stop - first, record.cols
    col_first, col_stop = covering_columns(record, columns)
    width = col_stop - col_first
    segments, s0, s1 = -(-cols // p.segment), col_first // p.segment, -(-col_stop // p.segment)
    per_row = 4 if p.outliers else 2
    row_stride = packed_size(cols, p.bits)

    # every byte read first, its chunks verified (spec section 4.4), then the checks
    sections = {}
    if "codebook" in payload.layout.sections:
        sections["codebook"] = bytes(payload.section("codebook"))
    sections["params"] = bytes(payload.section("params", first * per_row * 2, count * per_row * 2))
    codes = _words(payload.section("codes", first * row_stride, count * row_stride))
    if p.outliers:
        starts, status = checks.segment_starts(_words(payload.section("counts")), record.rows * segments,
                                               p.count_bits, p.total_symbols)  # fmt: skip
        if status == 0:
            local = starts[first * segments : stop * segments + 1]
            word_first, word_stop = checks.symbol_words(local, p.gap_bits)
            gaps = _words(payload.section("gaps", 4 * word_first, 4 * (word_stop - word_first)))

    flags = np.zeros((count, 4), np.int64)
    if col_stop == cols:  # the window holds the rows' last codes, and so their padding
        flags[:, 1] = checks.code_padding_set(codes, count, cols, p.bits)
    if flags[:, 1].any() or (p.outliers and status):
        checks.raise_first(record.name, first, flags, status if p.outliers else 0, p.outliers)

    window_stride = packed_size(width, p.bits)
    with KERNEL_LOCK:
        sections["codes"] = _window_codes(codes, row_stride // 4, col_first * p.bits, width * p.bits,
                                          window_stride // 4).astype("<u4").tobytes()  # fmt: skip
    params = dataclasses.replace(p, total_symbols=0)
    if p.outliers:
        grid = local[:-1].reshape(count, segments)
        ends = local[1:].reshape(count, segments)
        counts = (ends - grid)[:, s0:s1]
        total = int(counts.sum())
        sections["counts"] = pack_fields(counts.ravel().astype(np.uint32), p.count_bits)
        window_gaps = np.zeros(packed_size(total, p.gap_bits) // 4, dtype=np.uint32)
        _window_gaps(window_gaps, gaps, word_first * 32, p.gap_bits, local, segments, s0, s1, count)
        sections["gaps"] = window_gaps.astype("<u4").tobytes()
        params = dataclasses.replace(p, total_symbols=total)
    window = dataclasses.replace(record, shape=(count, width), offset=0, size=0, table_crc=0, params=params)
    layout = tensor_layout(window, payload.header.chunk_log2)
    return ColumnWindow(window, layout, sections, first, s0, col_first)
