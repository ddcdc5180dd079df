"""The ``gguf`` package's numpy quantizers (ggml block formats; no k-quants there)."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType, quants

TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")


def quantize(matrix: np.ndarray, kind: str) -> tuple[np.ndarray, float]:
    """(reconstruction, bits/weight counted from the quantized bytes) for a ggml block type."""
    qtype = GGMLQuantizationType[kind]
    blocks = quants.quantize(matrix.astype(np.float32), qtype)
    restored = quants.dequantize(blocks, qtype).reshape(matrix.shape)
    return restored.astype(np.float32), blocks.nbytes * 8 / matrix.size
