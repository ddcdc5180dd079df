"""Inputs of the golden encodings, from integer arithmetic alone so every numpy gives the same floats.

Run ``python tests/golden/inputs.py`` to rewrite the golden files after an intended encoder change
(and say why in the CHANGELOG); the tests only read them.
"""

from pathlib import Path

import numpy as np

CASES = {
    "uniform-2bit": dict(shape=(16, 384), options=dict(bits=2)),
    "uniform-3bit-bf16": dict(shape=(8, 1100), options=dict(bits=3, dtype="bfloat16")),
    "codebook-4bit": dict(shape=(12, 256), options=dict(bits=4, quantizer="codebook")),
    "no-outliers-1bit": dict(shape=(5, 70), options=dict(bits=1, outlier_ratio=0.0)),
    "dense-outliers-8bit": dict(shape=(3, 40), options=dict(bits=8, outlier_ratio=0.5, dtype="float16")),
}


def heavy_tailed(shape: tuple[int, ...], seed: int = 12345) -> np.ndarray:
    """Deterministic heavy-tailed float32 values from a 64-bit LCG."""
    n = int(np.prod(shape))
    state = np.uint64(seed)
    out = np.empty(n, dtype=np.float64)
    with np.errstate(over="ignore"):
        for i in range(n):
            state = state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
            u = (int(state >> np.uint64(11)) + 0.5) / 2**53  # in (0, 1)
            out[i] = np.tan(np.pi * (u - 0.5)) * 0.02  # Cauchy-like tails
    return np.clip(out, -1.0, 1.0).astype(np.float32).reshape(shape)


if __name__ == "__main__":
    import icqcodec

    here = Path(__file__).parent
    for name, case in CASES.items():
        (here / f"{name}.icq").write_bytes(icqcodec.encode(heavy_tailed(case["shape"]), **case["options"]))
