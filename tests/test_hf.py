"""Hugging Face transformers loads icq model directories: a tiny Llama quantized, exported, loaded
with from_pretrained on the CPU, generating as the same weights decoded into a plain model; saved
back byte for byte; dequantized; and every bad directory refused with an error naming the tensor."""

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tiny_llm  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from icqcodec import annex_safetensors as annex  # noqa: E402
from icqcodec import safetensors_format  # noqa: E402
from icqcodec.cli import main  # noqa: E402

PROMPT = "the a of to and in is it"


def run(*args):
    done = CliRunner().invoke(main, [str(a) for a in args])
    assert done.exit_code == 0, done.output + repr(done.exception)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tiny_llm.build(tmp_path_factory.mktemp("hf"))
    run("quantize", folder / "model", folder / "m.icq", "--bits", 4, "--text", folder / "calibration.txt",
        "--tokens", 1024, "--seq-len", 128)  # fmt: skip
    run("export-hf", folder / "m.icq", folder / "icq-model", "--config-from", folder / "model")
    run("decode", folder / "m.icq", folder / "decoded.safetensors")
    plain = folder / "plain"  # the same weights decoded, as a plain model
    plain.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (plain / name).write_bytes((folder / "model" / name).read_bytes())
    (plain / "model.safetensors").write_bytes((folder / "decoded.safetensors").read_bytes())
    return folder


def load(path):
    import icqcodec.hf  # noqa: F401  registers the icq quantizer

    return transformers.AutoModelForCausalLM.from_pretrained(path).eval()


def greedy(model, folder, tokens=16):
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder / "model")
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=tokens, do_sample=False)[0].tolist()


def test_loads_and_generates_as_the_decoded_weights(exported):
    from icqcodec.hf import IcqModelLinear

    model = load(exported / "icq-model")
    linears = [m for m in model.modules() if isinstance(m, IcqModelLinear)]
    assert len(linears) == 14 and not any(isinstance(m, torch.nn.Linear) for m in model.model.layers.modules())
    plain = transformers.AutoModelForCausalLM.from_pretrained(exported / "plain").eval()
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)  # the same bits on the CPU
    assert greedy(model, exported) == greedy(plain, exported)


def test_save_pretrained_writes_the_icq_tensors_back_byte_for_byte(exported, tmp_path):
    model = load(exported / "icq-model")
    model.save_pretrained(tmp_path / "saved")
    original = safetensors_format.read_file(exported / "icq-model" / "model.safetensors")
    saved = safetensors_format.read_file(tmp_path / "saved" / "model.safetensors")
    coded = [n for n, e in original.entries.items() if annex.is_icq_tensor(e.dtype, e.shape, original.read(n, 0, 8))]
    assert len(coded) == 14
    for name in coded:
        assert saved.read(name) == original.read(name), name
    original.close()
    saved.close()
    run("encode", tmp_path / "saved", tmp_path / "back.icq")
    assert (tmp_path / "back.icq").read_bytes() == (exported / "m.icq").read_bytes()


def test_dequantize_gives_a_plain_float_model(exported):
    model = load(exported / "icq-model")
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        before = model(ids).logits
        plain = model.dequantize()
        assert all(type(m).__name__ != "IcqModelLinear" for m in plain.modules())
        assert getattr(plain.config, "quantization_config", None) is None
        assert torch.equal(plain(ids).logits, before)


def test_without_the_import_transformers_refuses_the_directory(exported):
    """Every quantized weight is a U8 vector of another shape (annex section 3): a size mismatch."""
    script = ("import sys, transformers\n"
              "try:\n    transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
              "except RuntimeError as error:\n    print('refused:', error); sys.exit(3)\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, str(exported / "icq-model")], capture_output=True, text=True)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "ignore_mismatched_sizes" in done.stdout
    assert "Unknown quantization type, got icq" in done.stderr


def copy_model(exported, tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    for path in (exported / "icq-model").iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def edit_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_a_newer_format_version_is_refused_before_loading(exported, tmp_path):
    folder = copy_model(exported, tmp_path)
    edit_config(folder, lambda c: c["quantization_config"].update(format_version="2.0"))
    with pytest.raises(ValueError, match="format_version is '2.0'.*upgrade icqcodec"):
        load(folder)


def test_a_shape_that_does_not_match_the_config_names_the_tensor(exported, tmp_path):
    folder = copy_model(exported, tmp_path)
    edit_config(folder, lambda c: c.update(intermediate_size=96))
    with pytest.raises(ValueError, match=r"'model.layers.0.mlp.gate_proj.weight' has shape \(128, 64\).*\(96, 64\)"):
        load(folder)


def test_a_missing_or_damaged_icq_tensor_names_it(exported, tmp_path):
    import icqcodec

    folder = copy_model(exported, tmp_path)
    path = folder / "model.safetensors"
    stored = safetensors_format.read_file(path)
    data = {n: bytearray(stored.read(n)) for n in stored.entries}
    entries = dict(stored.entries)
    stored.close()
    victim = "model.layers.1.self_attn.o_proj.weight"
    data[victim][-100] ^= 1

    def write(names):
        with open(path, "wb") as out:
            safetensors_format.write_file(out, [(n, entries[n].dtype, entries[n].shape) for n in names],
                                          lambda n: bytes(data[n]))  # fmt: skip

    write(list(entries))
    model = load(folder)  # on the CPU, the first call's decode checks the payload
    with pytest.raises(icqcodec.ChecksumError, match=f"'{victim}'"):
        model(torch.tensor([[3, 4, 5]]))
    write([n for n in entries if n != victim])
    with pytest.raises(ValueError, match=f"'{victim}' is missing from the checkpoint"):
        load(folder)


def test_an_icq_tensor_that_is_not_a_linear_weight_is_refused(exported, tmp_path):
    folder = copy_model(exported, tmp_path)
    edit_config(folder, lambda c: c["quantization_config"]["quantized"].append("model.norm.weight"))
    with pytest.raises(ValueError, match="'model.norm.weight' is ICQ-coded but 'model.norm' is a LlamaRMSNorm"):
        load(folder)
