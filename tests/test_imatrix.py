"""llama.cpp importance matrices: files written with the gguf package as llama-imatrix writes them,
mapped to a checkpoint's names; the same codes as the equivalent diagonal statistics; bad files."""

import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file as save_safetensors
from tiny_llm import write_imatrix

from icqcodec.calibration import Statistics, save_statistics
from icqcodec.cli import main
from icqcodec.errors import InputError
from icqcodec.imatrix import load_calibration, load_imatrix

gguf = pytest.importorskip("gguf")

HIDDEN, FFN = 128, 256
LINEARS = {  # transformers name -> (GGUF name, columns)
    "self_attn.q_proj": ("attn_q", HIDDEN), "self_attn.k_proj": ("attn_k", HIDDEN),
    "self_attn.v_proj": ("attn_v", HIDDEN), "self_attn.o_proj": ("attn_output", HIDDEN),
    "mlp.gate_proj": ("ffn_gate", HIDDEN), "mlp.up_proj": ("ffn_up", HIDDEN), "mlp.down_proj": ("ffn_down", FFN),
}  # fmt: skip


def checkpoint(tmp_path, rng, layers: int = 2):
    tensors = {f"model.layers.{i}.{name}.weight": (rng.standard_t(4, size=(64, cols)) * 0.02).astype(np.float32)
               for i in range(layers) for name, (_, cols) in LINEARS.items()}  # fmt: skip
    tensors["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    path = tmp_path / "model.safetensors"
    save_safetensors(tensors, str(path))
    return path, tensors


def sums_for(rng, layers: int = 2, tokens: float = 4096.0):
    return {f"blk.{i}.{short}.weight": (rng.uniform(0.1, 3.0, size=cols) * tokens, np.array([tokens]))
            for i in range(layers) for short, cols in LINEARS.values()}  # fmt: skip


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_an_imatrix_gives_the_same_file_as_its_diagonal_statistics(tmp_path, rng):
    source, tensors = checkpoint(tmp_path, rng)
    entries = sums_for(rng)
    write_imatrix(tmp_path / "imatrix.gguf", entries)
    moments = {}
    for layer in range(2):
        for name, (short, _) in LINEARS.items():
            sums, counts = entries[f"blk.{layer}.{short}.weight"]
            # the quotient in float64 of the float32 values the file holds, stored float32
            moments[f"model.layers.{layer}.{name}.weight"] = (
                sums.astype(np.float32).astype(np.float64) / np.float32(counts[0])
            ).astype(np.float32)
    save_statistics(tmp_path / "diagonal.safetensors", Statistics(moments))
    loaded = load_imatrix(tmp_path / "imatrix.gguf", tensors)
    assert sorted(loaded.moments) == sorted(moments) and set(loaded.tokens.values()) == {4096}
    for name, moment in moments.items():
        assert np.array_equal(loaded.moments[name], moment), name
    for stats in ("imatrix.gguf", "diagonal.safetensors"):
        run("encode", source, tmp_path / f"{stats}.icq", "--bits", 2, "--calibration", tmp_path / stats)
    assert (tmp_path / "imatrix.gguf.icq").read_bytes() == (tmp_path / "diagonal.safetensors.icq").read_bytes()
    run("encode", source, tmp_path / "plain.icq", "--bits", 2)
    assert (tmp_path / "plain.icq").read_bytes() != (tmp_path / "imatrix.gguf.icq").read_bytes()


def test_an_imatrix_of_another_model_names_a_few_of_its_entries(tmp_path, rng):
    source, tensors = checkpoint(tmp_path, rng)
    write_imatrix(tmp_path / "other.gguf", {f"blk.{i}.ffn_down_shexp.weight": (np.ones(FFN), np.ones(1))
                                            for i in range(9)})  # fmt: skip
    result = run("encode", source, tmp_path / "x.icq", "--calibration", tmp_path / "other.gguf", ok=False)
    assert result.exit_code == 1 and "the importance matrix names no tensor of the checkpoint" in result.output
    assert "blk.0.ffn_down_shexp.weight, blk.1.ffn_down_shexp.weight" in result.output and "9 in all" in result.output
    assert "model.layers.0.mlp.down_proj.weight" in result.output
    assert not (tmp_path / "x.icq").exists()


def test_entries_that_map_to_nothing_are_left_out_with_a_warning(tmp_path, rng):
    _, tensors = checkpoint(tmp_path, rng, layers=1)
    entries = sums_for(rng, layers=1)
    entries["blk.0.ffn_down_exps.weight"] = (np.ones((4, FFN)), np.full(4, 10.0))  # stacked experts
    entries["blk.5.attn_q.weight"] = (np.ones(HIDDEN), np.ones(1))  # a layer the checkpoint lacks
    write_imatrix(tmp_path / "imatrix.gguf", entries)
    with pytest.warns(RuntimeWarning, match="2 importance-matrix entries map to no tensor of the checkpoint"):
        loaded = load_calibration(tmp_path / "imatrix.gguf", tensors)
    assert len(loaded.moments) == len(LINEARS)


@pytest.mark.parametrize("case, message", [
    ("not-gguf", "not a GGUF file"),
    ("no-counts", "has no 'blk.0.attn_q.weight.counts' beside it"),
    ("zero-counts", "counts 0 tokens; it needs at least one"),
    ("mismatched-counts", "has 1 matrices but 2 counts"),
    ("no-entries", "no '<tensor>.in_sum2' entries"),
])  # fmt: skip
def test_bad_imatrix_files_are_refused(tmp_path, rng, case, message):
    _, tensors = checkpoint(tmp_path, rng, layers=1)
    path = tmp_path / "bad.gguf"
    if case == "not-gguf":
        path.write_bytes(b"GGUF but not really" * 3)
    elif case == "no-counts":
        writer = gguf.GGUFWriter(str(path), arch="imatrix")
        writer.add_tensor("blk.0.attn_q.weight.in_sum2", np.ones(HIDDEN, np.float32))
        writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    elif case == "no-entries":
        write_imatrix(path, {})
    else:
        counts = {"zero-counts": np.zeros(1), "mismatched-counts": np.ones(2)}[case]
        write_imatrix(path, {"blk.0.attn_q.weight": (np.ones(HIDDEN), counts)})
    with warnings.catch_warnings(), pytest.raises(InputError, match=message):
        warnings.simplefilter("ignore")
        load_imatrix(path, tensors)
    with pytest.raises(FileNotFoundError, match="no such importance matrix file"):
        load_imatrix(tmp_path / "missing.gguf", tensors)
