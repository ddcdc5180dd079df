import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from icqcodec.decode import BACKENDS

# the conformance package (vectors, invariants) beside the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# numba compiles on first use: a first example may take seconds, so no per-example deadline
settings.register_profile("icq", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("icq")


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
