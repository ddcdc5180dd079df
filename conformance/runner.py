"""Runs the conformance vectors against a decoder: one of ours in process, or any program.

An external decoder is a command with ``{input}`` and ``{output}`` placeholders. For a file it
accepts, it exits 0 after writing into the folder ``{output}``: ``tensors.json``, a JSON list with,
per tensor in file order, ``name``, ``dtype`` (the spec's name), ``shape`` and ``file`` (a file name
in the folder holding the raw little-endian bytes; never derived from the tensor's name). For a
file it rejects, it prints the error category as the first line of stdout and exits non-zero.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent

Outcome = tuple[str, object]  # ("ok", [(name, dtype, shape, bytes)]) or ("error", category)


def vector_path(entry: dict) -> str:
    """A vector's file, relative to the suite: ``vectors/KIND/NAME.icq``, or for the safetensors
    annex's vectors ``vectors/safetensors/KIND/NAME.safetensors``."""
    if entry.get("container") == "safetensors":
        return f"vectors/safetensors/{entry['kind']}/{entry['name']}.safetensors"
    return f"vectors/{entry['kind']}/{entry['name']}.icq"


def expected_folder(entry: dict) -> str:
    return vector_path(entry).rsplit(".", 1)[0] + ".expected"


def in_process(backend: str) -> Callable[[bytes, Path], Outcome]:
    import numpy as np

    from icqcodec import FormatError, annex_safetensors, dtypes, files

    def decode(data: bytes, path: Path) -> Outcome:
        try:
            if path.suffix == ".safetensors":
                tensors = annex_safetensors.load_file(path, backend=backend)
            else:
                tensors = files.load(data, backend=backend)
        except FormatError as error:
            return "error", error.category
        result = []
        for name, array in tensors.items():
            if backend == "cupy" and not isinstance(array, np.ndarray):  # bfloat16 comes back as uint16 bits
                array = cupy_output(data, path, name, array)
            code = dtypes.code_of(array.dtype)
            result.append((name, dtypes.NAMES[code], list(array.shape), np.ascontiguousarray(array).tobytes()))
        return "ok", result

    return decode


def cupy_output(data: bytes, path: Path, name: str, array):
    """A CuPy decoder's output as numpy, of the record's dtype (CuPy has no bfloat16)."""
    import cupy

    from icqcodec import dtypes, safetensors_format
    from icqcodec.container import bytes_reader, read_header

    if path.suffix == ".safetensors":
        stored = safetensors_format.read_file(path)
        try:
            data = stored.read(name)  # the ICQ tensor's own one-tensor file
        finally:
            stored.close()
    record = read_header(*bytes_reader(data)).by_name[name]
    return cupy.asnumpy(array).view(dtypes.numpy_dtype(record.dtype))


def external(command: str, timeout: float = 60.0) -> Callable[[bytes, Path], Outcome]:
    def decode(data: bytes, path: Path) -> Outcome:
        with tempfile.TemporaryDirectory() as folder:
            output = Path(folder) / "out"
            output.mkdir()
            argv = [
                part.replace("{input}", str(path)).replace("{output}", str(output)) for part in shlex.split(command)
            ]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                lines = done.stdout.strip().splitlines()
                return "error", lines[0].strip() if lines else f"exit {done.returncode}, no category"
            listing = json.loads((output / "tensors.json").read_text())
            return "ok", [(t["name"], t["dtype"], t["shape"], (output / t["file"]).read_bytes()) for t in listing]

    return decode


def check(entry: dict, outcome: Outcome) -> str | None:
    """None if the outcome is what the manifest expects, else why not."""
    kind, value = outcome
    if entry["expected"] != "ok":
        if kind == "ok":
            return f"accepted, expected rejection as {entry['expected']}"
        return None if value == entry["expected"] else f"rejected as {value}, expected {entry['expected']}"
    if kind == "error":
        return f"rejected as {value}, expected a decode"
    folder = HERE / expected_folder(entry)
    expected = json.loads((folder / "tensors.json").read_text())
    if [(t[0], t[1], t[2]) for t in value] != [(e["name"], e["dtype"], e["shape"]) for e in expected]:
        return "tensor names, dtypes or shapes differ"
    for (name, _, _, content), e in zip(value, expected, strict=True):
        if hashlib.sha256(content).hexdigest() != e["sha256"]:
            return f"tensor {name!r}: decoded bytes differ"
    return None


def run(decoder: Callable[[bytes, Path], Outcome], *, only: str | None = None) -> tuple[int, list[str]]:
    manifest = json.loads((HERE / "MANIFEST.json").read_text())
    passed, failures = 0, []
    for entry in manifest["vectors"]:
        if only and only not in entry["name"]:
            continue
        path = HERE / vector_path(entry)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            failures.append(f"{entry['kind']}/{entry['name']}: the vector file does not match its SHA-256")
            continue
        try:
            problem = check(entry, decoder(data, path))
        except Exception as error:  # a crash of the decoder under test is a failure, not ours
            problem = f"the decoder raised {type(error).__name__}: {error}"
        if problem:
            failures.append(f"{entry['kind']}/{entry['name']}: {problem} (spec section {entry['section']})")
        else:
            passed += 1
    return passed, failures


def report(passed: int, failures: list[str]) -> int:
    """Print one line per failure and the totals; the exit status (1 on any failure)."""
    for line in failures:
        print(line)
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0
