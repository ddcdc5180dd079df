"""Fitting the codes of one tensor (spec section 10, informative): per row, the outliers (the
largest magnitudes), an ``f16`` range for the inliers and one for the outlier magnitudes, fitted by
nearest-level assignment and least-squares refits from several clipped starts; for the codebook
kind, levels shared by the tensor (Lloyd).

Deterministic: the same input gives the same codes on every machine (no fast-math, rows
independent).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .float_bits import f16_bits_to_f32, f32_to_f16_bits
from .jit import JIT

__all__ = [
    "CLIP_STARTS",
    "REFITS",
    "LLOYD_ROUNDS",
    "nearest",
    "level",
    "outlier_positions",
    "code_and_value",
    "encode_rows",
    "fit_codebook",
]

CLIP_STARTS = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])  # fractions of the min-max range to start from
REFITS = 6  # least-squares refits per start
LLOYD_ROUNDS = 3  # codebook kind: alternations of shared levels and row ranges


@nb.njit(**JIT)
def _to_f16(value: float) -> float:
    """The binary16 value nearest to ``value`` (the stored parameter)."""
    return f16_bits_to_f32(f32_to_f16_bits(np.float32(value)))


@nb.njit(**JIT)
def nearest(value, offset, scale, base, uniform):
    """Index of the level ``offset + base[k] * scale`` nearest to ``value`` (base ascending)."""
    last = base.size - 1
    if scale <= 0.0 or last == 0:
        return 0
    t = (value - offset) / scale
    if uniform:
        k = np.rint(t)
        return int(min(max(k, 0.0), float(last)))
    lo, hi = 0, last
    while hi - lo > 1:  # binary search for the cell, then pick the nearer neighbour
        mid = (lo + hi) // 2
        if base[mid] <= t:
            lo = mid
        else:
            hi = mid
    return lo if t - base[lo] <= base[hi] - t else hi


@nb.njit(**JIT)
def level(offset, scale, base_value):
    # the decoder's arithmetic (spec section 7): binary32, exact product, one rounding
    return np.float32(offset) + np.float32(base_value) * np.float32(scale)


@nb.njit(**JIT)
def _cell_sums(counts, prefix, lo, width, offset, scale, base):
    """Squared error (less the sum of squares, the same for every fit) and least-squares sums of
    the values assigned to their nearest levels.

    The values come as a fine histogram (cumulative count and sum per bin), so one evaluation
    costs O(levels); a bin goes whole to the level nearest its centre.
    """
    bins = counts.size - 1
    error = sb = sbb = sx = sbx = 0.0
    begin = 0
    for k in range(base.size):
        end = bins
        if k + 1 < base.size:
            boundary = offset + 0.5 * (base[k] + base[k + 1]) * scale
            end = int(min(max(np.floor((boundary - lo) / width + 0.5), 0.0), float(bins)))
            end = max(end, begin)
        count = counts[end] - counts[begin]
        if count > 0:
            s1 = prefix[end] - prefix[begin]
            value = np.float64(level(offset, scale, base[k]))
            error += count * value * value - 2.0 * value * s1
            sb += count * base[k]
            sbb += count * base[k] * base[k]
            sx += s1
            sbx += base[k] * s1
        begin = end
    return error, sb, sbb, sx, sbx


HISTOGRAM_BINS = 2048


@nb.njit(**JIT)
def _fit_range(values, weights, base, starts, refits):
    """Fit ``f16`` (offset, scale) minimizing the ``weights``-weighted squared error of ``values``
    against the levels (weights of 1: plain squared error; the same arithmetic, so the same result).

    Returns (offset, scale). Alternates nearest-level assignment and a least-squares refit of offset
    and scale, from each clipped start; parameters are rounded to ``f16`` before assignment.
    """
    n = values.size
    if n == 0:
        return 0.0, 0.0
    lo, hi, total, n = values[0], values[0], 0.0, 0.0
    for k in range(values.size):
        v = values[k]
        lo, hi, total, n = min(lo, v), max(hi, v), total + weights[k] * v, n + weights[k]
    mean = total / n
    span = base[base.size - 1] - base[0]
    if span <= 0.0 or hi <= lo:  # a single level: the mean is optimal
        return _to_f16(mean), 0.0
    bins = HISTOGRAM_BINS
    width = (hi - lo) / bins
    inverse_width = 1.0 / width
    counts = np.zeros(bins + 1)
    prefix = np.zeros(bins + 1)
    for k in range(values.size):
        v = values[k]
        i = min(int((v - lo) * inverse_width), bins - 1) + 1
        counts[i] += weights[k]
        prefix[i] += weights[k] * v
    for i in range(bins):
        counts[i + 1] += counts[i]
        prefix[i + 1] += prefix[i]
    best_offset, best_scale, best_error = _to_f16(mean), 0.0, np.inf
    for fraction in starts:  # errors below omit the sum of squares: compare, don't report
        half = 0.5 * (hi - lo) * fraction
        scale = 2.0 * half / span
        offset = 0.5 * (hi + lo) - half - base[0] * scale
        for step in range(refits + 1):
            offset16, scale16 = _to_f16(offset), _to_f16(max(scale, 0.0))
            error, sb, sbb, sx, sbx = _cell_sums(counts, prefix, lo, width, offset16, scale16, base)
            if error < best_error:
                best_offset, best_scale, best_error = offset16, scale16, error
            variance = n * sbb - sb * sb
            if step == refits or variance <= 0.0:
                break
            scale = (n * sbx - sb * sx) / variance
            if scale <= 0.0:
                break
            offset = (sx - scale * sb) / n
    return best_offset, best_scale


SELECT_BINS = 1024


@nb.njit(**JIT)
def _select_outliers(row, count, out):
    """Columns of the ``count`` largest magnitudes, ascending; ties go to the lower column.

    A histogram of magnitudes finds the bin holding the count-th largest; only that bin is
    partitioned. Bins are monotone in magnitude, so the result equals a full sort's.
    """
    cols = row.size
    if count == 0:
        return
    top = 0.0
    for v in row:
        top = max(top, abs(v))
    threshold = 0.0
    if top > 0.0:
        scale = SELECT_BINS / top
        hist = np.zeros(SELECT_BINS, dtype=np.int64)
        for v in row:
            hist[min(int(abs(v) * scale), SELECT_BINS - 1)] += 1
        above, j = 0, SELECT_BINS - 1
        while above + hist[j] < count:
            above += hist[j]
            j -= 1
        candidates = np.empty(hist[j], dtype=row.dtype)
        k = 0
        for v in row:
            if min(int(abs(v) * scale), SELECT_BINS - 1) == j:
                candidates[k] = abs(v)
                k += 1
        need = count - above
        threshold = np.partition(candidates, candidates.size - need)[candidates.size - need]
    above = 0
    for v in row:
        if abs(v) > threshold:
            above += 1
    ties = count - above
    k = 0
    for c in range(cols):
        m = abs(row[c])
        if m > threshold or (m == threshold and ties > 0):
            if m == threshold:
                ties -= 1
            out[k] = c
            k += 1


@nb.njit(**JIT)
def _select_row(row, block, block_counts, out):
    """A row's outlier columns, ascending: the ``block_counts[b]`` largest magnitudes of each block
    of ``block`` columns (one block, the whole row, unless the outliers are fixed per segment)."""
    k = 0
    for b in range(block_counts.size):
        start = b * block
        count = block_counts[b]
        _select_outliers(row[start : min(start + block, row.size)], count, out[k : k + count])
        for j in range(k, k + count):
            out[j] += start
        k += count


@nb.njit(parallel=True, **JIT)
def outlier_positions(x, block, block_counts):
    """Every row's outlier columns, ascending (as the encoder picks them, :func:`_select_row`)."""
    positions = np.zeros((x.shape[0], block_counts.sum()), dtype=np.int64)
    for r in nb.prange(x.shape[0]):
        _select_row(x[r], block, block_counts, positions[r])
    return positions


