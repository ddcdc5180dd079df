"""The command line: real model files, shards, bfloat16, failures."""

import errno
import json
import re
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from checks import same_bits
from click.testing import CliRunner
from safetensors.numpy import load_file as load_safetensors
from safetensors.numpy import save_file as save_safetensors

from icqcodec import files
from icqcodec.cli import main
from icqcodec.example import minilm_path


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def minilm():
    return minilm_path()


@pytest.mark.parametrize("bits", [2, 3])
def test_real_model_end_to_end(tmp_path, minilm, bits):
    icq, out = tmp_path / "model.icq", tmp_path / "out.safetensors"
    run("encode", minilm, icq, "--bits", bits)
    report = json.loads(run("inspect", "--json", icq).output)
    original = load_safetensors(str(minilm))
    assert {t["name"] for t in report["tensors"]} == set(original)
    quantized = {t["name"] for t in report["tensors"] if t["coding"] == "icq"}
    widths = {t["name"]: t["bits"] for t in report["tensors"] if t["coding"] == "icq"}
    assert set(widths.values()) == {bits}, widths
    assert len(quantized) == 39  # 36 encoder matrices, 3 embedding tables
    assert run("verify", icq).output == f"{icq}: ok, {len(original)} tensors conform to ICQ format 1.0\n"
    run("decode", icq, out)
    decoded = load_safetensors(str(out))
    reference = files.load_file(icq)
    for name, array in original.items():
        assert decoded[name].shape == array.shape and decoded[name].dtype == array.dtype, name
        assert same_bits(decoded[name], reference[name]), name
        if name not in quantized:
            assert same_bits(decoded[name], array), name


