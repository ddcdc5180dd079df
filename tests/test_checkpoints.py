"""Model files in and out without the command line: sources, single files, sharded checkpoints,
what the converter refuses and that it never clobbers."""

import json

import ml_dtypes
import numpy as np
import pytest
from checks import same_bits
from safetensors.numpy import load_file as load_safetensors
from safetensors.numpy import save_file as save_safetensors

import icqcodec
from icqcodec.checkpoints import InputError, decode_checkpoint, encode_checkpoint, open_source
from icqcodec.encode import EncodeOptions


@pytest.fixture
def model(tmp_path, rng):
    tensors = {"w": rng.standard_normal((64, 128)).astype(np.float32),
               "b": rng.standard_normal(64).astype(ml_dtypes.bfloat16),
               "ids": np.arange(6, dtype=np.int64).reshape(2, 3)}  # fmt: skip
    path = tmp_path / "model.safetensors"
    save_safetensors(tensors, str(path), metadata={"format": "pt"})
    return path, tensors


def test_open_source_reads_safetensors_npz_and_npy(tmp_path, model):
    path, tensors = model
    source = open_source(path)
    try:
        assert sorted(source.names) == sorted(tensors) and source.metadata == {"format": "pt"}
        assert same_bits(source.load("ids"), tensors["ids"])
    finally:
        source.close()
    np.savez(tmp_path / "m.npz", a=np.ones(3))
    np.save(tmp_path / "m.npy", np.zeros((2, 2)))
    assert open_source(tmp_path / "m.npz").names == ["a"]
    assert open_source(tmp_path / "m.npy").names == ["tensor"]


@pytest.mark.parametrize("name, content, message", [
    ("m.txt", b"x", "unknown input format '.txt'"),
    ("m.npz", b"not a zip", "not a readable .npz file"),
    ("m.npy", b"not numpy", "not a readable .npy file"),
    ("m.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{", "not a readable safetensors file"),
])  # fmt: skip
def test_unreadable_inputs_raise_input_error(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        open_source(tmp_path / name)
    assert isinstance(caught.value, icqcodec.IcqcodecError) and isinstance(caught.value, ValueError)


def test_single_file_round_trip(tmp_path, model):
    path, tensors = model
    icq, back = tmp_path / "m.icq", tmp_path / "back.safetensors"
    assert encode_checkpoint(path, icq, EncodeOptions(bits=3)) == [icq]
    assert decode_checkpoint(icq, back) == [back]
    decoded = load_safetensors(str(back))
    assert same_bits(decoded["ids"], tensors["ids"]) and same_bits(decoded["b"], tensors["b"])
    assert same_bits(decoded["w"], icqcodec.load_file(icq)["w"])
    with icqcodec.safe_open(icq) as f:
        assert f.record("w").params.bits == 3 and f.record("b").coding == 0
        assert json.loads(f.metadata()["icq.encoder_options"])["bits"] == 3


def test_include_exclude(tmp_path, model):
    path, _ = model
    icq = tmp_path / "m.icq"
    encode_checkpoint(path, icq, EncodeOptions(), exclude=("w",), include=("b",))
    with icqcodec.safe_open(icq) as f:
        assert {n: f.record(n).coding for n in f.keys()} == {"b": 1, "ids": 0, "w": 0}


def test_sharded_round_trip_and_no_clobbering(tmp_path, rng):
    folder = tmp_path / "hf"
    folder.mkdir()
    shards = {"model-00001-of-00002.safetensors": {"a.weight": rng.standard_normal((32, 64)).astype(np.float32)},
              "model-00002-of-00002.safetensors": {"b.weight": rng.standard_normal((32, 64)).astype(np.float32)}}  # fmt: skip
    weight_map = {}
    for shard, tensors in shards.items():
        save_safetensors(tensors, str(folder / shard))
        weight_map.update(dict.fromkeys(tensors, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    written = encode_checkpoint(folder, tmp_path / "icq", EncodeOptions(bits=4))
    assert sorted(p.name for p in written) == ["model-00001-of-00002.icq", "model-00002-of-00002.icq",
                                               "model.icq.index.json"]  # fmt: skip
    index = json.loads((tmp_path / "icq" / "model.icq.index.json").read_text())
    assert index["weight_map"] == {"a.weight": "model-00001-of-00002.icq", "b.weight": "model-00002-of-00002.icq"}
    with pytest.raises(FileExistsError, match="exists; use --force to replace it"):
        encode_checkpoint(folder, tmp_path / "icq", EncodeOptions(bits=4))
    back = decode_checkpoint(tmp_path / "icq", tmp_path / "back")
    assert (tmp_path / "back" / "model.safetensors.index.json") in back
    assert load_safetensors(str(tmp_path / "back" / "model-00002-of-00002.safetensors"))["b.weight"].shape == (32, 64)


def test_directory_without_index_and_bad_output_format(tmp_path, model):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="directory without model.safetensors.index.json"):
        encode_checkpoint(tmp_path / "empty", tmp_path / "x", EncodeOptions())
    path, _ = model
    encode_checkpoint(path, tmp_path / "m.icq", EncodeOptions())
    with pytest.raises(InputError, match="unknown output format '.bin'"):
        decode_checkpoint(tmp_path / "m.icq", tmp_path / "m.bin")
    with pytest.raises(InputError, match="holds 3 tensors; a .npy file holds one: use .npz"):
        decode_checkpoint(tmp_path / "m.icq", tmp_path / "m.npy")
    assert not (tmp_path / "m.npy").exists()
