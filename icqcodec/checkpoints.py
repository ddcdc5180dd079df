"""Model files in and out: safetensors, .npz, .npy and sharded Hugging Face checkpoints.

Converts tensor by tensor, so memory stays near a few copies of the largest tensor whatever the
checkpoint's size. Every output is written to a temporary file beside it and renamed into place.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import functools
import hashlib
import json
import multiprocessing
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import budget, dtypes, safetensors_format
from .atomic import atomic_directory, atomic_output
from .budget import Allocation
from .calibration import Statistics
from .constants import DEFAULT_CHUNK_LOG2, RESERVED_KEY_PREFIX
from .container import TensorRecord
from .container_writer import StreamWriter, build_payload
from .decode import decode
from .encode import ENCODER_METADATA, EncodeOptions, assemble, encode_tensor, should_quantize
from .errors import InputError
from .files import safe_open

__all__ = [
    "plan_checkpoint",
    "checkpoint_files",
    "shard_names",
    "shard_target",
    "encode_shard",
    "finalize_shards",
    "encode_checkpoint",
    "decode_checkpoint",
    "Source",
    "open_source",
    "SAFETENSORS_DTYPES",
    "InputError",
]

ICQ_INDEX = "model.icq.index.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_DTYPES = safetensors_format.DTYPES  # safetensors dtype names -> ICQ dtype codes
Progress = Callable[[str], None]


# ---- reading ---------------------------------------------------------------------------------------


@dataclass
class Source:
    """One input file: tensor names, a loader per name, and its metadata."""

    path: Path
    names: list[str]
    load: Callable[[str], np.ndarray]
    metadata: dict[str, str]
    close: Callable[[], None] = lambda: None


def open_source(path: Path) -> Source:
    """Open a .safetensors, .npz or .npy file for reading tensor by tensor."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if suffix == ".safetensors":
        return _open_safetensors(path)
    if suffix == ".npz":
        try:
            archive = np.load(path, allow_pickle=False)
        except Exception as error:
            raise InputError(f"{path}: not a readable .npz file ({error})") from None
        return Source(path, list(archive.files), lambda name: archive[name], {}, archive.close)
    if suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as error:
            raise InputError(f"{path}: not a readable .npy file ({error})") from None
        return Source(path, ["tensor"], lambda name: np.asarray(array), {})
    raise InputError(f"{path}: unknown input format {suffix!r}; expected .safetensors, .npz, .npy or an index")


def _open_safetensors(path: Path) -> Source:
    try:
        stored = safetensors_format.read_file(path)
    except ValueError as error:
        raise InputError(f"{path}: not a readable safetensors file ({error})") from None

    def load(name: str) -> np.ndarray:
        try:
            return stored.array(name)
        except ValueError as error:
            raise InputError(f"{path}: {error}") from None

    return Source(path, list(stored.entries), load, stored.metadata, stored.close)


def _shard_index(path: Path, index_name: str) -> Path | None:
    """The index file of a sharded checkpoint given as the index or its directory, else None."""
    if path.is_dir():
        candidate = path / index_name
        if not candidate.exists():
            raise InputError(f"{path}: directory without {index_name}")
        return candidate
    return path if path.name.endswith(".index.json") else None


def _read_index(index: Path) -> tuple[dict[str, str], dict]:
    try:
        content = json.loads(index.read_text())
        weight_map = content["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{index}: not a sharded checkpoint index ({error})") from None
    return weight_map, content.get("metadata", {})


# ---- writing ---------------------------------------------------------------------------------------


