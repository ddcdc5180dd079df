"""GPU decoder: kernel speed, peers and whole-file load, in one run.

Run on a CUDA machine: ``python bench/gpu.py`` (all timings) or ``python bench/gpu.py --sanitize``
(a small workload for compute-sanitizer). Needs CuPy; the peer needs bitsandbytes and PyTorch.
Bit-exactness and rejection parity against the CPU decoders are tests: ``python -m pytest
tests/test_gpu.py``.

1. Speed: kernel time (CUDA events, median of 30, output preallocated) and effective bandwidth
   ((compressed bytes read + output bytes written) / time) for 4096x4096, 8192x8192 and 28672x8192
   at 2, 3 and 4 bits with 5% outliers, float16 output; the device-to-device copy bandwidth and
   bitsandbytes' NF4 dequantize on the same shapes beside it; end-to-end decode from host bytes
   with validation.
2. Whole-file load: an .icq file on disk to float16 arrays on the GPU, against the same weights as
   float16 safetensors loaded onto the GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cupy  # noqa: E402

import icqcodec  # noqa: E402
from icqcodec import files, gpu  # noqa: E402
from icqcodec.container import bytes_reader, read_header, tensor_layout  # noqa: E402
from icqcodec.gpu import KernelVariant, Plan, kernel_variant  # noqa: E402
from icqcodec.payload import Payload  # noqa: E402


def gpu_bits(array) -> bytes:
    return cupy.asnumpy(array).tobytes()


def same(cpu: dict, gpu: dict) -> bool:
    return cpu.keys() == gpu.keys() and all(cpu[k].tobytes() == gpu_bits(gpu[k]) for k in cpu)


def plan_of(data: bytes):
    """The header of a one-tensor file, a GPU Plan for its tensor and a preallocated output."""
    read_at, size = bytes_reader(data)
    header = read_header(read_at, size)
    plan = Plan(cupy, Payload(header, header.tensors[0], read_at), None, None)
    return header, plan, plan.empty_output()


def event_time(fn, repeats: int) -> float:
    """Median seconds of ``fn`` on the GPU, CUDA events, after two warm-ups."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1000)
    return statistics.median(times)


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    a = cupy.empty(nbytes, dtype=cupy.uint8)
    b = cupy.empty_like(a)
    seconds = event_time(lambda: b.__setitem__(Ellipsis, a), 30)
    return 2 * nbytes / seconds


def bnb_dequant(w16_gpu):
    try:
        import bitsandbytes.functional as bnbf
        import torch
    except Exception as error:  # the peer is optional
        return None, f"bitsandbytes unavailable: {error}"
    t = torch.from_dlpack(w16_gpu)
    packed, state = bnbf.quantize_4bit(t, quant_type="nf4")
    out = torch.empty_like(t)

    def run():
        bnbf.dequantize_4bit(packed, state, out=out)

    return event_time(run, 30), None


