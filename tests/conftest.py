import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from icqcodec.decode import BACKENDS
from icqcodec.gpu import available as gpu_available

# the conformance package (vectors, invariants) beside the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# numba compiles on first use: a first example may take seconds, so no per-example deadline
settings.register_profile("icq", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("icq")


@pytest.fixture(params=[b for b in BACKENDS if b != "cupy" or gpu_available()])
def backend(request):
    """Every decoding backend this machine runs: cupy only with CuPy and a GPU."""
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
