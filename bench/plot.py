"""Draws the rate-distortion study's plots from bench/rate_distortion.json.

Writes bench/rate-distortion-<data set>.png (error against bits/weight, one line per method, the
QuIP#-style gap as arrows), bench/position-cost.png (icq's position bits against H(g)) and, from
bench/llm_quality.json, bench/llm-quality.png (perplexity against bits/weight).

Run: python bench/plot.py   (needs matplotlib; run bench/rate_distortion.py first)
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rate_distortion import (  # noqa: E402
    QUIP,
    binary_entropy,  # noqa: E402
    quip_gaps,
)

HERE = Path(__file__).resolve().parent
PEER_STYLE = {  # method -> (colour, marker)
    "RTN per row": ("#7f7f7f", "v"),
    "RTN g128": ("#bcbd22", "^"),
    "RTN g64": ("#8c564b", "s"),
    "AdaDim g128": ("#e377c2", "<"),
    "AdaDim g64": ("#9467bd", ">"),
    "HQQ g64": ("#d62728", "D"),
    "gguf": ("#ff7f0e", "P"),
    QUIP: ("#2ca02c", "*"),
}
MAX_BITS = 6.2  # Q8_0 (8.5 bits/weight) stays in the table, off the plot


def lines(points: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for p in points:
        grouped.setdefault(p["method"], []).append(p)
    return {method: sorted(ps, key=lambda p: p["bits"]) for method, ps in grouped.items()}


def draw_rate_distortion(slug: str, result: dict) -> None:
    figure, axes = plt.subplots(figsize=(8.5, 5.5), dpi=110)
    ratios = sorted({p["method"].split(", ")[1] for p in result["points"] if p["method"].startswith("icq ")},
                    key=lambda r: float(r.split("%")[0]))  # fmt: skip
    shades = plt.get_cmap("Blues")
    for method, ps in lines(result["points"]).items():
        ps = [p for p in ps if p["bits"] <= MAX_BITS]
        rates, errors = [p["bits"] for p in ps], [p["error"] for p in ps]
        if method.startswith("icq "):
            shade = shades(0.35 + 0.65 * ratios.index(method.split(", ")[1]) / max(1, len(ratios) - 1))
            dashed = "codebook" in method
            axes.plot(rates, errors, "--" if dashed else "-", marker="o", ms=3, color=shade, label=method, lw=1.2)
        else:
            colour, marker = PEER_STYLE.get(method, ("black", "x"))
            axes.plot(rates, errors, ":", marker=marker, ms=6, color=colour, label=method, lw=1.2)
    for gap in quip_gaps(result["points"]):
        if gap["icq_bits"] is not None:
            axes.annotate("", xy=(gap["icq_bits"], gap["error"]), xytext=(gap["bits"], gap["error"]),
                          arrowprops={"arrowstyle": "->", "color": PEER_STYLE[QUIP][0]})  # fmt: skip
            axes.text((gap["bits"] + gap["icq_bits"]) / 2, gap["error"] * 1.08, f"{gap['gap']:+.2f}",
                      ha="center", fontsize=7, color=PEER_STYLE[QUIP][0])  # fmt: skip
    axes.set_yscale("log")
    axes.set_xlabel("bits per weight (every byte counted)")
    axes.set_ylabel("relative squared error  sum|W-Q(W)|² / sum|W|²")
    axes.set_title(f"{result['title']} (arrows: icq's extra bits at the QuIP#-style error)", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=6.5, ncol=2, loc="upper right")
    figure.tight_layout()
    figure.savefig(HERE / f"rate-distortion-{slug}.png")
    plt.close(figure)


def draw_position_cost(results: dict) -> None:
    figure, axes = plt.subplots(figsize=(6, 4), dpi=110)
    grid = [i / 1000 for i in range(1, 100)]
    axes.plot(grid, [binary_entropy(g) for g in grid], "k-", lw=1, label="H(g), the bound")
    for result in results.values():
        gs = [p["g"] for p in result["positions"]]
        axes.plot(gs, [p["bits"] for p in result["positions"]], "o-", ms=4, label=f"icq positions: {result['title']}")
    axes.axhline(1.0, color="grey", ls=":", lw=1, label="1-bit mask")
    axes.set_xlabel("outlier share g")
    axes.set_ylabel("position bits per weight")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(HERE / "position-cost.png")
    plt.close(figure)


def draw_llm_quality(table: dict) -> None:
    """Perplexity (log scale) against bits/weight, one line per method and quantizer."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    grouped: dict[str, list[dict]] = {}
    for row in table["rows"]:
        label = row["row"] if row["quantizer"] == "-" else f"{row['row']} ({row['quantizer']})"
        grouped.setdefault(label, []).append(row)
    for index, (label, rows) in enumerate(sorted(grouped.items())):
        rows.sort(key=lambda r: r["bits_per_weight"])
        style = "--" if "codebook" in label else "-"
        axes.plot([r["bits_per_weight"] for r in rows], [r["perplexity"] for r in rows], style, marker="o",
                  label=label, color=plt.cm.tab20(index))  # fmt: skip
    axes.axhline(table["base_perplexity"], color="black", linewidth=0.8, label="base")
    axes.set_yscale("log")
    axes.set_xlabel("bits per weight (quantized linears)")
    axes.set_ylabel("perplexity")
    axes.set_title("SmolLM2-135M-Instruct")
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(HERE / "llm-quality.png")
    plt.close(figure)


def main() -> None:
    results = json.loads((HERE / "rate_distortion.json").read_text())["datasets"]
    for slug, result in results.items():
        draw_rate_distortion(slug, result)
    draw_position_cost(results)
    if (HERE / "llm_quality.json").exists():
        draw_llm_quality(json.loads((HERE / "llm_quality.json").read_text()))


if __name__ == "__main__":
    main()