def _selected(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool | None:
    """True/False when --include/--exclude decide for ``name``, None to apply the default rule."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
        return False
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
        return True
    return None


def _quantized(name: str, array: np.ndarray, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    forced = _selected(name, include, exclude)
    return should_quantize(array) if forced is None else forced


def encode_file(source: Source, target: Path, options: EncodeOptions, *, dtype: str | None = None,
                include: tuple[str, ...] = (), exclude: tuple[str, ...] = (), force: bool = False,
                progress: Progress | None = None, calibration: Statistics | None = None,
                checkpoint_names: set[str] | None = None, allocation: Allocation | None = None,
                extra_metadata: dict[str, str] | None = None) -> None:  # fmt: skip
    """Encode one input file into one .icq file, tensor by tensor; quantized tensors with a
    ``calibration`` statistic are encoded with it, and with an ``allocation`` (:func:`plan_checkpoint`)
    each tensor it names gets its chosen coding, and the allocation its measured error. The
    statistics are checked against the file (or, for a shard, against ``checkpoint_names``) before
    any output exists."""
    user = {k: v for k, v in source.metadata.items() if not k.startswith(RESERVED_KEY_PREFIX)}
    recorded = allocation.encoder_options(options) if allocation else options.to_json()
    metadata = {**user, **(extra_metadata or {}), **ENCODER_METADATA, "icq.encoder_options": recorded}
    names = sorted(source.names, key=lambda n: n.encode("utf-8"))
    codings, plan = {}, []
    for name in names:  # pass 1: decide each tensor's coding, so the directory's length is known
        array = source.load(name)
        if allocation is None:
            quantize = _quantized(name, array, include, exclude)
        else:
            quantize = name in allocation.choices and allocation.choices[name].coding == "icq"
        codings[name] = "icq" if quantize else "raw"
        code = dtypes.code_of(array.dtype)
        plan.append(TensorRecord(name, code, code, 1 if quantize else 0, tuple(array.shape)))
        del array
    calibrated: set[str] = set()
    if calibration is not None:
        calibration.check({r.name: r.shape for r in plan}, names=checkpoint_names)
        calibrated = {r.name for r in plan if r.coding and calibration.get(r.name) is not None}
        metadata["icq.calibration"] = json.dumps({"tensors": len(calibrated)})
    with atomic_output(target, force) as out:
        writer = StreamWriter(out, plan, metadata, chunk_log2=DEFAULT_CHUNK_LOG2)
        for name in names:  # pass 2: encode and write one tensor at a time
            array = source.load(name)
            tensor_options = allocation.coding(name, options)[1] if allocation and codings[name] == "icq" else options
            record, sections = encode_tensor(name, array, tensor_options, coding=codings[name], dtype=dtype,
                                             statistic=calibration.prepared(name, damping=options.damping,
                                                                            order=options.order)
                                             if name in calibrated else None)  # fmt: skip
            payload, table_crc = build_payload(record, sections, DEFAULT_CHUNK_LOG2)
            writer.add(_with_crc(record, table_crc), payload)
            if allocation is not None and name in allocation.choices:
                decoded = decode(b"".join(assemble([(record, sections)], {})))
                moment = calibration.get(name) if calibration is not None else None
                allocation.measure(name, array, decoded, moment, options.damping)
            if progress:
                progress(name)
        writer.finish()


def _with_crc(record: TensorRecord, table_crc: int) -> TensorRecord:
    from dataclasses import replace

    return replace(record, table_crc=table_crc)


def write_safetensors(out, records: list[TensorRecord], metadata: dict[str, str], load, progress, dtype_for) -> None:
    """Stream tensors into the safetensors format: JSON header of offsets, then the data."""
    by_name = {record.name: record for record in records}

    def data(name: str) -> memoryview:
        array = _raw_bytes(load(by_name[name]))
        if progress:
            progress(name)
        return array

    safetensors_format.write_file(out, [(r.name, dtype_for(r), r.shape) for r in records], data, metadata)


def _raw_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes without a copy (safetensors data is little-endian, as numpy's here)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def write_npz(out, records: list[TensorRecord], load, progress) -> None:
    with zipfile.ZipFile(out, "w", allowZip64=True) as archive:
        for record in records:
            with archive.open(record.name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(load(record)), allow_pickle=False)
            if progress:
                progress(record.name)


def decode_file(source: Path, target: Path, *, dtype: str | None = None, force: bool = False,
                progress: Progress | None = None) -> None:  # fmt: skip
    """Decode one .icq file into .safetensors, .npz or .npy (by ``target``'s extension)."""
    suffix = target.suffix.lower()
    if suffix not in (".safetensors", ".npz", ".npy"):
        raise InputError(f"{target}: unknown output format {suffix!r}; expected .safetensors, .npz or .npy")
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; use --force to replace it")
    override = None if dtype is None else dtypes.code_of(dtype)
    with safe_open(source) as icq:
        records = list(icq.header.tensors)
        user = {k: v for k, v in icq.metadata().items() if not k.startswith(RESERVED_KEY_PREFIX)}

        def dtype_for(record: TensorRecord) -> int:
            return override if override is not None and record.coding == 1 else record.dtype

        def load(record: TensorRecord) -> np.ndarray:
            array = icq.get_tensor(record.name)
            code = dtype_for(record)
            return array if code == record.dtype else array.astype(dtypes.numpy_dtype(code))

        with atomic_output(target, force) as out:
            if suffix == ".safetensors":
                write_safetensors(out, records, user, load, progress, dtype_for)
            elif suffix == ".npz":
                write_npz(out, records, load, progress)
            else:
                if len(records) != 1:
                    raise InputError(f"{source} holds {len(records)} tensors; a .npy file holds one: use .npz")
                np.lib.format.write_array(out, np.ascontiguousarray(load(records[0])), allow_pickle=False)
        icq.check_padding()


# ---- whole checkpoints, sharded or not -------------------------------------------------------------


def _encode_one(source: Path, target: Path, force: bool, options: EncodeOptions, **kwargs) -> None:
    opened = open_source(source)
    try:
        encode_file(opened, target, options, force=force, **kwargs)
    finally:
        opened.close()


def _convert_shards(index: Path, target: Path, force: bool, suffix: str, index_name: str, convert) -> list[Path]:
    """Convert every shard named by ``index`` into a staged directory with a new index, then put it
    in place (``convert(source, target)`` converts one file)."""
    weight_map, metadata = _read_index(index)
    shard_names = {}
    with atomic_directory(target, force) as staging:
        for shard in sorted(set(weight_map.values())):
            name = Path(shard).stem + suffix
            convert(index.parent / shard, staging / name)
            shard_names[shard] = name
        new_index = {"metadata": metadata, "weight_map": {k: shard_names[v] for k, v in weight_map.items()}}
        _write_index(staging / index_name, new_index, False)
    return [target / n for n in sorted(shard_names.values())] + [target / index_name]


def checkpoint_files(source: Path, index_name: str = SAFETENSORS_INDEX) -> tuple[list[Path], set[str] | None]:
    """The files of a checkpoint (one, or a sharded one's shards, given as its index or directory)
    and, if sharded, its tensor names."""
    index = _shard_index(source, index_name)
    if index is None:
        return [source], None
    weight_map = _read_index(index)[0]
    return [index.parent / shard for shard in sorted(set(weight_map.values()))], set(weight_map)


def tensor_names(source: Path) -> set[str]:
    """The tensor names of a file or sharded checkpoint (to map an importance matrix onto)."""
    names = checkpoint_files(source)[1]
    if names is not None:
        return names
    opened = open_source(source)
    try:
        return set(opened.names)
    finally:
        opened.close()


def plan_checkpoint(source: Path, options: EncodeOptions, bpw: float, *, include: tuple[str, ...] = (),
                    exclude: tuple[str, ...] = (), calibration: Statistics | None = None,
                    progress: Progress | None = None) -> Allocation:  # fmt: skip
    """The coding of every tensor of a file or sharded checkpoint that would be quantized (by the
    default rule and ``include``/``exclude``), within ``bpw`` bits per weight (:mod:`icqcodec.budget`),
    with the ``calibration`` statistics where they exist."""
    files, names = checkpoint_files(source)

    def quantized():
        for path in files:
            opened = open_source(path)
            try:
                if calibration is not None:  # shapes are checked as each statistic is prepared
                    calibration.check({}, names=names or set(opened.names))
                for name in sorted(opened.names, key=lambda n: n.encode("utf-8")):
                    array = opened.load(name)
                    if _quantized(name, array, include, exclude):
                        yield name, array
            finally:
                opened.close()

    return budget.plan(quantized(), options, bpw, calibration, progress=progress)


def encode_checkpoint(source: Path, target: Path, options: EncodeOptions, *, dtype: str | None = None,
                      include: tuple[str, ...] = (), exclude: tuple[str, ...] = (), force: bool = False,
                      progress: Progress | None = None, calibration: Statistics | None = None,
                      allocation: Allocation | None = None, jobs: int = 1) -> list[Path]:  # fmt: skip
    """Encode a file, or a sharded checkpoint (its index or directory) into a directory of .icq
    shards with ``model.icq.index.json``; with ``calibration`` statistics (:mod:`icqcodec.calibration`),
    the quantized tensors they name are encoded with them; with an ``allocation``
    (:func:`plan_checkpoint`), each tensor with its chosen coding. A sharded checkpoint's shards are
    encoded by :func:`encode_shard`, ``jobs`` of them at a time in local processes, then indexed by
    :func:`finalize_shards`; the directory appears whole or not at all. Returns the files written."""
    if allocation is not None and jobs > 1:
        raise ValueError("an allocation records each tensor's measured error as it is coded: encode with jobs=1")
    kwargs = dict(dtype=dtype, include=include, exclude=exclude, calibration=calibration, allocation=allocation)
    files, names = checkpoint_files(source)
    if names is None:
        _encode_one(source, target, force, options, progress=progress, **kwargs)
        return [target]
    if calibration is not None:
        calibration.check({}, names=names)
    shards = shard_names(source)
    with atomic_directory(target, force) as staging:
        encode = functools.partial(encode_shard, source, staging, options=options, **kwargs)
        if jobs > 1:
            context = multiprocessing.get_context("spawn")  # numba's threads do not survive a fork
            with concurrent.futures.ProcessPoolExecutor(min(jobs, len(shards)), mp_context=context) as pool:
                written = list(pool.map(encode, shards))
        else:
            written = [encode(shard, progress=progress) for shard in shards]
        index = finalize_shards(source, staging)
    return [target / p.name for p in written] + [target / index.name]


# ---- shard by shard: each shard a unit any engine can run, then the index --------------------------

SOURCE_INDEX_KEY = (
    "icqcodec.source_index_sha256"  # the index a shard was encoded from (a user key: icq. keys are the spec's)
)


def _sharded_index(source: Path) -> Path:
    index = _shard_index(source, SAFETENSORS_INDEX)
    if index is None:
        raise InputError(f"{source}: not a sharded checkpoint (give its {SAFETENSORS_INDEX} or its directory)")
    return index


def shard_names(source: Path) -> list[str]:
    """The shard files a sharded checkpoint's index names, sorted."""
    return sorted(set(_read_index(_sharded_index(source))[0].values()))


def shard_target(target: Path, shard: str) -> Path:
    """Where :func:`encode_shard` writes ``shard``: ``target/<its stem>.icq``."""
    return target / (Path(shard).stem + ".icq")


def encode_shard(source: Path, target: Path, shard: str, options: EncodeOptions, *, dtype: str | None = None,
                 include: tuple[str, ...] = (), exclude: tuple[str, ...] = (), force: bool = False,
                 progress: Progress | None = None, calibration: Statistics | None = None,
                 allocation: Allocation | None = None) -> Path:  # fmt: skip
    """Encode one shard of a sharded checkpoint into the directory ``target``, recording the
    SHA-256 of the checkpoint's index in it: a unit of work that depends on nothing else, for local
    processes, Dask, a Slurm array or any other engine; :func:`finalize_shards` then writes the index."""
    index = _sharded_index(source)
    content = index.read_bytes()
    weight_map = _read_index(index)[0]
    if shard not in set(weight_map.values()):
        raise InputError(f"{index}: no shard {shard!r}; it names {', '.join(shard_names(source)[:3])}, ...")
    target.mkdir(parents=True, exist_ok=True)
    out = shard_target(target, shard)
    _encode_one(index.parent / shard, out, force, options, dtype=dtype, include=include, exclude=exclude,
                progress=progress, calibration=calibration, allocation=allocation,
                checkpoint_names=set(weight_map) if calibration is not None else None,
                extra_metadata={SOURCE_INDEX_KEY: hashlib.sha256(content).hexdigest()})  # fmt: skip
    return out


def finalize_shards(source: Path, target: Path, *, force: bool = False) -> Path:
    """Write ``target/model.icq.index.json`` once every shard of ``source`` is in ``target``, all
    encoded from this index with the same options; InputError naming the first missing or foreign
    shard otherwise, and no index is written."""
    index = _sharded_index(source)
    digest = hashlib.sha256(index.read_bytes()).hexdigest()
    weight_map, metadata = _read_index(index)
    first: tuple[Path, str] | None = None
    for shard in sorted(set(weight_map.values())):
        path = shard_target(target, shard)
        if not path.is_file():
            raise InputError(f"{path}: missing; encode shard {shard!r} (--shard) before --finalize")
        with safe_open(path) as icq:
            recorded = icq.metadata()
        if recorded.get(SOURCE_INDEX_KEY) != digest:
            raise InputError(f"{path}: a foreign shard, not encoded from {index} as it is now")
        options = recorded.get("icq.encoder_options", "")
        if first is None:
            first = (path, options)
        elif options != first[1]:
            raise InputError(f"{path}: a foreign shard, encoded with other options than {first[0].name} ({options})")
    new_index = {"metadata": metadata, "weight_map": {k: shard_target(target, v).name for k, v in weight_map.items()}}
    return _write_index(target / ICQ_INDEX, new_index, force)


def decode_checkpoint(source: Path, target: Path, *, dtype: str | None = None, force: bool = False,
                      progress: Progress | None = None) -> list[Path]:  # fmt: skip
    """Decode an .icq file, or a sharded .icq checkpoint into safetensors shards with an index."""
    index = _shard_index(source, ICQ_INDEX)
    if index is None:
        decode_file(source, target, dtype=dtype, force=force, progress=progress)
        return [target]
    return _convert_shards(index, target, force, ".safetensors", SAFETENSORS_INDEX,
                           lambda src, dst: decode_file(src, dst, dtype=dtype, progress=progress))  # fmt: skip


def _write_index(path: Path, content: dict, force: bool) -> Path:
    with atomic_output(path, force) as out:
        out.write(json.dumps(content, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    return path
