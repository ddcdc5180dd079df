"""The numcodecs codec "icq": lossy icq coding of floating-point arrays inside zarr and friends.

Registered through the ``numcodecs.codecs`` entry point; numcodecs is an optional dependency.
"""

from __future__ import annotations

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ndarray_copy

from .decode import decode
from .encode import encode


class IcqCodec(Codec):
    """Dual-range scalar codes with index-coded outliers (ICQ format 1.0), one tensor per chunk.

    Example:
        >>> import numpy as np
        >>> codec = IcqCodec(bits=4)
        >>> x = np.linspace(-1, 1, 8192, dtype=np.float32).reshape(64, 128)
        >>> codec.decode(codec.encode(x)).shape
        (64, 128)
    """

    codec_id = "icq"

    def __init__(self, bits: int = 2, outlier_ratio: float = 0.05, quantizer: str = "uniform",
                 dtype: str | None = None) -> None:  # fmt: skip
        self.bits, self.outlier_ratio, self.quantizer, self.dtype = bits, outlier_ratio, quantizer, dtype

    def encode(self, buf) -> bytes:
        array = np.asarray(buf)
        return encode(array, bits=self.bits, outlier_ratio=self.outlier_ratio, quantizer=self.quantizer,
                      dtype=self.dtype)  # fmt: skip

    def decode(self, buf, out=None) -> np.ndarray:
        decoded = decode(ensure_bytes(buf))
        return ndarray_copy(decoded, out) if out is not None else decoded
