"""GPU decoder: bit-exactness, rejection parity, kernel speed, peers and whole-file load, in one run.

Run on a CUDA machine: ``python bench/gpu.py`` (all checks and timings) or
``python bench/gpu.py --sanitize`` (a small workload for compute-sanitizer). Needs CuPy; the peer
needs bitsandbytes and PyTorch.

1. Bit-exactness: the golden encodings, random valid streams built field by field, and encoded
   tensors of every bit width, quantizer and output dtype decode on the GPU to the numba decoder's
   bits (compared with ==).
2. Rejection parity: streams with mutated segment counts and gap symbols (checksums recomputed so
   the mutations reach the chain checks) are rejected with the same category and message, or
   decoded to the same bits, by both decoders.
3. Speed: kernel time (CUDA events, median of 30, output preallocated) and effective bandwidth
   ((compressed bytes read + output bytes written) / time) for 4096x4096, 8192x8192 and 28672x8192
   at 2, 3 and 4 bits with 5% outliers, float16 output; the device-to-device copy bandwidth and
   bitsandbytes' NF4 dequantize on the same shapes beside it; end-to-end decode from host bytes
   with validation.
4. Whole-file load: an .icq file on disk to float16 arrays on the GPU, against the same weights as
   float16 safetensors loaded onto the GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
sys.path.insert(0, str(ROOT / "tests"))

import cupy  # noqa: E402

import icqcodec  # noqa: E402
from icqcodec import files, gpu  # noqa: E402
from icqcodec.container import build_payload, read_header, tensor_layout  # noqa: E402
from icqcodec.decode import _bytes_reader  # noqa: E402
from icqcodec.gpu import Plan  # noqa: E402


def gpu_bits(array) -> bytes:
    return cupy.asnumpy(array).tobytes()


def same(cpu: dict, gpu: dict) -> bool:
    return cpu.keys() == gpu.keys() and all(cpu[k].tobytes() == gpu_bits(gpu[k]) for k in cpu)


def outcome(data: bytes, backend: str):
    try:
        return "ok", files.load(data, backend=backend)
    except icqcodec.FormatError as error:
        return "error", f"{error.category}: {error.detail}"


def recheck(data: bytes) -> bytes:
    """Recompute every checksum after an edit of payload bytes (one tensor files)."""
    from icqcodec.container import crc32c

    header = read_header(*_bytes_reader(bytes(data[:64]) + bytes(data[64:])))  # header still intact
    record = header.tensors[0]
    layout = tensor_layout(record, header.chunk_log2)
    start = header.data_offset + record.offset
    body = bytes(data[start : start + layout.body_size])
    sections = {n: body[b : b + s] for n, (b, s) in layout.sections.items()}
    payload, table_crc = build_payload(record, sections, header.chunk_log2)
    data = bytearray(data)
    data[start : start + len(payload)] = payload
    # patch table_crc in the directory: find the record's fixed part after its name
    directory = bytearray(data[64 : 64 + header.directory_size])
    name = record.name.encode()
    at = directory.rfind(len(name).to_bytes(4, "little") + name) + 4 + len(name) + 24
    directory[at : at + 4] = table_crc.to_bytes(4, "little")
    data[64 : 64 + header.directory_size] = directory
    data[56:60] = crc32c(bytes(directory)).to_bytes(4, "little")
    data[60:64] = crc32c(bytes(data[:60])).to_bytes(4, "little")
    return bytes(data)


def correctness(rng, count: int) -> list[str]:
    from golden.inputs import CASES
    from hypothesis import strategies  # noqa: F401 - strategies need hypothesis
    from strategies import valid_streams

    lines, checked, failures = [], 0, []
    blobs = [(ROOT / "tests" / "golden" / f"{name}.icq").read_bytes() for name in CASES]
    blobs += [valid_streams().example() for _ in range(count)]
    for bits in range(1, 9):
        for quantizer in ("uniform", "codebook"):
            for dtype in ("float16", "bfloat16", "float32"):
                shape = (int(rng.integers(1, 40)), int(rng.integers(1, 3000)))
                w = (rng.standard_t(4, size=shape) * 0.02).astype(np.float32)
                blobs.append(icqcodec.encode(w, bits=bits, quantizer=quantizer, dtype=dtype))
    for bits in (2, 3, 4):
        w = (rng.standard_t(4, size=(2048, 4096)) * 0.02).astype(np.float32)
        blobs.append(icqcodec.encode(w, bits=bits, dtype="float16"))
    for data in blobs:
        checked += 1
        if not same(files.load(data), files.load(data, backend="cupy")):
            failures.append(checked)
    lines.append(f"bit-exact: {checked - len(failures)} of {checked} streams equal to the numba decoder's bits")
    # rejection parity on mutated chains
    agree = rejected = 0
    mutants = 0
    for data in blobs[: len(blobs)]:
        header = read_header(*_bytes_reader(data))
        record = header.tensors[0]
        if record.params is None or not record.params.outliers:
            continue
        layout = tensor_layout(record, header.chunk_log2)
        start = header.data_offset + record.offset
        for _ in range(5):
            section = "gaps" if rng.random() < 0.7 else "counts"
            b, s = layout.sections[section]
            if s == 0:
                continue
            mutated = bytearray(data)
            at = start + b + int(rng.integers(0, s))
            mutated[at] ^= 1 << int(rng.integers(0, 8))
            mutated = recheck(mutated)
            mutants += 1
            cpu, gpu = outcome(mutated, "numba"), outcome(mutated, "cupy")
            if cpu[0] == gpu[0] == "error":
                rejected += 1
                agree += cpu[1] == gpu[1]
            elif cpu[0] == gpu[0] == "ok":
                agree += same(cpu[1], gpu[1])
    lines.append(f"rejection parity: {agree} of {mutants} mutated streams give the same result on both "
                 f"({rejected} rejected by both)")  # fmt: skip
    return lines


def plan_of(data: bytes):
    """The header of a one-tensor file, a GPU Plan for its tensor and a preallocated output."""
    from icqcodec.container import Payload

    read_at, size = _bytes_reader(data)
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


@contextlib.contextmanager
def kernel_variant(defines: tuple[str, ...] = (), min_blocks: int | None = None, warp_bytes=None):
    """Within the block, the segments kernel compiled with ``defines`` (``-DNAME`` switches of its
    source) and a register cap for ``min_blocks`` resident blocks per SM; ``warp_bytes(bits,
    item_size)`` replaces the shared memory per warp where the switches change it."""
    saved = gpu._kernel, gpu.MIN_BLOCKS_PER_SM, gpu._warp_shared_bytes
    gpu.MIN_BLOCKS_PER_SM = min_blocks or saved[1]
    gpu._warp_shared_bytes = warp_bytes or saved[2]
    gpu._kernel = functools.cache(lambda name: gpu._compile(name, defines))
    caches = (gpu._grid_limit, gpu._launch_shape)
    for cache in caches:
        cache.cache_clear()
    try:
        yield
    finally:
        gpu._kernel, gpu.MIN_BLOCKS_PER_SM, gpu._warp_shared_bytes = saved
        for cache in caches:
            cache.cache_clear()


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
        name, warps, shared = gpu._launch_shape(bits, 1, True)  # float16 output, gap chains
        kernel = gpu._kernel(name)
        threads = 32 * warps
        try:
            per_sm = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.kernel.ptr, threads, shared)
        except Exception as error:
            per_sm = f"? ({error})"
        lines.append(f"{name}: {kernel.num_regs} registers, {kernel.local_size_bytes} bytes local memory, "
                     f"{per_sm} blocks of {threads} threads per SM, grid of {gpu._grid_limit(name, threads, shared)}")  # fmt: skip
    return lines


def sweep(rng) -> list[str]:
    """Variants of the segments kernel on 28672x8192 float16 at 2 and 4 bits, 5% outliers: the
    register cap (minimum resident blocks of 256 threads per SM); at 5 blocks the 2-bit table holds
    2 codes per entry instead of 4, so that the shared memory fits."""

    default_bytes = gpu._warp_shared_bytes

    def two_codes(bits: int, item_size: int) -> int:  # 2-bit float16: 16 entries, no pairs table
        return default_bytes(bits, item_size) - (2048 if bits == 2 and item_size == 2 else 0)

    w = (rng.standard_t(4, size=(28672, 8192)) * 0.02).astype(np.float32)
    lines = ["| bits | min blocks/SM | registers | kernel ms |", "|---|---|---|---|"]
    for bits in (2, 4):
        data = icqcodec.encode(w, bits=bits, dtype="float16")
        expected = files.load(data)["tensor"].tobytes()
        _, plan, out = plan_of(data)
        for min_blocks, defines, warp_bytes in ((3, (), None), (4, (), None), (5, ("-DICQ_CODES2=2",), two_codes)):
            with kernel_variant(defines, min_blocks, warp_bytes):
                kernel = gpu._kernel(gpu._launch_shape(bits, 1, True)[0])
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
            return files.load_file(icq_path, device="cuda")

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
    """A small workload for compute-sanitizer: golden files, random streams, mutants, one large tensor."""
    for line in correctness(rng, 40):
        print(line)
    w = (rng.standard_t(4, size=(1024, 4096)) * 0.02).astype(np.float32)
    for bits in (2, 3):
        data = icqcodec.encode(w, bits=bits, dtype="float16")
        assert same(files.load(data), files.load(data, backend="cupy"))
    print("sanitizer workload done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sanitize", action="store_true")
    parser.add_argument("--random-streams", type=int, default=300)
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
        with kernel_variant(tuple(args.define)):
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
    if args.random_streams:
        for line in correctness(rng, args.random_streams):
            print(line, flush=True)
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
