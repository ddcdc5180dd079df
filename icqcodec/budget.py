"""Bits where they matter (spec section 10, informative): within a budget of bits per weight over a
set of tensors, each tensor's coding (code width, outlier ratio and kind, or raw) chosen to minimize
the sum of their predicted losses.

A coding's predicted loss is its output error ``sum over rows of d^T H d``
(:func:`icqcodec.hessian.output_error`, under the damped statistic) times the loss's sensitivity to
the tensor's output where the statistics have one (``icqcodec.llm.sensitivities``): ``s/2 * sum d^T H d`` is the Gauss-Newton
estimate of the loss the coding adds. Every candidate coding of a tensor is measured: its size
exactly (the outliers' positions, and so the index coding, depend on the ratio but not on the width,
so every section's length is known without coding the tensor), its output error by coding a sample
of evenly spaced rows and scaling to all rows (rows are coded independently, so the sample's error
is an unbiased estimate, but for the codebook, which the sample fits alone). The choice is a
Lagrangian search: each tensor's candidates reduced to their lower convex hull in (bytes, predicted
loss), the hulls' steps taken across tensors in order of loss saved per byte while they fit.

Bits per weight count the payload and directory-record bytes of the tensors over their elements,
as ``bench/llm_quality.py`` does. Sizes are integers and errors the encoder's fixed-order sums, ties
are broken by name; the sensitivities come from torch, so near ties may fall differently on another
machine.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from . import dtypes
from .calibration import Statistics
from .constants import CODING_ICQ, CODING_RAW, DEFAULT_CHUNK_LOG2
from .container import TensorRecord, tensor_layout
from .container_writer import record_size
from .encode import QUANTIZERS, EncodeOptions, encode_icq, index_plan, outlier_blocks
from .errors import InputError
from .fitting import outlier_positions
from .hessian import Prepared, output_error

__all__ = [
    "BITS",
    "CODEBOOK_BITS",
    "RATIOS",
    "SAMPLE_ROWS",
    "Candidate",
    "Allocation",
    "candidates",
    "allocate",
    "Measured",
    "measure",
    "plan",
]

BITS = tuple(range(1, 9))
CODEBOOK_BITS = (1, 2, 3, 4)  # wider books cost more to fit than they gain over the uniform levels
RATIOS = (0.0, 0.02, 0.05, 0.1)
SAMPLE_ROWS = 32  # rows coded per candidate to predict its error


@dataclass(frozen=True)
class Candidate:
    """One way to store a tensor: raw, or icq with these options; its bytes and predicted error."""

    coding: str  # "icq" or "raw"
    size: int  # payload and directory-record bytes
    error: float  # predicted output error (0 for raw)
    bits: int = 0
    outlier_ratio: float = 0.0
    quantizer: str = ""

    def options(self, base: EncodeOptions) -> EncodeOptions:
        """``base`` with this candidate's width, ratio and kind."""
        return replace(base, bits=self.bits, outlier_ratio=self.outlier_ratio, quantizer=self.quantizer)

    def to_json(self) -> dict:
        if self.coding == "raw":
            return {"coding": "raw"}
        return {"bits": self.bits, "outlier_ratio": self.outlier_ratio, "quantizer": self.quantizer}


def _sample(rows: int, count: int) -> np.ndarray:
    """``count`` evenly spaced row indices (all rows when there are no more)."""
    if rows <= count:
        return np.arange(rows)
    return np.arange(count) * rows // count


