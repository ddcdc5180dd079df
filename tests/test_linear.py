"""The layout of an icq tensor for the linear kernels: its outlier index against the plain-Python
index coding of spec section 8, read as the kernels read it."""

import re

import numpy as np
import pytest

from icqcodec.bitstream import unpack
from icqcodec.container import bytes_reader, read_header, tensor_layout
from icqcodec.encode import EncodeOptions, assemble, encode_tensor
from icqcodec.index_coding import decode_segment
from icqcodec.linear import (
    GROUP_LOG2,
    INDEX_STAGE_BYTES,
    MMA_ROWS,
    MMA_WARPS,
    group_bytes,
    kernel_source,
    load_layout,
    mma_splits,
    outlier_index,
)


def encoded(w: np.ndarray, **options) -> bytes:
    return b"".join(assemble([encode_tensor("w", w, EncodeOptions(**options), coding="icq")], {}))


def expected_columns(layout) -> np.ndarray:
    """Every row's outlier columns in order, from the gap chains by the plain-Python decoder."""
    record, p = layout.record, layout.record.params
    sections = tensor_layout(record, layout.chunk_log2).sections
    section = lambda name: layout.payload[sections[name][0] : sum(sections[name])].tobytes()  # noqa: E731
    segments = -(-record.cols // p.segment)
    counts = unpack(section("counts"), record.rows * segments, p.count_bits)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    symbols = unpack(section("gaps"), p.total_symbols, p.gap_bits)
    out = []
    for row in range(record.rows):
        columns = []
        for s in range(segments):
            chain = [int(v) for v in symbols[starts[row * segments + s] : starts[row * segments + s + 1]]]
            length = min(p.segment, record.cols - s * p.segment)
            columns += [s * p.segment + c for c in decode_segment(chain, length, p.gap_bits)]
        out.append(columns)
    return np.array(out, np.int64).reshape(record.rows, p.outliers)


def read_as_kernels(layout) -> np.ndarray:
    """The columns as the kernels' IndexView reads them from the index buffer and the arguments."""
    record, p = layout.record, layout.record.params
    args = layout.arguments
    groups_at, width = args[3], args[8]
    per_row = -(-record.cols // (1 << GROUP_LOG2)) - 1
    offsets = layout.index[: record.rows * p.outliers].reshape(record.rows, p.outliers)
    starts = layout.index[groups_at : groups_at + record.rows * per_row * width].view(f"<u{width}")
    starts = starts.reshape(record.rows, per_row)
    out = np.zeros((record.rows, p.outliers), np.int64)
    for n in range(record.rows):
        start = lambda k: 0 if k <= 0 else p.outliers if k > per_row else int(starts[n, k - 1])  # noqa: B023, E731
        for k in range(per_row + 1):
            for e in range(start(k), start(k + 1)):
                out[n, e] = (k << GROUP_LOG2) | int(offsets[n, e])
    return out


CASES = [(2, 0.05, 10, 3000), (3, 0.01, 12, 5000), (4, 0.2, 4, 77), (1, 0.05, 6, 300), (2, 0.06, 8, 6000)]


@pytest.mark.parametrize("bits, ratio, segment_log2, cols", CASES)
def test_the_index_gives_every_outlier_column_in_order(rng, bits, ratio, segment_log2, cols):
    w = (rng.standard_t(4, size=(9, cols)) * 0.02).astype(np.float32)
    data = encoded(w, bits=bits, outlier_ratio=ratio, segment_log2=segment_log2)
    layout = load_layout(data, "w")
    expected = expected_columns(layout)
    header = read_header(*bytes_reader(data))
    index = outlier_index(layout.record, layout.chunk_log2, bytes_reader(data)[0], header.data_offset)
    assert np.array_equal(index.columns(), expected)
    assert np.array_equal(read_as_kernels(layout), expected)
    assert index.groups.dtype == np.dtype(f"u{group_bytes(layout.record.params.outliers)}")


def test_the_index_sections_are_aligned_for_the_kernels_copies(rng):
    w = (rng.standard_t(4, size=(7, 6000)) * 0.02).astype(np.float32)
    layout = load_layout(encoded(w, bits=2, outlier_ratio=0.06), "w")
    assert layout.record.params.outliers >= 256  # two-byte group starts
    assert layout.index_groups % 16 == 0 and layout.index.size % 16 == 0
    assert layout.index.size >= layout.index_groups + 7 * (-(-6000 // 256) - 1) * 2


def test_rows_of_65536_outliers_or_more_take_four_byte_group_starts(rng):
    w = (rng.standard_t(4, size=(2, 70000)) * 0.02).astype(np.float32)
    layout = load_layout(encoded(w, bits=2, outlier_ratio=1.0), "w")
    assert layout.record.params.outliers >= 1 << 16 and layout.arguments[8] == 4
    assert np.array_equal(read_as_kernels(layout), expected_columns(layout))


def test_a_tensor_without_outliers_has_an_empty_index(rng):
    w = (rng.standard_t(4, size=(4, 64)) * 0.02).astype(np.float32)
    layout = load_layout(encoded(w, bits=2, outlier_ratio=0.0), "w")
    assert layout.index.size == 16 and not layout.index.any()


@pytest.mark.parametrize("rows, cols", [(28672, 8192), (8192, 28672), (4096, 4096), (14336, 4096), (576, 1536)])
def test_the_split_fills_the_gpu_and_fits_the_index_in_shared_memory(rows, cols):
    outliers, multiprocessors = round(0.05 * cols), 132
    per_row = outliers + (-(-cols // 256) - 1) * group_bytes(outliers)
    fits = lambda s: min(rows, MMA_ROWS * MMA_WARPS // s) * per_row + 64 <= INDEX_STAGE_BYTES  # noqa: E731
    wave = 24 * multiprocessors  # warps
    tiles = -(-rows // MMA_ROWS)
    splits = mma_splits(rows, cols, outliers, multiprocessors)
    assert splits in (1, 2, 4, 8)
    assert fits(splits) or splits == MMA_WARPS
    assert splits == MMA_WARPS or tiles * splits * 2 > wave  # no more than about one wave of warps
    assert splits == 1 or tiles * splits <= wave or not fits(splits // 2)  # and no more splits than that needs


def test_the_source_shares_the_constants():
    source = kernel_source()
    for name, value in (("GROUP_LOG2", GROUP_LOG2), ("INDEX_STAGE_BYTES", INDEX_STAGE_BYTES),
                        ("MMA_ROWS", MMA_ROWS), ("MMA_WARPS", MMA_WARPS)):  # fmt: skip
        assert re.search(rf"#define {name} {value}\b", source), name
