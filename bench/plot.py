"""Draws docs/rate-distortion.png from bench/quality.json (written by bench/quality.py).

Run: python bench/plot.py   (needs matplotlib)
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    points = json.loads((HERE / "quality.json").read_text())
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, series in points.items():
        rates, errors = zip(*series, strict=True)
        axes.plot(rates, errors, marker="o", label=label)
    axes.set_yscale("log")
    axes.set_xlabel("bits per weight (every byte counted)")
    axes.set_ylabel("relative squared error")
    axes.set_title("all-MiniLM-L6-v2, 36 encoder matrices")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(HERE.parent / "docs" / "rate-distortion.png")


if __name__ == "__main__":
    main()
