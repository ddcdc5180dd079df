"""The reference encoder (spec section 10, informative), numba kernels plus the public ``encode``.

Per row: the ``outliers`` largest magnitudes become outliers; inliers and outlier magnitudes each get
a range fitted by nearest-level assignment and least-squares refits from several clipped starts, with
``f16`` parameters; then the gap width that makes the positions smallest. Deterministic: the same
input and options give the same bytes on every machine (no fast-math, rows independent).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace

import numba as nb
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
    MAX_GAP_BITS,
    MIN_BITS,
)
from .container import IcqParams, TensorRecord, build_payload, codebook_size_for, write_container
from .float_bits import f16_bits_to_f32, f32_to_f16_bits

__all__ = ["encode", "EncodeOptions", "encode_tensor", "should_quantize", "QUANTIZERS"]

_JIT = dict(cache=True, nogil=True)
QUANTIZERS = {"uniform": KIND_UNIFORM, "codebook": KIND_CODEBOOK}
CLIP_STARTS = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])  # fractions of the min-max range to start from
REFITS = 6  # least-squares refits per start
LLOYD_ROUNDS = 3  # codebook kind: alternations of shared levels and row ranges
F16_MAX = 65504.0

# numba's workqueue threading layer must not run two parallel kernels at once
_KERNEL_LOCK = threading.Lock()


@dataclass(frozen=True)
class EncodeOptions:
    """Options of the icq coding; recorded in the file's ``icq.encoder_options``."""

    bits: int = 2
    outlier_ratio: float = 0.05
    quantizer: str = "uniform"
    segment_log2: int = DEFAULT_SEGMENT_LOG2

    def __post_init__(self) -> None:
        if not isinstance(self.bits, (int, np.integer)) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be an integer from 1 to 8, got {self.bits!r}")
        if not 0.0 <= float(self.outlier_ratio) <= 1.0:
            raise ValueError(f"outlier_ratio must be within 0 and 1, got {self.outlier_ratio!r}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {sorted(QUANTIZERS)}, got {self.quantizer!r}")

    def to_json(self) -> str:
        return json.dumps(
            {"bits": int(self.bits), "outlier_ratio": float(self.outlier_ratio), "quantizer": self.quantizer},
            sort_keys=True,
        )


# ---- per-row range fitting ----------------------------------------------------------------------


@nb.njit(**_JIT)
def _to_f16(value: float) -> float:
    """The binary16 value nearest to ``value`` (the stored parameter)."""
    return f16_bits_to_f32(f32_to_f16_bits(np.float32(value)))


@nb.njit(**_JIT)
def _nearest(value, offset, scale, base, uniform):
    """Index of the level ``offset + base[k] * scale`` nearest to ``value`` (base ascending)."""
    last = base.size - 1
    if scale <= 0.0 or last == 0:
        return 0
    t = (value - offset) / scale
    if uniform:
        k = np.rint(t)
        return int(min(max(k, 0.0), float(last)))
    lo, hi = 0, last
    while hi - lo > 1:  # binary search for the cell, then pick the nearer neighbour
        mid = (lo + hi) // 2
        if base[mid] <= t:
            lo = mid
        else:
            hi = mid
    return lo if t - base[lo] <= base[hi] - t else hi


@nb.njit(**_JIT)
def _level(offset, scale, base_value):
    # the decoder's arithmetic (spec section 7): binary32, exact product, one rounding
    return np.float32(offset) + np.float32(base_value) * np.float32(scale)


