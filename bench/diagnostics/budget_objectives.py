"""Which weighting of the output errors shares a budget of bits per weight well? SmolLM2-135M-Instruct,
the candidates of ``icqcodec.budget`` measured once, then one allocation per weighting, each coded
in one pass with the statistics of the unquantized model (not layer by layer, to be quick) and
evaluated as ``bench/llm_quality.py`` does (same texts, same tokens).

Weightings of a tensor's output error ``sum d^T H d``: ``plain`` (none), ``relative`` (over the
tensor's output energy ``sum w^T H w``), ``empirical`` (the mean squared gradient of the loss on the
text's own next tokens with respect to the layer's output), ``drawn`` (the same for tokens drawn
from the model's predictions: ``icqcodec.llm.sensitivities``, what the encoder uses).

    python bench/diagnostics/budget_objectives.py [--budgets 2.4193 3.4193]   (about 25 minutes)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

import llm_quality as lq  # noqa: E402

from icqcodec import budget, llm  # noqa: E402
from icqcodec.calibration import SEQ_LEN, TOKENS  # noqa: E402
from icqcodec.decode import decode  # noqa: E402
from icqcodec.encode import EncodeOptions, assemble, encode_tensor  # noqa: E402


def empirical_sensitivities(model, windows) -> dict[str, float]:
    """The mean squared output gradient of the loss on the text's own next tokens."""
    linears = llm.decoder_linears(model)
    sums = dict.fromkeys(linears, 0.0)

    def catch(name):
        def hook(module, args, output):
            output.register_hook(lambda g: sums.__setitem__(name, sums[name] + float(g.double().square().sum())))

        return hook

    handles = [m.register_forward_hook(catch(n)) for n, m in linears.items()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        for start in range(0, windows.shape[0], 8):
            ids = windows[start : start + 8]
            inputs = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            torch.nn.functional.cross_entropy(
                model(inputs_embeds=inputs).logits[:, :-1].reshape(-1, model.config.vocab_size), ids[:, 1:].reshape(-1),
                reduction="sum").backward()  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    return {n: sums[n] / m.out_features for n, m in linears.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", type=float, nargs="+", default=[2.4193, 3.4193])
    args = parser.parse_args()
    model, tokenizer = llm.load_model(lq.model_path())
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    calibration = llm.token_windows(tokenizer, lq.calibration_text(), TOKENS, SEQ_LEN)
    evaluation = llm.token_windows(tokenizer, lq.evaluation_text(), 17 * lq.WINDOW, lq.WINDOW)
    base = lq.token_nll(model, evaluation)
    statistics = llm.calibrate(model, calibration)
    weights = {n: m.weight.detach().numpy().copy() for n, m in llm.decoder_linears(model).items()}
    measured = budget.measure(weights.items(), EncodeOptions(), statistics)
    energy = {n: float(np.sum((w.astype(np.float64) @ statistics.get(n)) * w)) for n, w in weights.items()}
    weightings = {"plain": dict.fromkeys(weights, 1.0), "relative": {n: 1 / energy[n] for n in weights},
                  "empirical": empirical_sensitivities(model, calibration),
                  "drawn": llm.sensitivities(model, calibration)}  # fmt: skip
    print("| weighting | budget | bits/weight | perplexity ratio to the base |\n|---|---|---|---|")
    for label, weight in weightings.items():
        for bpw in args.budgets:
            allocation = budget.allocate(measured.candidates, measured.elements, bpw, weight)
            model.load_state_dict(base_state)
            decoded = {}
            for name, w in weights.items():
                coding, options = allocation.coding(name, EncodeOptions())
                entry = encode_tensor(name, w, options, coding=coding,
                                      statistic=statistics.prepared(name) if coding == "icq" else None)  # fmt: skip
                decoded[name] = decode(b"".join(assemble([entry], {})))
            lq.set_weights(model, decoded)
            ratio = math.exp((lq.token_nll(model, evaluation) - base).mean())
            print(f"| {label} | {bpw} | {allocation.bits_per_weight:.4f} | {ratio:.3f} |", flush=True)


if __name__ == "__main__":
    main()
