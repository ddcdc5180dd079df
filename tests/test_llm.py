"""Calibration and quantization of a causal LM, on a tiny Llama built here (random weights, a
word-level tokenizer): the calibrate, quantize and encode --calibration commands, loading the
result by name, determinism, and every bad input."""

import json
import re

import numpy as np
import pytest
import tiny_llm
from checks import check_backends_agree
from click.testing import CliRunner

import icqcodec
from icqcodec.calibration import load_statistics, save_statistics
from icqcodec.cli import main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llm.build(tmp_path_factory.mktemp("tiny"))


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


SMALL = ("--tokens", 1024, "--seq-len", 128)


def test_calibrate_writes_one_statistic_per_input(tiny):
    stats = tiny / "stats.safetensors"
    output = run("calibrate", tiny / "model", stats, "--text", tiny / "calibration.txt", *SMALL).output
    assert output.strip().endswith("(14 weights, 1,024 tokens)")
    found = load_statistics(stats)
    layer = "model.layers.0."
    assert found.aliases[f"{layer}self_attn.k_proj.weight"] == f"{layer}self_attn.q_proj.weight"
    assert found.aliases[f"{layer}mlp.up_proj.weight"] == f"{layer}mlp.gate_proj.weight"
    assert found.get(f"{layer}mlp.down_proj.weight").shape == (128, 128)
    assert found.get(f"{layer}self_attn.v_proj.weight").shape == (64, 64)
    assert set(found.tokens.values()) == {1024}
    assert sorted(found.sensitivity) == sorted(n for n in found.names() if ".layers." in n)
    assert all(np.isfinite(v) and v > 0 for v in found.sensitivity.values()), found.sensitivity
    diagonal = tiny / "diagonal.safetensors"
    run("calibrate", tiny / "model", diagonal, "--text", tiny / "calibration.jsonl", *SMALL, "--diagonal-above", 100)
    assert load_statistics(diagonal).get(f"{layer}mlp.down_proj.weight").shape == (128,)


def test_sensitivities_are_mean_squared_output_gradients_for_the_models_own_labels(tiny):
    from icqcodec import llm

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny / "model").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny / "model")
    windows = llm.token_windows(tokenizer, (tiny / "calibration.txt").read_text(), 256, 64)  # one batch
    found = llm.sensitivities(model, windows)
    assert found == llm.sensitivities(model, windows)  # the sampled labels are seeded
    assert all(p.requires_grad and p.grad is None for p in model.parameters())  # none left behind
    grads = []

    def catch(module, args, out):
        out.register_hook(lambda g: grads.append(g.double()))

    handle = model.model.layers[1].mlp.down_proj.register_forward_hook(catch)
    embeds = model.get_input_embeddings()(windows).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits[:, :-1].float().reshape(-1, model.config.vocab_size)
    generator = torch.Generator().manual_seed(llm.SAMPLING_SEED)
    labels = torch.multinomial(logits.detach().softmax(-1), 1, generator=generator)[:, 0]
    per_token_sum = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    per_token_sum.backward()  # the sum's gradient is each token's own
    handle.remove()
    expected = float(grads[0].square().sum()) / labels.numel() / 64
    assert found["model.layers.1.mlp.down_proj.weight"] == pytest.approx(expected, rel=1e-6)
    assert all(np.isfinite(v) and v > 0 for v in found.values()) and len(found) == 14


def test_sensitivities_of_pooled_outputs_are_per_window_gauss_newton_traces(tiny):
    from icqcodec import llm

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny / "model").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny / "model")
    windows = llm.token_windows(tokenizer, (tiny / "calibration.txt").read_text(), 256, 64)  # one batch

    def pooled(m, e):
        return m.model(inputs_embeds=e).last_hidden_state.mean(1)

    found = llm.sensitivities(model, windows, outputs=pooled)
    assert found == llm.sensitivities(model, windows, outputs=pooled)  # the probe is seeded
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    caught = []

    def catch(module, args, out):
        caught.append(args[0].detach().double())
        out.register_hook(lambda g: caught.append(g.double()))

    handle = model.model.layers[1].mlp.down_proj.register_forward_hook(catch)
    embeds = model.get_input_embeddings()(windows).detach().requires_grad_(True)
    computed = pooled(model, embeds)
    generator = torch.Generator().manual_seed(llm.SAMPLING_SEED)
    (torch.randn(computed.shape, generator=generator) * computed).sum().backward()
    handle.remove()
    inputs, grads = caught
    per_window = torch.einsum("bto,bti->boi", grads, inputs)  # each window's weight gradient
    expected = float(per_window.square().sum()) / (64 * float(inputs.square().sum()))
    assert found["model.layers.1.mlp.down_proj.weight"] == pytest.approx(expected, rel=1e-5)
    tokenwise = float((grads.square().sum(-1) * inputs.square().sum(-1)).sum()) / (64 * float(inputs.square().sum()))
    assert expected > 2 * tokenwise  # a mean over tokens: every token's error adds before squaring
    assert all(np.isfinite(v) and v > 0 for v in found.values()) and len(found) == 14