@nb.njit(**_JIT)
def _cell_sums(counts, prefix, lo, width, offset, scale, base):
    """Squared error (less the sum of squares, the same for every fit) and least-squares sums of
    the values assigned to their nearest levels.

    The values come as a fine histogram (cumulative count and sum per bin), so one evaluation
    costs O(levels); a bin goes whole to the level nearest its centre.
    """
    bins = counts.size - 1
    error = sb = sbb = sx = sbx = 0.0
    begin = 0
    for k in range(base.size):
        end = bins
        if k + 1 < base.size:
            boundary = offset + 0.5 * (base[k] + base[k + 1]) * scale
            end = int(min(max(np.floor((boundary - lo) / width + 0.5), 0.0), float(bins)))
            end = max(end, begin)
        count = counts[end] - counts[begin]
        if count > 0:
            s1 = prefix[end] - prefix[begin]
            level = np.float64(_level(offset, scale, base[k]))
            error += count * level * level - 2.0 * level * s1
            sb += count * base[k]
            sbb += count * base[k] * base[k]
            sx += s1
            sbx += base[k] * s1
        begin = end
    return error, sb, sbb, sx, sbx


HISTOGRAM_BINS = 2048


@nb.njit(**_JIT)
def _fit_range(values, base, starts, refits):
    """Fit ``f16`` (offset, scale) minimizing squared error of ``values`` against the levels.

    Returns (offset, scale). Alternates nearest-level assignment and a least-squares refit of offset
    and scale, from each clipped start; parameters are rounded to ``f16`` before assignment.
    """
    n = values.size
    if n == 0:
        return 0.0, 0.0
    lo, hi, total = values[0], values[0], 0.0
    for v in values:
        lo, hi, total = min(lo, v), max(hi, v), total + v
    mean = total / n
    span = base[base.size - 1] - base[0]
    if span <= 0.0 or hi <= lo:  # a single level: the mean is optimal
        return _to_f16(mean), 0.0
    bins = HISTOGRAM_BINS
    width = (hi - lo) / bins
    inverse_width = 1.0 / width
    counts = np.zeros(bins + 1)
    prefix = np.zeros(bins + 1)
    for v in values:
        i = min(int((v - lo) * inverse_width), bins - 1) + 1
        counts[i] += 1.0
        prefix[i] += v
    for i in range(bins):
        counts[i + 1] += counts[i]
        prefix[i + 1] += prefix[i]
    best_offset, best_scale, best_error = _to_f16(mean), 0.0, np.inf
    for fraction in starts:  # errors below omit the sum of squares: compare, don't report
        half = 0.5 * (hi - lo) * fraction
        scale = 2.0 * half / span
        offset = 0.5 * (hi + lo) - half - base[0] * scale
        for step in range(refits + 1):
            offset16, scale16 = _to_f16(offset), _to_f16(max(scale, 0.0))
            error, sb, sbb, sx, sbx = _cell_sums(counts, prefix, lo, width, offset16, scale16, base)
            if error < best_error:
                best_offset, best_scale, best_error = offset16, scale16, error
            variance = n * sbb - sb * sb
            if step == refits or variance <= 0.0:
                break
            scale = (n * sbx - sb * sx) / variance
            if scale <= 0.0:
                break
            offset = (sx - scale * sb) / n
    return best_offset, best_scale


SELECT_BINS = 1024


@nb.njit(**_JIT)
def _select_outliers(row, count, out):
    """Columns of the ``count`` largest magnitudes, ascending; ties go to the lower column.

    A histogram of magnitudes finds the bin holding the count-th largest; only that bin is
    partitioned. Bins are monotone in magnitude, so the result equals a full sort's.
    """
    cols = row.size
    if count == 0:
        return
    top = 0.0
    for v in row:
        top = max(top, abs(v))
    threshold = 0.0
    if top > 0.0:
        scale = SELECT_BINS / top
        hist = np.zeros(SELECT_BINS, dtype=np.int64)
        for v in row:
            hist[min(int(abs(v) * scale), SELECT_BINS - 1)] += 1
        above, j = 0, SELECT_BINS - 1
        while above + hist[j] < count:
            above += hist[j]
            j -= 1
        candidates = np.empty(hist[j], dtype=row.dtype)
        k = 0
        for v in row:
            if min(int(abs(v) * scale), SELECT_BINS - 1) == j:
                candidates[k] = abs(v)
                k += 1
        need = count - above
        threshold = np.partition(candidates, candidates.size - need)[candidates.size - need]
    above = 0
    for v in row:
        if abs(v) > threshold:
            above += 1
    ties = count - above
    k = 0
    for c in range(cols):
        m = abs(row[c])
        if m > threshold or (m == threshold and ties > 0):
            if m == threshold:
                ties -= 1
            out[k] = c
            k += 1


