"""Hessian-guided rounding (spec section 10, informative).

With the second moment ``H = E[x x^T]`` of a linear layer's input, a row's output error for a
rounding error ``d`` is ``d^T H d``. The codes of a row are chosen column by column against the
row's fixed levels (its inlier range, and its outlier range at the outliers), and each column's
rounding error is fed forward to the columns not yet rounded through the upper Cholesky factor of
the damped ``H^-1`` (GPTQ, Frantar et al. 2022; LDLQ in QuIP#), in activation order (descending
``H_jj``) or in natural order: the codes are stored in place, so the order is the encoder's choice.
A diagonal statistic (``E[x_j^2]`` alone, as llama.cpp's importance matrices) weighs the range fits
only.

Deterministic: every sum runs in a fixed order in numba, with no BLAS and no fast-math, so a
statistic gives the same codes on every machine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numba as nb
import numpy as np

from .fitting import code_and_value
from .float_bits import f16_bits_to_f32
from .jit import JIT

__all__ = ["DAMPING", "ORDERS", "Prepared", "prepare", "rounded_codes"]

DAMPING = 0.01  # of the mean diagonal, added to the diagonal (GPTQ's default)
ORDERS = ("activation", "natural")
DAMPING_RETRIES = 3  # tenfold increases of the damping before a statistic is refused
PIVOT_FLOOR = 1e-10  # a Cholesky pivot this small against its diagonal entry counts as singular


@nb.njit(**JIT)
def _mean(values):
    total = 0.0
    for v in values:
        total += v
    return total / values.size


@nb.njit(parallel=True, **JIT)
def _cholesky(a):
    """Lower Cholesky factor of the lower triangle of ``a``; (factor, whether ``a`` was positive
    definite, every pivot above ``PIVOT_FLOOR`` of its diagonal entry)."""
    n = a.shape[0]
    lower = np.zeros_like(a)
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= lower[j, k] * lower[j, k]
        if not s > PIVOT_FLOOR * a[j, j]:
            return lower, False
        d = np.sqrt(s)
        lower[j, j] = d
        for i in nb.prange(j + 1, n):
            t = a[i, j]
            for k in range(j):
                t -= lower[i, k] * lower[j, k]
            lower[i, j] = t / d
    return lower, True


@nb.njit(parallel=True, **JIT)
def _inverse_gram(lower):
    """``L^-T L^-1`` of a lower triangular ``L``: the inverse of ``L L^T``."""
    n = lower.shape[0]
    inverse_t = np.zeros_like(lower)  # row j: column j of L^-1 (so inverse_t is upper triangular)
    for j in nb.prange(n):
        inverse_t[j, j] = 1.0 / lower[j, j]
        for i in range(j + 1, n):
            t = 0.0
            for k in range(j, i):
                t -= lower[i, k] * inverse_t[j, k]
            inverse_t[j, i] = t / lower[i, i]
    gram = np.zeros_like(lower)
    for a in nb.prange(n):
        for b in range(a + 1):
            t = 0.0
            for k in range(a, n):  # (L^-1)[k, a] (L^-1)[k, b], nonzero for k >= max(a, b) = a
                t += inverse_t[a, k] * inverse_t[b, k]
            gram[a, b] = t
            gram[b, a] = t
    return gram


@dataclass(frozen=True)
class Prepared:
    """A tensor's statistic, ready for the encoder: positive per-column weights for the range fits
    and, for a full H, the column order and the upper Cholesky factor of the damped ``H^-1`` in that
    order."""

    weights: np.ndarray
    order: np.ndarray | None = None
    factor: np.ndarray | None = None
    damping: float = DAMPING


def prepare(statistic: np.ndarray, cols: int, *, damping: float = DAMPING, order: str = "activation",
            name: str = "tensor") -> Prepared:  # fmt: skip
    """Check a statistic (``(cols,)`` diagonal or ``(cols, cols)`` full) and damp it.

    Raises ValueError for a shape that does not match, values that are not finite or negative
    diagonals, an all-zero statistic, or one that stays singular after damping; warns when the
    damping had to grow.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    stat = np.asarray(statistic, dtype=np.float64)
    if stat.shape not in ((cols,), (cols, cols)):
        raise ValueError(f"tensor {name!r}: calibration statistic of shape {stat.shape}, expected ({cols},) or "
                         f"({cols}, {cols}) for its {cols} columns")  # fmt: skip
    if not np.isfinite(stat).all():
        raise ValueError(f"tensor {name!r}: the calibration statistic holds values that are not finite")
    diag = np.ascontiguousarray(stat.diagonal() if stat.ndim == 2 else stat)
    if (diag < 0).any():
        raise ValueError(f"tensor {name!r}: the calibration statistic has negative second moments")
    mean = _mean(diag)
    if not mean > 0.0:
        raise ValueError(f"tensor {name!r}: the calibration statistic is all zero (no calibration input reached it)")
    weights = diag + damping * mean
    if stat.ndim == 1:
        return Prepared(weights, damping=damping)
    permutation = np.argsort(-diag, kind="stable") if order == "activation" else np.arange(cols)
    h = np.ascontiguousarray(stat[np.ix_(permutation, permutation)])
    dead = diag[permutation] == 0.0  # inputs that never fired: round those columns alone
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    for attempt in range(DAMPING_RETRIES + 1):
        damped = h + np.diag(np.full(cols, damping * mean))
        lower, ok = _cholesky(damped)
        if ok:
            factor, ok = _cholesky(_inverse_gram(lower))
            if ok:
                return Prepared(weights, permutation, np.ascontiguousarray(factor.T), damping)
        if attempt < DAMPING_RETRIES:
            warnings.warn(f"tensor {name!r}: the calibration statistic is singular at damping {damping:g}; "
                          f"trying {damping * 10:g}", RuntimeWarning, stacklevel=2)  # fmt: skip
            damping *= 10
    raise ValueError(f"tensor {name!r}: the calibration statistic stays singular at damping {damping:g}")


@nb.njit(parallel=True, **JIT)
def rounded_codes(x, order, factor, params, positions, bits, inlier_base, outlier_base, uniform):
    """Every row's codes against its levels (f16 ``params``, outliers at ``positions``), chosen in
    ``order`` with each rounding error fed forward through ``factor`` (upper, in that order)."""
    rows, cols = x.shape
    codes = np.zeros((rows, cols), dtype=np.uint8)
    sign_bit = 1 << (bits - 1)
    for r in nb.prange(rows):
        is_outlier = np.zeros(cols, dtype=np.bool_)
        for k in range(positions.shape[1]):
            is_outlier[positions[r, k]] = True
        offset, scale = f16_bits_to_f32(params[r, 0]), f16_bits_to_f32(params[r, 1])
        o_offset, o_scale = f16_bits_to_f32(params[r, 2]), f16_bits_to_f32(params[r, 3])
        w = np.empty(cols, dtype=np.float64)
        for k in range(cols):
            w[k] = x[r, order[k]]
        for k in range(cols):
            c = order[k]
            code, value = code_and_value(w[k], is_outlier[c], offset, scale, o_offset, o_scale, inlier_base,
                                         outlier_base, uniform, sign_bit)  # fmt: skip
            codes[r, c] = code
            e = (w[k] - value) / factor[k, k]
            for m2 in range(k + 1, cols):
                w[m2] -= e * factor[k, m2]
    return codes
