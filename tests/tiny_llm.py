"""A tiny Llama (2 layers, random weights, a word-level tokenizer) and texts for it, built in the
tests: the stand-in for a real model in the calibration tests and the guide's examples."""

import json
import random
from pathlib import Path

WORDS = ("the a of to and in is it that was for on are with as his they be at one have this from or had by word "
         "but what some we can out other were all there when up use your how said an each she which do their time "
         "if will way about many then them write would like so these her long make thing see him two has look more "
         "day could go come did number sound no most people my over know water than call").split()  # fmt: skip


def text(words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build(folder: Path) -> Path:
    """``folder/model`` (the model, its weights in ``model.safetensors`` with the tied head left
    out, and its tokenizer), ``calibration.txt``, ``calibration.jsonl`` and ``evaluation.txt``."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(dict.fromkeys(WORDS))}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(
        folder / "model"
    )
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=1024, tie_word_embeddings=True)  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder / "model")
    (folder / "calibration.txt").write_text(text(17000, 0))
    lines = [json.dumps({"text": text(50, 100 + i)}) for i in range(60)]
    (folder / "calibration.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "evaluation.txt").write_text(text(3000, 1))
    return folder


def write_imatrix(path: Path, entries: dict) -> None:
    """An importance matrix as llama-imatrix writes it: general.type "imatrix", its metadata, and
    ``<name>.in_sum2`` and ``<name>.counts`` for each GGUF name of ``entries`` (name -> (sums, counts))."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="imatrix")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", ["calibration.txt"])
    writer.add_uint32("imatrix.chunk_count", 8)
    writer.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in entries.items():
        writer.add_tensor(f"{name}.in_sum2", np.asarray(sums, np.float32))
        writer.add_tensor(f"{name}.counts", np.asarray(counts, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def imatrix(folder: Path) -> Path:
    """``folder/imatrix.gguf`` for the tiny Llama of :func:`build` (random positive sums)."""
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = {"attn_q": 64, "attn_k": 64, "attn_v": 64, "attn_output": 64, "ffn_gate": 64, "ffn_up": 64,
              "ffn_down": 128}  # fmt: skip
    entries = {f"blk.{layer}.{name}.weight": (rng.uniform(0.1, 2.0, cols) * 1024, [1024.0])
               for layer in range(2) for name, cols in shapes.items()}  # fmt: skip
    write_imatrix(folder / "imatrix.gguf", entries)
    return folder / "imatrix.gguf"
