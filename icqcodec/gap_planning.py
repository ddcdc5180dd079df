"""Planning the index coding of outlier positions (spec sections 8 and 10, informative): the
gaps between outliers, the gap width that makes the positions smallest, and the gap symbols.

The decoding side of section 8 is :mod:`icqcodec.index_coding`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .bitstream import packed_size
from .constants import MAX_GAP_BITS
from .jit import JIT

__all__ = ["outlier_gaps", "choose_gap_bits", "gap_symbols"]


def outlier_gaps(positions, segment_log2):
    """Per outlier: its segment (row-major index) and the inliers before it in its segment."""
    rows, count = positions.shape
    segment = positions >> segment_log2
    previous = np.concatenate([np.full((rows, 1), -1), positions[:, :-1]], axis=1)
    same = np.concatenate([np.zeros((rows, 1), bool), segment[:, 1:] == segment[:, :-1]], axis=1)
    start = np.where(same, previous + 1, segment << segment_log2)
    return segment, positions - start


def choose_gap_bits(gaps, segment_ids, segment_count, rows):
    """The gap width (and count width) that minimizes sections 4 and 5 (spec section 10)."""
    counts = _symbol_counts(gaps, segment_ids, segment_count, rows)
    best = None
    for gap_bits in range(1, MAX_GAP_BITS + 1):
        count_bits = max(1, int(counts[gap_bits].max()).bit_length())
        size = packed_size(segment_count, count_bits) + packed_size(int(counts[gap_bits].sum()), gap_bits)
        if best is None or size < best[0]:
            best = (size, gap_bits, count_bits, counts[gap_bits])
    return best[1:]


@nb.njit(parallel=True, **JIT)
def _symbol_counts(gaps, segment_ids, segment_count, rows):
    """Symbols per segment for every gap width: a gap ``d`` takes ``d // M + 1`` symbols.

    ``gaps`` and ``segment_ids`` are row-major with the same number of outliers per row, so rows
    (and their segments) are counted in parallel. Escapes are counted only for widths whose
    escape value ``M`` does not exceed the gap.
    """
    escapes = np.zeros((segment_count, MAX_GAP_BITS + 1), dtype=np.int64)
    outliers = np.zeros(segment_count, dtype=np.int64)
    per_row = gaps.size // rows
    for r in nb.prange(rows):
        for i in range(r * per_row, (r + 1) * per_row):
            segment, d = segment_ids[i], np.uint64(gaps[i])
            outliers[segment] += 1
            for gap_bits in range(1, MAX_GAP_BITS + 1):
                escape = np.uint64((1 << gap_bits) - 1)
                if d < escape:
                    break
                escapes[segment, gap_bits] += np.int64(d // escape)
    counts = np.empty((MAX_GAP_BITS + 1, segment_count), dtype=np.int64)
    for gap_bits in range(MAX_GAP_BITS + 1):
        for j in range(segment_count):
            counts[gap_bits, j] = outliers[j] + escapes[j, gap_bits]
    return counts


@nb.njit(**JIT)
def gap_symbols(gaps, gap_bits, total):
    escape = (1 << gap_bits) - 1
    symbols = np.empty(total, dtype=np.uint32)
    k = 0
    for d in gaps:
        for _ in range(d // escape):
            symbols[k] = escape
            k += 1
        symbols[k] = d % escape
        k += 1
    return symbols
