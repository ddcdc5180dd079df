"""CPU speed, side by side in one run: icq encode/decode against gguf's numpy Q4_0 on one matrix.

A 4096x4096 float32 matrix (Student-t(4) weights, seed 0). icq: the encoder's default options
(2-bit codes, 5% outliers), decode to float16 with the numba backend. gguf: ``quants.quantize`` and
``quants.dequantize`` of Q4_0. Each step runs ``--repeats`` times, interleaved, median reported;
the figures that count are the ratios.

Run: python bench/speed.py   (needs: pip install gguf)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from gguf import GGMLQuantizationType, quants

import icqcodec


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    w = np.random.default_rng(0).standard_t(4, size=(args.size, args.size)).astype(np.float32) * 0.02
    # warm up: numba's compile cache, gguf's first call
    data = icqcodec.encode(w, dtype="float16")
    icqcodec.decode(data)
    q4 = quants.quantize(w, GGMLQuantizationType.Q4_0)
    quants.dequantize(q4, GGMLQuantizationType.Q4_0)
    times = {"icq encode": [], "icq decode": [], "Q4_0 quantize": [], "Q4_0 dequantize": []}
    for _ in range(args.repeats):
        times["Q4_0 quantize"].append(timed(lambda: quants.quantize(w, GGMLQuantizationType.Q4_0)))
        times["icq encode"].append(timed(lambda: icqcodec.encode(w, dtype="float16")))
        times["Q4_0 dequantize"].append(timed(lambda: quants.dequantize(q4, GGMLQuantizationType.Q4_0)))
        times["icq decode"].append(timed(lambda: icqcodec.decode(data)))
    rate = {k: w.size / statistics.median(v) / 1e6 for k, v in times.items()}
    print(f"{args.size}x{args.size} float32, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"| step | M weights/s (median of {args.repeats}) |")
    print("|---|---|")
    for k, v in rate.items():
        print(f"| {k} | {v:.1f} |")
    print(f"\nicq encode / Q4_0 quantize: {rate['icq encode'] / rate['Q4_0 quantize']:.2f}x (target >= 0.25x)")
    print(f"icq decode / Q4_0 dequantize: {rate['icq decode'] / rate['Q4_0 dequantize']:.2f}x (target >= 2x)")
    print(f"icq size: {len(data) * 8 / w.size:.3f} bits/weight; Q4_0: {q4.nbytes * 8 / w.size:.3f} bits/weight")


if __name__ == "__main__":
    main()
