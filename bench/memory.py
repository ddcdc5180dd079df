"""Peak memory of ``icqcodec encode`` and ``decode`` on a synthetic sharded checkpoint of several GB.

Writes a float16 checkpoint of ``--shards`` safetensors shards (each holding ``--per-shard``
matrices of ``--rows`` x ``--cols``, plus small norms) with its index into a temporary folder, then
runs the command line on it in child processes and reads each child's peak resident memory
(``ru_maxrss``). The target: peak below 3x the largest tensor's float32 size plus a fixed
allowance, taken here as the peak of the same command line encoding a 64 x 64 array.

Run: python bench/memory.py [--shards 4 --per-shard 8 --rows 8192 --cols 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

_WRAPPER = """
import sys
from icqcodec.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(int(peak.split()[1]) * 1024, file=sys.stderr)
"""


def peak_rss(arguments: list[str]) -> tuple[int, float]:
    """Run the command line with ``arguments`` in a child; its peak resident set (VmHWM, which
    unlike ru_maxrss does not count the parent's image before exec) and its wall time."""
    import time

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"icqcodec {' '.join(arguments)} failed: {done.stderr}")
    return int(done.stderr.strip().splitlines()[-1]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--per-shard", type=int, default=8)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--cols", type=int, default=8192)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=os.environ.get("ICQ_BENCH_TMP")) as folder:
        root = Path(folder)
        source = root / "ckpt"
        source.mkdir()
        weight_map = {}
        block = (rng.standard_t(4, size=(args.rows, args.cols)) * 0.02).astype(np.float16)
        for s in range(args.shards):
            shard = f"model-{s + 1:05d}-of-{args.shards:05d}.safetensors"
            tensors = {}
            for i in range(args.per_shard):
                name = f"layers.{s * args.per_shard + i}.weight"
                tensors[name] = np.roll(block, i + s, axis=1)  # distinct content, no new randomness
                tensors[f"layers.{s * args.per_shard + i}.norm"] = np.ones(args.cols, np.float16)
            save_file(tensors, str(source / shard), metadata={"format": "pt"})
            weight_map.update({name: shard for name in tensors})
            del tensors
        (source / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        checkpoint_bytes = sum(p.stat().st_size for p in source.iterdir())
        largest_f32 = args.rows * args.cols * 4
        small = root / "small.npy"
        np.save(small, np.ones((64, 64), np.float16))
        baseline, _ = peak_rss(["encode", str(small), str(root / "small.icq")])
        encode_peak, encode_time = peak_rss(["encode", str(source), str(root / "icq")])
        decode_peak, decode_time = peak_rss(["decode", str(root / "icq"), str(root / "back")])
        icq_bytes = sum(p.stat().st_size for p in (root / "icq").iterdir())
    mib = 1 << 20
    print(
        f"checkpoint: {args.shards} shards, {checkpoint_bytes / 2**30:.2f} GiB float16; icq: {icq_bytes / 2**30:.2f} GiB"
    )
    print(f"largest tensor: {args.rows}x{args.cols}, float32 size {largest_f32 / mib:.0f} MiB")
    print(f"allowance (the command line encoding a 64 x 64 array): {baseline / mib:.0f} MiB")
    for step, peak, seconds in (("encode", encode_peak, encode_time), ("decode", decode_peak, decode_time)):
        ratio = (peak - baseline) / largest_f32
        print(f"{step}: peak {peak / mib:.0f} MiB = allowance + {ratio:.2f} x largest float32 tensor "
              f"(target < 3), {seconds:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
