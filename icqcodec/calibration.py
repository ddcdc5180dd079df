"""Calibration statistics files: the second moments of each linear layer's input, for the encoder
(spec section 10, informative).

A statistics file is a safetensors file. Each tensor is keyed by the weight name it serves (as in
the model's state dict) and is ``E[x x^T]`` of that layer's input, float32, ``(in, in)``, or its
diagonal ``E[x_j^2]``, ``(in,)``. Layers that read the same input (attention q/k/v, MLP gate/up)
share one statistic, stored once under the first name; the metadata key ``icq.statistics`` holds
JSON: ``{"format": 1, "tokens": {name: tokens seen}, "aliases": {name: name it shares},
"sensitivity": {name: s}}``. The optional sensitivity of a weight is how much loss a unit of its
output error adds (:func:`icqcodec.llm.sensitivities`: for a causal LM the mean squared gradient
of the loss with respect to the layer's output): with H it makes the Gauss-Newton estimate ``s/2 *
sum over rows of d^T H d`` of the loss a coding adds, by which a budget of bits per weight is
shared out (:mod:`icqcodec.budget`).

Reading needs numpy and safetensors only; collecting them needs torch (:mod:`icqcodec.statistics`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save

from .atomic import write_atomically
from .errors import InputError
from .hessian import DAMPING, Prepared, prepare

__all__ = ["TOKENS", "SEQ_LEN", "DIAGONAL_ABOVE", "STATISTICS_KEY", "Statistics", "load_statistics", "save_statistics"]

STATISTICS_KEY = "icq.statistics"
FORMAT = 1
TOKENS = 16384  # calibration tokens, by default
SEQ_LEN = 128  # tokens per calibration window, by default (bench/calibration_sweep.py: shorter windows did better)
DIAGONAL_ABOVE = 16384  # inputs above which only the diagonal is kept (a full H would be 1 GiB in float32)
PREPARED_KEPT = 4  # prepared statistics kept for the names that share them (q/k/v, gate/up)


@dataclass
class Statistics:
    """Second moments by weight name; ``aliases`` maps a name to the name whose statistic it shares."""

    moments: dict[str, np.ndarray]
    tokens: dict[str, int] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)
    _prepared: dict = field(default_factory=dict, repr=False, compare=False)

    def names(self) -> list[str]:
        return sorted({*self.moments, *self.aliases})

    def get(self, name: str) -> np.ndarray | None:
        return self.moments.get(self.aliases.get(name, name))

    def prepared(self, name: str, *, damping: float = DAMPING, order: str = "activation") -> Prepared | None:
        """The statistic of ``name`` checked, damped and factored for the encoder, once for all the
        names that share it (:func:`icqcodec.hessian.prepare`); None if there is none."""
        moment = self.get(name)
        if moment is None:
            return None
        key = (self.aliases.get(name, name), damping, order)
        if key not in self._prepared:
            if len(self._prepared) >= PREPARED_KEPT:  # bounded: a factor takes 8 n^2 bytes
                self._prepared.pop(next(iter(self._prepared)))
            self._prepared[key] = prepare(moment, moment.shape[0], damping=damping, order=order, name=name)
        return self._prepared[key]

    def check(self, shapes: Mapping[str, tuple[int, ...]], *, names: set[str] | None = None) -> None:
        """InputError naming the first statistic with no tensor of that name among ``names`` (by
        default the keys of ``shapes``), or whose size is not its tensor's last dimension (its input
        size); tensors ``shapes`` does not hold are not checked for shape."""
        known = set(shapes) if names is None else names
        for name in self.names():
            if name not in known:
                raise InputError(f"calibration statistic {name!r} names no tensor of the checkpoint")
            if name not in shapes:
                continue
            shape, cols = self.get(name).shape, shapes[name][-1] if shapes[name] else 1
            if shape not in ((cols,), (cols, cols)):
                raise InputError(f"calibration statistic {name!r} has shape {shape}; tensor {name!r} of shape "
                                 f"{tuple(shapes[name])} needs ({cols},) or ({cols}, {cols})")  # fmt: skip


def load_statistics(path: str | os.PathLike) -> Statistics:
    """Read a statistics file; InputError for one that is not."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such statistics file")
    try:
        moments = load_file(str(path))
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        info = json.loads(metadata.get(STATISTICS_KEY, "{}"))
    except Exception as error:  # safetensors' own SafetensorError derives from Exception only
        raise InputError(f"{path}: not a calibration statistics file ({error})") from None
    if info.get("format", FORMAT) != FORMAT:
        raise InputError(f"{path}: statistics format {info.get('format')!r}; this version reads {FORMAT}")
    aliases = {str(k): str(v) for k, v in info.get("aliases", {}).items()}
    for name, target in aliases.items():
        if target not in moments:
            raise InputError(f"{path}: statistic {name!r} shares {target!r}, which the file does not hold")
    for name, moment in moments.items():
        if moment.ndim not in (1, 2) or (moment.ndim == 2 and moment.shape[0] != moment.shape[1]):
            raise InputError(f"{path}: statistic {name!r} of shape {moment.shape} is neither (n,) nor (n, n)")
    sensitivity = {str(k): float(v) for k, v in info.get("sensitivity", {}).items()}
    for name, value in sensitivity.items():
        if not (np.isfinite(value) and value >= 0):
            raise InputError(f"{path}: sensitivity of {name!r} is {value!r}; it must be finite and not negative")
    return Statistics(moments, {str(k): int(v) for k, v in info.get("tokens", {}).items()}, aliases, sensitivity)


def save_statistics(path: str | os.PathLike, statistics: Statistics) -> None:
    """Write a statistics file, atomically."""
    info = {"format": FORMAT, "tokens": statistics.tokens, "aliases": statistics.aliases}
    if statistics.sensitivity:
        info["sensitivity"] = statistics.sensitivity
    tensors = {name: np.ascontiguousarray(m, dtype=np.float32) for name, m in statistics.moments.items()}
    data = save(tensors, metadata={STATISTICS_KEY: json.dumps(info, sort_keys=True)})
    write_atomically(Path(path), [data], overwrite=True)