@nb.njit(**JIT)
def code_and_value(v, outlier, offset, scale, o_offset, o_scale, inlier_base, outlier_base, uniform, sign_bit):
    """The code of ``v`` against its row's levels (sign-magnitude at an outlier) and the value it
    decodes to (the binary32 level, as float64)."""
    if outlier:
        m = nearest(abs(v), o_offset, o_scale, outlier_base, uniform)
        negative = v < 0.0 or (v == 0.0 and np.signbit(v))
        magnitude = np.float64(level(o_offset, o_scale, outlier_base[m]))
        return m | (sign_bit if negative else 0), -magnitude if negative else magnitude
    q = nearest(v, offset, scale, inlier_base, uniform)
    return q, np.float64(level(offset, scale, inlier_base[q]))


@nb.njit(parallel=True, **JIT)
def encode_rows(x, weights, block, block_counts, bits, inlier_base, outlier_base, uniform, starts, refits):
    """Codes, f16 parameter bits, outlier columns (``block_counts[b]`` in each block of ``block``
    columns) and ``weights``-weighted squared error of every row; ``weights`` (one per column,
    positive) weigh the range fits too."""
    rows, cols = x.shape
    outliers = block_counts.sum()
    codes = np.zeros((rows, cols), dtype=np.uint8)
    params = np.zeros((rows, 4), dtype=np.uint16)
    positions = np.zeros((rows, outliers), dtype=np.int64)
    errors = np.zeros(rows, dtype=np.float64)
    sign_bit = 1 << (bits - 1)
    for r in nb.prange(rows):
        row = x[r].astype(np.float64)
        is_outlier = np.zeros(cols, dtype=np.bool_)
        _select_row(x[r], block, block_counts, positions[r])
        for k in range(outliers):
            is_outlier[positions[r, k]] = True
        inliers = np.empty(cols - outliers, dtype=np.float64)
        inlier_weights = np.empty(cols - outliers, dtype=np.float64)
        magnitudes = np.empty(outliers, dtype=np.float64)
        magnitude_weights = np.empty(outliers, dtype=np.float64)
        i = j = 0
        for c in range(cols):
            if is_outlier[c]:
                magnitudes[j] = abs(row[c])
                magnitude_weights[j] = weights[c]
                j += 1
            else:
                inliers[i] = row[c]
                inlier_weights[i] = weights[c]
                i += 1
        o_offset = o_scale = 0.0
        offset, scale = _fit_range(inliers, inlier_weights, inlier_base, starts, refits)
        params[r, 0] = f32_to_f16_bits(np.float32(offset))
        params[r, 1] = f32_to_f16_bits(np.float32(scale))
        if outliers:
            o_offset, o_scale = _fit_range(magnitudes, magnitude_weights, outlier_base, starts, refits)
            params[r, 2] = f32_to_f16_bits(np.float32(o_offset))
            params[r, 3] = f32_to_f16_bits(np.float32(o_scale))
        total = 0.0
        for c in range(cols):
            code, value = code_and_value(row[c], is_outlier[c], offset, scale, o_offset, o_scale, inlier_base,
                                         outlier_base, uniform, sign_bit)  # fmt: skip
            codes[r, c] = code
            d = row[c] - value
            total += weights[c] * d * d
        errors[r] = total
    return codes, params, positions, errors


