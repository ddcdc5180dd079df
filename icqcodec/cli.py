"""The ``icqcodec`` command line: parsing and messages only; the work is in :mod:`icqcodec.checkpoints`.

click parses (the command-line library users know from pip and others); tqdm draws the progress
bar, only on a terminal.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__
from .calibration import DIAGONAL_ABOVE, SEQ_LEN, TOKENS
from .encode import QUANTIZERS, EncodeOptions
from .errors import IcqcodecError
from .hessian import DAMPING, ORDERS

SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a command killed by SIGPIPE
OUTPUT_DTYPES = click.Choice(["float16", "bfloat16", "float32"])


class _Command(click.Command):
    """Turns expected failures into one line on stderr and exit code 1 (a traceback with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # the reader left (``icqcodec inspect FILE | head``): stop quietly, as a command killed by
            # SIGPIPE does, and keep the interpreter's final flush from failing again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(SIGPIPE_EXIT)
        except (IcqcodecError, OSError, ValueError) as error:
            if ctx.find_root().params.get("debug"):
                raise
            message = str(error) or type(error).__name__
            if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
                message = f"{error.filename}: {message}"
            click.echo(f"icqcodec: error: {message}", err=True)
            ctx.exit(1)


def _progress(label: str):
    """A tqdm bar over tensors on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(desc=label, unit=" tensors", leave=False)
    return lambda name: bar.update(1)


def _budget_options(command):
    for decorator in reversed([
        click.option("--bpw", type=float, metavar="B",
                     help="A budget in bits/weight over the quantized tensors: each gets the width, outlier "
                          "ratio and kind (or raw storage) that minimize the predicted loss (output error "
                          "times the statistics' sensitivity)."),
        click.option("--report", type=click.Path(path_type=Path), metavar="JSON",
                     help="With --bpw: write each tensor's choice and its predicted and measured error."),
    ]):  # fmt: skip
        command = decorator(command)
    return command


def _segment_log2(ctx, param, value: int | None) -> int | None:
    """``--segment COLUMNS``: a power of two from 16 to 2^24, as its log2."""
    if value is None:
        return None
    if value < 16 or value > 1 << 24 or value & (value - 1):
        raise click.BadParameter(f"{value} is not a power of two from 16 to 16777216")
    return value.bit_length() - 1


SEGMENT = click.option("--segment", "segment_log2", type=int, callback=_segment_log2, metavar="COLUMNS",
                       help="Columns per segment of the outlier positions (a power of two from 16; default "
                            "1024): a tensor-parallel shard of the columns must start on a segment boundary.")  # fmt: skip


PER_SEGMENT = click.option("--outliers-per-segment", is_flag=True,
                           help="The same number of outliers in each segment of every row, so that any run of "
                                "whole segments cuts into an ICQ tensor of its own (safe_open(...).slice_record) "
                                "for tensor parallelism.")  # fmt: skip


def _segment(segment_log2: int | None, outliers_per_segment: bool) -> dict:
    options = {} if segment_log2 is None else {"segment_log2": segment_log2}
    return options | ({"outliers_per_segment": True} if outliers_per_segment else {})


def _refuse_existing(*targets: Path | None, force: bool) -> None:
    """Before any work: an existing output file needs --force (a directory's files are checked as
    they are written)."""
    for target in targets:
        if target is not None and target.is_file() and not force:
            raise FileExistsError(f"{target} exists; use --force to replace it")


def _report_budget(allocation, report: Path | None, force: bool) -> None:
    """One line on the budget met and the prediction; the whole report as JSON to ``report``."""
    summary = allocation.report()
    click.echo(f"budget {allocation.budget:g} bits/weight: {summary['bits_per_weight']:.4f} reached over "
               f"{len(summary['tensors'])} tensors; output error predicted {summary['predicted_error']:.4g}, "
               f"measured {summary['measured_error']:.4g}")  # fmt: skip
    if report is not None:
        from .atomic import write_atomically

        write_atomically(report, [json.dumps(summary, indent=1).encode("utf-8") + b"\n"], overwrite=force)
        click.echo(f"wrote {report}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="icqcodec")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(debug: bool) -> None:
    """Encode, decode, inspect and verify ICQ files (format 1.0)."""


@main.command(cls=_Command)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--bits", type=click.IntRange(1, 8), default=2, show_default=True, help="Code width.")
@click.option("--outlier-ratio", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Fraction of each row kept as outliers.")  # fmt: skip
@click.option("--quantizer", type=click.Choice(sorted(QUANTIZERS)), default="uniform", show_default=True)
@click.option("--dtype", type=OUTPUT_DTYPES, help="Output dtype of quantized tensors (default: the source's).")
@click.option("--include", multiple=True, metavar="GLOB", help="Quantize tensors whose names match.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Store tensors whose names match losslessly.")
@click.option("--force", is_flag=True, help="Replace TARGET if it exists.")
@click.option("--calibration", type=click.Path(path_type=Path), metavar="STATS",
              help="Statistics of the layers' inputs (icqcodec calibrate), or a llama.cpp importance matrix "
                   "(.gguf, its diagonal): Hessian-guided codes.")  # fmt: skip
@click.option("--order", type=click.Choice(ORDERS), default="activation", show_default=True,
              help="With --calibration: the order in which each row's codes are chosen.")  # fmt: skip
@click.option("--damping", type=click.FloatRange(0, 1, min_open=True), default=DAMPING, show_default=True,
              help="With --calibration: added to H's diagonal, as a fraction of its mean.")  # fmt: skip
@SEGMENT
@PER_SEGMENT
@click.option("--shard", metavar="NAME", help="Of a sharded checkpoint, encode only this shard file into the "
              "directory TARGET (a unit for any engine); --finalize writes the index.")  # fmt: skip
@click.option("--finalize", is_flag=True, help="Write TARGET's index once every shard is there, from this "
              "index and with the same options; encode nothing.")  # fmt: skip
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Shards of a sharded checkpoint encoded at a time, in local processes.")  # fmt: skip
@_budget_options
def encode(source, target, bits, outlier_ratio, quantizer, dtype, include, exclude, force, calibration, order,
           damping, segment_log2, outliers_per_segment, shard, finalize, jobs, bpw, report) -> None:  # fmt: skip
    """Encode SOURCE (.safetensors, .npz, .npy, or a sharded checkpoint's index or directory) into
    TARGET (.icq, or a directory of .icq shards).

    By default floating-point tensors of rank >= 2 with at least 64 columns and 4096 finite
    elements are quantized; everything else is stored losslessly, bit for bit. A model directory of
    ICQ tensors (icqcodec export-hf) is converted as it is into one .icq file: its payloads byte
    for byte, the coding options unused.
    """
    from .checkpoints import encode_checkpoint, encode_shard, finalize_shards, plan_checkpoint, tensor_names
    from .hf_directories import import_hf, is_icq_directory
    from .imatrix import load_calibration

    if finalize:
        click.echo(f"wrote {finalize_shards(source, target, force=force)}")
        return
    if bpw is not None and (shard or jobs > 1):
        raise click.UsageError("--bpw plans over the whole checkpoint: it cannot be split by --shard or --jobs")
    _refuse_existing(target, report, force=force)
    if is_icq_directory(source):
        if bpw is not None or calibration is not None:
            raise click.UsageError(f"{source} is already ICQ-coded: it is converted as it is, without --bpw "
                                   "or --calibration")  # fmt: skip
        import_hf(source, target, force=force, progress=_progress("convert"))
        click.echo(f"wrote {target} ({target.stat().st_size:,} bytes)")
        return
    statistics = load_calibration(calibration, tensor_names(source)) if calibration else None
    options = EncodeOptions(bits=bits, outlier_ratio=outlier_ratio, quantizer=quantizer, order=order, damping=damping,
                            **_segment(segment_log2, outliers_per_segment))  # fmt: skip
    if shard:
        path = encode_shard(source, target, shard, options, dtype=dtype, include=include, exclude=exclude, force=force,
                            progress=_progress("encode"), calibration=statistics)  # fmt: skip
        click.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")
        return
    allocation = None
    if bpw is not None:
        allocation = plan_checkpoint(source, options, bpw, include=include, exclude=exclude, calibration=statistics,
                                     progress=_progress("plan"))  # fmt: skip
    written = encode_checkpoint(source, target, options, dtype=dtype, include=include, exclude=exclude, force=force,
                                progress=_progress("encode"), calibration=statistics, allocation=allocation,
                                jobs=jobs)  # fmt: skip
    for path in written:
        click.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")
    if allocation is not None:
        _report_budget(allocation, report, force)


@main.command(cls=_Command)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--dtype", type=OUTPUT_DTYPES, help="Cast quantized tensors to this dtype.")
@click.option("--force", is_flag=True, help="Replace TARGET if it exists.")
def decode(source, target, dtype, force) -> None:
    """Decode SOURCE (.icq, or a sharded .icq checkpoint's index or directory) into TARGET
    (.safetensors, .npz or .npy by extension; a directory of safetensors shards for a sharded one)."""
    from .checkpoints import decode_checkpoint

    for path in decode_checkpoint(source, target, dtype=dtype, force=force, progress=_progress("decode")):
        click.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")


@main.command(cls=_Command)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def inspect(file, as_json) -> None:
    """List FILE's tensors: shape, dtype, coding, bits per weight, bytes; and the totals."""
    from .dtypes import NAMES
    from .files import safe_open

    with safe_open(file) as icq:
        header = icq.header
        tensors = []
        for r in header.tensors:
            entry = {"name": r.name, "shape": list(r.shape), "dtype": NAMES[r.dtype],
                     "source_dtype": NAMES[r.source_dtype], "coding": "icq" if r.coding else "raw",
                     "bytes": r.size, "bits_per_weight": r.size * 8 / r.elements if r.elements else 0.0}  # fmt: skip
            if r.params:
                entry.update(bits=r.params.bits, outliers_per_row=r.params.outliers,
                             quantizer="codebook" if r.params.kind else "uniform")  # fmt: skip
            tensors.append(entry)
        elements = sum(r.elements for r in header.tensors)
        size = file.stat().st_size
        report = {"file": str(file), "format_version": f"{header.major}.{header.minor}", "bytes": size,
                  "tensors": tensors, "weights": elements,
                  "bits_per_weight": size * 8 / elements if elements else 0.0, "metadata": icq.metadata()}  # fmt: skip
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    click.echo(f"{file}: ICQ format {report['format_version']}, {len(tensors)} tensors, {size:,} bytes")
    for t in tensors:
        coding = "raw"
        if t["coding"] == "icq":
            coding = f"icq {t['bits']}-bit {t['quantizer']}, {t['outliers_per_row']} outliers/row"
        click.echo(f"  {t['name']}  {'x'.join(map(str, t['shape'])) or 'scalar'}  {t['dtype']}  {coding}  "
                   f"{t['bits_per_weight']:.3f} bits/weight  {t['bytes']:,} bytes")  # fmt: skip
    click.echo(f"total: {elements:,} weights, {report['bits_per_weight']:.3f} bits/weight")


def _llm():
    """icqcodec.llm, or a one-line hint when PyTorch or transformers is missing."""
    import importlib

    try:
        llm = importlib.import_module(f"{__package__}.llm")
    except ImportError as error:
        raise click.ClickException(f"this command needs PyTorch and transformers ({error.name or error} is missing): "
                                   "pip install 'icqcodec[calibrate]'") from None  # fmt: skip
    return llm


def _calibration_options(command):
    for decorator in reversed([
        click.option("--text", type=click.Path(path_type=Path), required=True,
                     help="Calibration text: UTF-8, or JSON lines with a 'text' field (.jsonl)."),
        click.option("--tokens", type=click.IntRange(1), default=TOKENS, show_default=True,
                     help="Calibration tokens (the text's first)."),
        click.option("--seq-len", type=click.IntRange(1), default=SEQ_LEN, show_default=True,
                     help="Tokens per calibration window."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        click.option("--diagonal-above", type=click.IntRange(1), default=DIAGONAL_ABOVE, show_default=True,
                     help="Keep only the diagonal of H for layers with more inputs."),
    ]):  # fmt: skip
        command = decorator(command)
    return command


def _windows(llm, model_path: Path, text: Path, tokens: int, seq_len: int, device: str):
    model, tokenizer = llm.load_model(model_path, device)
    return model, llm.token_windows(tokenizer, llm.read_text(text), tokens, seq_len)


@main.command(cls=_Command)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("stats", type=click.Path(path_type=Path))
@_calibration_options
@click.option("--sensitivity/--no-sensitivity", default=True, show_default=True,
              help="Also the loss's sensitivity to each linear's output (one backward pass; for --bpw).")  # fmt: skip
def calibrate(model, stats, text, tokens, seq_len, device, diagonal_above, sensitivity) -> None:
    """Collect STATS, the second moments of every decoder linear's input, from MODEL (a transformers
    causal LM directory or .gguf file) on the calibration text, layer by layer, and the sensitivity
    of the loss to each linear's output."""
    llm = _llm()
    from .calibration import save_statistics

    loaded, windows = _windows(llm, model, text, tokens, seq_len, device)
    found = llm.calibrate(loaded, windows, diagonal_above=diagonal_above, progress=_progress("calibrate"))
    if sensitivity:
        found.sensitivity = llm.sensitivities(loaded, windows)
    save_statistics(stats, found)
    click.echo(f"wrote {stats} ({len(found.names())} weights, {windows.numel():,} tokens)")


@main.command(cls=_Command)
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--bits", type=click.IntRange(1, 8), default=2, show_default=True, help="Code width.")
@click.option("--outlier-ratio", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--quantizer", type=click.Choice(sorted(QUANTIZERS)), default="uniform", show_default=True)
@click.option("--order", type=click.Choice(ORDERS), default="activation", show_default=True)
@click.option("--damping", type=click.FloatRange(0, 1, min_open=True), default=DAMPING, show_default=True)
@click.option("--dtype", type=OUTPUT_DTYPES, help="Output dtype of quantized tensors (default: the model's).")
@click.option("--include", multiple=True, metavar="GLOB", help="Also quantize (without statistics) these tensors.")
@click.option("--force", is_flag=True, help="Replace TARGET if it exists.")
@SEGMENT
@PER_SEGMENT
@_budget_options
@_calibration_options
def quantize(model, target, bits, outlier_ratio, quantizer, order, damping, dtype, include, force, segment_log2,
             outliers_per_segment, bpw, report, text, tokens, seq_len, device, diagonal_above) -> None:  # fmt: skip
    """Quantize MODEL into TARGET, one .icq file of its state dict: every decoder linear encoded with
    the statistics of its inputs in the model whose earlier layers are already quantized; the
    embeddings, the output head and the norms lossless unless --include names them."""
    llm = _llm()
    _refuse_existing(target, report, force=force)
    options = EncodeOptions(bits=bits, outlier_ratio=outlier_ratio, quantizer=quantizer, order=order, damping=damping,
                            **_segment(segment_log2, outliers_per_segment))  # fmt: skip
    loaded, windows = _windows(llm, model, text, tokens, seq_len, device)
    allocation = None
    if bpw is not None:
        allocation = llm.plan(loaded, windows, options, bpw, diagonal_above=diagonal_above, progress=_progress("plan"))
    encoded = llm.quantize(loaded, windows, options, allocation=allocation, dtype=dtype, diagonal_above=diagonal_above,
                           progress=_progress("quantize"))  # fmt: skip
    llm.save_checkpoint(loaded, encoded, target, options, include=include, force=force, allocation=allocation,
                        metadata={"icq.calibration": f'{{"tokens": {windows.numel()}, "layer_by_layer": true}}'})  # fmt: skip
    click.echo(f"wrote {target} ({target.stat().st_size:,} bytes, {len(encoded)} quantized linears)")
    if allocation is not None:
        _report_budget(allocation, report, force)


@main.command("export-hf", cls=_Command)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path, file_okay=False))
@click.option("--config-from", type=click.Path(path_type=Path, file_okay=False), metavar="MODEL_DIR",
              help="The model directory whose config.json, tokenizer and generation files to use "
                   "(default: SOURCE's directory).")  # fmt: skip
@click.option("--max-shard-size", type=click.IntRange(1), default=5000, show_default=True, metavar="MB",
              help="Largest shard, in millions of bytes (a larger tensor gets a shard of its own).")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace files in TARGET.")
def export_hf(source, target, config_from, max_shard_size, force) -> None:
    """Write a Hugging Face model directory from SOURCE (.icq, or a sharded .icq checkpoint): ICQ
    tensors as the annex stores them (spec/icq-safetensors.md) in safetensors shards, lossless
    tensors as they are, config.json with its quantization_config. Load it with transformers after
    `import icqcodec.hf`."""
    from .hf_directories import export_hf as export

    written = export(source, target, config_from=config_from, max_shard_bytes=max_shard_size * 10**6, force=force,
                     progress=_progress("export"))  # fmt: skip
    for path in written:
        click.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")


@main.command(cls=_Command)
@click.argument("file", type=click.Path(path_type=Path))
def verify(file) -> None:
    """Check FILE against every rule of the spec, checksums included; exit 0 only if it conforms."""
    from .files import safe_open

    with safe_open(file) as icq:
        for name in icq.keys():
            icq.get_tensor(name)
        icq.check_padding()
        count = len(icq.keys())
    click.echo(f"{file}: ok, {count} tensors conform to ICQ format 1.0")


if __name__ == "__main__":
    main()