def speed(rng) -> list[str]:
    lines = ["| shape | bits | kernel ms | GB/s effective | % of copy | Gweights/s | bnb NF4 Gweights/s | "
             "end-to-end ms (host bytes, validated) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    copy = copy_bandwidth()
    base = (rng.standard_t(4, size=(4096, 8192)) * 0.02).astype(np.float32)
    for rows, cols in ((4096, 4096), (8192, 8192), (28672, 8192)):
        w = np.tile(base, (-(-rows // 4096), 1))[:rows, :cols]
        bnb_seconds, bnb_note = bnb_dequant(cupy.asarray(w.astype(np.float16)))
        for bits in (2, 3, 4):
            data = icqcodec.encode(w, bits=bits, dtype="float16")
            header, plan, out = plan_of(data)
            record = header.tensors[0]
            seconds = event_time(lambda plan=plan, out=out: plan.run(out), 30)
            plan.finish()
            layout = tensor_layout(record, header.chunk_log2)
            compressed = sum(size for name, (_, size) in layout.sections.items())
            moved = compressed + out.nbytes
            end_to_end = []
            for _ in range(5):
                start = time.perf_counter()
                icqcodec.decode(data, backend="cupy")
                cupy.cuda.runtime.deviceSynchronize()
                end_to_end.append(time.perf_counter() - start)
            bnb = f"{w.size / bnb_seconds / 1e9:.1f}" if bnb_seconds else bnb_note
            lines.append(f"| {rows}x{cols} | {bits} | {seconds * 1e3:.3f} | {moved / seconds / 1e9:.0f} | "
                         f"{100 * moved / seconds / copy:.0f}% | {w.size / seconds / 1e9:.1f} | {bnb} | "
                         f"{statistics.median(end_to_end) * 1e3:.1f} |")  # fmt: skip
    lines.append(f"\ndevice-to-device copy: {copy / 1e9:.0f} GB/s (bytes read + written, 1 GiB, median of 30)")
    lines += kernel_resources()
    return lines


def kernel_resources() -> list[str]:
    """Registers, local memory and resident blocks of the float16 segments kernels."""
    lines = []
    for bits in (2, 3, 4):
        name, warps, shared = gpu.launch_shape(bits, 1, True)  # float16 output, gap chains
        kernel = gpu.kernel(name)
        threads = 32 * warps
        try:
            per_sm = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.kernel.ptr, threads, shared)
        except Exception as error:
            per_sm = f"? ({error})"
        lines.append(f"{name}: {kernel.num_regs} registers, {kernel.local_size_bytes} bytes local memory, "
                     f"{per_sm} blocks of {threads} threads per SM, grid of {gpu.grid_limit(name, threads, shared)}")  # fmt: skip
    return lines


def sweep(rng) -> list[str]:
    """Variants of the segments kernel on 28672x8192 float16 at 2 and 4 bits, 5% outliers: the
    register cap (minimum resident blocks of 256 threads per SM); at 5 blocks the 2-bit table holds
    2 codes per entry instead of 4, so that the shared memory fits."""

    def two_codes(bits: int, item_size: int) -> int:  # 2-bit float16: 16 entries, no pairs table
        return gpu.warp_shared_bytes(bits, item_size) - (2048 if bits == 2 and item_size == 2 else 0)

    w = (rng.standard_t(4, size=(28672, 8192)) * 0.02).astype(np.float32)
    lines = ["| bits | min blocks/SM | registers | kernel ms |", "|---|---|---|---|"]
    for bits in (2, 4):
        data = icqcodec.encode(w, bits=bits, dtype="float16")
        expected = files.load(data)["tensor"].tobytes()
        _, plan, out = plan_of(data)
        for variant in (KernelVariant(min_blocks=3), KernelVariant(min_blocks=4),
                        KernelVariant(("-DICQ_CODES2=2",), 5, two_codes)):  # fmt: skip
            min_blocks = variant.min_blocks
            with kernel_variant(variant):
                kernel = gpu.kernel(gpu.launch_shape(bits, 1, True, variant)[0], variant)
                out.fill(0)
                seconds = event_time(lambda plan=plan, out=out: plan.run(out), 30)
            plan.finish()
            assert cupy.asnumpy(plan.typed(out)).tobytes() == expected
            lines.append(f"| {bits} | {min_blocks} | {kernel.num_regs} | {seconds * 1e3:.3f} |")
    return lines


def whole_file(rng) -> list[str]:
    from safetensors.numpy import save_file

    base = (rng.standard_t(4, size=(8192, 8192)) * 0.02).astype(np.float16)
    tensors = {f"layers.{i}.weight": np.roll(base, i, axis=1) for i in range(8)}
    with tempfile.TemporaryDirectory() as folder:
        st_path, icq_path = Path(folder) / "m.safetensors", Path(folder) / "m.icq"
        save_file(tensors, str(st_path))
        files.save_file(tensors, icq_path, bits=2)
        for path in (st_path, icq_path):  # warm the page cache for both
            path.read_bytes()

        def load_safetensors():
            from safetensors.numpy import load_file

            return {k: cupy.asarray(v) for k, v in load_file(str(st_path)).items()}

        def load_icq():
            return files.load_file(icq_path, backend="cupy")

        results = {}
        for label, fn in (("float16 safetensors -> GPU", load_safetensors), ("icq 2-bit -> GPU float16", load_icq)):
            fn()
            times = []
            for _ in range(3):
                cupy.cuda.runtime.deviceSynchronize()
                start = time.perf_counter()
                fn()
                cupy.cuda.runtime.deviceSynchronize()
                times.append(time.perf_counter() - start)
            results[label] = (
                statistics.median(times),
                (st_path if "safetensors" in label else icq_path).stat().st_size,
            )
    lines = ["| load | file bytes | seconds (median of 3, warm page cache) |", "|---|---|---|"]
    for label, (seconds, size) in results.items():
        lines.append(f"| {label} | {size:,} | {seconds:.3f} |")
    return lines


def sanitize_workload(rng) -> None:
    """A workload for compute-sanitizer beside ``tests/test_gpu.py``: large tensors of 2 and 3 bits."""
    w = (rng.standard_t(4, size=(1024, 4096)) * 0.02).astype(np.float32)
    for bits in (2, 3):
        data = icqcodec.encode(w, bits=bits, dtype="float16")
        assert same(files.load(data), files.load(data, backend="cupy"))
    print("sanitizer workload done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sanitize", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="launch shapes of the segments kernel")
    parser.add_argument("--profile", action="store_true", help="one 28672x8192 2-bit decode, for ncu")
    parser.add_argument("--define", action="append", default=[], help="with --profile: a -D switch of the kernel")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.profile:
        w = (rng.standard_t(4, size=(28672, 8192)) * 0.02).astype(np.float32)
        data = icqcodec.encode(w, bits=2, dtype="float16")
        _, plan, out = plan_of(data)
        with kernel_variant(KernelVariant(tuple(args.define))):
            for _ in range(3):
                plan.run(out)
            cupy.cuda.runtime.deviceSynchronize()
        return
    if args.sanitize:
        sanitize_workload(rng)
        return
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"device: {props['name'].decode()}, CuPy {cupy.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")  # fmt: skip
    if args.sweep:
        for line in sweep(rng):
            print(line, flush=True)
    if not args.skip_speed:
        for line in speed(rng):
            print(line, flush=True)
        for line in whole_file(rng):
            print(line, flush=True)


if __name__ == "__main__":
    main()
