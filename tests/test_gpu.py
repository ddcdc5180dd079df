"""The CuPy decoder: bit-exact against the CPU decoders, same rejections. Skips without a GPU;
the refusal without one and the host-side status mapping run everywhere."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import valid_streams

import icqcodec
from conformance import runner
from conformance.invariants import decode_or_reject, mutate, rechecksum
from icqcodec import files, gpu
from icqcodec.container import bytes_reader, read_header, tensor_layout
from icqcodec.payload_checks import raise_first

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


def same(cpu: dict, device: dict) -> bool:
    return cpu.keys() == device.keys() and all(cpu[k].tobytes() == gpu_bytes(device[k]) for k in cpu)


@needs_gpu
@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_files_bit_exact(path):
    data = path.read_bytes()
    assert same(files.load(data), files.load(data, backend="cupy"))


@needs_gpu
@settings(max_examples=100)
@given(valid_streams())
def test_random_valid_streams_bit_exact(data):
    assert same(files.load(data), files.load(data, backend="cupy"))


@needs_gpu
def test_load_file_on_device(tmp_path, rng):
    tensors = {"w": rng.standard_normal((256, 1024)).astype(np.float32), "b": np.arange(7, dtype=np.int64)}
    files.save_file(tensors, tmp_path / "m.icq")
    assert same(files.load_file(tmp_path / "m.icq"), files.load_file(tmp_path / "m.icq", backend="cupy"))


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
    with files.safe_open(tmp_path / "m.icq") as cpu, files.safe_open(tmp_path / "m.icq", backend="cupy") as device:
        for a, b in ((0, 1), (7, 150), (299, 300), (0, 300)):
            assert cpu.get_slice("w")[a:b].tobytes() == gpu_bytes(device.get_slice("w")[a:b])


def test_segment_status_becomes_the_first_error_of_each_row():
    """The kernels' per-segment status (outliers placed, or minus the chain error) maps to the
    decoders' row flags; runs everywhere, since it is host code."""
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
    assert gpu.chain_flags(status, flags, expected=6)
    assert flags[:, 2:].tolist() == [[0, 0], [1, 2], [2, 1], [3, 5]]
    with pytest.raises(icqcodec.FormatError, match="row 11 segment 2: gap chain runs past the end"):
        raise_first("w", 10, flags, 0, 6)
    clean = np.zeros((4, 4), np.int64)
    assert not gpu.chain_flags(status[:1], clean[:1], expected=6)
    assert not clean.any()


def outcome(data: bytes, backend: str):
    """("error", category, message) or ("ok", name -> bytes of each tensor)."""
    try:
        tensors = files.load(data, backend=backend)
    except icqcodec.FormatError as error:
        return "error", error.category, str(error)
    return "ok", {k: gpu_bytes(v) if backend == "cupy" else v.tobytes() for k, v in tensors.items()}


@needs_gpu
@pytest.mark.parametrize("bits", range(1, 9))
def test_encoded_tensors_bit_exact(rng, bits):
    """Every quantizer and output dtype, rows of 1 to 3000 columns."""
    for quantizer in ("uniform", "codebook"):
        for dtype in ("float16", "bfloat16", "float32"):
            shape = (int(rng.integers(1, 40)), int(rng.integers(1, 3000)))
            w = (rng.standard_t(4, size=shape) * 0.02).astype(np.float32)
            data = icqcodec.encode(w, bits=bits, quantizer=quantizer, dtype=dtype)
            assert same(files.load(data), files.load(data, backend="cupy")), (shape, quantizer, dtype)


@needs_gpu
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_large_tensor_bit_exact(rng, bits):
    w = (rng.standard_t(4, size=(2048, 4096)) * 0.02).astype(np.float32)
    data = icqcodec.encode(w, bits=bits, dtype="float16")
    assert same(files.load(data), files.load(data, backend="cupy"))


@needs_gpu
def test_mutated_chains_give_the_cpu_outcome(rng):
    """Bit flips in the segment counts and gap symbols, checksums recomputed so that they reach the
    chain checks: the same category and message, or the same bits, as the numba decoder."""
    blobs = [path.read_bytes() for path in GOLDEN]
    for bits in (1, 2, 3, 4, 8):
        w = rng.standard_t(4, size=(int(rng.integers(2, 30)), int(rng.integers(100, 3000)))) * 0.02
        blobs.append(icqcodec.encode(w.astype(np.float32), bits=bits, dtype="float16"))
    mutants = rejected = 0
    for data in blobs:
        header = read_header(*bytes_reader(data))
        record = header.tensors[0]
        if record.params is None or not record.params.outliers:
            continue
        layout = tensor_layout(record, header.chunk_log2)
        start = header.data_offset + record.offset
        for _ in range(20):
            begin, size = layout.sections["gaps" if rng.random() < 0.7 else "counts"]
            mutated = bytearray(data)
            mutated[start + begin + int(rng.integers(0, size))] ^= 1 << int(rng.integers(0, 8))
            mutated = rechecksum(mutated)
            expected = outcome(mutated, "numba")
            assert outcome(mutated, "cupy") == expected, (mutants, expected[:2])
            mutants += 1
            rejected += expected[0] == "error"
    assert mutants >= 100 and rejected > mutants // 4, (mutants, rejected)


@needs_gpu
def test_conformance_vectors_on_cupy():
    passed, failures = runner.run(runner.in_process("cupy"))
    manifest = json.loads((Path(runner.HERE) / "MANIFEST.json").read_text())
    assert failures == [] and passed == len(manifest["vectors"])


@needs_gpu
def test_mutated_vectors_decode_or_reject_as_on_the_cpu():
    """The decoder invariant on the GPU, and the CPU's verdict, on seeded mutations of every vector."""
    vectors = sorted((Path(runner.HERE) / "vectors" / "valid").glob("*.icq"))
    rng = random.Random(7)
    for index in range(600):
        data = mutate(vectors[index % len(vectors)].read_bytes(), rng)
        decoded = decode_or_reject(data, "cupy")
        expected = outcome(data, "numba")
        assert (decoded is None) == (expected[0] == "error"), index
        assert outcome(data, "cupy") == expected, index
