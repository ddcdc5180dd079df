"""Hessian-guided rounding (spec section 10, informative).

With the second moment ``H = E[x x^T]`` of a linear layer's input, a row's output error for a
rounding error ``d`` is ``d^T H d``. The codes of a row are chosen column by column against the
row's fixed levels (its inlier range, and its outlier range at the outliers), each column's value
corrected by the rounding errors of the columns before it (LDLQ of QuIP, Chee et al. 2023, which
gives the codes of GPTQ, Frantar et al. 2022, without inverting H): with the damped
``H = (I + A) diag(p) (I + A)^T``, ``A`` strictly upper (one Cholesky factorization of the reversed
H), column k is rounded from ``w_k + sum_j (w_j - q_j) A[j, k]``. In activation order (descending
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

__all__ = ["DAMPING", "ORDERS", "Prepared", "prepare", "rounded_codes", "output_error"]

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


LANES = 8  # partial sums per dot product, combined in a fixed order (vectorizes, stays reproducible)


@nb.njit(inline="always", **JIT)
def _dot(a, b, n):
    """``sum(a[:n] * b[:n])`` in ``LANES`` interleaved partial sums, added pairwise in a fixed order."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    k = 0
    while k + LANES <= n:
        s0 += a[k] * b[k]
        s1 += a[k + 1] * b[k + 1]
        s2 += a[k + 2] * b[k + 2]
        s3 += a[k + 3] * b[k + 3]
        s4 += a[k + 4] * b[k + 4]
        s5 += a[k + 5] * b[k + 5]
        s6 += a[k + 6] * b[k + 6]
        s7 += a[k + 7] * b[k + 7]
        k += LANES
    tail = 0.0
    while k < n:
        tail += a[k] * b[k]
        k += 1
    return (((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))) + tail


@nb.njit(parallel=True, **JIT)
def _cholesky(a):
    """Lower Cholesky factor of the lower triangle of ``a``; (factor, whether ``a`` was positive
    definite, every pivot above ``PIVOT_FLOOR`` of its diagonal entry)."""
    n = a.shape[0]
    lower = np.zeros_like(a)
    for j in range(n):
        s = a[j, j] - _dot(lower[j], lower[j], j)
        if not s > PIVOT_FLOOR * a[j, j]:
            return lower, False
        d = np.sqrt(s)
        lower[j, j] = d
        for i in nb.prange(j + 1, n):
            lower[i, j] = (a[i, j] - _dot(lower[i], lower[j], j)) / d
    return lower, True


@nb.njit(parallel=True, **JIT)
def _feedback(lower):
    """From the lower Cholesky factor ``L`` of the reversed ``H``: ``H = V V^T`` with ``V`` upper,
    ``V[i, j] = L[n-1-i, n-1-j]``. Returns ``V`` with each column divided by its diagonal entry, the
    diagonal set to zero (the strictly upper feedback of LDLQ), and ``diag(V)^2``."""
    n = lower.shape[0]
    feedback = np.zeros_like(lower)
    pivots = np.empty(n)
    for j in range(n):
        pivots[j] = lower[n - 1 - j, n - 1 - j] ** 2
    for i in nb.prange(n):
        for j in range(i + 1, n):
            feedback[i, j] = lower[n - 1 - i, n - 1 - j] / lower[n - 1 - j, n - 1 - j]
    return feedback, pivots


@dataclass(frozen=True)
class Prepared:
    """A tensor's statistic, ready for the encoder: positive per-column weights for the range fits
    and, for a full H, the column order, and in that order the strictly upper feedback ``A`` and
    the pivots ``p`` of the damped ``H = (I + A) diag(p) (I + A)^T``."""

    weights: np.ndarray
    order: np.ndarray | None = None
    feedback: np.ndarray | None = None
    pivots: np.ndarray | None = None
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
    h = np.ascontiguousarray(h[::-1, ::-1])  # reversed: its lower factor, reversed, is upper
    for attempt in range(DAMPING_RETRIES + 1):
        damped = h + np.diag(np.full(cols, damping * mean))
        lower, ok = _cholesky(damped)
        if ok:
            feedback, pivots = _feedback(lower)
            return Prepared(weights, permutation, feedback, pivots, damping)
        if attempt < DAMPING_RETRIES:
            warnings.warn(f"tensor {name!r}: the calibration statistic is singular at damping {damping:g}; "
                          f"trying {damping * 10:g}", RuntimeWarning, stacklevel=2)  # fmt: skip
            damping *= 10
    raise ValueError(f"tensor {name!r}: the calibration statistic stays singular at damping {damping:g}")


@nb.njit(parallel=True, **JIT)
def rounded_codes(x, order, feedback, pivots, params, positions, bits, inlier_base, outlier_base, uniform):
    """Every row's codes against its levels (f16 ``params``, outliers at ``positions``), chosen in
    ``order``, each column's value corrected by the rounding errors of the columns before it through
    ``feedback`` (LDLQ: ``w_k + sum_j (w_j - q_j) A[j, k]``); and every row's output error
    ``d^T H d`` under the damped H, which is ``sum_k p_k r_k^2`` for the residuals ``r_k`` of the
    corrected values (so it costs nothing more)."""
    rows, cols = x.shape
    codes = np.zeros((rows, cols), dtype=np.uint8)
    errors = np.zeros(rows, dtype=np.float64)
    sign_bit = 1 << (bits - 1)
    for r in nb.prange(rows):
        is_outlier = np.zeros(cols, dtype=np.bool_)
        for k in range(positions.shape[1]):
            is_outlier[positions[r, k]] = True
        offset, scale = f16_bits_to_f32(params[r, 0]), f16_bits_to_f32(params[r, 1])
        o_offset, o_scale = f16_bits_to_f32(params[r, 2]), f16_bits_to_f32(params[r, 3])
        correction = np.zeros(cols, dtype=np.float64)
        for k in range(cols):
            c = order[k]
            w = np.float64(x[r, c])
            code, value = code_and_value(w + correction[k], is_outlier[c], offset, scale, o_offset, o_scale,
                                         inlier_base, outlier_base, uniform, sign_bit)  # fmt: skip
            codes[r, c] = code
            residual = w + correction[k] - value
            errors[r] += pivots[k] * residual * residual
            e = w - value
            for m in range(k + 1, cols):
                correction[m] += e * feedback[k, m]
    return codes, errors


def output_error(weights: np.ndarray, decoded: np.ndarray, statistic: np.ndarray | None = None, *,
                 damping: float = DAMPING) -> float:  # fmt: skip
    """``sum over rows of d^T (H + damping * mean(diag H) I) d`` for ``d = weights - decoded``: the
    error the encoder minimizes (with no statistic, ``H = I`` undamped: the squared error; with a
    diagonal, ``H`` is diagonal). In float64 through BLAS: a report, not an input of the codes."""
    d = np.asarray(weights, dtype=np.float64) - np.asarray(decoded, dtype=np.float64)
    d = d.reshape(-1, d.shape[-1])
    if statistic is None:
        return float(np.sum(d * d))
    stat = np.asarray(statistic, dtype=np.float64)
    diag = stat.diagonal() if stat.ndim == 2 else stat
    shift = damping * float(diag.mean())
    if stat.ndim == 1:
        return float(np.sum(d * d * (stat + shift)))
    return float(np.sum((d @ stat) * d) + shift * np.sum(d * d))
