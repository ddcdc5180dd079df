"""The raw coding (spec section 6.1): the elements in row-major order, little-endian, bit for bit;
the bool byte rule of section 3. Vectorized; shared by the fast decoders."""

from __future__ import annotations

import numpy as np

from . import dtypes
from .errors import CorruptStreamError
from .payload import Payload

__all__ = ["raw_rows", "decode_raw", "bool_error"]


def raw_rows(payload: Payload, rows: tuple[int, int] | None) -> tuple[bytes, tuple[int, ...]]:
    """The bytes and shape of a raw tensor, or of its rows ``rows[0]`` to ``rows[1] - 1`` of the
    leading dimension (their chunks verified as they are read)."""
    record = payload.record
    size = dtypes.item_size(record.dtype)
    if rows is None:
        return payload.section("raw"), record.shape
    inner = record.elements // record.shape[0] if record.shape and record.shape[0] else 0
    start, stop = rows
    data = payload.section("raw", start * inner * size, (stop - start) * inner * size)
    return data, (stop - start, *record.shape[1:])


def bool_error(name: str) -> CorruptStreamError:
    return CorruptStreamError(f"tensor {name!r}: bool byte other than 0 or 1", section="3")


def decode_raw(payload: Payload, rows: tuple[int, int] | None) -> np.ndarray:
    """A raw tensor, or its rows ``rows[0]`` to ``rows[1] - 1`` of the leading dimension."""
    record = payload.record
    data, shape = raw_rows(payload, rows)
    if record.dtype == dtypes.BOOL and (np.frombuffer(data, dtype=np.uint8) > 1).any():
        raise bool_error(record.name)
    return np.frombuffer(data, dtype=dtypes.numpy_dtype(record.dtype)).reshape(shape).copy()
