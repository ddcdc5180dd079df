"""End to end at batch 1: a Llama-3-8B-shaped ``LlamaForCausalLM`` (random weights) whose every
decoder linear layer is an ``IcqLinear`` at 2 and at 4 bits, against the same model in bfloat16.

One layer's seven linear weights (Student-t(4) x 0.02) are encoded once per width and every layer
gets its own copy of those payloads (so the GPU holds what 32 distinct layers would); embeddings,
norms and the output head stay bfloat16; the model is built on the GPU in bfloat16. For each model:
tokens per second generating ``--tokens`` greedy tokens after a 16-token prompt, a static cache and
each decoding step (the forward pass and the argmax) one CUDA graph replay (eager where the capture
fails, and the result says so), the GPU bytes of the linear layers and of the whole model,
and the logits of the icq model teacher-forced one token at a time along the bfloat16 model's text,
against the model whose linears hold the decoded weights in bfloat16 (normwise relative error per
step: ``||a - b|| / ||b||``).

    python bench/llama_e2e.py [--bits 2 4] [--tokens 128] [--layers 32] [--out FILE]
    python bench/llama_e2e.py --tiny        (2 small layers on the CPU: the same code, no timing worth reading)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icqcodec.torch import IcqLinear  # noqa: E402

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")  # fmt: skip
PROMPT = 16


def build(layers: int, tiny: bool, device: str):
    """The bfloat16 model: every layer's linears set to one layer's Student-t weights."""
    import transformers

    if tiny:
        config = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    else:
        config = transformers.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                          num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=8,
                                          tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):  # initialized where it runs: on the CPU an 8B model's init takes minutes
        model = transformers.LlamaForCausalLM._from_config(config, dtype=torch.bfloat16).eval()
    rng = np.random.default_rng(0)
    first = model.model.layers[0]
    weights = {}
    for name in LINEARS:
        shape = tuple(first.get_submodule(name).weight.shape)
        weights[name] = torch.from_numpy((rng.standard_t(4, size=shape) * 0.02).astype(np.float32))
    with torch.no_grad():
        for layer in model.model.layers:
            for name, weight in weights.items():
                layer.get_submodule(name).weight.copy_(weight.to(torch.bfloat16))
    return model, weights


def replace_linears(model, make) -> None:
    """Every decoder layer's linears by ``make(name, linear)``."""
    for layer in model.model.layers:
        for name in LINEARS:
            parent, _, child = name.rpartition(".")
            setattr(layer.get_submodule(parent), child, make(name, layer.get_submodule(name)))


def linear_bytes(model) -> int:
    total = 0
    for layer in model.model.layers:
        for name in LINEARS:
            module = layer.get_submodule(name)
            total += sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    return total


def model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def generate(model, ids: torch.Tensor, tokens: int, device: str) -> tuple[list[int], float, bool]:
    """Greedy tokens after ``ids``, tokens per second of the decoding steps after the first, and
    whether each step ran as one CUDA graph replay (else eagerly: the capture failed, or the CPU)."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + tokens)
    with torch.no_grad():
        logits = model(ids, past_key_values=cache, use_cache=True,
                       cache_position=torch.arange(ids.shape[1], device=device)).logits  # fmt: skip
        token = logits[:, -1:].argmax(-1)
        position = torch.tensor([ids.shape[1]], device=device)
        text = [token.clone()]

        def step() -> None:
            out = model(token, past_key_values=cache, cache_position=position, use_cache=True).logits
            token.copy_(out[:, -1:].argmax(-1))
            position.add_(1)

        step()  # the first step also warms up: kernels compiled, cache layers allocated
        text.append(token.clone())
        run, graphed = step, False
        if device == "cuda":
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                run, graphed = graph.replay, True
            except RuntimeError as error:  # a sync inside the step: time it eagerly, and say so
                print(f"no CUDA graph of the decoding step ({error}); timing it eagerly", file=sys.stderr)
                torch.cuda.synchronize()
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(tokens - 2):
            run()
            text.append(token.clone())
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return torch.cat(text, dim=1)[0].tolist(), (tokens - 2) / seconds, graphed


def teacher_forced(model, ids: torch.Tensor, text: list[int]) -> torch.Tensor:
    """The logits of every step, one token at a time along ``text`` (the batch-1 path)."""
    from transformers import DynamicCache

    cache, steps = DynamicCache(), []
    sequence = torch.cat([ids, torch.tensor([text], device=ids.device)], dim=1)
    with torch.no_grad():
        out = model(sequence[:, :PROMPT], past_key_values=cache, use_cache=True)
        steps.append(out.logits[0, -1])
        for t in range(PROMPT, sequence.shape[1] - 1):
            out = model(sequence[:, t : t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits[0, -1])
    return torch.stack(steps).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="2 small layers on the CPU")
    parser.add_argument("--out", type=Path, help="also write the results there, after each model")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    model, weights = build(args.layers, args.tiny, device)
    ids = torch.randint(0, model.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(1)).to(device)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "layers": len(model.model.layers),
              "tokens": args.tokens}  # fmt: skip
    text, result["bfloat16_tokens_per_second"], result["bfloat16_cuda_graph"] = generate(
        model, ids, args.tokens, device
    )
    result["bfloat16_linear_bytes"], result["bfloat16_model_bytes"] = linear_bytes(model), model_bytes(model)
    report(result, args.out)
    for bits in args.bits:
        started = time.perf_counter()
        encoded = {name: IcqLinear.from_float(weight, bits=bits, dtype="bfloat16", device="cpu")
                   for name, weight in weights.items()}  # fmt: skip
        encode_seconds = time.perf_counter() - started
        replace_linears(model, lambda name, _, encoded=encoded: IcqLinear(encoded[name].layout, device=device))
        label = f"icq_{bits}bit"
        if device == "cuda":
            torch.cuda.empty_cache()
        icq_text, result[f"{label}_tokens_per_second"], result[f"{label}_cuda_graph"] = generate(model, ids, args.tokens,
                                                                                                  device)  # fmt: skip
        result[f"{label}_linear_bytes"], result[f"{label}_model_bytes"] = linear_bytes(model), model_bytes(model)
        result[f"{label}_linear_over_bfloat16"] = result[f"{label}_linear_bytes"] / result["bfloat16_linear_bytes"]
        result[f"{label}_speedup"] = result[f"{label}_tokens_per_second"] / result["bfloat16_tokens_per_second"]
        result[f"{label}_encode_one_layer_seconds"] = encode_seconds
        mine = teacher_forced(model, ids, text)
        decoded = {name: layer.dequantize() for name, layer in encoded.items()}  # the decoders' exact bits
        replace_linears(model, lambda name, _, decoded=decoded: _plain(decoded[name], device))
        reference = teacher_forced(model, ids, text)
        errors = ((mine - reference).norm(dim=1) / reference.norm(dim=1)).tolist()
        result[f"{label}_logits_relative_error_max"] = max(errors)
        result[f"{label}_logits_relative_error_median"] = float(np.median(errors))
        result[f"{label}_same_text_as_decoded"] = icq_text == generate(model, ids, args.tokens, device)[0]
        report(result, args.out)
    print(json.dumps(result, indent=1))


def report(result: dict, out: Path | None) -> None:
    """Print what is measured so far (a run cut short keeps it), and write it to ``out``."""
    print(json.dumps(result), flush=True)
    if out is not None:
        out.write_text(json.dumps(result, indent=1))


def _plain(weight: torch.Tensor, device: str) -> torch.nn.Linear:
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        linear.weight.copy_(weight.to(device=device, dtype=torch.bfloat16))
    return linear


if __name__ == "__main__":
    main()
