"""Hypothesis strategies shared by the tests: shapes, options and arrays to encode."""

import numpy as np
from hypothesis import strategies as st

bits = st.integers(1, 8)
ratios = st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3, 1.0])
quantizers = st.sampled_from(["uniform", "codebook"])
output_dtypes = st.sampled_from(["float16", "bfloat16", "float32"])
shapes = st.one_of(
    st.tuples(st.integers(1, 300)),
    st.tuples(st.integers(1, 12), st.integers(1, 300)),
    st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 70)),
)


@st.composite
def weight_arrays(draw, shape=shapes):
    """Heavy-tailed float32 weights, seeded by hypothesis."""
    dims = draw(shape)
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 0.05, 1.0, 100.0]))
    rng = np.random.default_rng(seed)
    return (rng.standard_t(3, size=dims) * scale).astype(np.float32)


@st.composite
def encodings(draw):
    """(array, options) pairs covering every option of the icq coding."""
    return draw(weight_arrays()), dict(
        bits=draw(bits), outlier_ratio=draw(ratios), quantizer=draw(quantizers), dtype=draw(output_dtypes)
    )


@st.composite
def valid_streams(draw):
    """ICQ files built field by field from random codes, parameters and positions (not from the
    encoder): any f16 parameters, levels that overflow float16, every gap width and segment size."""
    from icqcodec.container import TensorRecord
    from icqcodec.encode import assemble
    from icqcodec.icq_params import IcqParams, codebook_size_for
    from icqcodec.index_coding import encode_segment, segment_bounds
    from icqcodec.jit import pack_fields

    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 90))
    bits = draw(st.integers(1, 8))
    kind = draw(st.integers(0, 1))
    outliers = draw(st.integers(0, cols))
    gap_bits = draw(st.integers(1, 16)) if outliers else 0
    segment_log2 = draw(st.integers(4, 7))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    def finite_f16(n):
        patterns = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
        patterns[(patterns & 0x7C00) == 0x7C00] &= 0xBBFF  # make non-finite patterns finite
        return patterns

    sections = {}
    if kind:
        sections["codebook"] = finite_f16(codebook_size_for(bits, kind, outliers)).tobytes()
    sections["params"] = finite_f16(rows * (4 if outliers else 2)).tobytes()
    codes = rng.integers(0, 1 << bits, size=(rows, cols))
    sections["codes"] = b"".join(pack_fields(row, bits) for row in codes)
    total = count_bits = 0
    if outliers:
        segment = 1 << segment_log2
        counts, symbols = [], []
        for _ in range(rows):
            chosen = np.sort(rng.choice(cols, size=outliers, replace=False))
            for start, length in segment_bounds(cols, segment):
                inside = [int(c) - start for c in chosen if start <= c < start + length]
                chain = encode_segment(inside, gap_bits)
                counts.append(len(chain))
                symbols.extend(chain)
        total = len(symbols)
        count_bits = max(1, max(counts).bit_length()) + draw(st.integers(0, 3))
        sections["counts"] = pack_fields(np.array(counts), count_bits)
        sections["gaps"] = pack_fields(np.array(symbols), gap_bits)
    params = IcqParams(bits, kind, gap_bits, count_bits, segment_log2, codebook_size_for(bits, kind, outliers),
                       outliers, total)  # fmt: skip
    dtype = draw(st.sampled_from([9, 10, 11]))
    record = TensorRecord("t", dtype, 11, 1, (rows, cols), params=params)
    return b"".join(assemble([(record, sections)], {}))
