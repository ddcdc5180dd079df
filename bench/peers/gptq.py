"""A GPTQ peer written from the paper (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", 2022): min-max groups of consecutive input channels, codes
chosen column by column with the error fed forward through the upper Cholesky factor of the damped
H^-1, activation order with static groups (group ranges fixed from the unquantized weights before
the columns are reordered, by icq's clipping search or min-max), damping 0.01 of the mean diagonal. float64 numpy; not bit-reproducible
across BLAS libraries (a peer, not an encoder).
"""

from __future__ import annotations

import numpy as np

from .scalar import clipped_ranges

PARAM_BITS = 32  # a float16 scale and a float16 zero per group
BLOCK = 128  # columns updated together


def gptq(weight: np.ndarray, h: np.ndarray, bits: int, group: int, *, damping: float = 0.01,
         act_order: bool = True, clip: bool = True) -> tuple[np.ndarray, float]:  # fmt: skip
    """The reconstruction of ``weight`` (rows x cols) and its bits per weight; ``clip``: group
    ranges from icq's clipping search weighted by the damped diagonal of H, else min-max."""
    w = weight.astype(np.float64).copy()
    rows, cols = w.shape
    h = h.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    # static groups: ranges of the unquantized weights, fp16 scale and zero
    starts = range(0, cols, group)  # the last group may be shorter (576 columns in groups of 128)
    if clip:
        weights = np.diag(h) + damping * np.mean(np.diag(h))
        ranges = [clipped_ranges(w[:, a : a + group], bits, weights[a : a + group]) for a in starts]
        zero = np.stack([z for z, _ in ranges], 1).astype(np.float64)
        scale = np.stack([s for _, s in ranges], 1).astype(np.float64)
    else:
        lo = np.stack([w[:, a : a + group].min(1) for a in starts], 1)
        hi = np.stack([w[:, a : a + group].max(1) for a in starts], 1)
        scale = ((hi - lo) / (2**bits - 1)).astype(np.float16).astype(np.float64)
        zero = lo.astype(np.float16).astype(np.float64)
    scale = np.where(scale > 0, scale, 1.0)
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(cols)
    h = h[np.ix_(order, order)]
    w = w[:, order]
    h[np.diag_indices(cols)] += damping * np.mean(np.diag(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: u.T @ u = H^-1
    q = np.empty_like(w)
    for start in range(0, cols, BLOCK):  # the paper's lazy batches: within a block, then one product
        stop = min(start + BLOCK, cols)
        block, errors = w[:, start:stop].copy(), np.empty((rows, stop - start))
        for i in range(stop - start):
            column = order[start + i] // group
            s, z = scale[:, column], zero[:, column]
            q[:, start + i] = z + np.clip(np.rint((block[:, i] - z) / s), 0, 2**bits - 1) * s
            errors[:, i] = (block[:, i] - q[:, start + i]) / u[start + i, start + i]
            block[:, i + 1 :] -= np.outer(errors[:, i], u[start + i, start + i + 1 : stop])
        w[:, stop:] -= errors @ u[start:stop, stop:]
    out = np.empty_like(q)
    out[:, order] = q
    return out.astype(np.float32), bits + PARAM_BITS * len(starts) / cols