@nb.njit(parallel=True, **_JIT)
def _encode_rows(x, outliers, bits, inlier_base, outlier_base, uniform, starts, refits):
    """Codes, f16 parameter bits, outlier columns and squared error of every row."""
    rows, cols = x.shape
    codes = np.zeros((rows, cols), dtype=np.uint8)
    params = np.zeros((rows, 4), dtype=np.uint16)
    positions = np.zeros((rows, outliers), dtype=np.int64)
    errors = np.zeros(rows, dtype=np.float64)
    sign_bit = 1 << (bits - 1)
    for r in nb.prange(rows):
        row = x[r].astype(np.float64)
        is_outlier = np.zeros(cols, dtype=np.bool_)
        _select_outliers(x[r], outliers, positions[r])
        for k in range(outliers):
            is_outlier[positions[r, k]] = True
        inliers = np.empty(cols - outliers, dtype=np.float64)
        magnitudes = np.empty(outliers, dtype=np.float64)
        i = j = 0
        for c in range(cols):
            if is_outlier[c]:
                magnitudes[j] = abs(row[c])
                j += 1
            else:
                inliers[i] = row[c]
                i += 1
        o_offset = o_scale = 0.0
        offset, scale = _fit_range(inliers, inlier_base, starts, refits)
        params[r, 0] = f32_to_f16_bits(np.float32(offset))
        params[r, 1] = f32_to_f16_bits(np.float32(scale))
        if outliers:
            o_offset, o_scale = _fit_range(magnitudes, outlier_base, starts, refits)
            params[r, 2] = f32_to_f16_bits(np.float32(o_offset))
            params[r, 3] = f32_to_f16_bits(np.float32(o_scale))
        total = 0.0
        for c in range(cols):
            v = row[c]
            if is_outlier[c]:
                m = _nearest(abs(v), o_offset, o_scale, outlier_base, uniform)
                codes[r, c] = m | (sign_bit if v < 0.0 or (v == 0.0 and np.signbit(v)) else 0)
                level = _level(o_offset, o_scale, outlier_base[m])
                d = abs(v) - level
            else:
                q = _nearest(v, offset, scale, inlier_base, uniform)
                codes[r, c] = q
                d = v - _level(offset, scale, inlier_base[q])
            total += d * d
        errors[r] = total
    return codes, params, positions, errors


# ---- codebook kind: shared levels (Lloyd) --------------------------------------------------------


@nb.njit(**_JIT)
def _lloyd(samples, levels, rounds):
    """1-D k-means from ascending ``levels``; returns ascending levels."""
    levels = levels.copy()
    k = levels.size
    for _ in range(rounds):
        sums = np.zeros(k)
        counts = np.zeros(k)
        for v in samples:
            j = _nearest(v, 0.0, 1.0, levels, False)
            sums[j] += v
            counts[j] += 1.0
        for j in range(k):
            if counts[j] > 0:
                levels[j] = sums[j] / counts[j]
        levels.sort()
    return levels


@nb.njit(parallel=True, **_JIT)
def _normalized(x, params, positions, outliers):
    """Each element as a position on its range's base axis: ``(x - offset) / scale``."""
    rows, cols = x.shape
    inl = np.full((rows, cols - outliers), np.nan)
    out = np.full((rows, max(outliers, 1)), np.nan)
    for r in nb.prange(rows):
        offset, scale = f16_bits_to_f32(params[r, 0]), f16_bits_to_f32(params[r, 1])
        o_offset, o_scale = f16_bits_to_f32(params[r, 2]), f16_bits_to_f32(params[r, 3])
        k = i = 0
        for c in range(cols):
            if k < outliers and positions[r, k] == c:
                if o_scale > 0:
                    out[r, k] = (abs(x[r, c]) - o_offset) / o_scale
                k += 1
            else:
                if scale > 0:
                    inl[r, i] = (x[r, c] - offset) / scale
                i += 1
    return inl, out


