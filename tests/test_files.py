"""Files: save_file/load_file/safe_open, row ranges, atomic writes, 64-bit offsets."""

import os
import struct

import ml_dtypes
import numpy as np
import pytest
from checks import host, same_bits

import icqcodec
from icqcodec import files
from icqcodec.container import TensorRecord, crc32c
from icqcodec.container_writer import build_payload, write_container
from icqcodec.payload import chunk_table


@pytest.fixture
def tensors(rng):
    return {
        "layer.0.weight": rng.standard_normal((96, 256)).astype(np.float32),
        "layer.0.bias": rng.standard_normal(96).astype(np.float32),
        "emb": rng.standard_normal((4, 8, 128)).astype(ml_dtypes.bfloat16),
        "ids": np.arange(12, dtype=np.int64).reshape(3, 4),
        "empty": np.zeros((0, 5), np.float16),
        "scalar": np.array(3.5, np.float64),
        "名前": np.ones((2, 2), np.uint8),
    }


def test_save_file_load_file(tmp_path, tensors, backend):
    path = tmp_path / "model.icq"
    files.save_file(tensors, path, metadata={"format": "pt"}, bits=3)
    loaded = {k: host(v, tensors[k].dtype) for k, v in files.load_file(path, backend=backend).items()}
    assert list(loaded) == sorted(tensors, key=lambda n: n.encode())
    for name, array in tensors.items():
        assert loaded[name].shape == array.shape and loaded[name].dtype == array.dtype, name
    for name in ("layer.0.bias", "ids", "empty", "scalar", "名前"):
        assert same_bits(loaded[name], tensors[name])
    with files.safe_open(path) as f:
        assert f.metadata()["format"] == "pt"


def test_get_slice_reads_only_those_rows(tmp_path, tensors, backend):
    path = tmp_path / "model.icq"
    files.save_file(tensors, path, bits=2)
    whole = files.load_file(path)
    with files.safe_open(path, backend=backend) as f:
        for name in ("layer.0.weight", "emb", "ids", "layer.0.bias"):
            n = tensors[name].shape[0]
            for a, b in ((0, n), (1, 3), (n - 1, n), (2, 2)):
                part = host(f.get_slice(name)[a:b], whole[name].dtype)
                assert same_bits(part, whole[name][a:b]), (name, a, b)
        assert f.get_slice("emb").get_shape() == [4, 8, 128]


def test_existing_output_is_not_clobbered(tmp_path, tensors):
    path = tmp_path / "model.icq"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True to replace it"):
        files.save_file(tensors, path)
    assert path.read_bytes() == b"precious"
    files.save_file(tensors, path, overwrite=True)
    assert path.read_bytes()[:4] == b"\x89ICQ"
    assert [p.name for p in tmp_path.iterdir()] == ["model.icq"]  # no temporary left behind
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would make it, not mkstemp's 0600


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "model.icq"
    with pytest.raises(ValueError, match="tensor 'w': the icq coding needs finite values"):
        files.save_file({"w": np.full((4, 64), np.nan, np.float32)}, path, coding="icq")
    assert list(tmp_path.iterdir()) == []


def test_metadata_rules(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        files.save({"a": np.ones(2)}, metadata={"icq.encoder": "me"})
    with pytest.raises(TypeError, match="metadata keys and values must be str, got 'n': 1"):
        files.save({"a": np.ones(2)}, metadata={"n": 1})
    with pytest.raises(ValueError, match="non-empty"):
        files.save({"": np.ones(2)})


def test_offsets_beyond_4_gib(tmp_path):
    """A sparse file whose second tensor starts past 2^32 bytes decodes through 64-bit offsets."""
    big_elements = (1 << 32) + 4096
    small_array = np.arange(24, dtype=np.float32).reshape(2, 12)
    small = TensorRecord("b-small", 11, 11, 0, (2, 12))
    small_payload, small_crc = build_payload(small, {"raw": small_array.tobytes()}, 16)
    zero_chunk_crc = crc32c(bytes(1 << 16))
    chunks = -(-big_elements // (1 << 16))
    tail = big_elements - (chunks - 1) * (1 << 16)
    big_table = zero_chunk_crc.to_bytes(4, "little") * (chunks - 1) + crc32c(bytes(tail)).to_bytes(4, "little")

    class Sparse:  # stands in for a payload of zeros, written as a hole
        def __len__(self):
            return big_elements + len(big_table)

    records = [TensorRecord("a-big", 5, 5, 0, (big_elements,), table_crc=crc32c(big_table)),
               TensorRecord("b-small", 11, 11, 0, (2, 12), table_crc=small_crc)]  # fmt: skip
    pieces = write_container(records, [Sparse(), small_payload], {}, chunk_log2=16)
    path = tmp_path / "sparse.icq"
    with open(path, "wb") as out:
        for piece in pieces:
            if isinstance(piece, Sparse):
                out.seek(big_elements, os.SEEK_CUR)
                out.write(big_table)
            else:
                out.write(piece)
    assert os.path.getsize(path) > 1 << 32
    with files.safe_open(path) as f:
        assert f.header.tensors[1].offset > 1 << 32
        assert same_bits(f.get_tensor("b-small"), small_array)
        assert same_bits(f.get_slice("a-big")[(1 << 32) : (1 << 32) + 8], np.zeros(8, np.uint8))
    assert chunk_table(bytes(10), 16) == crc32c(bytes(10)).to_bytes(4, "little")
    assert struct.unpack_from("<Q", path.read_bytes()[:64], 32)[0] > 1 << 32


def test_load_rejects_garbage_file(tmp_path):
    path = tmp_path / "x.icq"
    path.write_bytes(b"not an icq file at all")
    with pytest.raises(icqcodec.BadMagicError, match="does not start with the ICQ magic at offset 0"):
        files.load_file(path)
