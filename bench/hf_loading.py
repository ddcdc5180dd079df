"""Hugging Face transformers on icq model directories: SmolLM2-135M-Instruct quantized at 4 bits
and exported, loaded with ``from_pretrained`` after ``import icqcodec.hf``.

    python bench/hf_loading.py prepare DIR [--dtype bfloat16|float16] [--bits 4]
                                                 quantize (layer by layer, 4 bits, output in dtype),
                                                 export DIR/icq, write DIR/original (the model as it
                                                 is) and DIR/plain (the decoded weights, plain)
    python bench/hf_loading.py check DIR [--device cuda] [--dtype ...]
                                                 greedy text of the first 32 tokens of a fixed prompt
                                                 against the decoded weights as a plain model (on CUDA:
                                                 ``model.dequantize()`` of a second load), logits where
                                                 a token differs, memory of the linear layers, and
                                                 ``from_pretrained`` time against the original's directory
                                                 (warm page cache: one load of each first, then the
                                                 median of 3, or --loads, loads of each, interleaved)
    python bench/hf_loading.py loads DIR [--device cuda] [--loads N]
                                                 the ``from_pretrained`` times alone, DIR/icq against
                                                 DIR/original (as in ``check``)
    python bench/hf_loading.py phases DIR [--device cuda] [--loads N]
                                                 DIR/icq's loads beside the same with its checks after
                                                 loading left out and DIR/original's, interleaved, and
                                                 the checks alone (every layer's ``prepare``)
    python bench/hf_loading.py llama8b DIR --device cuda [--scale 1]
                                                 a Llama-3-8B-shaped model with random weights: load time
                                                 of its 2-bit directory against its bfloat16 one

On a GPU machine that holds only what a run carries, ``check --device cuda`` needs ``DIR/icq``
alone (about 120 MB; carry its shards over two runs): the plain and original models come from it.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import json
import pstats
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

PROMPT = "The three most important things to know about the history of Rome are"
TOKENS = 32
LINEAR_MB = 50  # shard size for the export: two runs of a GPU machine carry its shards


def prepare(folder: Path, dtype: str, bits: int) -> None:
    from llm_quality import calibration_text, model_path

    from icqcodec import llm
    from icqcodec.calibration import SEQ_LEN
    from icqcodec.calibration import TOKENS as CALIBRATION_TOKENS
    from icqcodec.checkpoints import decode_checkpoint
    from icqcodec.encode import EncodeOptions
    from icqcodec.hf_directories import export_hf

    model, tokenizer = llm.load_model(model_path())
    if getattr(model, "hf_quantizer", None) is not None:  # read from GGUF: a plain model from here on
        model.hf_quantizer.remove_quantization_config(model)
    model.to(getattr(torch, dtype)).save_pretrained(folder / "original")
    tokenizer.save_pretrained(folder / "original")
    model.float()
    windows = llm.token_windows(tokenizer, calibration_text(), CALIBRATION_TOKENS, SEQ_LEN)
    options = EncodeOptions(bits=bits)
    encoded = llm.quantize(model, windows, options, dtype=dtype)
    llm.save_checkpoint(model.to(getattr(torch, dtype)), encoded, folder / "icq.icq", options, force=True)
    export_hf(folder / "icq.icq", folder / "icq", config_from=folder / "original", force=True,
              max_shard_bytes=LINEAR_MB * 10**6)  # fmt: skip
    decode_checkpoint(folder / "icq.icq", folder / "decoded.safetensors", force=True)
    (folder / "plain").mkdir(exist_ok=True)
    for path in (folder / "original").iterdir():  # the config and tokenizer; the weights are the decoded ones
        if not path.name.startswith("model.safetensors"):
            shutil.copyfile(path, folder / "plain" / path.name)
    shutil.move(folder / "decoded.safetensors", folder / "plain" / "model.safetensors")
    print(f"wrote {folder / 'icq'}, {folder / 'original'}, {folder / 'plain'}")


def load(path: Path, device: str, dtype: str = "bfloat16"):
    from transformers import AutoModelForCausalLM

    import icqcodec.hf  # noqa: F401

    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), device_map=device).eval()


def greedy(model, tokenizer, device: str) -> tuple[list[int], torch.Tensor]:
    """The first ``TOKENS`` greedy tokens after the prompt, and the logits each step chose from (as
    generation computes them: the prompt at once, then one token a step)."""
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"].to(device)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=TOKENS, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)  # fmt: skip
    return out.sequences[0, ids.shape[1] :].tolist(), torch.cat(out.logits).double()


def teacher_forced(model, tokenizer, generated: list[int], device: str) -> torch.Tensor:
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"].to(device)
    full = torch.cat([ids, torch.tensor([generated], device=device)], dim=1)
    with torch.no_grad():
        return model(full).logits[0, ids.shape[1] - 1 : -1].double()


LOADS = 3  # timed loads per directory (--loads)


def load_seconds(paths: list[Path], device: str, dtype: str = "bfloat16", loads: int = LOADS) -> list[float]:
    """Median ``from_pretrained`` seconds of each directory, their loads interleaved (so that the
    machine's drift falls on both), after one load of each (page cache and kernel cache warm). The
    garbage of the load before is collected before each, untimed: it is not this load's cost."""
    return timed_loads([lambda path=path: load(path, device, dtype) for path in paths], device, loads)


def timed_loads(loaders: list, device: str, loads: int) -> list[float]:
    """Median seconds of each loader (as :func:`load_seconds` times directories)."""
    for loader in loaders:
        loader()
    times: list[list[float]] = [[] for _ in loaders]
    for _ in range(loads):
        for loader, taken in zip(loaders, times, strict=True):
            gc.collect()
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model = loader()
            if device == "cuda":
                torch.cuda.synchronize()
            taken.append(time.perf_counter() - start)
            del model
    return [statistics.median(taken) for taken in times]


def phases(folder: Path, device: str, dtype: str, loads: int) -> dict:
    """Where the icq load's time goes beyond the plain one: loads of DIR/icq, of DIR/icq with the
    checks after loading left out (every layer's ``prepare``, for timing alone: its layers are then
    never checked) and of DIR/original, interleaved; and those checks alone (median of 5)."""
    from icqcodec.hf import IcqModelLinear

    checks = IcqModelLinear.prepare

    def unchecked():
        IcqModelLinear.prepare = lambda self: None
        try:
            return load(folder / "icq", device, dtype)
        finally:
            IcqModelLinear.prepare = checks

    icq, bare, plain = timed_loads([lambda: load(folder / "icq", device, dtype), unchecked,
                                    lambda: load(folder / "original", device, dtype)], device, loads)  # fmt: skip
    layers = [m for m in load(folder / "icq", device, dtype).modules() if isinstance(m, IcqModelLinear)]
    alone = []
    for _ in range(5):
        start = time.perf_counter()
        for layer in layers:
            layer.prepare()
        alone.append(time.perf_counter() - start)
    return {"load_seconds_icq": icq, "load_seconds_icq_unchecked": bare, "load_seconds_plain": plain,
            "icq_over_plain": icq / plain, "unchecked_over_plain": bare / plain, "layers": len(layers),
            "checks_alone_seconds": statistics.median(alone)}  # fmt: skip


def check(folder: Path, device: str, dtype: str, loads: int = LOADS) -> dict:
    from transformers import AutoTokenizer

    from icqcodec.hf import IcqModelLinear

    tokenizer = AutoTokenizer.from_pretrained(folder / "icq")
    model = load(folder / "icq", device, dtype)
    linears = [m for m in model.modules() if isinstance(m, IcqModelLinear)]
    ours, steps = greedy(model, tokenizer, device)
    if device == "cuda":
        plain = load(folder / "icq", device, dtype).dequantize()  # the decoders' exact bits
        plain.save_pretrained(folder / "plain")
        tokenizer.save_pretrained(folder / "plain")
        if not (folder / "original").exists():
            shutil.copytree(folder / "plain", folder / "original")  # a plain directory of the same shapes
    else:
        plain = load(folder / "plain", device, dtype)
    theirs, plain_steps = greedy(plain, tokenizer, device)
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), None)
    result = {"device": device, "dtype": dtype, "tokens": TOKENS, "same_text": ours == theirs, "first_difference": first,
              "text": tokenizer.decode(ours), "plain_text": tokenizer.decode(theirs)}  # fmt: skip

    def relative(a, b):
        return ((a - b).norm(dim=-1) / b.norm(dim=-1)).cpu().numpy()

    # the steps both generations computed from the same tokens, the same way: up to the first difference
    same = TOKENS if first is None else first + 1
    shared = relative(steps[:same], plain_steps[:same])
    result["logits_relative_error_max_same_prefix"] = float(shared.max())
    result["logits_relative_error_at_difference"] = None if first is None else float(shared[first])
    # the dtype's own noise: the plain model's steps against its whole sequence at once
    noise = relative(plain_steps, teacher_forced(plain, tokenizer, theirs, device))
    result["plain_steps_against_plain_at_once_max"] = float(noise.max())
    payload = sum(m.payload.numel() for m in linears)
    resident = sum(
        t.numel() * t.element_size()
        for m in linears
        for t in (*m.parameters(), *m.buffers(), *(() if m.index is None else (m.index,)))
    )
    result.update(linears=len(linears), payload_bytes=payload, linear_bytes_resident=resident,
                  resident_over_payload=resident / payload,
                  decoded_weights_kept=sum(m.decoded is not None for m in linears))  # fmt: skip
    if device == "cuda":
        result["fused"] = all(m.payload.is_cuda and m.tensor_args for m in linears)
    del model, plain
    result["load_seconds_icq"], result["load_seconds_plain"] = load_seconds(
        [folder / "icq", folder / "original"], device, dtype, loads
    )
    return result


