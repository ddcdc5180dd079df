"""Time of ``IcqLinear`` on the GPU beside cuBLAS bfloat16, at the shapes of Llama-3-8B/70B layers.

For each shape (out x in), code width (2, 3, 4 bits, uniform, 5% outliers, Student-t(4) weights,
default encoder) and rows of activations (1, 4, 16, bfloat16): the median time per call over CUDA
graph replays, each replay cycling through enough copies of the weight to leave the L2 cache, and
the weight bytes read per second (payload bytes / time) against a device-to-device copy measured
in the same run. cuBLAS runs ``F.linear`` on a bfloat16 weight the same way, with ``--int4pack``
PyTorch's int4 kernel (``torch._weight_int4pack_mm``, groups of 128; bytes: codes and scales), and
with ``--nf4`` bitsandbytes' NF4 (``bitsandbytes.matmul_4bit``, blocks of 64, float32 absmax;
bytes: codes and absmax; carry its wheel to the GPU machine and install it with ``--no-deps``).

    python bench/gemv.py [--shapes 4096x4096 ...] [--bits 2 3 4] [--rows 1 4 16] [--int4pack] [--nf4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icqcodec.torch  # noqa: E402
from icqcodec.torch import MMA, IcqLinear  # noqa: E402

SHAPES = ("4096x4096", "4096x14336", "14336x4096", "8192x28672", "28672x8192")
CACHE_BYTES = 256 << 20  # copies of a weight cycled per replay: well beyond the H200's 60 MB L2
REPLAYS = 20


def timed(calls, repeats: int = 7) -> float:
    """Median seconds per call of ``calls`` (a list of closures) captured once in a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls[:2]:
            call()  # warm up: compile, allocate
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    samples = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(REPLAYS):
            graph.replay()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop) / 1e3 / (REPLAYS * len(calls)))
    return statistics.median(samples)


def with_settings(change: dict, run):
    """``run()`` with module settings of :mod:`icqcodec.torch` changed (a graph captures them)."""
    before = {name: getattr(icqcodec.torch, name) for name in change}
    vars(icqcodec.torch).update(change)
    try:
        return run()
    finally:
        vars(icqcodec.torch).update(before)


def copy_bandwidth() -> float:
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    return 2 * a.numel() / timed([lambda: b.copy_(a)])


def copy_of(layer: IcqLinear) -> IcqLinear:
    """Another layer of the same tensor on the GPU, served by the same kernel."""
    other = IcqLinear(layer.layout, device="cuda")
    other.tensor_args = list(layer.tensor_args)
    return other