# ---- codebook kind: shared levels (Lloyd) --------------------------------------------------------


@nb.njit(**JIT)
def _lloyd(samples, weights, levels, rounds):
    """Weighted 1-D k-means from ascending ``levels``; returns ascending levels."""
    levels = levels.copy()
    k = levels.size
    for _ in range(rounds):
        sums = np.zeros(k)
        counts = np.zeros(k)
        for n in range(samples.size):
            v = samples[n]
            j = nearest(v, 0.0, 1.0, levels, False)
            sums[j] += weights[n] * v
            counts[j] += weights[n]
        for j in range(k):
            if counts[j] > 0:
                levels[j] = sums[j] / counts[j]
        levels.sort()
    return levels


@nb.njit(parallel=True, **JIT)
def _normalized(x, weights, params, positions, outliers):
    """Each element as a position on its range's base axis, ``(x - offset) / scale``, and its
    column's weight."""
    rows, cols = x.shape
    inl = np.full((rows, cols - outliers), np.nan)
    out = np.full((rows, max(outliers, 1)), np.nan)
    inl_weights = np.zeros((rows, cols - outliers))
    out_weights = np.zeros((rows, max(outliers, 1)))
    for r in nb.prange(rows):
        offset, scale = f16_bits_to_f32(params[r, 0]), f16_bits_to_f32(params[r, 1])
        o_offset, o_scale = f16_bits_to_f32(params[r, 2]), f16_bits_to_f32(params[r, 3])
        k = i = 0
        for c in range(cols):
            if k < outliers and positions[r, k] == c:
                if o_scale > 0:
                    out[r, k] = (abs(x[r, c]) - o_offset) / o_scale
                out_weights[r, k] = weights[c]
                k += 1
            else:
                if scale > 0:
                    inl[r, i] = (x[r, c] - offset) / scale
                inl_weights[r, i] = weights[c]
                i += 1
    return inl, out, inl_weights, out_weights


def fit_codebook(x, weights, outliers, bits, rows_fit):
    """Shared inlier and outlier levels by alternating Lloyd over normalized values (weighted by
    their columns' ``weights``) and row fits."""
    inlier_base = np.arange(1 << bits, dtype=np.float64)
    outlier_base = np.arange(1 << (bits - 1), dtype=np.float64)
    for _ in range(LLOYD_ROUNDS):
        _, params, positions, _ = rows_fit(inlier_base, outlier_base, False)
        inl, out, inl_weights, out_weights = _normalized(x, weights, params, positions, outliers)
        inlier_base = _book_from(inl, inl_weights, inlier_base)
        if outliers and outlier_base.size > 1:
            outlier_base = _book_from(out, out_weights, outlier_base)
    return inlier_base, outlier_base


def _book_from(normalized, weights, base):
    finite = np.isfinite(normalized)
    samples, sample_weights = normalized[finite], weights[finite]
    step = max(1, samples.size // 1_000_000)  # a deterministic subsample bounds the cost
    levels = _lloyd(samples[::step], sample_weights[::step], base, 10)
    levels = levels - levels[0]
    if levels[-1] > 0:
        levels *= (base.size - 1) / levels[-1]  # same span as the uniform kind
    return np.array([_f16(v) for v in levels])


def _f16(value: float) -> float:
    return float(np.float16(value))
