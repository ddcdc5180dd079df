"""Checks shared by the tests."""

import numpy as np
import pytest

import icqcodec
from icqcodec import files


def host(array, dtype=None) -> np.ndarray:
    """A decoded array on the host: CuPy arrays copied back, their bit patterns (CuPy has no
    bfloat16 or float8) viewed as ``dtype``."""
    if type(array).__module__.startswith("cupy"):
        import cupy

        array = cupy.asnumpy(array)
        if dtype is not None and array.dtype != dtype:
            array = array.view(dtype)
    return array


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality of two arrays (NaN payloads and signed zeros included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_backends_agree(data: bytes) -> dict:
    """Every CPU backend decodes ``data`` to the same bits; returns the tensors."""
    reference = files.load(data, backend="reference")
    fast = files.load(data, backend="numba")
    assert reference.keys() == fast.keys()
    for name in reference:
        assert same_bits(reference[name], fast[name]), name
    return fast


def check_rejected(data: bytes, error: type = icqcodec.FormatError, category: str | None = None) -> None:
    """Every backend rejects ``data`` with ``error`` and the same category."""
    categories = set()
    for backend in ("reference", "numba"):
        with pytest.raises(error) as caught:
            files.load(data, backend=backend)
        categories.add(caught.value.category)
    assert len(categories) == 1, categories
    if category is not None:
        assert categories == {category}
