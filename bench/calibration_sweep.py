"""Calibration defaults chosen by measurement: SmolLM2-135M-Instruct with the full H in one pass,
calibrated on 4,096 to 16,384 tokens of the licence texts in windows of 128 to 2,048 tokens, at
several dampings; perplexity ratio to the base on the evaluation text of ``bench/llm_quality.py``.

Results are cached in ``bench/.llm_cache/sweep.json``; the table goes to stdout.

    python bench/calibration_sweep.py [--tokens 4096 8192 16384] [--seq-len 128 512 2048]
        [--damping 0.01] [--bits 3] [--quantizers uniform]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from llm_quality import CACHE, WINDOW, calibration_text, evaluation_text, interval, model_path, run_setting, token_nll

from icqcodec import llm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--seq-len", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--damping", type=float, nargs="+", default=[0.01])
    parser.add_argument("--bits", type=int, nargs="+", default=[3])
    parser.add_argument("--quantizers", nargs="+", default=["uniform"])
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    torch.manual_seed(0)
    model, tokenizer = llm.load_model(model_path())
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    evaluation = llm.token_windows(tokenizer, evaluation_text(), 17 * WINDOW, WINDOW)
    base_file = CACHE / f"nll-base-{17 * WINDOW}.npy"
    if not base_file.exists():
        np.save(base_file, token_nll(model, evaluation))
    base = np.load(base_file)
    path = CACHE / "sweep.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    text = calibration_text()
    print(
        "| tokens | window | damping | bits | quantizer | ratio to base (95% interval) | calibration s | quantization s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for tokens in args.tokens:
        for seq_len in args.seq_len:
            stats = calibrated = None
            for damping in args.damping:
                for bits in args.bits:
                    for quantizer in args.quantizers:
                        key = f"{tokens}/{seq_len}/{damping}/{bits}/{quantizer}"
                        if key not in results:
                            if stats is None:
                                windows = llm.token_windows(tokenizer, text, tokens, seq_len)
                                model.load_state_dict(base_state)
                                start = time.perf_counter()
                                stats = llm.calibrate(model, windows)
                                calibrated = time.perf_counter() - start
                            _, seconds = run_setting("icq-full", bits, quantizer, model, base_state, None, stats,
                                                     damping=damping)  # fmt: skip
                            ratio, low, high = interval(token_nll(model, evaluation), base)
                            results[key] = {"ratio": ratio, "low": low, "high": high,
                                            "calibration_seconds": calibrated, "quantization_seconds": seconds}  # fmt: skip
                            path.write_text(json.dumps(results, indent=1, sort_keys=True))
                        r = results[key]
                        print(f"| {tokens} | {seq_len} | {damping:g} | {bits} | {quantizer} | {r['ratio']:.3f} "
                              f"({r['low']:.3f}-{r['high']:.3f}) | {r['calibration_seconds']:.0f} | "
                              f"{r['quantization_seconds']:.0f} |", flush=True)  # fmt: skip
    print(f"\nbase perplexity {math.exp(base.mean()):.2f} on {base.size} tokens")


if __name__ == "__main__":
    main()
