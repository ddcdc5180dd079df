"""Bit-level float rounding for the numba kernels (spec section 7).

binary32 to binary16 and to bfloat16, round to nearest, ties to even, on the bit patterns; the
reference decoder uses numpy's and ml_dtypes' casts instead, so the two are checked against each
other.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .jit import JIT


@nb.njit(**JIT)
def f32_to_f16_bits(value: np.float32) -> np.uint16:
    """binary16 pattern of a finite binary32, round to nearest even; overflow gives infinity."""
    u = np.uint32(np.array([value], dtype=np.float32).view(np.uint32)[0])
    sign = np.uint32((u >> 16) & 0x8000)
    magnitude = u & np.uint32(0x7FFFFFFF)
    if magnitude >= np.uint32(0x477FF000):  # >= 65520: rounds to infinity
        return np.uint16(sign | 0x7C00)
    if magnitude < np.uint32(0x38800000):  # below 2^-14: subnormal or zero in binary16
        exponent = magnitude >> 23
        if exponent < 102:  # below 2^-25: rounds to zero
            return np.uint16(sign)
        mantissa = (magnitude & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
        shift = np.uint32(126 - exponent)  # 14..24
        half = np.uint32(1) << (shift - np.uint32(1))
        rest = mantissa & ((np.uint32(1) << shift) - np.uint32(1))
        result = mantissa >> shift
        if rest > half or (rest == half and (result & np.uint32(1))):
            result += np.uint32(1)
        return np.uint16(sign | result)
    # normal: rebias exponent (127 -> 15) and round off 13 mantissa bits
    rounded = magnitude + np.uint32(0xFFF) + ((magnitude >> 13) & np.uint32(1))
    return np.uint16(sign | ((rounded - np.uint32(0x38000000)) >> 13))


@nb.njit(**JIT)
def f32_to_bf16_bits(value: np.float32) -> np.uint16:
    """bfloat16 pattern of a finite binary32: ``(u + 0x7FFF + ((u >> 16) & 1)) >> 16``."""
    u = np.uint32(np.array([value], dtype=np.float32).view(np.uint32)[0])
    return np.uint16((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16)


@nb.njit(**JIT)
def f16_bits_to_f32(bits: np.uint16) -> np.float32:
    """Exact binary32 value of a binary16 pattern."""
    h = np.uint32(bits)
    sign = (h & np.uint32(0x8000)) << 16
    exponent = (h >> 10) & np.uint32(0x1F)
    mantissa = h & np.uint32(0x3FF)
    if exponent == 0:
        value = np.float32(mantissa) * np.float32(2.0**-24)
        return -value if sign else value
    if exponent == 31:
        u = sign | np.uint32(0x7F800000) | (mantissa << 13)
    else:
        u = sign | ((exponent + np.uint32(112)) << 23) | (mantissa << 13)
    return np.array([u], dtype=np.uint32).view(np.float32)[0]


@nb.njit(**JIT)
def f16_is_finite(bits: np.uint16) -> bool:
    return (np.uint32(bits) & np.uint32(0x7C00)) != np.uint32(0x7C00)
