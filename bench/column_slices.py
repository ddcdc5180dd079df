"""A 1/8 column slice of a 28672x8192 tensor against decoding it whole (numba, CPU): bytes read
and time, and the sub-record that ships the same columns compressed.

The tensor: Student-t(4) weights, 2 bits, 5% outliers, 1024-column segments, outliers fixed per
segment (so that the slice is also a sub-record). The slice is columns 3072-4095 of every row, as a
tensor-parallel rank of 8 needs it. Whole and sliced decodes are interleaved, median of --repeats.
Also what fixing the outliers per segment costs: the relative squared weight error of a 4096x4096
Student-t(4) matrix at 2, 3 and 4 bits, outliers per segment against per row.

    python bench/column_slices.py [--rows 28672] [--cols 8192] [--repeats 5]    (about a minute)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icqcodec  # noqa: E402
from icqcodec import files  # noqa: E402


def timed(function, reads: list[tuple[int, int]]) -> tuple[float, int, object]:
    """Seconds ``function`` takes, the distinct bytes it reads (some are read twice: once to check
    their chunk, once to use them) and its result."""
    reads.clear()
    start = time.perf_counter()
    out = function()
    seconds = time.perf_counter() - start
    distinct, end = 0, 0
    for offset, size in sorted(reads):
        distinct += max(0, offset + size - max(offset, end))
        end = max(end, offset + size)
    return seconds, distinct, out


def per_segment_cost() -> dict[int, list[float]]:
    """Relative squared error (outliers per row, per segment) and their ratio, by code width."""
    weights = (np.random.default_rng(1).standard_t(4, (4096, 4096)) * 0.02).astype(np.float32)
    energy = float((weights.astype(np.float64) ** 2).sum())
    cost = {}
    for bits in (2, 3, 4):
        errors = []
        for per_segment in (False, True):
            decoded = icqcodec.decode(files.save({"w": weights}, bits=bits, outliers_per_segment=per_segment))
            errors.append(float(((decoded.astype(np.float64) - weights) ** 2).sum()) / energy)
        cost[bits] = [*errors, errors[1] / errors[0]]
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=28672)
    parser.add_argument("--cols", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows, cols = args.rows, args.cols
    weights = (np.random.default_rng(0).standard_t(4, (rows, cols)) * 0.02).astype(np.float32)
    c0, c1 = 3 * cols // 8, 4 * cols // 8
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.icq"
        start = time.perf_counter()
        files.save_file({"w": weights}, path, bits=2, coding="icq", outliers_per_segment=True)
        encode_seconds = time.perf_counter() - start
        del weights
        with files.safe_open(path) as f:
            counter: list[tuple[int, int]] = []
            read_at = f.read_at

            def counting(offset: int, size: int):
                data = read_at(offset, size)
                counter.append((offset, len(data)))
                return data

            f.read_at = counting
            expected = f.get_tensor("w")[:, c0:c1].copy()  # compiles the kernels, warms the page cache
            assert f.get_slice("w")[:, c0:c1].tobytes() == expected.tobytes()
            times = {"whole": [], "slice": [], "sub_record": [], "sub_record_decode": []}
            read = {}
            for _ in range(args.repeats):
                seconds, read["whole"], _ = timed(lambda: f.get_tensor("w"), counter)
                times["whole"].append(seconds)
                seconds, read["slice"], _ = timed(lambda: f.get_slice("w")[:, c0:c1], counter)
                times["slice"].append(seconds)
                seconds, read["sub_record"], cut = timed(lambda: f.slice_record("w", (c0, c1)), counter)
                times["sub_record"].append(seconds)
                start = time.perf_counter()
                decoded = icqcodec.decode(cut)
                times["sub_record_decode"].append(time.perf_counter() - start)
            assert decoded.tobytes() == expected.tobytes()
            payload = f.record("w").size
    medians = {key: statistics.median(value) for key, value in times.items()}
    result = {"shape": [rows, cols], "columns": [c0, c1], "encode_seconds": encode_seconds, "payload_bytes": payload,
              "seconds": medians, "bytes_read": read, "sub_record_bytes": len(cut),
              "slice_over_whole": medians["slice"] / medians["whole"], "per_segment_cost": per_segment_cost()}  # fmt: skip
    print(json.dumps(result, indent=2))
    print("\n| decode | time (s) | bytes read | of the payload |\n|---|---|---|---|")
    for key in ("whole", "slice", "sub_record"):
        print(f"| {key} | {medians[key]:.4f} | {read[key]:,} | {read[key] / payload:.3f} |")
    print(f"| decode of the sub-record ({len(cut):,} bytes) | {medians['sub_record_decode']:.4f} | - | - |")
    print("\n| bits | error, outliers per row | per segment | ratio |\n|---|---|---|---|")
    for bits, (row, segment, ratio) in result["per_segment_cost"].items():
        print(f"| {bits} | {row:.5f} | {segment:.5f} | {ratio:.4f} |")


if __name__ == "__main__":
    main()
