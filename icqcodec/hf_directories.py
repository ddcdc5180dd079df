"""Hugging Face model directories of ICQ tensors (the annex ``spec/icq-safetensors.md``): written
from .icq files (``icqcodec export-hf``) and read back into one .icq file (``icqcodec encode DIR
OUT.icq``), every ICQ payload byte for byte both ways and every other tensor losslessly.

A directory is ``config.json`` with a ``quantization_config`` (``quant_method`` ``"icq"``), the
tensors in ``model.safetensors`` or in shards listed by ``model.safetensors.index.json``, and the
tokenizer and generation files of the model it came from.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import annex_safetensors as annex
from . import dtypes, safetensors_format
from .atomic import atomic_directory, atomic_output
from .checkpoints import ICQ_INDEX, checkpoint_files
from .constants import (
    CODING_ICQ,
    DEFAULT_CHUNK_LOG2,
    FIXED_HEADER_SIZE,
    FORMAT_MAJOR,
    MAGIC,
    MAX_DIRECTORY_SIZE,
)
from .container import Header, TensorRecord, bytes_reader, crc32c, read_header, tensor_layout
from .container_writer import StreamWriter, build_payload
from .encode import EncodeOptions, encode_tensor
from .errors import InputError
from .files import safe_open
from .payload import Payload, chunk_table

__all__ = ["QUANT_METHOD", "MAX_SHARD_BYTES", "export_hf", "import_hf", "read_config", "is_icq_directory"]

QUANT_METHOD = "icq"
FORMAT_VERSION = f"{FORMAT_MAJOR}.0"
CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_SHARD_BYTES = 5 * 10**9  # transformers' default max_shard_size, "5GB"
COPIED = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "added_tokens.json", "chat_template.jinja",
          "chat_template.json", "preprocessor_config.json")  # fmt: skip
Progress = Callable[[str], None]


# ---- config.json ----------------------------------------------------------------------------------


def read_config(directory: Path) -> dict:
    """The directory's ``config.json`` as a dict (InputError if missing or not a JSON object)."""
    path = directory / CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable config.json ({error})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: not a JSON object")
    return config


def is_icq_directory(path: Path) -> bool:
    """Whether ``path`` is a model directory whose ``config.json`` names ``quant_method`` ``"icq"``."""
    if not (path.is_dir() and (path / CONFIG).is_file()):
        return False
    quantization = read_config(path).get("quantization_config")
    return isinstance(quantization, dict) and quantization.get("quant_method") == QUANT_METHOD


def check_quantization_config(quantization: object, where: str) -> dict:
    """The ``quantization_config`` of an icq directory, its versions known (annex section 5)."""
    if not isinstance(quantization, dict) or quantization.get("quant_method") != QUANT_METHOD:
        raise InputError(f"{where}: quantization_config.quant_method is not {QUANT_METHOD!r}")
    for key, known in (("format_version", FORMAT_VERSION), ("annex_version", annex.ANNEX_VERSION)):
        value = quantization.get(key)
        if not isinstance(value, str) or value.split(".")[0] != known.split(".")[0]:
            raise InputError(f"{where}: quantization_config.{key} is {value!r}; this icqcodec reads {known} "
                             "(a newer major version: upgrade icqcodec)")  # fmt: skip
    metadata = quantization.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InputError(f"{where}: quantization_config.metadata is not an object of strings")
    return quantization


# ---- export: .icq -> directory -----------------------------------------------------------------


