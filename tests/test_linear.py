"""The layout of an icq tensor for the linear kernels: its segment starts and its gap symbols'
codes, against the plain-Python index coding of spec section 8."""

import numpy as np
import pytest

from icqcodec.bitstream import packed_size, unpack
from icqcodec.container import tensor_layout
from icqcodec.encode import EncodeOptions, assemble, encode_tensor
from icqcodec.index_coding import decode_segment, escape_value
from icqcodec.linear import load_layout


def encoded(w: np.ndarray, **options) -> bytes:
    return b"".join(assemble([encode_tensor("w", w, EncodeOptions(**options), coding="icq")], {}))


def expected_symbol_codes(layout) -> np.ndarray:
    record, p = layout.record, layout.record.params
    sections = tensor_layout(record, layout.chunk_log2).sections
    section = lambda name: layout.payload[sections[name][0] : sum(sections[name])].tobytes()  # noqa: E731
    stride = packed_size(record.cols, p.bits)  # each row in whole words (spec section 5)
    codes = [unpack(section("codes")[r * stride : (r + 1) * stride], record.cols, p.bits) for r in range(record.rows)]
    symbols = unpack(section("gaps"), p.total_symbols, p.gap_bits)
    segments = -(-record.cols // p.segment)
    out = np.zeros(p.total_symbols, np.int64)
    for row in range(record.rows):
        for s in range(segments):
            first, end = layout.starts[row * segments + s], layout.starts[row * segments + s + 1]
            chain = [int(v) for v in symbols[first:end]]
            length = min(p.segment, record.cols - s * p.segment)
            columns = iter(decode_segment(chain, length, p.gap_bits))
            for i, v in enumerate(chain):
                if v != escape_value(p.gap_bits):
                    out[first + i] = codes[row][s * p.segment + next(columns)]
    return out


@pytest.mark.parametrize("bits, ratio, segment_log2, cols", [(2, 0.05, 10, 3000), (3, 0.01, 12, 5000),
                                                             (4, 0.2, 4, 77), (1, 0.05, 6, 300)])  # fmt: skip
def test_symbol_codes_are_the_codes_at_each_chain_position(rng, bits, ratio, segment_log2, cols):
    w = (rng.standard_t(4, size=(9, cols)) * 0.02).astype(np.float32)
    layout = load_layout(encoded(w, bits=bits, outlier_ratio=ratio, segment_log2=segment_log2), "w")
    p = layout.record.params
    got = unpack(layout.symbol_codes.astype("<u4").tobytes(), p.total_symbols, p.bits)
    expected = expected_symbol_codes(layout)
    assert np.array_equal(got, expected)
    assert got[expected != 0].size > 0


def test_a_tensor_without_outliers_has_no_symbol_codes(rng):
    w = (rng.standard_t(4, size=(4, 64)) * 0.02).astype(np.float32)
    layout = load_layout(encoded(w, bits=2, outlier_ratio=0.0), "w")
    assert layout.symbol_codes.size == 1 and layout.symbol_codes[0] == 0
