"""Spec section 7: the levels in binary32, sign-magnitude outliers, the rounding to the output dtype."""

import ml_dtypes
import numpy as np

from icqcodec import dtypes
from icqcodec.constants import KIND_CODEBOOK, KIND_UNIFORM
from icqcodec.scalar_codes import codebooks, inlier_levels, outlier_levels, to_output


def test_uniform_inlier_levels_are_offset_plus_code_times_scale():
    levels = inlier_levels(np.float16(-1.5), np.float16(0.25), 3, None)
    assert levels.dtype == np.float32
    assert levels.tolist() == [-1.5 + 0.25 * q for q in range(8)]


def test_codebook_levels_scale_the_book():
    book = np.array([0.0, 0.5, 2.0, 3.0], np.float16)
    assert inlier_levels(np.float16(1.0), np.float16(2.0), 2, book).tolist() == [1.0, 2.0, 5.0, 7.0]


def test_outliers_are_sign_magnitude_and_keep_the_sign_of_zero():
    levels = outlier_levels(np.float16(0.0), np.float16(1.0), 3, None)
    assert levels.tolist() == [0.0, 1.0, 2.0, 3.0, -0.0, -1.0, -2.0, -3.0]
    assert np.signbit(levels[4]) and not np.signbit(levels[0])  # code 0b100: magnitude +0, sign 1
    one_bit = outlier_levels(np.float16(0.5), np.float16(7.0), 1, None)
    assert one_bit.tolist() == [0.5, -0.5]  # bits = 1: the magnitude index is always 0


def test_codebooks_split_inlier_and_outlier_entries():
    raw = np.arange(6, dtype=np.float16)
    inlier, outlier = codebooks(KIND_CODEBOOK, 2, 3, raw)
    assert inlier.tolist() == [0, 1, 2, 3] and outlier.tolist() == [4, 5]
    assert codebooks(KIND_CODEBOOK, 2, 0, raw[:4])[1] is None
    assert codebooks(KIND_UNIFORM, 2, 3, None) == (None, None)


def test_product_is_exact_so_one_rounding_decides():
    # 11-bit significands: f16 scale times an integer below 256 is exact in binary32
    scale, offset = np.float16(0.0009765625 * 1023), np.float16(-3.14)
    for q in (0, 1, 127, 255):
        exact = np.float64(offset) + np.float64(q) * np.float64(scale)
        assert inlier_levels(offset, scale, 8, None)[q] == np.float32(exact)


def test_float16_rounding_ties_to_even_and_overflows_at_65520():
    values = np.array([65504.0, 65519.99, 65520.0, -65520.0, 1 + 2**-11, 1 + 3 * 2**-11, 2**-25, 2**-24], np.float32)
    out = to_output(values, dtypes.FLOAT16)
    assert out.dtype == np.float16
    assert out.tolist()[:4] == [65504.0, 65504.0, np.inf, -np.inf]
    assert out.tolist()[4:] == [1.0, 1 + 2 * 2**-10, 0.0, 2**-24]


def test_bfloat16_rounding_is_the_spec_formula():
    rng = np.random.default_rng(3)
    values = (rng.standard_normal(10_000) * 10.0 ** rng.integers(-30, 30, 10_000)).astype(np.float32)
    u = values.view(np.uint32).astype(np.uint64)
    expected = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    out = to_output(values, dtypes.BFLOAT16)
    assert out.dtype == ml_dtypes.bfloat16 and (out.view(np.uint16) == expected).all()


def test_float32_output_is_unchanged():
    values = np.array([1e-40, -0.0, 3.4e38], np.float32)
    assert to_output(values, dtypes.FLOAT32).tobytes() == values.tobytes()
