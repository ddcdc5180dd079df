"""ICQ tensors in safetensors files (spec/icq-safetensors.md): a U8 vector holding a one-tensor ICQ
file decodes to that file's bits, which stored tensors are ICQ tensors follows the magic, and the
annex's rules are enforced with their categories."""

import numpy as np
import pytest

import icqcodec
from icqcodec import annex_safetensors as annex
from icqcodec import safetensors_format
from icqcodec.container import bytes_reader, read_header

F32, U8 = (safetensors_format.DTYPES[n] for n in ("F32", "U8"))


def stored(name: str, array: np.ndarray, **options) -> bytes:
    data = icqcodec.save({name: array}, **options)
    read_at, size = bytes_reader(data)
    header = read_header(read_at, size)
    record = header.tensors[0]
    pieces = annex.stored_bytes(record, read_at(header.data_offset, record.size), header.chunk_log2)
    return b"".join(bytes(p) for p in pieces)


def write(path, tensors: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as out:
        safetensors_format.write_file(out, [(n, 5 if a.dtype == np.uint8 else 11, a.shape) for n, a in tensors.items()],
                                      lambda n: tensors[n].tobytes())  # fmt: skip


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_a_stored_icq_tensor_decodes_to_the_files_bits(rng, bits):
    weights = rng.standard_t(4, size=(33, 300)).astype(np.float32)
    data = stored("m.weight", weights, bits=bits)
    expected = icqcodec.load(icqcodec.save({"m.weight": weights}, bits=bits))["m.weight"]
    for backend in ("numba", "reference"):
        assert annex.decode_stored("m.weight", data, backend=backend).tobytes() == expected.tobytes()
    assert annex.verify_stored("m.weight", data).shape == (33, 300)


def test_load_file_gives_plain_and_icq_tensors_in_name_order(rng, tmp_path):
    weights = rng.standard_normal((8, 64)).astype(np.float32)
    tensors = {"c": np.arange(3, dtype=np.float32), "b.weight": np.frombuffer(stored("b.weight", weights), np.uint8),
               "a": np.ones(2, np.float32), "u": np.frombuffer(b"\x89ICQ\r\n\x1a\x0b", np.uint8)}  # fmt: skip
    write(tmp_path / "m.safetensors", tensors)
    loaded = annex.load_file(tmp_path / "m.safetensors")
    assert list(loaded) == ["a", "b.weight", "c", "u"]
    assert np.array_equal(loaded["b.weight"], icqcodec.load(icqcodec.save({"b.weight": weights}))["b.weight"])
    assert loaded["c"].tobytes() == tensors["c"].tobytes() and loaded["u"].tobytes() == tensors["u"].tobytes()


def test_which_stored_tensors_are_icq_tensors():
    magic = b"\x89ICQ\r\n\x1a\n"
    assert annex.is_icq_tensor(U8, (300,), magic + b"rest")
    assert not annex.is_icq_tensor(U8, (300,), magic[:7] + b"\0")
    assert not annex.is_icq_tensor(U8, (3, 100), magic)  # rank 2
    assert not annex.is_icq_tensor(F32, (75,), magic)
    assert not annex.is_icq_tensor(U8, (7,), magic[:7])


def test_a_renamed_or_damaged_icq_tensor_is_refused(rng):
    data = stored("a.weight", rng.standard_normal((4, 32)).astype(np.float32))
    with pytest.raises(icqcodec.CorruptStreamError, match="holds a tensor named 'a.weight'"):
        annex.decode_stored("b.weight", data)
    damaged = bytearray(data)
    damaged[-20] ^= 1
    with pytest.raises(icqcodec.ChecksumError):
        annex.decode_stored("a.weight", bytes(damaged))
    with pytest.raises(icqcodec.TruncatedError):
        annex.decode_stored("a.weight", data[:-1])
    two = icqcodec.save({"a.weight": np.ones((4, 64), np.float32), "b": np.ones(2, np.float32)})
    with pytest.raises(icqcodec.CorruptStreamError, match="holds 2 tensor records, not one"):
        annex.decode_stored("a.weight", two)


def test_a_file_that_is_not_safetensors_is_corrupt(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}")
    with pytest.raises(icqcodec.CorruptStreamError, match="not a valid safetensors file"):
        annex.load_file(tmp_path / "x.safetensors")