def llama8b(folder: Path, device: str, scale: int = 1) -> dict:
    """Directories of a Llama-3-8B-shaped model (random weights): bfloat16, and 2 bits where every
    layer's linears share the payloads of one encoded layer (their ICQ files named for each layer).
    ``scale`` divides every width and the layer count (a quick run of the same code)."""
    import transformers

    from icqcodec import annex_safetensors as annex
    from icqcodec import safetensors_format
    from icqcodec.container import bytes_reader, read_header
    from icqcodec.encode import EncodeOptions, assemble, encode_tensor
    from icqcodec.hf_directories import FORMAT_VERSION, QUANT_METHOD

    hidden, kv, inner, layers, vocab = 4096 // scale, 1024 // scale, 14336 // scale, 32 // scale, 128256 // scale
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inner,
                                      num_hidden_layers=layers, num_attention_heads=32 // scale,
                                      num_key_value_heads=8 // scale, tie_word_embeddings=False)  # fmt: skip
    shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (kv, hidden), "self_attn.v_proj": (kv, hidden),
              "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (inner, hidden), "mlp.up_proj": (inner, hidden),
              "mlp.down_proj": (hidden, inner)}  # fmt: skip
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    pairs = {}
    for name, shape in shapes.items():
        weights = (rng.standard_t(4, size=shape) * 0.02).astype(np.float32)
        data = b"".join(assemble([encode_tensor("w", weights, EncodeOptions(bits=2), coding="icq",
                                                dtype="bfloat16")], {}))  # fmt: skip
        read_at, size = bytes_reader(data)
        header = read_header(read_at, size)
        record = header.tensors[0]
        pairs[name] = (record, bytes(read_at(header.data_offset, record.size)), header.chunk_log2, weights)
    encode_seconds = time.perf_counter() - started
    other = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
             "model.norm.weight": (hidden,)}  # fmt: skip
    other.update({f"model.layers.{i}.{n}": (hidden,) for i in range(layers) for n in ("input_layernorm.weight",
                                                                                       "post_attention_layernorm.weight")})  # fmt: skip
    bf16, icq = folder / "llama8b-bf16", folder / "llama8b-2bit"
    for target in (bf16, icq):
        target.mkdir(parents=True, exist_ok=True)
    small = {name: (rng.standard_normal(shape) * 0.02).astype(np.float32) for name, shape in other.items()}
    BF16, U8 = safetensors_format.DTYPES["BF16"], safetensors_format.DTYPES["U8"]

    def bf16_bytes(array: np.ndarray) -> bytes:
        return torch.from_numpy(array).to(torch.bfloat16).view(torch.uint16).numpy().tobytes()

    plain_entries, icq_entries, plain_data, icq_data, dense = [], [], {}, {}, {}
    for name, shape in other.items():
        plain_entries.append((name, BF16, shape))
        icq_entries.append((name, BF16, shape))
        plain_data[name] = icq_data[name] = bf16_bytes(small[name])
    quantized = []
    for i in range(layers):
        for module, (record, payload, chunk_log2, weights) in pairs.items():
            name = f"model.layers.{i}.{module}.weight"
            quantized.append(name)
            plain_entries.append((name, BF16, weights.shape))
            plain_data[name] = dense.get(module) or dense.setdefault(module, bf16_bytes(weights))
            pieces = annex.stored_bytes(dataclasses.replace(record, name=name), payload, chunk_log2)
            icq_data[name] = b"".join(bytes(p) for p in pieces)
            icq_entries.append((name, U8, (len(icq_data[name]),)))
    for entries, data, target, extra in ((plain_entries, plain_data, bf16, {}), (icq_entries, icq_data, icq, {
            "quantization_config": {"quant_method": QUANT_METHOD, "format_version": FORMAT_VERSION,
                                    "annex_version": annex.ANNEX_VERSION, "quantized": sorted(quantized)}})):  # fmt: skip
        with open(target / "model.safetensors", "wb") as out:
            safetensors_format.write_file(out, entries, data.__getitem__, {"format": "pt"})
        (target / "config.json").write_text(json.dumps({**config.to_dict(), "dtype": "bfloat16",
                                                        "architectures": ["LlamaForCausalLM"], **extra}))  # fmt: skip
    result = {"encode_one_layer_seconds": encode_seconds,
              "bytes_bf16": (bf16 / "model.safetensors").stat().st_size,
              "bytes_2bit": (icq / "model.safetensors").stat().st_size}  # fmt: skip
    result["load_seconds_2bit"], result["load_seconds_bf16"] = load_seconds([icq, bf16], device)
    profile = cProfile.Profile()
    profile.runcall(load, icq, device)
    pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    model = load(icq, device)
    ids = torch.tensor([[1, 2, 3, 4]], device=device)
    with torch.no_grad():
        result["logits_finite"] = bool(torch.isfinite(model(ids).logits).all())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "check", "loads", "phases", "llama8b"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["bfloat16", "float16"],
        help="the decoded weights' and the activations' dtype",
    )
    parser.add_argument("--loads", type=int, default=LOADS, help="timed loads of each directory (their median)")
    parser.add_argument("--bits", type=int, default=4, help="prepare: the code width ")
    parser.add_argument("--scale", type=int, default=1, help="llama8b: divide widths and layers (a quick run)")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.step == "prepare":
        prepare(args.folder, args.dtype, args.bits)
        return
    if args.step == "phases":
        print(json.dumps(phases(args.folder, args.device, args.dtype, args.loads)))
        return
    if args.step == "loads":
        icq, plain = load_seconds([args.folder / "icq", args.folder / "original"], args.device, args.dtype, args.loads)
        print(json.dumps({"load_seconds_icq": icq, "load_seconds_plain": plain, "icq_over_plain": icq / plain}))
        return
    result = (
        check(args.folder, args.device, args.dtype)
        if args.step == "check"
        else llama8b(args.folder, args.device, args.scale)
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
