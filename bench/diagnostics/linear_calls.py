"""A few calls of ``IcqLinear`` on one shape, for a profiler to watch (Nsight Compute: the first
calls compile and warm up, so skip them with ``--launch-skip``).

    ncu --kernel-name regex:icq_mma --launch-skip 2 --launch-count 1 -o REPORT \
        python bench/diagnostics/linear_calls.py --shape 28672x8192 --bits 2 --rows 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from icqcodec.torch import IcqLinear  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="28672x8192")
    parser.add_argument("--bits", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--calls", type=int, default=4)
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.shape.split("x"))
    weight = (np.random.default_rng(0).standard_t(4, size=(rows, cols)) * 0.02).astype(np.float32)
    layer = IcqLinear.from_float(torch.from_numpy(weight), bits=args.bits, dtype="bfloat16", device="cuda")
    x = torch.randn(args.rows, cols, dtype=torch.bfloat16, device="cuda")
    for _ in range(args.calls):
        layer(x)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
