"""HQQ (half-quadratic quantization, PyPI ``hqq``) on the CPU, group 64, fp16 scale and zero.

Optional: needs ``torch`` and ``hqq`` (see bench/RESULTS.md for the install line); :func:`available`
says whether they import.
"""

from __future__ import annotations

import numpy as np

GROUP = 64
PARAM_BITS = 32  # HQQ keeps a scale and a zero per group in the compute dtype, float16


def available() -> str | None:
    """None when HQQ can run here, else why not."""
    try:
        import hqq.core.quantize  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        return f"HQQ not run: {error} (pip install torch==2.13.0 hqq; see bench/RESULTS.md)"
    return None


def quantize(matrix: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """(reconstruction with HQQ's optimizer, bits/weight) with scale and zero rounded to float16."""
    import torch
    from hqq.core.quantize import Quantizer

    torch.manual_seed(0)
    codes, meta = Quantizer.quantize(torch.from_numpy(matrix.astype(np.float32)), nbits=bits, group_size=GROUP,
                                     optimize=True, axis=1, device="cpu")  # fmt: skip
    meta["scale"] = meta["scale"].half().float()
    meta["zero"] = meta["zero"].half().float()
    restored = Quantizer.dequantize(codes, meta).reshape(matrix.shape)
    return restored.float().numpy(), bits + PARAM_BITS / GROUP