def test_collect_statistics_is_the_mean_of_x_xt(tiny):
    from icqcodec.statistics import collect_statistics

    net = torch.nn.Linear(6, 3)
    batches = [torch.randn(5, 6, dtype=torch.float64).float() for _ in range(4)]
    found = collect_statistics(net, batches)
    x = torch.cat(batches).double()
    assert np.allclose(found.moments["weight"], (x.T @ x / 20).numpy(), rtol=1e-6)
    assert found.tokens == {"weight": 20}


def test_encode_with_calibration_is_deterministic_and_decodes(tiny):
    stats = tiny / "stats.safetensors"
    if not stats.exists():
        run("calibrate", tiny / "model", stats, "--text", tiny / "calibration.txt", *SMALL)
    a, b, plain = tiny / "a.icq", tiny / "b.icq", tiny / "plain.icq"
    for target in (a, b):
        run("encode", tiny / "model" / "model.safetensors", target, "--bits", 2, "--calibration", stats, "--force")
    run("encode", tiny / "model" / "model.safetensors", plain, "--bits", 2, "--force")
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != plain.read_bytes()
    tensors = check_backends_agree(a.read_bytes())
    assert tensors.keys() == icqcodec.load_file(plain).keys()
    with icqcodec.safe_open(a) as f:
        options = json.loads(f.metadata()["icq.encoder_options"])
        assert (options["order"], options["damping"]) == ("activation", 0.01)
        quantized = [n for n in f.keys() if f.record(n).coding]
        # the default rule quantizes the embeddings too (no statistic) and leaves k_proj and v_proj
        # (32 x 64: fewer than 4096 weights) raw
        assert len(quantized) == 11 and "model.embed_tokens.weight" in quantized
        assert json.loads(f.metadata()["icq.calibration"]) == {"tensors": 10}


def test_quantize_writes_a_checkpoint_that_loads_by_name(tiny):
    target = tiny / "quantized.icq"
    run("quantize", tiny / "model", target, "--bits", 3, "--text", tiny / "calibration.txt", *SMALL, "--force")
    assert run("verify", target).output == f"{target}: ok, 20 tensors conform to ICQ format 1.0\n"
    tensors = icqcodec.load_file(target)
    with icqcodec.safe_open(target) as f:
        quantized = sorted(n for n in f.keys() if f.record(n).coding)
    assert len(quantized) == 14 and all(".layers." in n and n.endswith("proj.weight") for n in quantized), quantized
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny / "model")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()},
                                                strict=False)  # fmt: skip
    assert (missing, unexpected) == (["lm_head.weight"], [])  # tied to the embeddings, stored once
    assert torch.equal(model.lm_head.weight, original["model.embed_tokens.weight"])
    assert torch.equal(model.model.norm.weight, original["model.norm.weight"])
    failing = run("quantize", tiny / "model", target, "--bits", 3, "--text", tiny / "calibration.txt", *SMALL, ok=False)
    assert failing.exit_code == 1 and "exists; use --force to replace it" in failing.output


