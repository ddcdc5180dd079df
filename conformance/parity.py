"""Decoder parity across a change: ``python -m conformance.parity record|check FILE [--backend B ...]``.

For every conformance vector, every seeded mutation of the valid vectors (``--mutations``, 3,000 by
default) and every file of a fuzz corpus folder (``--corpus``, by default the committed
``conformance/fuzz/corpus``, found by the atheris target), the outcome of each backend: the
error's category and whole message, or the decoded tensors' names, dtypes, shapes and SHA-256 of
their bytes. ``record`` writes one digest per input and backend to FILE; ``check`` recomputes them
and lists every input whose outcome changed. The mutations are the ones of :mod:`conformance.invariants`,
seeded, so both runs see the same inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

from .invariants import mutate

HERE = Path(__file__).resolve().parent
SEED = 20261201


def inputs(mutations: int, corpus: Path | None) -> Iterator[tuple[str, bytes]]:
    """(label, bytes) of every input: the vectors, seeded mutations of the valid ones, a corpus."""
    manifest = json.loads((HERE / "MANIFEST.json").read_text())
    valid = []
    for entry in manifest["vectors"]:
        if "container" in entry:  # the annex's vectors hold ICQ files the mutations already reach
            continue
        data = (HERE / "vectors" / entry["kind"] / f"{entry['name']}.icq").read_bytes()
        if entry["kind"] == "valid" and entry["spec_version"] == "1.0":  # later vectors leave the mutations as recorded
            valid.append(data)
        yield f"{entry['kind']}/{entry['name']}", data
    rng = random.Random(SEED)
    for index in range(mutations):
        yield f"mutation/{index}", mutate(valid[rng.randrange(len(valid))], rng)
    if corpus is not None and corpus.is_dir():
        for path in sorted(p for p in corpus.iterdir() if p.is_file()):
            yield f"corpus/{path.name}", path.read_bytes()


def outcome(data: bytes, backend: str) -> str:
    """The decode's outcome in one line: ``error <category> <message>`` or ``ok <tensors>``."""
    import numpy as np

    from icqcodec import FormatError, files

    try:
        tensors = files.load(data, backend=backend, max_output_size=1 << 26)
    except FormatError as error:
        return f"error {error.category} {error}"
    except ValueError as error:  # the output bound, not a format error
        return f"refused {error}"
    parts = []
    for name, array in tensors.items():
        if backend == "cupy":
            import cupy

            array = cupy.asnumpy(array)
        content = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        parts.append(f"{name!r} {array.dtype.str} {list(array.shape)} {content}")
    return "ok " + "; ".join(parts)


def digests(backends: list[str], mutations: int, corpus: Path | None) -> dict[str, str]:
    """``"<backend> <label>"`` -> the SHA-256 of its outcome line (first 16 hex digits)."""
    result = {}
    for label, data in inputs(mutations, corpus):
        for backend in backends:
            line = outcome(data, backend)
            result[f"{backend} {label}"] = hashlib.sha256(line.encode("utf-8")).hexdigest()[:16]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.parity", description=__doc__)
    parser.add_argument("command", choices=["record", "check"])
    parser.add_argument("file", type=Path)
    parser.add_argument("--backend", action="append", choices=["reference", "numba", "cupy"])
    parser.add_argument("--mutations", type=int, default=3000)
    parser.add_argument("--corpus", type=Path, default=HERE / "fuzz" / "corpus", help="a folder of fuzz inputs")
    args = parser.parse_args(argv)
    backends = args.backend or ["reference", "numba"]
    found = digests(backends, args.mutations, args.corpus)
    if args.command == "record":
        args.file.write_text(json.dumps(found, indent=0, sort_keys=True) + "\n")
        print(f"recorded {len(found)} outcomes")
        return 0
    recorded = json.loads(args.file.read_text())
    changed = [key for key in found if recorded.get(key) != found[key]]
    for key in changed:
        print(f"changed: {key}")
    print(f"{len(found) - len(changed)} of {len(found)} outcomes as recorded")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
