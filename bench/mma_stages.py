"""Where the tensor-core kernel's time goes, on the GPU: the whole kernel beside its stages.

For one shape (default 28672x8192, 2 bits, Student-t(4) weights, 5% outliers) and 1, 4 and 16 rows
of bfloat16 activations: the whole kernel (``torch.ops.icqcodec.linear``); the inliers alone (the
same weights encoded without outliers); the kernel compiled without its outlier pass
(``-DMMA_OUTLIERS=0``: no index staged, no correction added); then the whole kernel compiled
with other values of its tunables (``--variant MMA_DEPTH=4,MMA_MIN_BLOCKS=3``: ``-D`` options), each
with its largest difference from the kernel as built (relative to the output's largest value: 0
where only the speed may change), and with each split of a tile's columns over 1, 2, 4 and 8 warps
(``--splits``). Times as in ``bench/gemv.py`` (CUDA graph replays over copies
that leave the L2).

    python bench/mma_stages.py [--shape 28672x8192] [--bits 2] [--variant NAME=VALUE[,NAME=VALUE] ...] [--splits]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gemv import CACHE_BYTES, copy_of, timed  # noqa: E402

from icqcodec.torch import SPLITS, IcqLinear, mma_linear  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="28672x8192")
    parser.add_argument("--bits", type=int, default=2)
    parser.add_argument("--variant", nargs="*", default=[], help="tunables, NAME=VALUE[,NAME=VALUE]")
    parser.add_argument("--splits", action="store_true", help="also every split of a tile's columns")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.shape.split("x"))
    rng = np.random.default_rng(0)
    weight = torch.from_numpy((rng.standard_t(4, size=(rows, cols)) * 0.02).astype(np.float32))
    print(f"{torch.cuda.get_device_name()}; {args.shape}, {args.bits} bits\n")
    print("| stage | rows | time us | difference |\n|---|---|---|---|")
    layers = {}
    for label, ratio in (("whole kernel", 0.05), ("inliers alone (no outliers)", 0.0)):
        layer = IcqLinear.from_float(weight, bits=args.bits, outlier_ratio=ratio, dtype="bfloat16", device="cuda")
        layers[label] = [layer] + [copy_of(layer) for _ in range(-(-CACHE_BYTES // layer.payload.numel()) - 1)]
    variants = [(variant, None) for variant in ("", "MMA_OUTLIERS=0", *args.variant)]
    variants += [("", splits) for splits in (SPLITS if args.splits else ())]
    for variant, splits in variants:
        options = tuple(f"-D{define}" for define in variant.split(",") if define)
        plain = not variant and splits is None
        for label in ("whole kernel", "inliers alone (no outliers)") if plain else ("whole kernel",):
            copies = layers[label]
            for m in (1, 4, 16):
                x = torch.randn(m, cols, dtype=torch.bfloat16, device="cuda")

                def run(w, x=x, options=options, splits=splits):
                    return mma_linear(x, w.payload, w.index, w.tensor_args, None, options, splits)

                built = mma_linear(x, copies[0].payload, copies[0].index, copies[0].tensor_args, None).float()
                difference = ((run(copies[0]).float() - built).abs().max() / built.abs().max()).item()
                seconds = timed([lambda w=w: run(w) for w in copies])
                name = label + (f", {variant}" if variant else "") + (f", {splits} splits" if splits else "")
                print(f"| {name} | {m} | {seconds * 1e6:.1f} | {difference:.2e} |", flush=True)


if __name__ == "__main__":
    main()
