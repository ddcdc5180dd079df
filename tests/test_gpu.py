"""The CuPy decoder: bit-exact against the CPU decoders, same rejections. Skips without a GPU;
the refusal without one runs everywhere."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import valid_streams

import icqcodec
from icqcodec import files, gpu

needs_gpu = pytest.mark.skipif(not gpu.available(), reason="needs CuPy and a CUDA GPU")
GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.icq"))


@pytest.mark.skipif(gpu.available(), reason="checks the refusal on machines without a GPU")
def test_cupy_backend_refused_without_gpu(rng):
    data = icqcodec.encode(rng.standard_normal((4, 64)).astype(np.float32))
    with pytest.raises(icqcodec.BackendUnavailableError, match="CuPy and a CUDA GPU"):
        icqcodec.decode(data, backend="cupy")


def gpu_bytes(array) -> bytes:
    import cupy

    return cupy.asnumpy(array).tobytes()


@needs_gpu
@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_files_bit_exact(path):
    data = path.read_bytes()
    cpu, device = files.load(data), files.load(data, backend="cupy")
    assert all(cpu[k].tobytes() == gpu_bytes(device[k]) for k in cpu)


@needs_gpu
@settings(max_examples=100)
@given(valid_streams())
def test_random_valid_streams_bit_exact(data):
    cpu, device = files.load(data), files.load(data, backend="cupy")
    assert all(cpu[k].tobytes() == gpu_bytes(device[k]) for k in cpu)


@needs_gpu
def test_load_file_on_device(tmp_path, rng):
    tensors = {"w": rng.standard_normal((256, 1024)).astype(np.float32), "b": np.arange(7, dtype=np.int64)}
    files.save_file(tensors, tmp_path / "m.icq")
    cpu, device = files.load_file(tmp_path / "m.icq"), files.load_file(tmp_path / "m.icq", device="cuda")
    assert all(cpu[k].tobytes() == gpu_bytes(device[k]) for k in cpu)
