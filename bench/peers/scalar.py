"""Round-to-nearest scalar peers: min-max (or icq's clipping search) per row or per group, fp16
scale and zero.

Groups run along a row (consecutive input channels of one output, the usual layout) or, AdaDim
style, along a column (consecutive output channels of one input channel); :func:`adadim` picks the
axis with the lower error for each matrix.
"""

from __future__ import annotations

import numpy as np

from icqcodec.fitting import CLIP_STARTS, REFITS, encode_rows

PARAM_BITS = 32  # a float16 scale and a float16 zero per group


def rtn_groups(matrix: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Min-max round-to-nearest over runs of ``group`` consecutive elements of each row."""
    g = matrix.reshape(-1, group).astype(np.float32)
    lo, hi = g.min(1, keepdims=True), g.max(1, keepdims=True)
    scale = ((hi - lo) / (2**bits - 1)).astype(np.float16).astype(np.float32)
    zero = lo.astype(np.float16).astype(np.float32)
    safe = np.where(scale > 0, scale, 1)
    q = np.clip(np.rint((g - zero) / safe), 0, 2**bits - 1)
    return (zero + q * scale).reshape(matrix.shape)


def clipped_ranges(groups: np.ndarray, bits: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """float16 (zero, scale) of each row of ``groups`` by icq's clipping search (clipped starts and
    least-squares refits, :mod:`icqcodec.fitting`), minimizing the ``weights``-weighted error."""
    g = np.ascontiguousarray(groups, dtype=np.float32)
    w = np.ones(g.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    base = np.arange(1 << bits, dtype=np.float64)
    _, params, _, _ = encode_rows(g, w, g.shape[1], np.zeros(1, np.int64), bits, base, base[:1], True, CLIP_STARTS,
                                  REFITS)  # fmt: skip
    zero, scale = params[:, 0].view(np.float16), params[:, 1].view(np.float16)
    return zero.astype(np.float32), scale.astype(np.float32)


def rtn_clipped(matrix: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, float]:
    """Round-to-nearest in groups of ``group`` with ranges from icq's clipping search; returns
    (reconstruction, bits/weight)."""
    g = matrix.reshape(-1, group)
    zero, scale = (v[:, None] for v in clipped_ranges(g, bits))
    q = np.clip(np.rint((g - zero) / np.where(scale > 0, scale, 1)), 0, 2**bits - 1)
    return (zero + q.astype(np.float32) * scale).reshape(matrix.shape), bits + PARAM_BITS / group


def rtn(matrix: np.ndarray, bits: int, group: int | None) -> tuple[np.ndarray, float]:
    """Row-wise groups (``None``: one group per row); returns (reconstruction, bits/weight)."""
    size = matrix.shape[1] if group is None else group
    return rtn_groups(matrix, bits, size), bits + PARAM_BITS / size


def adadim(matrix: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, float]:
    """The better of row-wise and column-wise groups for this matrix (one flag bit per matrix)."""
    along_rows = rtn_groups(matrix, bits, group)
    along_columns = rtn_groups(np.ascontiguousarray(matrix.T), bits, group).T
    error = [float(((m - matrix) ** 2).sum()) for m in (along_rows, along_columns)]
    best = along_rows if error[0] <= error[1] else along_columns
    return best, bits + PARAM_BITS / group + 1 / matrix.size
