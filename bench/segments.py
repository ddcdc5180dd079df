"""Segments for tensor parallelism: which segment length (``--segment``) each split of common model
widths needs, and what the outlier positions cost at each segment length.

A row-parallel layer (attention output, MLP down) is split along its input columns, so each GPU's
columns must start on a segment boundary: the largest power of two that divides the split. The
positions' cost (segment counts and gap symbols, bits per weight) is measured by the encoder's
index plan on Student-t(4) rows of the split's width, 5% outliers, 64 rows.

    python bench/segments.py    (about 30 seconds)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icqcodec.encode import index_plan, outlier_count  # noqa: E402
from icqcodec.fitting import outlier_positions  # noqa: E402

ROWS, RATIO = 64, 0.05
MODELS = {  # row-parallel input widths: attention output (hidden size), MLP down (intermediate size)
    "Llama-3-8B, Mistral-7B": (4096, 14336),
    "Llama-3-70B": (8192, 28672),
    "Llama-3.1-405B": (16384, 53248),
    "Qwen2.5-7B": (3584, 18944),
    "Qwen2.5-72B": (8192, 29568),
}
DEGREES = (2, 4, 8)  # one GPU needs no split: any segment will do
MAX_LOG2 = 12  # longer segments save almost nothing more


def position_bits(cols: int, segment_log2: int, rng) -> tuple[float, int, int]:
    """Bits per weight of the positions, and the gap and count widths, at one segment length."""
    rows = rng.standard_t(4, size=(ROWS, cols)).astype(np.float32)
    plan = index_plan(outlier_positions(rows, cols, np.array([outlier_count(RATIO, cols)])), cols, segment_log2)
    segments = ROWS * -(-cols // (1 << segment_log2))
    return (segments * plan.count_bits + plan.total * plan.gap_bits) / rows.size, plan.gap_bits, plan.count_bits


def largest_segment_log2(cols: int) -> int:
    return min(MAX_LOG2, (cols & -cols).bit_length() - 1)


def main() -> None:
    rng = np.random.default_rng(0)
    print("| model | layer input | TP degree | columns per GPU | largest segment | positions, bits/weight |")
    print("|---|---|---|---|---|---|")
    for model, widths in MODELS.items():
        for width, layer in zip(widths, ("attention output", "MLP down"), strict=True):
            for degree in DEGREES:
                split = width // degree
                log2 = largest_segment_log2(split)
                note = "" if log2 >= 4 else " (below 16: not possible)"
                cost = f"{position_bits(split, log2, rng)[0]:.4f}" if log2 >= 4 else "-"
                print(f"| {model} | {layer} ({width}) | {degree} | {split} | {1 << log2}{note} | {cost} |", flush=True)
    print("\n| row width | segment | gap bits | count bits | positions, bits/weight |")
    print("|---|---|---|---|---|")
    for cols in (4096, 14336):
        for log2 in range(4, MAX_LOG2 + 1):
            bits, gap_bits, count_bits = position_bits(cols, log2, rng)
            print(f"| {cols} | {1 << log2} | {gap_bits} | {count_bits} | {bits:.4f} |", flush=True)


if __name__ == "__main__":
    main()
