"""Data type codes (spec section 3) and their numpy types.

bfloat16 and the float8 kinds come from ml_dtypes, the package jax and tensorflow use for them.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

# code -> (name, numpy dtype), spec section 3
_TABLE: dict[int, tuple[str, np.dtype]] = {
    0: ("bool", np.dtype(np.bool_)),
    1: ("int8", np.dtype("<i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("int64", np.dtype("<i8")),
    5: ("uint8", np.dtype("<u1")),
    6: ("uint16", np.dtype("<u2")),
    7: ("uint32", np.dtype("<u4")),
    8: ("uint64", np.dtype("<u8")),
    9: ("float16", np.dtype("<f2")),
    10: ("bfloat16", np.dtype(ml_dtypes.bfloat16)),
    11: ("float32", np.dtype("<f4")),
    12: ("float64", np.dtype("<f8")),
    13: ("float8_e4m3fn", np.dtype(ml_dtypes.float8_e4m3fn)),
    14: ("float8_e5m2", np.dtype(ml_dtypes.float8_e5m2)),
}

BOOL = 0
FLOAT16 = 9
BFLOAT16 = 10
FLOAT32 = 11
FLOAT_CODES = frozenset(range(9, 15))  # 6.2: allowed source types of the icq coding
ICQ_OUTPUT_CODES = frozenset({FLOAT16, BFLOAT16, FLOAT32})  # 6.2

NAMES = {code: name for code, (name, _) in _TABLE.items()}
CODES_BY_NAME = {name: code for code, name in NAMES.items()}


def is_known(code: int) -> bool:
    return code in _TABLE


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype of a data type code (little-endian)."""
    return _TABLE[code][1]


def code_of(dtype: np.dtype | str) -> int:
    """The data type code of a numpy dtype or a spec name; ValueError for other types."""
    if isinstance(dtype, str) and dtype in CODES_BY_NAME:
        return CODES_BY_NAME[dtype]
    dtype = np.dtype(dtype)
    for code, (_, known) in _TABLE.items():
        if dtype == known or dtype == known.newbyteorder(">"):
            return code
    raise ValueError(f"data type {dtype} has no ICQ code; supported: {', '.join(CODES_BY_NAME)}")


def item_size(code: int) -> int:
    return _TABLE[code][1].itemsize