def candidates(name: str, array: np.ndarray, base: EncodeOptions, statistic: Prepared | None = None, *,
               bits: Sequence[int] = BITS, codebook_bits: Sequence[int] = CODEBOOK_BITS,
               ratios: Sequence[float] = RATIOS, sample_rows: int = SAMPLE_ROWS) -> list[Candidate]:  # fmt: skip
    """Every candidate coding of one floating-point tensor (and raw), measured; ``statistic`` as
    :func:`icqcodec.encode.encode_tensor` takes it, prepared."""
    x = np.asarray(array)
    source = dtypes.code_of(x.dtype)
    shape = tuple(x.shape)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, shape[-1])
    rows, cols = x.shape
    raw = TensorRecord(name, source, source, CODING_RAW, shape)
    found = [Candidate("raw", record_size(raw) + tensor_layout(raw, DEFAULT_CHUNK_LOG2).payload_size, 0.0)]
    sample = _sample(rows, sample_rows)
    scale = rows / sample.size
    seen = set()
    for ratio in ratios:
        block, block_counts = outlier_blocks(replace(base, outlier_ratio=ratio), cols)
        if tuple(block_counts) in seen:  # ratios that round to the same counts are one candidate
            continue
        seen.add(tuple(block_counts))
        plan = index_plan(outlier_positions(x, block, block_counts), cols, base.segment_log2)
        widths = [(width, "uniform") for width in bits] + [(width, "codebook") for width in codebook_bits]
        for width, quantizer in widths:
            params = plan.params(width, QUANTIZERS[quantizer], base.segment_log2)
            record = TensorRecord(name, source, source, CODING_ICQ, shape, params=params)
            size = record_size(record) + tensor_layout(record, DEFAULT_CHUNK_LOG2).payload_size
            options = replace(base, bits=width, outlier_ratio=ratio, quantizer=quantizer)
            error = encode_icq(x[sample], options, statistic)[2] * scale
            found.append(Candidate("icq", size, error, width, ratio, quantizer))
    return found


@dataclass
class Allocation:
    """A coding per tensor for a budget; ``measured`` is filled by the encoder that uses it."""

    budget: float  # bits per weight asked for
    choices: dict[str, Candidate]
    elements: dict[str, int]
    sensitivity: dict[str, float] = field(default_factory=dict)  # empty: errors summed as they are
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def bits_per_weight(self) -> float:
        return 8 * sum(c.size for c in self.choices.values()) / sum(self.elements.values())

    @property
    def predicted_error(self) -> float:
        return math.fsum(c.error for c in self.choices.values())

    def coding(self, name: str, base: EncodeOptions) -> tuple[str, EncodeOptions]:
        """The coding (``"icq"`` or ``"raw"``) and options chosen for ``name``."""
        choice = self.choices[name]
        return choice.coding, choice.options(base) if choice.coding == "icq" else base

    def measure(self, name: str, weights: np.ndarray, decoded: np.ndarray, statistic: np.ndarray | None,
                damping: float) -> None:  # fmt: skip
        """Record the output error of ``name`` as coded (under its statistic, undamped moments)."""
        self.measured[name] = output_error(weights, decoded, statistic, damping=damping)

    def encoder_options(self, base: EncodeOptions) -> str:
        """The JSON of ``icq.encoder_options``: ``base``'s options, the budget and every choice."""
        record = {**json.loads(base.to_json()), "bpw": self.budget,
                  "tensors": {name: self.choices[name].to_json() for name in sorted(self.choices)}}  # fmt: skip
        return json.dumps(record, sort_keys=True)

    def report(self) -> dict:
        """The choice, its size and the predicted and measured error of every tensor, and totals."""
        tensors = []
        for name in sorted(self.choices):
            choice = self.choices[name]
            tensors.append({"name": name, **choice.to_json(), "bits_per_weight": 8 * choice.size / self.elements[name],
                            "sensitivity": self.sensitivity.get(name), "predicted_error": choice.error,
                            "measured_error": self.measured.get(name)})  # fmt: skip
        measured = math.fsum(self.measured.values()) if len(self.measured) == len(self.choices) else None
        return {"budget_bits_per_weight": self.budget, "bits_per_weight": self.bits_per_weight,
                "predicted_error": self.predicted_error, "measured_error": measured, "tensors": tensors}  # fmt: skip


def _hull(options: Sequence[Candidate], weight: float) -> list[Candidate]:
    """The lower convex hull of the candidates in (size, weight x error), from the smallest."""
    ordered = sorted(options, key=lambda c: (c.size, c.error))
    frontier: list[Candidate] = []
    for candidate in ordered:
        if frontier and candidate.error * weight >= frontier[-1].error * weight:
            continue  # no smaller loss for more bytes
        while len(frontier) >= 2:
            a, b = frontier[-2], frontier[-1]
            # b lies on or above the segment from a to the candidate: not on the hull
            if ((b.error - a.error) * weight * (candidate.size - a.size)
                    >= (candidate.error - a.error) * weight * (b.size - a.size)):  # fmt: skip
                frontier.pop()
            else:
                break
        frontier.append(candidate)
    return frontier


