"""The reference encoder (spec section 10, informative): options and the public ``encode``.

Per tensor: the codes of every row (:mod:`icqcodec.fitting`), the index coding of the outliers'
positions (:mod:`icqcodec.gap_planning`), packed into the body sections and the container
(:mod:`icqcodec.container_writer`). Deterministic: the same input and options give the same bytes
on every machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np

from . import dtypes
from ._version import __version__
from .bitstream import packed_size
from .constants import (
    CODING_ICQ,
    CODING_RAW,
    DEFAULT_CHUNK_LOG2,
    DEFAULT_SEGMENT_LOG2,
    KIND_CODEBOOK,
    KIND_UNIFORM,
    MAX_BITS,
    MAX_SEGMENT_LOG2,
    MIN_BITS,
    MIN_SEGMENT_LOG2,
)
from .container import TensorRecord
from .container_writer import build_payload, write_container
from .fitting import CLIP_STARTS, REFITS, encode_rows, fit_codebook
from .gap_planning import choose_gap_bits, gap_symbols, outlier_gaps
from .hessian import DAMPING, ORDERS, Prepared, prepare, rounded_codes
from .icq_params import IcqParams, codebook_size_for
from .jit import KERNEL_LOCK, pack_fields, pack_rows

__all__ = [
    "encode",
    "EncodeOptions",
    "encode_tensor",
    "should_quantize",
    "QUANTIZERS",
    "outlier_count",
    "outlier_blocks",
    "IndexPlan",
    "index_plan",
    "encode_icq",
    "default_output_dtype",
]

QUANTIZERS = {"uniform": KIND_UNIFORM, "codebook": KIND_CODEBOOK}
F16_MAX = 65504.0


@dataclass(frozen=True)
class EncodeOptions:
    """Options of the icq coding; recorded in the file's ``icq.encoder_options``."""

    bits: int = 2
    outlier_ratio: float = 0.05
    quantizer: str = "uniform"
    segment_log2: int = DEFAULT_SEGMENT_LOG2
    order: str = "activation"  # with calibration statistics: the order codes are chosen in
    damping: float = DAMPING  # with statistics: of the mean diagonal of H, added to its diagonal
    # the same outliers in each segment of every row, so that any run of whole segments is an icq
    # tensor of its own (spec section 10.1); else each row's largest wherever they are
    outliers_per_segment: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.bits, (int, np.integer)) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be an integer from 1 to 8, got {self.bits!r}")
        if not 0.0 <= float(self.outlier_ratio) <= 1.0:
            raise ValueError(f"outlier_ratio must be within 0 and 1, got {self.outlier_ratio!r}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {sorted(QUANTIZERS)}, got {self.quantizer!r}")
        if not isinstance(self.segment_log2, (int, np.integer)) or not (
            MIN_SEGMENT_LOG2 <= self.segment_log2 <= MAX_SEGMENT_LOG2
        ):
            raise ValueError(f"segment_log2 must be an integer from 4 to 24, got {self.segment_log2!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if not 0.0 < float(self.damping) <= 1.0:
            raise ValueError(f"damping must be above 0 and at most 1, got {self.damping!r}")

    def to_json(self) -> str:
        """Every option, as the JSON of ``icq.encoder_options``."""
        return json.dumps(
            {"bits": int(self.bits), "outlier_ratio": float(self.outlier_ratio), "quantizer": self.quantizer,
             "segment_log2": int(self.segment_log2), "order": self.order, "damping": float(self.damping),
             "outliers_per_segment": bool(self.outliers_per_segment)},
            sort_keys=True,
        )  # fmt: skip


# ---- the icq coding of one tensor ----------------------------------------------------------------


def encode_icq(array: np.ndarray, options: EncodeOptions, statistic: Prepared | None = None,
               ) -> tuple[IcqParams, dict[str, bytes], float]:  # fmt: skip
    """Code one floating-point array; returns its parameters, body sections and (weighted) squared
    error. With a ``statistic`` (:func:`icqcodec.hessian.prepare`), its weights weigh the range fits
    and the codebook, and a full H chooses the codes (Hessian-guided rounding)."""
    x = np.ascontiguousarray(array, dtype=np.float32)
    if x.ndim == 0 or x.size == 0:
        raise ValueError("the icq coding needs an array of rank >= 1 with at least one element")
    finite, largest = _value_range(x)
    if not finite:
        raise ValueError("the icq coding needs finite values; store this tensor raw (coding='raw')")
    if largest > F16_MAX:
        raise ValueError("values beyond the float16 range of the row parameters; store this tensor raw")
    x = x.reshape(-1, x.shape[-1])
    rows, cols = x.shape
    bits, kind = options.bits, QUANTIZERS[options.quantizer]
    block, block_counts = outlier_blocks(options, cols)
    outliers = int(block_counts.sum())

    weights = np.ones(cols) if statistic is None else statistic.weights

    def rows_fit(inlier_base, outlier_base, uniform):
        with KERNEL_LOCK:
            return encode_rows(x, weights, block, block_counts, bits, inlier_base, outlier_base, uniform, CLIP_STARTS,
                               REFITS)  # fmt: skip

    if kind == KIND_CODEBOOK:
        inlier_base, outlier_base = fit_codebook(x, weights, outliers, bits, rows_fit)
        uniform = False
        book = np.concatenate([inlier_base, outlier_base if outliers else []]).astype("<f2")
    else:
        inlier_base = np.arange(1 << bits, dtype=np.float64)
        outlier_base = np.arange(1 << (bits - 1), dtype=np.float64)
        uniform = True
        book = None
    codes, params, positions, errors = rows_fit(inlier_base, outlier_base, uniform)
    if statistic is not None and statistic.feedback is not None:
        with KERNEL_LOCK:
            codes, errors = rounded_codes(x, statistic.order, statistic.feedback, statistic.pivots, params, positions,
                                          bits, inlier_base, outlier_base, uniform)  # fmt: skip

    sections = {}
    if book is not None:
        sections["codebook"] = book.tobytes()
    sections["params"] = params[:, : 4 if outliers else 2].astype("<u2").tobytes()
    row_stride = packed_size(cols, bits)
    sections["codes"] = pack_rows(codes, bits, row_stride // 4).astype("<u4").tobytes()
    plan = index_plan(positions, cols, options.segment_log2)
    if outliers:
        sections["counts"] = pack_fields(plan.counts.astype(np.uint32), plan.count_bits)
        sections["gaps"] = pack_fields(gap_symbols(plan.gaps.ravel(), plan.gap_bits, plan.total), plan.gap_bits)
    return plan.params(bits, kind, options.segment_log2), sections, float(errors.sum())


def outlier_count(ratio: float, cols: int) -> int:
    """Outliers per row for a ratio: ``round(ratio * cols)``, half to even (spec section 10, step 1)."""
    return min(int(round(ratio * cols)), cols)


def outlier_blocks(options: EncodeOptions, cols: int) -> tuple[int, np.ndarray]:
    """Where a row's outliers are chosen: blocks of ``block`` columns and the outliers of each, the
    whole row at once, or each segment its ``outlier_count`` (``outliers_per_segment``)."""
    if not options.outliers_per_segment:
        return cols, np.array([outlier_count(options.outlier_ratio, cols)], np.int64)
    segment = 1 << options.segment_log2
    lengths = [min(segment, cols - start) for start in range(0, cols, segment)]
    return segment, np.array([outlier_count(options.outlier_ratio, n) for n in lengths], np.int64)


@dataclass(frozen=True)
class IndexPlan:
    """The index coding of a tensor's outlier positions (spec section 8): widths, counts and gaps."""

    outliers: int
    gap_bits: int = 0
    count_bits: int = 0
    total: int = 0
    counts: np.ndarray | None = None
    gaps: np.ndarray | None = None

    def params(self, bits: int, kind: int, segment_log2: int) -> IcqParams:
        return IcqParams(bits, kind, self.gap_bits, self.count_bits, segment_log2,
                         codebook_size_for(bits, kind, self.outliers), self.outliers, self.total)  # fmt: skip


def index_plan(positions: np.ndarray, cols: int, segment_log2: int) -> IndexPlan:
    """The gap and count widths that make the positions (rows x outliers, ascending) smallest."""
    rows, outliers = positions.shape
    if not outliers:
        return IndexPlan(0)
    segments = -(-cols // (1 << segment_log2))
    segment, gaps = outlier_gaps(positions, segment_log2)
    segment_ids = (np.arange(rows)[:, None] * segments + segment).ravel()
    gap_bits, count_bits, counts = choose_gap_bits(gaps.ravel(), segment_ids, rows * segments, rows)
    return IndexPlan(outliers, gap_bits, count_bits, int(counts.sum()), counts, gaps)


ENCODER_METADATA = {"icq.encoder": "icqcodec", "icq.encoder_version": __version__}


# ---- public API ----------------------------------------------------------------------------------

CODINGS = ("auto", "icq", "raw")
MIN_QUANTIZED_ELEMENTS = 4096
MIN_QUANTIZED_COLS = 64


def should_quantize(array: np.ndarray) -> bool:
    """The default rule: floating-point, rank >= 2, at least 64 columns and 4096 elements, finite
    and within the float16 range of the row parameters. Everything else is stored raw."""
    if array.dtype.kind != "f" and dtypes.code_of(array.dtype) not in dtypes.FLOAT_CODES:
        return False
    if array.ndim < 2 or array.shape[-1] < MIN_QUANTIZED_COLS or array.size < MIN_QUANTIZED_ELEMENTS:
        return False
    finite, largest = _value_range(array)
    return finite and largest <= F16_MAX


def _value_range(array: np.ndarray, block: int = 1 << 20) -> tuple[bool, float]:
    """Whether every value is finite, and the largest magnitude; in blocks, to bound temporaries."""
    flat = array.reshape(-1)
    largest = 0.0
    for start in range(0, flat.size, block):
        values = np.abs(np.asarray(flat[start : start + block], dtype=np.float32))
        top = float(values.max()) if values.size else 0.0
        if not np.isfinite(top) or np.isnan(values).any():
            return False, np.inf
        largest = max(largest, top)
    return True, largest


def default_output_dtype(source: int) -> int:
    """Decode to the source type where the icq coding can (float16, bfloat16, float32), else float32
    (float64 sources) or float16 (float8 sources)."""
    if source in dtypes.ICQ_OUTPUT_CODES:
        return source
    return dtypes.FLOAT32 if source == dtypes.CODES_BY_NAME["float64"] else dtypes.FLOAT16


def encode_tensor(name: str, array: np.ndarray, options: EncodeOptions, *, coding: str = "auto",
                  dtype: str | None = None, statistic: np.ndarray | Prepared | None = None,
                  ) -> tuple[TensorRecord, dict[str, bytes]]:  # fmt: skip
    """The directory record (without offset and size) and body sections of one tensor.

    ``statistic``: the second moment of the tensor's input, ``(cols, cols)`` or its diagonal
    ``(cols,)`` (:mod:`icqcodec.calibration`), or one already prepared
    (:meth:`icqcodec.calibration.Statistics.prepared`), for an icq-coded tensor; ignored for a raw one.
    """
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    array = np.asarray(array)
    source = dtypes.code_of(array.dtype)
    if coding == "raw" or (coding == "auto" and not should_quantize(array)):
        data = np.ascontiguousarray(array).astype(dtypes.numpy_dtype(source), copy=False).tobytes()
        return TensorRecord(name, source, source, CODING_RAW, tuple(array.shape)), {"raw": data}
    if source not in dtypes.FLOAT_CODES:
        raise ValueError(f"tensor {name!r}: the icq coding needs floating-point input, got {array.dtype}")
    output = default_output_dtype(source) if dtype is None else dtypes.code_of(dtype)
    if output not in dtypes.ICQ_OUTPUT_CODES:
        raise ValueError(f"dtype must be float16, bfloat16 or float32 for the icq coding, got {dtype!r}")
    try:
        prepared = statistic
        if statistic is not None and not isinstance(statistic, Prepared):
            prepared = prepare(statistic, array.shape[-1], damping=options.damping, order=options.order, name=name)
        if prepared is not None and prepared.weights.shape != (array.shape[-1],):
            raise ValueError(f"tensor {name!r}: a statistic for {prepared.weights.shape[0]} columns, not "
                             f"{array.shape[-1]}")  # fmt: skip
        params, sections, _ = encode_icq(array, options, prepared)
    except ValueError as error:
        if str(error).startswith(f"tensor {name!r}"):
            raise
        raise ValueError(f"tensor {name!r}: {error}") from None
    return TensorRecord(name, output, source, CODING_ICQ, tuple(array.shape), params=params), sections


def assemble(encoded: list[tuple[TensorRecord, dict[str, bytes]]], metadata: dict[str, str],
             chunk_log2: int = DEFAULT_CHUNK_LOG2) -> list[bytes | memoryview]:  # fmt: skip
    """Container pieces for encoded tensors, in canonical (name) order."""
    encoded = sorted(encoded, key=lambda item: item[0].name.encode("utf-8"))
    records, payloads = [], []
    for record, sections in encoded:
        payload, table_crc = build_payload(record, sections, chunk_log2)
        records.append(replace(record, table_crc=table_crc))
        payloads.append(payload)
    return write_container(records, payloads, metadata, chunk_log2=chunk_log2)


def encode(array: np.ndarray, *, bits: int = 2, outlier_ratio: float = 0.05, quantizer: str = "uniform",
           dtype: str | None = None, name: str = "tensor") -> bytes:  # fmt: skip
    """Encode one floating-point array with the icq coding into an ICQ file's bytes.

    Args:
        array: floating-point array of rank >= 1 (rows are its last axis), finite values.
        bits: code width, 1 to 8.
        outlier_ratio: fraction of each row kept as outliers, 0 to 1.
        quantizer: ``"uniform"`` or ``"codebook"`` (levels shared by the tensor, Lloyd-fitted).
        dtype: output dtype, ``"float16"``, ``"bfloat16"`` or ``"float32"``; default: the input's
            where possible.
        name: the tensor's name in the file.

    Returns:
        The bytes of an ICQ file holding one tensor.

    Example:
        >>> import numpy as np, icqcodec
        >>> w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        >>> data = icqcodec.encode(w, bits=3)
        >>> icqcodec.decode(data).shape
        (64, 256)
    """
    options = EncodeOptions(bits=bits, outlier_ratio=outlier_ratio, quantizer=quantizer)
    encoded = encode_tensor(name, array, options, coding="icq", dtype=dtype)
    metadata = {**ENCODER_METADATA, "icq.encoder_options": options.to_json()}
    return b"".join(assemble([encoded], metadata))
