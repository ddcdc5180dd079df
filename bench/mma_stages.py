"""Where the tensor-core kernel's time goes, on the GPU: the whole kernel beside its stages run apart.

For one shape (default 28672x8192, 2 bits, Student-t(4) weights, 5% outliers) and 1, 4 and 16 rows
of bfloat16 activations: the whole kernel (``torch.ops.icqcodec.linear`` with the tensor-core kernel
from one row on); the inliers alone (the same weights encoded without outliers); and a kernel made
of the module's own outlier stage (``stage_outliers`` and ``row_corrections``) with no inlier pass,
with the outliers' codes streamed and read in their rows, and staging alone; then the whole kernel
compiled with other values of its tunables (``--variant OUTLIER_BATCH=4,MMA_MIN_BLOCKS=3``: ``-D``
options), each with its largest difference from the kernel as built (relative to the output's
largest value: 0 where only the speed may change). Times as in ``bench/gemv.py`` (CUDA graph
replays over copies that leave the L2).

    python bench/mma_stages.py [--shape 28672x8192] [--bits 2] [--variant NAME=VALUE[,NAME=VALUE] ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gemv import CACHE_BYTES, copy_of, timed  # noqa: E402

import icqcodec.torch  # noqa: E402
from icqcodec.linear import MMA_ROWS, kernel_source  # noqa: E402
from icqcodec.torch import IcqLinear, launch, mma_linear  # noqa: E402

STAGES = r"""
template <int MAXM, int CORRECT>
__global__ void __launch_bounds__(256) outlier_stage(TENSOR_ARGS, const void* x, long long x_stride, int activations,
                                                     const unsigned* symbol_codes, float* y) {
    const Tensor t = TENSOR;
    __shared__ OutlierStore outlier_store;
    const int n0 = blockIdx.x * MMA_ROWS, r = threadIdx.x / ROW_THREADS, j = threadIdx.x % ROW_THREADS;
    const TileOutliers tile = stage_outliers(t, n0, symbol_codes, outlier_store);
    asm volatile("cp.async.wait_all;\n" ::);
    __syncthreads();
    const bool active = r < MMA_ROWS && n0 + r < t.rows;
    float c[MAXM];
    for (int m = 0; m < MAXM; ++m) c[m] = 0.0f;
    if (CORRECT)
        row_corrections<MAXM>(t, active ? n0 + r : n0, active, j, tile.starts + (active ? r : 0) * t.segments(),
                              tile.gaps, tile.codes, (const unsigned short*)x, x_stride, activations, 1, c);
    else
        c[0] = __uint_as_float(tile.gaps.words[j] ^ (tile.codes.words ? tile.codes.words[j] : 0u)) + tile.starts[j];
    float v = 0.0f;
    for (int m = 0; m < MAXM; ++m) v += c[m];
    if (active) y[n0 + r] = v;
}
"""


def stage_kernel(maxm: int, correct: bool):
    import cupy

    name = f"outlier_stage<{maxm}, {int(correct)}>"
    module = cupy.RawModule(code=kernel_source() + STAGES, options=("-std=c++17",), name_expressions=(name,))
    return module.get_function(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="28672x8192")
    parser.add_argument("--bits", type=int, default=2)
    parser.add_argument("--variant", nargs="*", default=[], help="tunables, NAME=VALUE[,NAME=VALUE]")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.shape.split("x"))
    rng = np.random.default_rng(0)
    weight = torch.from_numpy((rng.standard_t(4, size=(rows, cols)) * 0.02).astype(np.float32))
    icqcodec.torch.MMA_MIN_ROWS = 1
    print(f"{torch.cuda.get_device_name()}; {args.shape}, {args.bits} bits\n")
    print("| stage | rows | time us |\n|---|---|---|")
    layers = {}
    for label, ratio in (("whole kernel", 0.05), ("inliers alone (no outliers)", 0.0)):
        layer = IcqLinear.from_float(weight, bits=args.bits, outlier_ratio=ratio, dtype="bfloat16", device="cuda")
        copies = [layer] + [copy_of(layer) for _ in range(-(-CACHE_BYTES // layer.payload.numel()) - 1)]
        layers[label] = copies
        for m in (1, 4, 16):
            x = torch.randn(m, cols, dtype=torch.bfloat16, device="cuda")
            seconds = timed([lambda w=w, x=x: w(x) for w in copies])
            print(f"| {label} | {m} | {seconds * 1e6:.1f} |", flush=True)
    y = torch.empty(rows, dtype=torch.float32, device="cuda")
    for label, correct, streamed in (("outlier stage, codes streamed", True, True),
                                     ("outlier stage, codes read in rows", True, False),
                                     ("staging alone", False, True)):  # fmt: skip
        for m in (1, 4, 16) if correct else (1,):
            x = torch.randn(m, cols, dtype=torch.bfloat16, device="cuda")
            kernel = stage_kernel(8 if m <= 8 else 16, correct)

            def call(w, x=x, kernel=kernel, streamed=streamed):
                codes = np.uint64(w.symbol_codes.data_ptr() if streamed else 0)
                launch(kernel, w.tensor_args, w.payload, w.starts, np.uint64(x.data_ptr()), np.int64(cols),
                       np.int32(x.shape[0]), codes, np.uint64(y.data_ptr()), rows_per_block=MMA_ROWS)  # fmt: skip

            seconds = timed([lambda w=w: call(w) for w in layers["whole kernel"]])
            print(f"| {label} | {m} | {seconds * 1e6:.1f} |", flush=True)
    for variant in args.variant:
        options = tuple(f"-D{define}" for define in variant.split(","))
        for m in (1, 4, 16):
            x = torch.randn(m, cols, dtype=torch.bfloat16, device="cuda")

            def run(w, x=x, options=options):
                return mma_linear(x, w.payload, w.starts, w.symbol_codes, w.tensor_args, None, options)

            layer = layers["whole kernel"][0]
            built = mma_linear(x, layer.payload, layer.starts, layer.symbol_codes, layer.tensor_args, None).float()
            difference = ((run(layer).float() - built).abs().max() / built.abs().max()).item()
            seconds = timed([lambda w=w: run(w) for w in layers["whole kernel"]])
            print(f"| whole kernel, {variant} | {m} | {seconds * 1e6:.1f} | difference {difference:.2e} |", flush=True)


if __name__ == "__main__":
    main()