@dataclass
class _Stored:
    """One stored tensor of the export: name, dtype code, shape, and its bytes on demand."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    size: int
    data: Callable[[], bytes | memoryview]


def _stored_tensors(icq: safe_open) -> list[_Stored]:
    """The stored tensors of one .icq file: each ICQ tensor as the U8 vector of its one-tensor ICQ
    file, each raw tensor as a plain one."""
    out = []
    header = icq.header
    for record in header.tensors:
        if record.coding == CODING_ICQ:
            body = Payload(header, record, icq.read_at)
            body.verify_all()  # nothing unverified leaves the file
            start = header.data_offset + record.offset
            pieces = annex.stored_bytes(record, icq.read_at(start, record.size), header.chunk_log2)
            size = sum(len(memoryview(p)) for p in pieces)
            out.append(_Stored(record.name, annex.U8, (size,), size, lambda pieces=pieces: b"".join(pieces)))
        else:
            size = record.elements * dtypes.item_size(record.dtype)
            array = lambda name=record.name: icq.get_tensor(name).reshape(-1).view("uint8").data  # noqa: E731
            out.append(_Stored(record.name, record.dtype, record.shape, size, array))
    return out


def _shards(stored: list[_Stored], max_bytes: int) -> list[list[_Stored]]:
    """Consecutive groups of at most ``max_bytes`` (a larger tensor alone)."""
    shards: list[list[_Stored]] = [[]]
    used = 0
    for tensor in stored:
        if shards[-1] and used + tensor.size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(tensor)
        used += tensor.size
    return shards


def export_hf(source: Path, target: Path, *, config_from: Path | None = None, max_shard_bytes: int = MAX_SHARD_BYTES,
              force: bool = False, progress: Progress | None = None) -> list[Path]:  # fmt: skip
    """Write the model directory ``target`` from a .icq file (or a sharded .icq checkpoint): its ICQ
    tensors as the annex stores them (a U8 vector of a one-tensor ICQ file each), its raw tensors as
    plain ones, ``config.json`` from ``config_from`` (by default the source's directory) with the
    ``quantization_config``, and the model's tokenizer and generation files. Returns the files
    written."""
    files = checkpoint_files(source, ICQ_INDEX)[0]
    config_dir = config_from if config_from is not None else (source if source.is_dir() else source.parent)
    if not (config_dir / CONFIG).is_file():
        raise InputError(f"{config_dir}: no config.json to describe the model; give --config-from MODEL_DIR")
    config = read_config(config_dir)
    opened = [safe_open(path) for path in files]
    try:
        stored = sorted((t for icq in opened for t in _stored_tensors(icq)), key=lambda t: t.name.encode("utf-8"))
        names = [t.name for t in stored]
        duplicate = next((a for a, b in zip(names, names[1:], strict=False) if a == b), None)
        if duplicate is not None:
            raise InputError(f"{source}: tensor {duplicate!r} is in more than one shard")
        chunk_logs = {icq.header.chunk_log2 for icq in opened}
        quantized = [r.name for icq in opened for r in icq.header.tensors if r.coding == CODING_ICQ]
        quantized.sort(key=lambda n: n.encode("utf-8"))
        config["quantization_config"] = {
            "quant_method": QUANT_METHOD, "format_version": FORMAT_VERSION, "annex_version": annex.ANNEX_VERSION,
            "chunk_log2": chunk_logs.pop() if len(chunk_logs) == 1 else None,
            "metadata": opened[0].metadata(), "quantized": quantized,
        }  # fmt: skip
        groups = _shards(stored, max_shard_bytes)
        shard_names = [SINGLE] if len(groups) == 1 else [
            f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]  # fmt: skip
        written = []
        with atomic_directory(target, force) as staging:
            for shard, group in zip(shard_names, groups, strict=True):
                by_name = {t.name: t for t in group}

                def data(name: str, by_name=by_name):
                    if progress:
                        progress(name)
                    return by_name[name].data()

                with atomic_output(staging / shard, False) as out:
                    safetensors_format.write_file(out, [(t.name, t.dtype, t.shape) for t in group], data,
                                                  {"format": "pt"})  # fmt: skip
                written.append(shard)
            if len(groups) > 1:
                index = {"metadata": {"total_size": sum(t.size for t in stored)},
                         "weight_map": {t.name: shard for shard, g in zip(shard_names, groups, strict=True) for t in g}}  # fmt: skip
                (staging / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
                written.append(INDEX)
            (staging / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            written.append(CONFIG)
            for name in COPIED:
                if (config_dir / name).is_file():
                    shutil.copyfile(config_dir / name, staging / name)
                    written.append(name)
        return [target / name for name in written]
    finally:
        for icq in opened:
            icq.close()


# ---- import: directory -> .icq ---------------------------------------------------------------------


def _open_shards(directory: Path) -> dict[str, tuple[safetensors_format.StoredFile, safetensors_format.Entry]]:
    if (directory / INDEX).is_file():
        shards, names = checkpoint_files(directory)
    elif (directory / SINGLE).is_file():
        shards, names = [directory / SINGLE], None
    else:
        raise InputError(f"{directory}: neither {SINGLE} nor {INDEX}")
    found: dict = {}
    for shard in shards:
        try:
            stored = safetensors_format.read_file(shard)
        except (OSError, ValueError) as error:
            raise InputError(f"{shard}: not a readable safetensors file ({error})") from None
        for name, entry in stored.entries.items():
            if name in found:
                raise InputError(f"{directory}: tensor {name!r} is in more than one shard")
            found[name] = (stored, entry)
    if names is not None and names != set(found):
        missing = sorted(names - set(found))[:3] or sorted(set(found) - names)[:3]
        raise InputError(f"{directory}: the index and the shards do not hold the same tensors ({missing})")
    return found


def _icq_header(name: str, stored: safetensors_format.StoredFile) -> Header | None:
    """The header of an ICQ tensor's file, from its fixed header and directory alone (the annex's
    rules checked), or None for a plain tensor."""
    entry = stored.entries[name]
    if not annex.is_icq_tensor(entry.dtype, entry.shape, stored.read(name, 0, len(MAGIC))):
        return None
    fixed = bytes(stored.read(name, 0, FIXED_HEADER_SIZE))
    directory_size = int.from_bytes(fixed[16:24], "little") if len(fixed) == FIXED_HEADER_SIZE else 0
    head = bytes(stored.read(name, 0, FIXED_HEADER_SIZE + min(directory_size, MAX_DIRECTORY_SIZE)))
    parsed = read_header(bytes_reader(head)[0], entry.size)
    annex.check_file_header(name, parsed)
    return parsed


def import_hf(source: Path, target: Path, *, force: bool = False, progress: Progress | None = None) -> None:
    """Write one .icq file from an icq model directory: each ICQ tensor's record and payload as they
    are (its chunk table rebuilt only where the directory's tensors differ in ``chunk_log2``), each
    plain tensor losslessly (raw coding), the metadata from ``quantization_config.metadata``."""
    quantization = check_quantization_config(read_config(source).get("quantization_config"), str(source / CONFIG))
    found = _open_shards(source)
    try:
        records, headers = {}, {}
        for name, (stored, entry) in found.items():
            header = _icq_header(name, stored)
            if header is None:
                records[name] = TensorRecord(name, entry.dtype, entry.dtype, 0, entry.shape)
            else:
                records[name], headers[name] = header.tensors[0], header
        chunk_log2 = quantization.get("chunk_log2") or DEFAULT_CHUNK_LOG2
        order = sorted(records, key=lambda n: n.encode("utf-8"))
        with atomic_output(target, force) as out:
            writer = StreamWriter(out, [records[n] for n in order], dict(quantization.get("metadata", {})),
                                  chunk_log2=chunk_log2)  # fmt: skip
            for name in order:
                stored, entry = found[name]
                if name in headers:
                    data = bytes(stored.read(name))
                    record = annex.verify_stored(name, data)
                    payload = data[headers[name].data_offset :]
                    if headers[name].chunk_log2 != chunk_log2:
                        body = payload[: tensor_layout(record, headers[name].chunk_log2).body_size]
                        table = chunk_table(body, chunk_log2)
                        payload = body + table
                        record = replace(record, table_crc=crc32c(table))
                    writer.add(record, payload)
                else:
                    record, sections = encode_tensor(name, stored.array(name), EncodeOptions(), coding="raw")
                    built, table_crc = build_payload(record, sections, chunk_log2)
                    writer.add(replace(record, table_crc=table_crc), built)
                if progress:
                    progress(name)
            writer.finish()
    finally:
        for stored in {id(s): s for s, _ in found.values()}.values():
            stored.close()
