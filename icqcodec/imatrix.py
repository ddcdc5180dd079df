"""llama.cpp importance matrices as calibration statistics (spec section 10, informative).

``llama-imatrix`` writes a GGUF file with, for each weight it saw, ``<name>.in_sum2``: the sum over
tokens of the square of each input (float32, one row per matrix: one, or one per expert of a
stacked expert tensor), and ``<name>.counts``: the tokens summed, per matrix. Their quotient is the
diagonal statistic ``E[x_j^2]`` of :mod:`icqcodec.calibration`. Its names are GGUF's
(``blk.0.attn_q.weight``); they are mapped to a checkpoint's names (``model.layers.0.self_attn.
q_proj.weight``) through the tensor-name tables of the ``gguf`` package, for the architecture whose
table maps most of them. Reading needs that package (``pip install 'icqcodec[imatrix]'``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .calibration import Statistics, load_statistics
from .errors import InputError

__all__ = ["SUM_SUFFIX", "COUNT_SUFFIX", "load_imatrix", "load_calibration"]

SUM_SUFFIX, COUNT_SUFFIX = ".in_sum2", ".counts"
SHOWN = 4  # names listed in a message


def _gguf():
    try:
        import gguf
    except ImportError:
        raise InputError(
            "reading an importance matrix needs the gguf package: pip install 'icqcodec[imatrix]'"
        ) from None
    return gguf


def _entries(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GGUF weight name -> (in_sum2 as matrices x inputs, counts per matrix)."""
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(str(path))
        tensors = {t.name: t for t in reader.tensors}
    except Exception as error:  # the reader raises ValueError, struct.error, IndexError... on bad input
        raise InputError(f"{path}: not a GGUF file ({type(error).__name__}: {error})") from None
    entries = {}
    for name, tensor in tensors.items():
        if not name.endswith(SUM_SUFFIX):
            continue
        base = name[: -len(SUM_SUFFIX)]
        counts = tensors.get(base + COUNT_SUFFIX)
        if counts is None:
            raise InputError(f"{path}: {name!r} has no {base + COUNT_SUFFIX!r} beside it")
        inputs = int(tensor.shape[0])  # GGUF lists dimensions innermost first
        sums = np.asarray(tensor.data, dtype=np.float64).reshape(-1, inputs)
        per_matrix = np.asarray(counts.data, dtype=np.float64).reshape(-1)
        if per_matrix.size != sums.shape[0]:
            raise InputError(f"{path}: {base!r} has {sums.shape[0]} matrices but {per_matrix.size} counts")
        entries[base] = (sums, per_matrix)
    if not entries:
        raise InputError(f"{path}: no '<tensor>{SUM_SUFFIX}' entries: not an importance matrix from llama-imatrix")
    return entries


def _name_map(gguf_names: Iterable[str], names: Iterable[str]) -> dict[str, str]:
    """GGUF name -> checkpoint name, by the architecture table that maps the most GGUF names."""
    gguf = _gguf()
    wanted = set(gguf_names)
    blocks = 1 + max((int(m.group(1)) for n in wanted if (m := re.match(r"blk\.(\d+)\.", n))), default=0)
    best: dict[str, str] = {}
    for arch in gguf.MODEL_ARCH:
        table = gguf.get_tensor_name_map(arch, blocks)
        found = {}
        for name in names:
            mapped = table.get_name(name, try_suffixes=(".weight", ".bias"))
            if mapped in wanted:
                found.setdefault(mapped, name)
        if len(found) > len(best):
            best = found
    return best


def load_imatrix(path: str | os.PathLike, names: Iterable[str]) -> Statistics:
    """Diagonal statistics from an importance-matrix GGUF file, keyed by the checkpoint ``names``
    they map to. InputError if none maps; entries that do not map (stacked experts among them) are
    left out with a warning naming a few."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such importance matrix file")
    entries = _entries(path)
    names = sorted(names)
    mapping = _name_map(entries, names)
    moments, tokens, unused = {}, {}, []
    for gguf_name in sorted(entries):
        sums, counts = entries[gguf_name]
        if gguf_name not in mapping or sums.shape[0] != 1:
            unused.append(gguf_name)
            continue
        if not counts[0] > 0:
            raise InputError(f"{path}: {gguf_name!r} counts {counts[0]:g} tokens; it needs at least one")
        moments[mapping[gguf_name]] = (sums[0] / counts[0]).astype(np.float32)
        tokens[mapping[gguf_name]] = int(counts[0])
    if not moments:
        shown = ", ".join(sorted(entries)[:SHOWN])
        raise InputError(f"{path}: the importance matrix names no tensor of the checkpoint ({shown}, ... "
                         f"{len(entries)} in all; the checkpoint has {', '.join(names[:SHOWN])}, ...)")  # fmt: skip
    if unused:
        warnings.warn(f"{path}: {len(unused)} importance-matrix entries map to no tensor of the checkpoint and are "
                      f"not used ({', '.join(unused[:SHOWN])}{', ...' if len(unused) > SHOWN else ''})",
                      RuntimeWarning, stacklevel=2)  # fmt: skip
    return Statistics(moments, tokens)


def load_calibration(path: str | os.PathLike, names: Iterable[str]) -> Statistics:
    """Calibration statistics from a statistics file or, for a ``.gguf`` path, an importance matrix
    mapped to ``names``, the checkpoint's tensor names."""
    if Path(path).suffix.lower() == ".gguf":
        return load_imatrix(path, names)
    return load_statistics(path)
