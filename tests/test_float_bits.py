"""Spec section 7: the numba kernels' float rounding equals IEEE round-to-nearest-even casts."""

import ml_dtypes
import numba as nb
import numpy as np

from icqcodec.float_bits import f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits


@nb.njit
def _round_all(values):
    half = np.empty(values.size, np.uint16)
    brain = np.empty(values.size, np.uint16)
    for i in range(values.size):
        half[i] = f32_to_f16_bits(values[i])
        brain[i] = f32_to_bf16_bits(values[i])
    return half, brain


@nb.njit
def _widen_all(bits):
    out = np.empty(bits.size, np.float32)
    for i in range(bits.size):
        out[i] = f16_bits_to_f32(bits[i])
    return out


def test_rounding_matches_numpy_and_ml_dtypes():
    rng = np.random.default_rng(7)
    patterns = rng.integers(0, 2**32, size=400_000, dtype=np.uint64).astype(np.uint32)
    values = patterns.view(np.float32)
    edges = np.array([65504, 65519.996, 65520, 2**-14, 2**-24, 2**-25, 2**-25 * 1.0000001, 0.0, -0.0, 1 + 2**-11,
                      1 + 3 * 2**-11, 3.3895314e38], np.float32)  # fmt: skip
    values = np.concatenate([values[np.isfinite(values)], edges, -edges])
    half, brain = _round_all(values)
    with np.errstate(over="ignore"):
        assert (half == values.astype(np.float16).view(np.uint16)).all()
        assert (brain == values.astype(ml_dtypes.bfloat16).view(np.uint16)).all()


def test_widening_is_exact():
    bits = np.arange(1 << 16, dtype=np.uint16)
    assert (_widen_all(bits).view(np.uint32) == bits.view(np.float16).astype(np.float32).view(np.uint32)).all()
