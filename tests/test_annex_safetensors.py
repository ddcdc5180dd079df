"""ICQ tensors in safetensors files (spec/icq-safetensors.md): pairs cut from one-tensor ICQ files
decode to the file's bits, and every rule of the annex is enforced with its category."""

import numpy as np
import pytest

import icqcodec
from icqcodec import annex_safetensors as annex
from icqcodec import safetensors_format
from icqcodec.container import bytes_reader, read_header

F32, U8, I8 = (safetensors_format.DTYPES[n] for n in ("F32", "U8", "I8"))


def one_tensor(name: str, array: np.ndarray, **options) -> tuple[bytes, bytes]:
    data = icqcodec.save({name: array}, **options)
    read_at, size = bytes_reader(data)
    header = read_header(read_at, size)
    record = header.tensors[0]
    half, payload = annex.split(record, bytes(read_at(header.data_offset, record.size)), header.chunk_log2)
    assert len(half) % 256 == 0 and bytes(payload) == bytes(read_at(header.data_offset, record.size))
    return half, bytes(payload)


def write(path, tensors: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as out:
        safetensors_format.write_file(out, [(n, 5 if a.dtype == np.uint8 else 11, a.shape) for n, a in tensors.items()],
                                      lambda n: tensors[n].tobytes())  # fmt: skip


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_a_pair_decodes_to_the_files_bits(rng, bits):
    weights = rng.standard_t(4, size=(33, 300)).astype(np.float32)
    data = icqcodec.save({"m.weight": weights}, bits=bits)
    header, payload = one_tensor("m.weight", weights, bits=bits)
    for backend in ("numba", "reference"):
        assert annex.decode_pair("m.weight", header, payload, backend=backend).tobytes() == \
            icqcodec.load(data)["m.weight"].tobytes()  # fmt: skip


def test_load_file_gives_plain_tensors_and_pairs_in_name_order(rng, tmp_path):
    weights = rng.standard_normal((8, 64)).astype(np.float32)
    header, payload = one_tensor("b.weight", weights)
    head, pay = annex.stored_names("b.weight")
    stored = {"c": np.arange(3, dtype=np.float32), head: np.frombuffer(header, np.uint8),
              pay: np.frombuffer(payload, np.uint8), "a": np.ones(2, np.float32)}  # fmt: skip
    write(tmp_path / "m.safetensors", stored)
    loaded = annex.load_file(tmp_path / "m.safetensors")
    assert list(loaded) == ["a", "b.weight", "c"]
    assert np.array_equal(loaded["b.weight"], icqcodec.load(icqcodec.save({"b.weight": weights}))["b.weight"])
    assert loaded["c"].tobytes() == stored["c"].tobytes()


def test_the_rules_of_the_pairs():
    pairs = annex.find_pairs({"w_icq_header": (U8, (256,)), "w_icq_payload": (U8, (90,)), "x": (F32, (2,))})
    assert pairs == {"w": ("w_icq_header", "w_icq_payload")}
    with pytest.raises(icqcodec.CorruptStreamError, match="'w_icq_payload' is missing"):
        annex.find_pairs({"w_icq_header": (U8, (256,))})
    with pytest.raises(icqcodec.CorruptStreamError, match="'w_icq_header' is missing"):
        annex.find_pairs({"w_icq_payload": (U8, (256,))})
    with pytest.raises(icqcodec.CorruptStreamError, match="I8 of shape"):
        annex.find_pairs({"w_icq_header": (I8, (256,)), "w_icq_payload": (U8, (9,))})
    with pytest.raises(icqcodec.CorruptStreamError, match="not a U8 tensor of rank 1"):
        annex.find_pairs({"w_icq_header": (U8, (256,)), "w_icq_payload": (U8, (3, 3))})
    with pytest.raises(icqcodec.CorruptStreamError, match="both plain and as an ICQ pair"):
        annex.find_pairs({"w_icq_header": (U8, (256,)), "w_icq_payload": (U8, (9,)), "w": (F32, (2,))})
    with pytest.raises(icqcodec.TruncatedError, match="shorter than a fixed header"):
        annex.find_pairs({"w_icq_header": (U8, (63,)), "w_icq_payload": (U8, (9,))})


def test_a_renamed_or_crossed_pair_is_corrupt(rng):
    header, payload = one_tensor("a.weight", rng.standard_normal((4, 32)).astype(np.float32))
    with pytest.raises(icqcodec.CorruptStreamError, match="holds a tensor named 'a.weight'"):
        annex.decode_pair("b.weight", header, payload)
    other = one_tensor("a.weight", rng.standard_normal((4, 32)).astype(np.float32))[1]
    with pytest.raises(icqcodec.ChecksumError):
        annex.decode_pair("a.weight", header, other)
    with pytest.raises(icqcodec.TruncatedError):
        annex.decode_pair("a.weight", header, payload[:-1])


def test_a_file_that_is_not_safetensors_is_corrupt(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}")
    with pytest.raises(icqcodec.CorruptStreamError, match="not a valid safetensors file"):
        annex.load_file(tmp_path / "x.safetensors")
