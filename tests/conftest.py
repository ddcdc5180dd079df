import numpy as np
import pytest

from icqcodec.decode import BACKENDS


def _cupy_ready() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.fixture(params=[b for b in BACKENDS if b != "cupy"])
def backend(request):
    """Every CPU decoding backend."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
