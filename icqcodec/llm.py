"""Causal language models from Hugging Face transformers: calibration text, layer-by-layer statistics
and layer-by-layer quantization (optional extra ``icqcodec[calibrate]``).

Layer by layer, as GPTQ does: the inputs of the first decoder layer are caught once for every batch
of calibration windows (``BATCH_TOKENS`` tokens a forward pass); each layer then runs on them with
hooks on its linears, and its outputs become the next layer's inputs. Memory stays at the model, the
windows' hidden states and one layer's statistics. :func:`quantize` replaces each layer's linears by their decoded icq codes before the
layer's outputs are computed, so each layer is calibrated on the inputs the quantized model gives it.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from pathlib import Path

import torch

from . import budget
from .atomic import write_atomically
from .budget import Allocation
from .calibration import DIAGONAL_ABOVE, SEQ_LEN, TOKENS, Statistics
from .decode import decode
from .encode import ENCODER_METADATA, assemble, encode_tensor
from .errors import InputError
from .statistics import Accumulator

__all__ = [
    "TOKENS",
    "SEQ_LEN",
    "load_model",
    "read_text",
    "token_windows",
    "decoder_layers",
    "decoder_linears",
    "calibrate",
    "sensitivities",
    "measure",
    "plan",
    "quantize",
    "save_checkpoint",
]


LayerHook = Callable[[int, torch.nn.Module, Statistics], None]
BATCH_TOKENS = 4096  # calibration tokens a forward pass takes: windows run in batches of this many tokens


def load_model(path: Path, device: str = "cpu"):
    """A causal LM and its tokenizer from a model directory or a ``.gguf`` file, in float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model directory or file")
    where, extra = (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (path, {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **extra)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **extra)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a causal language model transformers can load ({error})") from None
    return model.to(device).eval(), tokenizer


def read_text(path: Path) -> str:
    """UTF-8 text, or JSON lines with a ``text`` field (``.jsonl``), joined by blank lines."""
    raw = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() not in (".jsonl", ".ndjson"):
        return raw
    texts = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            texts.append(str(json.loads(line)["text"]))
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: not a JSON object with a 'text' field") from None
    return "\n\n".join(texts)


def token_windows(tokenizer, text: str, tokens: int = TOKENS, seq_len: int = SEQ_LEN) -> torch.Tensor:
    """The text's first ``tokens`` tokens as windows of ``seq_len`` (the last partial one dropped)."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    if ids.numel() < min(tokens, seq_len):
        raise InputError(f"the calibration text has {ids.numel()} tokens; {min(tokens, seq_len)} are needed "
                         f"(--tokens {tokens}, --seq-len {seq_len})")  # fmt: skip
    if ids.numel() < tokens:
        raise InputError(f"the calibration text has {ids.numel()} tokens, fewer than the {tokens} asked for; "
                         "give a longer text or a smaller --tokens")  # fmt: skip
    count = max(1, tokens // seq_len)
    return ids[: count * seq_len].reshape(count, seq_len)


def decoder_layers(model) -> tuple[str, torch.nn.ModuleList]:
    """The name and list of the decoder layers: the longest ``ModuleList`` of the model."""
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise InputError("the model has no list of decoder layers")
    return max(lists, key=lambda item: len(item[1]))


class _Caught(Exception):
    pass


def _first_layer_inputs(model, layers: torch.nn.ModuleList, windows: torch.Tensor) -> list[tuple[tuple, dict]]:
    caught = []

    def catch(module, args, kwargs):
        caught.append((args, kwargs))
        raise _Caught

    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    device = next(model.parameters()).device
    per_batch = max(1, BATCH_TOKENS // windows.shape[1])
    try:
        for start in range(0, windows.shape[0], per_batch):
            try:
                model(windows[start : start + per_batch].to(device), use_cache=False)
            except _Caught:
                pass
    finally:
        handle.remove()
    return caught


def calibrate(model, windows: torch.Tensor, *, diagonal_above: int = DIAGONAL_ABOVE,
              after_layer: LayerHook | None = None, progress: Callable[[str], None] | None = None) -> Statistics:  # fmt: skip
    """Statistics of every decoder layer's linears, layer by layer; ``after_layer(index, layer,
    its statistics)`` runs before the layer's outputs feed the next one (to quantize it)."""
    prefix, layers = decoder_layers(model)
    result = Statistics({})
    with torch.no_grad():
        inputs = _first_layer_inputs(model, layers, windows)
        for index, layer in enumerate(layers):
            accumulator = Accumulator(layer, prefix=f"{prefix}.{index}.", diagonal_above=diagonal_above)
            with accumulator.attached():
                for args, kwargs in inputs:
                    accumulator.new_pass()
                    layer(*args, **kwargs)
            found = accumulator.result()
            if after_layer is not None:
                after_layer(index, layer, found)
            inputs = [_with_hidden(args, kwargs, _hidden(layer(*args, **kwargs))) for args, kwargs in inputs]
            result.moments.update(found.moments)
            result.tokens.update(found.tokens)
            result.aliases.update(found.aliases)
            if progress:
                progress(f"{prefix}.{index}")
    return result


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(args: tuple, kwargs: dict, hidden) -> tuple[tuple, dict]:
    """A layer's arguments with its hidden states replaced (positional or ``hidden_states=``)."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def decoder_linears(model) -> dict[str, torch.nn.Linear]:
    """Every linear of the decoder layers, by the name of its weight in the state dict."""
    prefix, layers = decoder_layers(model)
    return {f"{prefix}.{i}.{n}.weight": m for i, layer in enumerate(layers) for n, m in layer.named_modules()
            if isinstance(m, torch.nn.Linear)}  # fmt: skip


BACKWARD_TOKENS = 1024  # tokens a backward pass takes (it keeps every layer's activations)
SAMPLING_SEED = 0  # the labels drawn from the model's own predictions: the same on every run


Outputs = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def sensitivities(model, windows: torch.Tensor, *, outputs: Outputs | None = None) -> dict[str, float]:
    """Per decoder linear, the factor ``s`` that turns the output error ``sum over tokens of |d x|^2``
    of a coding into the Gauss-Newton estimate of the loss it adds (:mod:`icqcodec.calibration`).

    For a causal LM the loss has one term per token, the next-token loss with labels drawn from the
    model's own predictions (the text's own next tokens, the empirical Fisher, misjudged the
    layers), and ``s`` is the mean over tokens and outputs of the squared gradient of the loss with
    respect to the layer's output. For a model that predicts no tokens, ``outputs(model,
    input_embeddings)`` gives what it computes per window (its pooled embeddings) and the loss is
    their squared distance to the unquantized ones: one term per window, into which every token's
    error adds before squaring (a row's error repeats at every token). Then ``s`` is the trace of
    the weight's Gauss-Newton matrix, ``sum over windows of |g^T x|^2`` (``g`` the gradients at the
    layer's outputs, for ``u . outputs`` with Gaussian ``u``; ``x`` its inputs), over ``out_features``
    times ``sum over tokens of |x|^2``: exact for independent errors of equal variance in every
    weight. The per-token mean misjudged such an encoder's last layers by up to 70 times, the
    per-window trace a causal LM's (bench/RESULTS.md). One backward pass per batch of windows; the
    weights get no gradients; the draws are seeded."""
    linears = decoder_linears(model)
    sums = dict.fromkeys(linears, 0.0)
    energy = dict.fromkeys(linears, 0.0)
    scale = [0.0]  # the gradient of the summed loss is the mean's times the batch's token count

    def catch(name):
        def hook(module, args, output):
            if not output.requires_grad:
                return
            if outputs is None:
                output.register_hook(
                    lambda g: sums.__setitem__(name, sums[name] + scale[0] * float(g.double().square().sum()))
                )
                return
            inputs = args[0].detach().float()
            energy[name] += float(inputs.double().square().sum())

            def per_window(gradient):
                for window, grad in zip(inputs, gradient.float(), strict=True):  # a window at a time bounds memory
                    sums[name] += float((grad.T @ window).double().square().sum())

            output.register_hook(per_window)

        return hook

    handles = [m.register_forward_hook(catch(name)) for name, m in linears.items()]
    device = next(model.parameters()).device
    embeddings = model.get_input_embeddings()
    per_batch = max(1, BACKWARD_TOKENS // windows.shape[1])
    generator = torch.Generator(device=device).manual_seed(SAMPLING_SEED)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    tokens = 0
    try:
        for start in range(0, windows.shape[0], per_batch):
            ids = windows[start : start + per_batch].to(device)
            inputs = embeddings(ids).detach().requires_grad_(True)
            if outputs is not None:
                computed = outputs(model, inputs)
                direction = torch.randn(computed.shape, generator=generator, device=device, dtype=computed.dtype)
                (direction * computed).sum().backward()
                continue
            logits = model(inputs_embeds=inputs, use_cache=False).logits[:, :-1].float()
            flat = logits.reshape(-1, logits.shape[-1])
            with torch.no_grad():
                labels = torch.multinomial(flat.softmax(-1), 1, generator=generator)[:, 0]
            scale[0] = float(flat.shape[0]) ** 2
            torch.nn.functional.cross_entropy(flat, labels).backward()
            tokens += flat.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        for parameter in trainable:
            parameter.requires_grad_(True)
    if outputs is None:
        return {name: sums[name] / tokens / m.out_features for name, m in linears.items()}
    return {name: sums[name] / (m.out_features * energy[name]) if energy[name] else 0.0
            for name, m in linears.items()}  # fmt: skip


def measure(model, windows: torch.Tensor, options, *, diagonal_above: int = DIAGONAL_ABOVE,
            outputs: Outputs | None = None, progress: Callable[[str], None] | None = None) -> budget.Measured:  # fmt: skip
    """Every candidate coding of every decoder linear (:mod:`icqcodec.budget`), its error predicted
    with the statistics and output sensitivities (:func:`sensitivities`, with ``outputs``) of the
    model as it is (not yet quantized)."""
    statistics = calibrate(model, windows, diagonal_above=diagonal_above)
    statistics.sensitivity = sensitivities(model, windows, outputs=outputs)
    weights = ((name, m.weight.detach().to(torch.float32).cpu().numpy()) for name, m in decoder_linears(model).items())
    return budget.measure(weights, options, statistics, progress=progress)


def plan(model, windows: torch.Tensor, options, bpw: float, *, diagonal_above: int = DIAGONAL_ABOVE,
         progress: Callable[[str], None] | None = None) -> Allocation:  # fmt: skip
    """The coding of every decoder linear within ``bpw`` bits per weight: :func:`measure`, then
    the allocation."""
    return measure(model, windows, options, diagonal_above=diagonal_above, progress=progress).allocate(bpw)


def quantize(
    model,
    windows: torch.Tensor,
    options,
    *,
    allocation: Allocation | None = None,
    dtype: str | None = None,
    diagonal_above: int = DIAGONAL_ABOVE,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Encode every decoder linear with the statistics of its inputs in the partly quantized model,
    layer by layer, and put its decoded weights in place; returns weight name -> (record, sections).
    With an ``allocation`` (:func:`plan`), each linear gets its chosen coding, and the allocation its
    measured error."""
    encoded = {}
    layers_name = decoder_layers(model)[0]

    def quantize_layer(index: int, layer: torch.nn.Module, found: Statistics) -> None:
        prefix = f"{layers_name}.{index}."
        for name, module in layer.named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            key = f"{prefix}{name}.weight"
            weight = module.weight.detach().to(torch.float32).cpu().numpy()
            coding, tensor_options = allocation.coding(key, options) if allocation else ("icq", options)
            statistic = found.prepared(key, damping=options.damping, order=options.order) if coding == "icq" else None
            record, sections = encode_tensor(key, weight, tensor_options, coding=coding, dtype=dtype,
                                             statistic=statistic)  # fmt: skip
            encoded[key] = (record, sections)
            decoded = decode(b"".join(assemble([(record, sections)], {})))
            if allocation is not None:
                allocation.measure(key, weight, decoded, found.get(key), options.damping)
            module.weight.data.copy_(torch.from_numpy(decoded.astype("float32")).to(module.weight.device))

    calibrate(model, windows, diagonal_above=diagonal_above, after_layer=quantize_layer, progress=progress)
    return encoded


def save_checkpoint(model, encoded: dict, target: Path, options, *, include: tuple[str, ...] = (),
                    force: bool = False, metadata: dict[str, str] | None = None,
                    allocation: Allocation | None = None) -> None:  # fmt: skip
    """The model's state dict as one .icq file under its state-dict names: the ``encoded`` tensors as
    they are, names matching ``include`` icq-coded, everything else lossless; tied weights once; the
    ``allocation``'s choices recorded with the options."""
    entries, seen = [], set()
    for name, tensor in model.state_dict().items():
        storage = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if storage in seen:  # a tied weight: the model ties it again when it loads
            continue
        seen.add(storage)
        if name in encoded:
            entries.append(encoded[name])
            continue
        array = _numpy(tensor)
        coding = "icq" if any(fnmatch.fnmatchcase(name, p) for p in include) else "raw"
        entries.append(encode_tensor(name, array, options, coding=coding))
    recorded = allocation.encoder_options(options) if allocation else options.to_json()
    info = {**(metadata or {}), **ENCODER_METADATA, "icq.encoder_options": recorded}
    write_atomically(Path(target), assemble(entries, info), overwrite=force)


def _numpy(tensor: torch.Tensor):
    """A tensor as numpy, bit for bit (bfloat16, which numpy lacks, as ml_dtypes' bfloat16)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