def allocate(options: Mapping[str, Sequence[Candidate]], elements: Mapping[str, int], budget: float,
             sensitivity: Mapping[str, float] | None = None) -> Allocation:  # fmt: skip
    """The coding of each tensor that minimizes the sum of predicted errors, each times the tensor's
    ``sensitivity`` if given, within ``budget`` bits per weight; InputError, with the possible
    range, for a budget no choice meets or above lossless."""
    total = sum(elements[name] for name in options)
    weight = {name: 1.0 if sensitivity is None else float(sensitivity[name]) for name in options}
    hulls = {name: _hull(options[name], weight[name]) for name in sorted(options)}
    lowest = sum(hull[0].size for hull in hulls.values())
    lossless = sum(next(c.size for c in options[name] if c.coding == "raw") for name in hulls)
    possible = f"possible: {8 * lowest / total:.4f} to {8 * lossless / total:.4f} bits/weight"
    if not math.isfinite(budget) or 8 * lowest > budget * total:
        raise InputError(f"a budget of {budget:g} bits/weight is below what 1-bit codes reach; {possible}")
    if 8 * lossless < budget * total:
        raise InputError(f"a budget of {budget:g} bits/weight is above lossless storage; {possible}")
    steps = []
    for name, hull in hulls.items():
        for index in range(1, len(hull)):
            saved = (hull[index - 1].error - hull[index].error) * weight[name]
            steps.append((-saved / (hull[index].size - hull[index - 1].size), name, index))
    steps.sort()
    chosen = {name: 0 for name in hulls}
    blocked: set[str] = set()
    room = math.floor(budget * total / 8) - lowest
    for _, name, index in steps:
        if name in blocked:
            continue
        cost = hulls[name][index].size - hulls[name][index - 1].size
        if cost > room:
            blocked.add(name)  # its later steps need this one
            continue
        chosen[name] = index
        room -= cost
    choices = {name: hulls[name][index] for name, index in chosen.items()}
    return Allocation(budget, choices, {name: elements[name] for name in hulls},
                      dict(sensitivity) if sensitivity is not None else {})  # fmt: skip


@dataclass
class Measured:
    """Every tensor's candidates, element count and (optional) sensitivity: what :func:`allocate`
    needs, measured once for any number of budgets."""

    candidates: dict[str, list[Candidate]]
    elements: dict[str, int]
    sensitivity: dict[str, float] | None = None

    def allocate(self, budget: float) -> Allocation:
        return allocate(self.candidates, self.elements, budget, self.sensitivity)


def measure(tensors: Iterable[tuple[str, np.ndarray]], base: EncodeOptions, statistics: Statistics | None = None,
            *, progress: Callable[[str], None] | None = None) -> Measured:  # fmt: skip
    """Measure every candidate of each ``(name, array)``, with the statistic of that name if any;
    the statistics' sensitivities weigh the errors if they cover every tensor."""
    found, elements = {}, {}
    for name, array in tensors:
        statistic = None
        if statistics is not None:
            statistic = statistics.prepared(name, damping=base.damping, order=base.order)
        found[name] = candidates(name, array, base, statistic)
        elements[name] = int(np.size(array))
        if progress:
            progress(name)
    if not found:
        raise InputError("a budget of bits per weight needs at least one tensor to quantize")
    sensitivity = statistics.sensitivity if statistics is not None else {}
    if sensitivity and not all(name in sensitivity for name in found):
        missing = sorted(set(found) - set(sensitivity))
        raise InputError(f"the statistics have output sensitivities, but not for {missing[0]!r} "
                         f"({len(missing)} tensors): leave those out of the budget (--exclude) or collect statistics that "
                         "cover them")  # fmt: skip
    if statistics is not None and not sensitivity:
        warnings.warn("no output sensitivities in the statistics: the budget is shared by output error alone, which "
                      "weighs layers wrongly (bench/RESULTS.md); icqcodec calibrate collects them", RuntimeWarning,
                      stacklevel=2)  # fmt: skip
    return Measured(found, elements, {name: sensitivity[name] for name in found} if sensitivity else None)


def plan(tensors: Iterable[tuple[str, np.ndarray]], base: EncodeOptions, budget: float,
         statistics: Statistics | None = None, *, progress: Callable[[str], None] | None = None) -> Allocation:  # fmt: skip
    """:func:`measure`, then :func:`allocate` ``budget`` bits per weight."""
    return measure(tensors, base, statistics, progress=progress).allocate(budget)