def test_bfloat16_checkpoint_with_metadata(tmp_path, rng):
    source = tmp_path / "bf16.safetensors"
    tensors = {"w": rng.standard_normal((64, 128)).astype(ml_dtypes.bfloat16),
               "norm": rng.standard_normal(128).astype(ml_dtypes.bfloat16)}  # fmt: skip
    save_safetensors(tensors, str(source), metadata={"format": "pt", "note": "ünïcode"})
    run("encode", source, tmp_path / "bf16.icq")
    run("decode", tmp_path / "bf16.icq", tmp_path / "back.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "back.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt", "note": "ünïcode"}
        assert f.get_tensor("w").dtype == ml_dtypes.bfloat16
        assert same_bits(f.get_tensor("norm"), tensors["norm"])


def test_sharded_checkpoint_round_trip(tmp_path, rng):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    tensors = {f"layer.{i}.weight": rng.standard_normal((32, 64)).astype(np.float32) for i in range(5)}
    tensors["layer.0.bias"] = rng.standard_normal(32).astype(np.float32)
    shards = {"model-00001-of-00002.safetensors": ["layer.0.weight", "layer.0.bias", "layer.1.weight"],
              "model-00002-of-00002.safetensors": ["layer.2.weight", "layer.3.weight", "layer.4.weight"]}  # fmt: skip
    for shard, names in shards.items():
        save_safetensors({n: tensors[n] for n in names}, str(folder / shard))
    index = {"metadata": {"total_size": 1234}, "weight_map": {n: s for s, ns in shards.items() for n in ns}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    run("encode", folder / "model.safetensors.index.json", tmp_path / "icq", "--bits", 4)
    icq_index = json.loads((tmp_path / "icq" / "model.icq.index.json").read_text())
    assert icq_index["metadata"] == {"total_size": 1234}
    assert set(icq_index["weight_map"]) == set(tensors)
    run("decode", tmp_path / "icq", tmp_path / "back")
    back_index = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())
    for name, array in tensors.items():
        decoded = load_safetensors(str(tmp_path / "back" / back_index["weight_map"][name]))[name]
        assert decoded.shape == array.shape and decoded.dtype == array.dtype
        if array.ndim == 1:
            assert same_bits(decoded, array)
        else:
            assert float(((decoded - array) ** 2).sum() / (array**2).sum()) < 0.02


def test_include_exclude_and_npz_npy(tmp_path, rng):
    np.savez(tmp_path / "in.npz", a=rng.standard_normal((64, 64)).astype(np.float32),
             b=rng.standard_normal((64, 64)).astype(np.float32))  # fmt: skip
    run("encode", tmp_path / "in.npz", tmp_path / "x.icq", "--exclude", "a")
    codings = {
        t["name"]: t["coding"] for t in json.loads(run("inspect", "--json", tmp_path / "x.icq").output)["tensors"]
    }
    assert codings == {"a": "raw", "b": "icq"}
    run("decode", tmp_path / "x.icq", tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz") as out, np.load(tmp_path / "in.npz") as original:
        assert same_bits(out["a"], original["a"])
    np.save(tmp_path / "one.npy", np.arange(10, dtype=np.int16))
    run("encode", tmp_path / "one.npy", tmp_path / "one.icq")
    run("decode", tmp_path / "one.icq", tmp_path / "one-back.npy", "--force")
    assert same_bits(np.load(tmp_path / "one-back.npy"), np.arange(10, dtype=np.int16))


def failing(tmp_path, args, message):
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run(*args, ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("icqcodec: error: ") and message in result.output, result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary left


def test_missing_input(tmp_path):
    failing(tmp_path, ["encode", tmp_path / "nope.safetensors", tmp_path / "x.icq"], "no such file")


def test_unknown_format(tmp_path):
    (tmp_path / "in.txt").write_text("hello")
    failing(tmp_path, ["encode", tmp_path / "in.txt", tmp_path / "x.icq"], "unknown input format")


def test_corrupt_and_truncated_icq(tmp_path, rng):
    files.save_file({"w": rng.standard_normal((16, 64)).astype(np.float32)}, tmp_path / "good.icq")
    data = (tmp_path / "good.icq").read_bytes()
    (tmp_path / "cut.icq").write_bytes(data[:-10])
    flipped = bytearray(data)
    flipped[-100] ^= 4
    (tmp_path / "flip.icq").write_bytes(bytes(flipped))
    failing(tmp_path, ["decode", tmp_path / "cut.icq", tmp_path / "o.safetensors"], "truncated")
    failing(tmp_path, ["verify", tmp_path / "flip.icq"], "checksum")
    failing(tmp_path, ["decode", tmp_path / "flip.icq", tmp_path / "o.safetensors"], "checksum")


def test_existing_output_needs_force(tmp_path, rng):
    np.save(tmp_path / "in.npy", rng.standard_normal((8, 64)).astype(np.float32))
    (tmp_path / "x.icq").write_bytes(b"keep me")
    failing(tmp_path, ["encode", tmp_path / "in.npy", tmp_path / "x.icq"], "exists; use --force")
    assert (tmp_path / "x.icq").read_bytes() == b"keep me"
    run("encode", tmp_path / "in.npy", tmp_path / "x.icq", "--force")
    assert (tmp_path / "x.icq").read_bytes()[:4] == b"\x89ICQ"


def test_full_disk(tmp_path, rng, monkeypatch):
    np.save(tmp_path / "in.npy", rng.standard_normal((8, 64)).astype(np.float32))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("icqcodec.checkpoints.StreamWriter.finish", no_space)
    failing(tmp_path, ["encode", tmp_path / "in.npy", tmp_path / "x.icq"], "No space left on device")


def test_debug_shows_traceback(tmp_path):
    result = CliRunner().invoke(main, ["--debug", "inspect", str(tmp_path / "missing.icq")])
    assert result.exit_code != 0 and isinstance(result.exception, FileNotFoundError)


def test_version_and_help():
    assert "icqcodec" in run("--version").output
    for command in ("encode", "decode", "inspect", "verify"):
        assert "Usage" in run(command, "--help").output


def test_minilm_is_the_real_file(minilm):
    assert Path(minilm).stat().st_size > 80_000_000


def test_inspect_into_a_closed_pipe_exits_quietly(tmp_path):
    """``icqcodec inspect FILE | head -1``: no "Broken pipe" message, the exit status of SIGPIPE."""
    import subprocess
    import sys

    path = tmp_path / "many.icq"
    files.save_file({f"t{i:04d}": np.zeros(1, np.float32) for i in range(3000)}, path)
    process = subprocess.Popen([sys.executable, "-m", "icqcodec.cli", "inspect", str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert process.stdout.readline().startswith(str(path).encode())
    process.stdout.close()  # the reader leaves before the 3000 lines are written
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141 and stderr == b"", stderr


def budget_inputs(tmp_path, rng):
    from icqcodec.calibration import Statistics, save_statistics

    x = rng.standard_normal((1024, 256)) * np.exp(rng.standard_normal(256))
    h = x.T @ x / len(x)
    tensors = {f"layer{i}.weight": (rng.standard_t(4, size=(96, 256)) * 0.02).astype(np.float32) for i in range(3)}
    tensors["norm"] = np.ones(256, np.float32)
    save_safetensors(tensors, str(tmp_path / "in.safetensors"))
    statistics = Statistics({"layer0.weight": h, "layer1.weight": 30 * h, "layer2.weight": np.diag(h).copy()},
                            sensitivity={"layer0.weight": 1.0, "layer1.weight": 1.0, "layer2.weight": 0.5})  # fmt: skip
    save_statistics(tmp_path / "stats.safetensors", statistics)
    return tmp_path / "in.safetensors", tmp_path / "stats.safetensors"


def test_encode_to_a_budget_records_and_reports_each_choice(tmp_path, rng):
    source, stats = budget_inputs(tmp_path, rng)
    icq, report_file = tmp_path / "out.icq", tmp_path / "report.json"
    output = run("encode", source, icq, "--calibration", stats, "--bpw", 3, "--report", report_file).output
    assert "budget 3 bits/weight: " in output and "reached over 3 tensors" in output, output
    report = json.loads(report_file.read_text())
    assert report["bits_per_weight"] <= 3 and report["budget_bits_per_weight"] == 3
    listed = {t["name"]: t for t in json.loads(run("inspect", "--json", icq).output)["tensors"]}
    with files.safe_open(icq) as f:
        recorded = json.loads(f.metadata()["icq.encoder_options"])
    assert recorded["bpw"] == 3 and set(recorded["tensors"]) == {f"layer{i}.weight" for i in range(3)}
    for entry in report["tensors"]:
        name = entry["name"]
        assert recorded["tensors"][name] == {k: entry[k] for k in ("bits", "outlier_ratio", "quantizer")}
        assert (listed[name]["bits"], listed[name]["quantizer"]) == (entry["bits"], entry["quantizer"])
        assert listed[name]["outliers_per_row"] == round(entry["outlier_ratio"] * 256)
        assert 0.5 < entry["measured_error"] / entry["predicted_error"] < 2, entry
    assert listed["norm"]["coding"] == "raw"
    assert listed["layer1.weight"]["bits"] >= listed["layer0.weight"]["bits"]
    failing(tmp_path, ["encode", source, tmp_path / "again.icq", "--bpw", 3, "--report", report_file],
            "report.json exists; use --force")  # fmt: skip


@pytest.mark.parametrize("budget, message", [
    (0.5, "a budget of 0.5 bits/weight is below what 1-bit codes reach; possible: "),
    (40, "a budget of 40 bits/weight is above lossless storage; possible: "),
])  # fmt: skip
def test_a_budget_no_coding_meets_is_refused_before_any_output(tmp_path, rng, budget, message):
    source, stats = budget_inputs(tmp_path, rng)
    failing(tmp_path, ["encode", source, tmp_path / "out.icq", "--calibration", stats, "--bpw", budget], message)
    result = run("encode", source, tmp_path / "out.icq", "--bpw", budget, ok=False)
    assert re.search(r"possible: \d\.\d{4} to 32\.\d{4} bits/weight", result.output), result.output


def test_encode_segment_and_outliers_per_segment_make_tensor_parallel_cuts(tmp_path, rng):
    from safetensors.numpy import save_file

    import icqcodec

    save_file({"w": rng.standard_normal((16, 1792)).astype(np.float32)}, str(tmp_path / "m.safetensors"))
    done = CliRunner().invoke(main, ["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "m.icq"),
                                     "--segment", "256", "--outliers-per-segment"])  # fmt: skip
    assert done.exit_code == 0, done.output
    with icqcodec.safe_open(tmp_path / "m.icq") as icq:
        assert icq.record("w").params.segment_log2 == 8  # 1792 = 7 x 256 columns: 7 whole segments
        assert json.loads(icq.metadata()["icq.encoder_options"])["segment_log2"] == 8
        whole = icq.get_tensor("w")
        for gpu in range(7):  # each tensor-parallel rank's columns, cut without decoding
            cut = icq.slice_record("w", (gpu * 256, (gpu + 1) * 256))
            assert icqcodec.decode(cut).tobytes() == whole[:, gpu * 256 : (gpu + 1) * 256].tobytes()
    for bad in ("100", "8", str(1 << 25)):
        refused = CliRunner().invoke(main, ["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "x.icq"),
                                            "--segment", bad])  # fmt: skip
        assert refused.exit_code == 2 and "is not a power of two from 16" in refused.output, bad