def test_quantize_to_a_budget_records_and_reports_each_choice(tiny):
    target, report_file = tiny / "budget.icq", tiny / "budget.json"
    output = run("quantize", tiny / "model", target, "--bpw", 3.5, "--report", report_file, "--text",
                 tiny / "calibration.txt", *SMALL, "--force").output  # fmt: skip
    assert "budget 3.5 bits/weight: " in output and "reached over 14 tensors" in output, output
    report = json.loads(report_file.read_text())
    assert report["bits_per_weight"] <= 3.5 and len(report["tensors"]) == 14
    with icqcodec.safe_open(target) as f:
        recorded = json.loads(f.metadata()["icq.encoder_options"])
        assert recorded["bpw"] == 3.5
        for entry in report["tensors"]:
            record = f.record(entry["name"])
            assert recorded["tensors"][entry["name"]] == {k: v for k, v in entry.items() if k in
                                                           ("coding", "bits", "outlier_ratio", "quantizer")}  # fmt: skip
            assert record.params.bits == entry["bits"] if record.coding else entry["coding"] == "raw"
            assert entry["measured_error"] >= 0
    # predicted on the model as it is, measured layer by layer on the partly quantized one
    assert 0.3 < report["measured_error"] / report["predicted_error"] < 3, report
    assert len({t.get("bits") for t in report["tensors"]}) > 1


def test_statistics_that_do_not_match_are_refused_before_any_output(tiny):
    from icqcodec.calibration import Statistics

    target = tiny / "never.icq"
    cases = {
        "renamed": (Statistics({"model.layers.9.mlp.down_proj.weight": np.eye(128, dtype=np.float32)}),
                    "calibration statistic 'model.layers.9.mlp.down_proj.weight' names no tensor of the checkpoint"),
        "shape": (Statistics({"model.layers.0.mlp.down_proj.weight": np.eye(64, dtype=np.float32)}),
                  r"calibration statistic 'model.layers.0.mlp.down_proj.weight' has shape \(64, 64\); tensor "
                  r"'model.layers.0.mlp.down_proj.weight' of shape \(64, 128\) needs \(128,\) or \(128, 128\)"),
        "nan": (Statistics({"model.layers.0.mlp.down_proj.weight": np.full(128, np.nan, np.float32)}),
                "tensor 'model.layers.0.mlp.down_proj.weight': the calibration statistic holds values that are not finite"),
        "zero": (Statistics({"model.layers.0.mlp.down_proj.weight": np.zeros(128, np.float32)}),
                 "is all zero"),
    }  # fmt: skip
    for label, (statistics, message) in cases.items():
        stats = tiny / f"{label}.safetensors"
        save_statistics(stats, statistics)
        failing = run("encode", tiny / "model" / "model.safetensors", target, "--calibration", stats, ok=False)
        assert failing.exit_code == 1, label
        assert failing.output.startswith("icqcodec: error: ") and len(failing.output.splitlines()) == 1, label
        assert re.search(message, failing.output), (label, failing.output)
        assert not target.exists(), label
    (tiny / "junk.safetensors").write_bytes(b"junk")
    failing = run(
        "encode", tiny / "model" / "model.safetensors", target, "--calibration", tiny / "junk.safetensors", ok=False
    )
    assert "junk.safetensors: not a calibration statistics file" in failing.output


def test_text_too_short_and_bad_json_lines(tiny):
    failing = run("calibrate", tiny / "model", tiny / "s.safetensors", "--text", tiny / "calibration.txt", "--tokens",
                  100000, ok=False)  # fmt: skip
    assert "the calibration text has 17000 tokens, fewer than the 100000 asked for" in failing.output
    (tiny / "bad.jsonl").write_text('{"text": "the a"}\n{"body": 1}\n')
    failing = run("calibrate", tiny / "model", tiny / "s.safetensors", "--text", tiny / "bad.jsonl", ok=False)
    assert "bad.jsonl:2: not a JSON object with a 'text' field" in failing.output


def test_missing_extra_gives_an_install_hint(tiny, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "icqcodec.llm", None)  # as if torch or transformers were missing
    failing = run("calibrate", tiny / "model", tiny / "s.safetensors", "--text", tiny / "calibration.txt", ok=False)
    assert failing.exit_code == 1
    assert "pip install 'icqcodec[calibrate]'" in failing.output and len(failing.output.splitlines()) == 1


def test_save_checkpoint_keeps_bfloat16_tensors_bit_for_bit(tiny, tmp_path):
    import icqcodec
    from icqcodec import llm
    from icqcodec.encode import EncodeOptions

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny / "model").to(torch.bfloat16)
    llm.save_checkpoint(model, {}, tmp_path / "m.icq", EncodeOptions())
    stored = icqcodec.load((tmp_path / "m.icq").read_bytes())["model.norm.weight"]
    assert stored.dtype.name == "bfloat16"
    assert stored.view(np.uint16).tobytes() == model.model.norm.weight.detach().view(torch.int16).numpy().tobytes()