def _fit_codebook(x, outliers, bits, rows_fit):
    """Shared inlier and outlier levels by alternating Lloyd over normalized values and row fits."""
    inlier_base = np.arange(1 << bits, dtype=np.float64)
    outlier_base = np.arange(1 << (bits - 1), dtype=np.float64)
    for _ in range(LLOYD_ROUNDS):
        _, params, positions, _ = rows_fit(inlier_base, outlier_base, False)
        inl, out = _normalized(x, params, positions, outliers)
        inlier_base = _book_from(inl, inlier_base)
        if outliers and outlier_base.size > 1:
            outlier_base = _book_from(out, outlier_base)
    return inlier_base, outlier_base


def _book_from(normalized, base):
    samples = normalized[np.isfinite(normalized)]
    step = max(1, samples.size // 1_000_000)  # a deterministic subsample bounds the cost
    levels = _lloyd(samples[::step], base, 10)
    levels = levels - levels[0]
    if levels[-1] > 0:
        levels *= (base.size - 1) / levels[-1]  # same span as the uniform kind
    return np.array([_f16(v) for v in levels])


def _f16(value: float) -> float:
    return float(np.float16(value))


# ---- index coding (spec section 8) ---------------------------------------------------------------


def _gaps(positions, segment_log2):
    """Per outlier: its segment (row-major index) and the inliers before it in its segment."""
    rows, count = positions.shape
    segment = positions >> segment_log2
    previous = np.concatenate([np.full((rows, 1), -1), positions[:, :-1]], axis=1)
    same = np.concatenate([np.zeros((rows, 1), bool), segment[:, 1:] == segment[:, :-1]], axis=1)
    start = np.where(same, previous + 1, segment << segment_log2)
    return segment, positions - start


def _choose_gap_bits(gaps, segment_ids, segment_count, rows):
    """The gap width (and count width) that minimizes sections 4 and 5 (spec section 10)."""
    counts = _symbol_counts(gaps, segment_ids, segment_count, rows)
    best = None
    for gap_bits in range(1, MAX_GAP_BITS + 1):
        count_bits = max(1, int(counts[gap_bits].max()).bit_length())
        size = packed_size(segment_count, count_bits) + packed_size(int(counts[gap_bits].sum()), gap_bits)
        if best is None or size < best[0]:
            best = (size, gap_bits, count_bits, counts[gap_bits])
    return best[1:]


@nb.njit(parallel=True, **_JIT)
def _symbol_counts(gaps, segment_ids, segment_count, rows):
    """Symbols per segment for every gap width: a gap ``d`` takes ``d // M + 1`` symbols.

    ``gaps`` and ``segment_ids`` are row-major with the same number of outliers per row, so rows
    (and their segments) are counted in parallel. Escapes are counted only for widths whose
    escape value ``M`` does not exceed the gap.
    """
    escapes = np.zeros((segment_count, MAX_GAP_BITS + 1), dtype=np.int64)
    outliers = np.zeros(segment_count, dtype=np.int64)
    per_row = gaps.size // rows
    for r in nb.prange(rows):
        for i in range(r * per_row, (r + 1) * per_row):
            segment, d = segment_ids[i], np.uint64(gaps[i])
            outliers[segment] += 1
            for gap_bits in range(1, MAX_GAP_BITS + 1):
                escape = np.uint64((1 << gap_bits) - 1)
                if d < escape:
                    break
                escapes[segment, gap_bits] += np.int64(d // escape)
    counts = np.empty((MAX_GAP_BITS + 1, segment_count), dtype=np.int64)
    for gap_bits in range(MAX_GAP_BITS + 1):
        for j in range(segment_count):
            counts[gap_bits, j] = outliers[j] + escapes[j, gap_bits]
    return counts


@nb.njit(**_JIT)
def _gap_symbols(gaps, gap_bits, total):
    escape = (1 << gap_bits) - 1
    symbols = np.empty(total, dtype=np.uint32)
    k = 0
    for d in gaps:
        for _ in range(d // escape):
            symbols[k] = escape
            k += 1
        symbols[k] = d % escape
        k += 1
    return symbols


# ---- bit packing (spec section 5) ----------------------------------------------------------------


@nb.njit(**_JIT)
def _pack_into(words, first_word, values, width):
    for j in range(values.size):
        position = j * width
        w = first_word + (position >> 5)
        shifted = np.uint64(values[j]) << np.uint64(position & 31)
        words[w] |= np.uint32(shifted & np.uint64(0xFFFFFFFF))
        if (position & 31) + width > 32:
            words[w + 1] |= np.uint32(shifted >> np.uint64(32))


@nb.njit(parallel=True, **_JIT)
def _pack_rows(codes, width, row_words):
    words = np.zeros(codes.shape[0] * row_words, dtype=np.uint32)
    for r in nb.prange(codes.shape[0]):
        _pack_into(words, r * row_words, codes[r], width)
    return words


def pack_fields(values: np.ndarray, width: int) -> bytes:
    """Pack integers as consecutive ``width``-bit fields in whole words (spec section 5)."""
    words = np.zeros(packed_size(values.size, width) // 4, dtype=np.uint32)
    _pack_into(words, 0, np.ascontiguousarray(values), width)
    return words.astype("<u4").tobytes()


# ---- the icq coding of one tensor ----------------------------------------------------------------


def encode_icq(array: np.ndarray, options: EncodeOptions) -> tuple[IcqParams, dict[str, bytes], float]:
    """Code one floating-point array; returns its parameters, body sections and squared error."""
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
    outliers = int(round(options.outlier_ratio * cols)) if bits > 0 else 0
    outliers = min(outliers, cols)

    def rows_fit(inlier_base, outlier_base, uniform):
        with _KERNEL_LOCK:
            return _encode_rows(x, outliers, bits, inlier_base, outlier_base, uniform, CLIP_STARTS, REFITS)

    if kind == KIND_CODEBOOK:
        inlier_base, outlier_base = _fit_codebook(x, outliers, bits, rows_fit)
        codes, params, positions, errors = rows_fit(inlier_base, outlier_base, False)
        book = np.concatenate([inlier_base, outlier_base if outliers else []]).astype("<f2")
    else:
        uniform_in = np.arange(1 << bits, dtype=np.float64)
        uniform_out = np.arange(1 << (bits - 1), dtype=np.float64)
        codes, params, positions, errors = rows_fit(uniform_in, uniform_out, True)
        book = None

    sections = {}
    if book is not None:
        sections["codebook"] = book.tobytes()
    sections["params"] = params[:, : 4 if outliers else 2].astype("<u2").tobytes()
    row_stride = packed_size(cols, bits)
    sections["codes"] = _pack_rows(codes, bits, row_stride // 4).astype("<u4").tobytes()
    gap_bits = count_bits = total = 0
    if outliers:
        segments = -(-cols // (1 << options.segment_log2))
        segment, gaps = _gaps(positions, options.segment_log2)
        segment_ids = (np.arange(rows)[:, None] * segments + segment).ravel()
        gap_bits, count_bits, counts = _choose_gap_bits(gaps.ravel(), segment_ids, rows * segments, rows)
        total = int(counts.sum())
        sections["counts"] = pack_fields(counts.astype(np.uint32), count_bits)
        sections["gaps"] = pack_fields(_gap_symbols(gaps.ravel(), gap_bits, total), gap_bits)
    params_record = IcqParams(
        bits, kind, gap_bits, count_bits, options.segment_log2, codebook_size_for(bits, kind, outliers), outliers, total
    )
    return params_record, sections, float(errors.sum())


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
                  dtype: str | None = None) -> tuple[TensorRecord, dict[str, bytes]]:  # fmt: skip
    """The directory record (without offset and size) and body sections of one tensor."""
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
        params, sections, _ = encode_icq(array, options)
    except ValueError as error:
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
