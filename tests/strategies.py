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
