"""Scalar codes and dequantization (spec section 7), in plain numpy.

The normative arithmetic: levels in binary32 as ``offset + B(q) * scale`` (the product is exact, so
fused multiply-add cannot change it), outliers sign-magnitude, then round-to-nearest-even into the
output dtype.
"""

from __future__ import annotations

import numpy as np

from . import dtypes
from .constants import KIND_UNIFORM


def inlier_levels(offset: np.float16, scale: np.float16, bits: int, book: np.ndarray | None) -> np.ndarray:
    """The ``2^bits`` binary32 inlier levels of a row: ``offset + B(q) * scale`` (spec section 7)."""
    base = np.arange(1 << bits, dtype=np.float32) if book is None else book.astype(np.float32)
    return np.float32(offset) + base * np.float32(scale)


def outlier_levels(offset: np.float16, scale: np.float16, bits: int, book: np.ndarray | None) -> np.ndarray:
    """The ``2^bits`` binary32 outlier levels: code ``q`` is sign ``q >> (bits-1)``, magnitude index
    ``q & (2^(bits-1) - 1)`` (spec section 7)."""
    half = 1 << (bits - 1)
    base = np.arange(half, dtype=np.float32) if book is None else book.astype(np.float32)
    magnitude = np.float32(offset) + base * np.float32(scale)
    return np.concatenate([magnitude, -magnitude])


def codebooks(kind: int, bits: int, outliers: int, raw: np.ndarray | None):
    """Split the codebook section into inlier and outlier books (None for the uniform kind)."""
    if kind == KIND_UNIFORM:
        return None, None
    inlier = raw[: 1 << bits]
    outlier = raw[1 << bits :] if outliers else None
    return inlier, outlier


def to_output(levels: np.ndarray, dtype_code: int) -> np.ndarray:
    """Round binary32 values to the output dtype, to nearest, ties to even (spec section 7)."""
    levels = np.asarray(levels, dtype=np.float32)
    # numpy's float16 cast and ml_dtypes' bfloat16 cast are both IEEE round-to-nearest-even
    with np.errstate(over="ignore"):
        return levels.astype(dtypes.numpy_dtype(dtype_code))
