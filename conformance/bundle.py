"""One archive for implementers: ``python -m conformance bundle OUT.tar.gz``.

Everything a decoder written in another language needs, in one reproducible ``.tar.gz`` (sorted
entries, fixed times and owners): the specification and its worked examples, the vectors with their
expected outputs, the manifest, the runner and its contract (the suite's README), ``run.py`` (the
runner's command line, Python standard library only) and ``SHA256SUMS`` of every file
(``sha256sum -c SHA256SUMS`` checks them).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

from icqcodec.atomic import write_atomically

from .generate import SPEC_VERSION

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent / "spec"
SPEC_FILES = ("icq-format.md", "icq-safetensors.md", "worked-example.md", "worked-example-2.md")
EPOCH = 1764547200  # 2025-12-01T00:00:00Z: fixed, so the archive's bytes depend on its contents only


def contents() -> dict[str, bytes]:
    """The bundle's files by path inside its top folder."""
    files = {f"spec/{name}": (SPEC / name).read_bytes() for name in SPEC_FILES}
    files["README.md"] = (HERE / "README.md").read_bytes()
    files["MANIFEST.json"] = (HERE / "MANIFEST.json").read_bytes()
    files["runner.py"] = (HERE / "runner.py").read_bytes()
    files["run.py"] = (HERE / "bundle_run.py").read_bytes()
    for path in sorted((HERE / "vectors").rglob("*")):
        if path.is_file():
            files[str(path.relative_to(HERE))] = path.read_bytes()
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))
    files["SHA256SUMS"] = sums.encode()
    return files


def archive(files: dict[str, bytes], top: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in sorted({str(parent) for name in files for parent in Path(name).parents} - {"."}):
            info = tarfile.TarInfo(f"{top}/{folder}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime = len(data), EPOCH
            info.mode = 0o755 if name == "run.py" else 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def write_bundle(target: Path, *, force: bool = False) -> int:
    """Write the bundle to ``target`` atomically (refusing to replace a file unless ``force``);
    returns the number of files in it."""
    files = contents()
    write_atomically(Path(target), [archive(files, f"icq-conformance-{SPEC_VERSION}")], overwrite=force)
    return len(files)
