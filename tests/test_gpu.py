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


def _encoded(w: np.ndarray, bits: int, segment_log2: int, dtype: str) -> bytes:
    from icqcodec.encode import ENCODER_METADATA, EncodeOptions, assemble, encode_tensor

    options = EncodeOptions(bits=bits, segment_log2=segment_log2)
    return b"".join(assemble([encode_tensor("w", w, options, coding="icq", dtype=dtype)], dict(ENCODER_METADATA)))


@needs_gpu
@pytest.mark.parametrize("segment_log2", [4, 5, 8, 10, 11])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_every_kernel_path_bit_exact(rng, segment_log2, bits):
    """Segments the warp kernel takes (32 to 1024 columns) and those the fallback walker takes
    (16, 2048), widths that leave rows unaligned for vector stores, and every output dtype."""
    for dtype, cols in (("float16", 2500), ("bfloat16", 1031), ("float32", 4096)):
        w = (rng.standard_t(4, size=(37, cols)) * 0.02).astype(np.float32)
        data = _encoded(w, bits, segment_log2, dtype)
        assert files.load(data)["w"].tobytes() == gpu_bytes(files.load(data, backend="cupy")["w"])


@needs_gpu
def test_row_slices_bit_exact(rng, tmp_path):
    w = (rng.standard_t(4, size=(300, 3000)) * 0.02).astype(np.float32)
    files.save_file({"w": w}, tmp_path / "m.icq", bits=3)
    with files.safe_open(tmp_path / "m.icq") as cpu, files.safe_open(tmp_path / "m.icq", device="cuda") as device:
        for a, b in ((0, 1), (7, 150), (299, 300), (0, 300)):
            assert cpu.get_slice("w")[a:b].tobytes() == gpu_bytes(device.get_slice("w")[a:b])


def test_segment_status_becomes_the_first_error_of_each_row():
    """The kernels' per-segment status (outliers placed, or minus the chain error) maps to the
    decoders' row flags; runs everywhere, since it is host code."""
    from icqcodec.decode import _raise_first
    from icqcodec.gpu import _chain_flags

    status = np.array(
        [
            [3, 2, 1, 0],  # 6 outliers, as expected
            [3, 0, -1, -2],  # segment 2 runs past its end (segment 3's trailing escape comes later)
            [0, -2, 5, 1],  # segment 1 ends with an escape
            [3, 2, 0, 0],  # one outlier short
        ],
        dtype=np.int32,
    )
    flags = np.zeros((4, 4), np.int64)
    assert _chain_flags(status, flags, expected=6)
    assert flags[:, 2:].tolist() == [[0, 0], [1, 2], [2, 1], [3, 5]]
    with pytest.raises(icqcodec.FormatError, match="row 11 segment 2: gap chain runs past the end"):
        _raise_first("w", 10, flags, 0, 6)
    clean = np.zeros((4, 4), np.int64)
    assert not _chain_flags(status[:1], clean[:1], expected=6)
    assert not clean.any()
