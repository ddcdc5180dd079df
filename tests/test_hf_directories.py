"""Model directories of ICQ tensors: .icq -> export-hf -> encode back gives the same file byte for
byte, sharded or not; the ICQ tensors are stored as the annex says; bad directories are refused."""

import json

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

import icqcodec
from icqcodec import annex_safetensors as annex
from icqcodec import hf_directories, safetensors_format
from icqcodec.cli import main


@pytest.fixture
def model_icq(tmp_path, rng):
    tensors = {"model.layers.0.mlp.down_proj.weight": rng.standard_t(4, size=(64, 256)).astype(np.float32),
               "model.layers.0.mlp.up_proj.weight": rng.standard_t(4, size=(256, 64)).astype(ml_dtypes.bfloat16),
               "model.norm.weight": np.ones(64, np.float32)}  # fmt: skip
    path = tmp_path / "m.icq"
    path.write_bytes(icqcodec.save(tensors, bits=3))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    (tmp_path / "tokenizer.json").write_text("{}")
    return path


def stored(directory):
    names = {}
    for path in sorted(directory.glob("*.safetensors")):
        opened = safetensors_format.read_file(path)
        names.update({n: (path.name, e.dtype, e.shape) for n, e in opened.entries.items()})
        opened.close()
    return names


@pytest.mark.parametrize("max_shard_bytes", [hf_directories.MAX_SHARD_BYTES, 4000])
def test_export_then_import_gives_the_same_file(model_icq, tmp_path, max_shard_bytes):
    written = hf_directories.export_hf(model_icq, tmp_path / "hf", max_shard_bytes=max_shard_bytes)
    assert {p.name for p in written} >= {"config.json", "tokenizer.json"}
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    quantization = config["quantization_config"]
    assert quantization["quant_method"] == "icq" and quantization["format_version"] == "1.0"
    assert quantization["annex_version"] == "1.0" and config["hidden_size"] == 64
    assert quantization["quantized"] == ["model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"]
    names = stored(tmp_path / "hf")
    assert sorted(names) == sorted([*quantization["quantized"], "model.norm.weight"])  # one stored tensor each
    for name in quantization["quantized"]:
        assert names[name][1] == annex.U8 and len(names[name][2]) == 1  # a one-tensor ICQ file
    assert names["model.norm.weight"][1:] == (safetensors_format.DTYPES["F32"], (64,))
    sharded = (tmp_path / "hf" / "model.safetensors.index.json").exists()
    assert sharded == (max_shard_bytes < hf_directories.MAX_SHARD_BYTES)
    hf_directories.import_hf(tmp_path / "hf", tmp_path / "back.icq")
    assert (tmp_path / "back.icq").read_bytes() == model_icq.read_bytes()


def test_the_command_line_both_ways(model_icq, tmp_path):
    runner = CliRunner()
    done = runner.invoke(main, ["export-hf", str(model_icq), str(tmp_path / "hf")])
    assert done.exit_code == 0, done.output
    again = runner.invoke(main, ["export-hf", str(model_icq), str(tmp_path / "hf")])
    assert again.exit_code == 1 and "exists; use --force" in again.output
    done = runner.invoke(main, ["encode", str(tmp_path / "hf"), str(tmp_path / "back.icq")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "back.icq").read_bytes() == model_icq.read_bytes()
    refused = runner.invoke(main, ["encode", str(tmp_path / "hf"), str(tmp_path / "other.icq"), "--bpw", "3"])
    assert refused.exit_code == 2 and "already ICQ-coded" in refused.output


def test_export_needs_a_config(model_icq, tmp_path):
    (tmp_path / "config.json").unlink()
    with pytest.raises(icqcodec.InputError, match="--config-from"):
        hf_directories.export_hf(model_icq, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_bad_directories_are_refused_naming_the_problem(model_icq, tmp_path):
    hf_directories.export_hf(model_icq, tmp_path / "hf")
    config_path = tmp_path / "hf" / "config.json"
    config = json.loads(config_path.read_text())
    for key, value in (("format_version", "2.0"), ("annex_version", "3.1")):
        bad = json.loads(json.dumps(config))
        bad["quantization_config"][key] = value
        config_path.write_text(json.dumps(bad))
        with pytest.raises(icqcodec.InputError, match=f"{key} is '{value}'.*upgrade icqcodec"):
            hf_directories.import_hf(tmp_path / "hf", tmp_path / "x.icq")
    config_path.write_text(json.dumps(config))
    # an ICQ tensor renamed in the checkpoint
    path = tmp_path / "hf" / "model.safetensors"
    opened = safetensors_format.read_file(path)
    data = {("model.layers.0.mlp.gate_proj.weight" if n.endswith("up_proj.weight") else n): bytes(opened.read(n))
            for n in opened.entries}  # fmt: skip
    entries = {("model.layers.0.mlp.gate_proj.weight" if n.endswith("up_proj.weight") else n): e
               for n, e in opened.entries.items()}  # fmt: skip
    opened.close()
    with open(path, "wb") as out:
        safetensors_format.write_file(out, [(n, e.dtype, e.shape) for n, e in entries.items()], data.__getitem__)
    with pytest.raises(icqcodec.CorruptStreamError, match="'model.layers.0.mlp.gate_proj.weight' holds a tensor named"):
        hf_directories.import_hf(tmp_path / "hf", tmp_path / "x.icq")
    assert not (tmp_path / "x.icq").exists()


def test_a_sharded_icq_checkpoint_exports_as_one_directory(tmp_path, rng):
    from safetensors.numpy import save_file

    from icqcodec.checkpoints import encode_checkpoint
    from icqcodec.encode import EncodeOptions

    source = tmp_path / "src"
    source.mkdir()
    shards = {"model-00001-of-00002.safetensors": {"a.weight": rng.standard_normal((32, 128)).astype(np.float32)},
              "model-00002-of-00002.safetensors": {"b.weight": rng.standard_normal((16, 128)).astype(np.float32),
                                                   "b.bias": np.ones(16, np.float32)}}  # fmt: skip
    for name, tensors in shards.items():
        save_file(tensors, str(source / name))
    weight_map = {t: name for name, tensors in shards.items() for t in tensors}
    (source / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    encode_checkpoint(source, tmp_path / "icq", EncodeOptions(bits=3))
    (tmp_path / "icq" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    hf_directories.export_hf(tmp_path / "icq", tmp_path / "hf")
    hf_directories.import_hf(tmp_path / "hf", tmp_path / "one.icq")
    merged = icqcodec.load((tmp_path / "one.icq").read_bytes())
    for name, tensors in shards.items():
        decoded = icqcodec.load((tmp_path / "icq" / name.replace(".safetensors", ".icq")).read_bytes())
        assert all(merged[t].tobytes() == decoded[t].tobytes() for t in tensors), name
