"""Correctness of ``IcqLinear`` on the GPU against ``x @ L.T`` in float64, on fresh random weights,
activations and shapes every run (``--seed`` to repeat one).

Each case draws a code width (1-8), a kind, an outlier ratio (0, 1%, 5%, 20%), a segment of 16 to
4096 columns, a shape of up to ``--max-cols`` columns, and rows of activations (1, 4 and 16 through
the fused kernel, 33 through the decode-then-cuBLAS path; the tensor-core kernel also at each split
of a tile's columns over 1, 2, 4 and 8 warps), in float16 and bfloat16; outputs are
poisoned (the allocator's next block filled with NaN) before each call. Passes when the relative
error ``||y - y_ref|| / ||y_ref||`` is at most 1e-3 (float16) and 8e-3 (bfloat16) everywhere, and
``dequantize()`` equals the numba decoder's bits. Run it under ``compute-sanitizer`` for memcheck
and racecheck (``--cases`` smaller there: it is slow).

    python bench/linear_check.py [--cases 200] [--max-cols 8192] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icqcodec.linear import MAX_FUSED_ROWS  # noqa: E402
from icqcodec.torch import MMA, SPLITS, IcqLinear, mma_linear  # noqa: E402

TOLERANCE = {torch.float16: 1e-3, torch.bfloat16: 8e-3}
RATIOS = (0.0, 0.01, 0.05, 0.2)
ACTIVATION_ROWS = (1, 4, 16, 33)


def poisoned_allocator(device, size: int = 1 << 22) -> None:
    """Fill the allocator's next free block with NaN, so an output that is not written shows."""
    torch.full((size,), float("nan"), dtype=torch.float32, device=device)


def case(rng: np.random.Generator, max_cols: int) -> dict:
    cols = int(rng.choice([rng.integers(1, 64), rng.integers(64, max_cols + 1)]))
    rows = int(rng.integers(1, 300))
    return {"rows": rows, "cols": cols, "bits": int(rng.integers(1, 9)), "quantizer": str(rng.choice(["uniform", "codebook"])),
            "outlier_ratio": float(rng.choice(RATIOS)), "segment_log2": int(rng.integers(4, 13))}  # fmt: skip


def check(c: dict, rng: np.random.Generator, device) -> float:
    """The worst error ratio to its tolerance over the case's dtypes and rows of activations."""
    weight = torch.from_numpy((rng.standard_t(4, size=(c["rows"], c["cols"])) * 0.02).astype(np.float32))
    bias = torch.from_numpy(rng.standard_normal(c["rows"]).astype(np.float32))
    layer = IcqLinear.from_float(weight, bias, bits=c["bits"], outlier_ratio=c["outlier_ratio"],
                                 quantizer=c["quantizer"], segment_log2=c["segment_log2"], dtype="float32",
                                 device=device)  # fmt: skip
    levels = layer.dequantize()
    assert np.array_equal(levels.cpu().numpy().view(np.uint32), layer.layout.decode().view(np.uint32))
    worst = 0.0
    for dtype, tolerance in TOLERANCE.items():
        for m in ACTIVATION_ROWS:
            x = torch.from_numpy(rng.standard_normal((m, c["cols"])).astype(np.float32)).to(device, dtype)
            reference = x.double() @ levels.double().T + layer.bias.to(dtype).double()
            outputs = [lambda x=x: layer(x)]
            if layer.tensor_args[MMA] and m <= MAX_FUSED_ROWS:  # the tensor-core kernel's every split
                bias = layer.bias.to(dtype)
                outputs += [lambda x=x, s=s, b=bias: mma_linear(x, layer.payload, layer.index, layer.tensor_args, b,
                                                                splits=s) for s in SPLITS]  # fmt: skip
            for output in outputs:
                poisoned_allocator(device)
                y = output().double()
                error = (torch.linalg.norm(y - reference) / torch.linalg.norm(reference)).item()
                worst = max(worst, error / tolerance if np.isfinite(error) else np.inf)
    return worst


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--max-cols", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = int(np.random.SeedSequence().entropy % (1 << 32)) if args.seed is None else args.seed
    rng = np.random.default_rng(seed)
    device = torch.device("cuda")
    start, failures, worst = time.perf_counter(), 0, 0.0
    covered = {"bits": set(), "quantizer": set(), "outlier_ratio": set(), "segment_log2": set()}
    for index in range(args.cases):
        c = case(rng, args.max_cols)
        ratio = check(c, rng, device)
        worst = max(worst, ratio)
        for key in covered:
            covered[key].add(c[key])
        if not ratio <= 1.0:
            failures += 1
            print(f"FAIL case {index}: {c}: error {ratio:.3g} x its tolerance", flush=True)
    torch.cuda.synchronize()
    print(f"seed {seed}: {args.cases} cases, {failures} failed; worst error {worst:.3g} x its tolerance; "
          f"{time.perf_counter() - start:.0f} s on {torch.cuda.get_device_name()}")  # fmt: skip
    print("covered: " + "; ".join(f"{k} {sorted(v)}" for k, v in covered.items()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
