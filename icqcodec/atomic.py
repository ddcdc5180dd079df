"""Outputs that appear whole or not at all: each is written to a temporary file beside its target,
flushed to disk and renamed into place, so a reader never sees a partial file and nothing is
replaced without the caller's leave."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["write_atomically", "atomic_output", "atomic_directory"]


def _usual_mode(fd: int) -> None:
    """Give a temporary file the mode a plain ``open`` would (mkstemp makes it private)."""
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)


def write_atomically(path: Path, pieces, *, overwrite: bool) -> None:
    """Write ``pieces`` to a temporary file beside ``path``, flush it, then rename it into place."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    _usual_mode(fd)
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        if not overwrite and path.exists():
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: Path, force: bool) -> Iterator:
    """A temporary file beside ``path``, renamed onto it on success, removed on failure."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; use --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    _usual_mode(fd)
    try:
        with os.fdopen(fd, "w+b") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(target: Path, force: bool) -> Iterator[Path]:
    """A temporary directory beside ``target`` whose files replace ``target``'s on success only."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        if target.exists():
            clashes = [p.name for p in staging.iterdir() if (target / p.name).exists()]
            if clashes and not force:
                raise FileExistsError(f"{target / clashes[0]} exists; use --force to replace it")
            for produced in staging.iterdir():
                os.replace(produced, target / produced.name)
            staging.rmdir()
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