def int4pack(out_features: int, in_features: int):
    """PyTorch's int4 kernel (``torch._weight_int4pack_mm``, groups of 128): random codes, scales and
    zeros (the time does not depend on their values); returns (matmul of x, bytes it reads)."""
    codes = torch.randint(0, 16, (out_features, in_features), dtype=torch.int32, device="cuda")
    packed = torch._convert_weight_to_int4pack((codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8), 8)
    scales = (torch.rand(in_features // 128, out_features, 2, device="cuda") * 0.01).to(torch.bfloat16)
    return (lambda x: torch._weight_int4pack_mm(x, packed, 128, scales)), packed.numel() * packed.element_size() + \
        scales.numel() * 2  # fmt: skip


def nf4(out_features: int, in_features: int):
    """bitsandbytes' NF4 (blocks of 64) of a Student-t-like weight; returns (matmul of x, bytes it
    reads)."""
    import bitsandbytes
    import bitsandbytes.functional

    weight = (torch.randn(out_features, in_features, device="cuda") * 0.02).to(torch.bfloat16)
    packed, state = bitsandbytes.functional.quantize_4bit(weight, quant_type="nf4")
    return (lambda x: bitsandbytes.matmul_4bit(x, packed.t(), quant_state=state)), packed.numel() + \
        state.absmax.numel() * state.absmax.element_size()  # fmt: skip


BASELINES = {"int4pack": int4pack, "nf4": nf4}  # the other kernels timed, by their label's key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rows-per-warp", type=int, help="weight rows per warp of the one-row kernel (1-4)")
    parser.add_argument("--outlier-ratio", type=float, default=0.05)
    parser.add_argument("--int4pack", action="store_true", help="also PyTorch's int4 kernel, groups of 128")
    parser.add_argument("--nf4", action="store_true", help="also bitsandbytes' NF4, blocks of 64")
    parser.add_argument("--mma-min-rows", type=int, help="fewest rows of activations the tensor-core kernel takes")
    parser.add_argument("--cuda-cores", action="store_true",
                        help="also the CUDA-core kernels the tensor-core kernel replaced, on the same weights")  # fmt: skip
    parser.add_argument("--variants", action="store_true",
                        help="also the other kernel at one row (tensor cores or the one-row CUDA-core kernel)")  # fmt: skip
    args = parser.parse_args()
    if args.mma_min_rows:
        icqcodec.torch.MMA_MIN_ROWS = args.mma_min_rows
    if args.rows_per_warp:
        icqcodec.torch.rows_per_warp = lambda rows: args.rows_per_warp
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    copy = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}; device-to-device copy {copy / 1e9:.0f} GB/s (read + write)\n")
    print("| shape (out x in) | weight | rows | time us | weight GB/s | % of copy |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes:
        out_features, in_features = (int(v) for v in shape.split("x"))
        weight = torch.from_numpy((rng.standard_t(4, size=(out_features, in_features)) * 0.02).astype(np.float32))
        dense = weight.to("cuda", torch.bfloat16)
        layers, settings = {"bfloat16 (cuBLAS)": None}, {}
        for bits in args.bits:
            layers[f"icq {bits}-bit"] = IcqLinear.from_float(weight, bits=bits, outlier_ratio=args.outlier_ratio,
                                                             dtype="bfloat16", device="cuda")  # fmt: skip
            if args.variants:
                tensor_cores = icqcodec.torch.MMA_MIN_ROWS > 1  # the default at one row is the one-row kernel
                label = f"icq {bits}-bit, {'tensor cores' if tensor_cores else 'CUDA cores'} at 1 row"
                layers[label], settings[label] = layers[f"icq {bits}-bit"], {"MMA_MIN_ROWS": 1 if tensor_cores else 2}
            if args.cuda_cores:
                legacy = IcqLinear(layers[f"icq {bits}-bit"].layout, device="cuda")
                legacy.tensor_args[MMA] = 0
                layers[f"icq {bits}-bit, CUDA cores"] = legacy
        if args.int4pack:
            layers["int4pack g128 (torch)"] = "int4pack"
        if args.nf4:
            layers["NF4 b64 (bitsandbytes)"] = "nf4"
        for label, layer in layers.items():
            if isinstance(layer, str):
                size = BASELINES[layer](out_features, in_features)[1]
            else:
                size = dense.numel() * 2 if layer is None else layer.payload.numel()
            copies = max(1, -(-CACHE_BYTES // size))
            if layer is None:
                weights = [dense] + [dense.clone() for _ in range(copies - 1)]
            elif isinstance(layer, str):
                weights = [BASELINES[layer](out_features, in_features)[0] for _ in range(copies)]
            else:
                weights = [layer] + [copy_of(layer) for _ in range(copies - 1)]
            for rows in args.rows:
                if "MMA_MIN_ROWS" in settings.get(label, {}) and rows > 1:
                    continue  # the same kernel as the default from 2 rows on
                x = torch.randn(rows, in_features, dtype=torch.bfloat16, device="cuda")
                if layer is None:
                    calls = [lambda w=w, x=x: torch.nn.functional.linear(x, w) for w in weights]
                else:
                    calls = [lambda w=w, x=x: w(x) for w in weights]
                seconds = with_settings(settings.get(label, {}), lambda calls=calls: timed(calls))
                rate = size / seconds
                print(f"| {shape} | {label} | {rows} | {seconds * 1e6:.1f} | {rate / 1e9:.0f} | "
                      f"{100 * rate / copy:.0f}% |", flush=True)  # fmt: skip
            del weights
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
