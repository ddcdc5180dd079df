"""The raw coding (spec section 6.1): the elements in row-major order, little-endian, bit for bit;
the bool byte rule of section 3. Vectorized; shared by the fast decoders."""

from __future__ import annotations

import numpy as np

from . import dtypes
from .errors import CorruptStreamError
from .payload import Payload

__all__ = ["decode_raw"]


def decode_raw(payload: Payload, rows: tuple[int, int] | None) -> np.ndarray:
    """A raw tensor, or its rows ``rows[0]`` to ``rows[1] - 1`` of the leading dimension."""
    record = payload.record
    dtype = dtypes.numpy_dtype(record.dtype)
    shape = record.shape
    if rows is None:
        data = payload.section("raw")
    else:
        inner = record.elements // shape[0] if shape and shape[0] else 0
        start, stop = rows
        data = payload.section("raw", start * inner * dtype.itemsize, (stop - start) * inner * dtype.itemsize)
        shape = (stop - start, *shape[1:])
    if record.dtype == dtypes.BOOL and (np.frombuffer(data, dtype=np.uint8) > 1).any():
        raise CorruptStreamError(f"tensor {record.name!r}: bool byte other than 0 or 1", section="3")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
