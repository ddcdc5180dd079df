"""The fast CPU decoder (spec section 9): numba kernels, parallel over rows, and the backend switch.

Container checks (section 9.2 steps 1 to 8) and checksums are shared with the reference decoder;
the per-row work (unpacking codes, gap chains, levels, rounding) runs in numba and reports errors
per row, which are raised here in the normative order.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import dtypes
from .bitstream import packed_size
from .constants import CODING_RAW
from .container import Header, Payload, ReadAt, TensorRecord
from .encode import _KERNEL_LOCK
from .errors import CorruptStreamError
from .float_bits import f16_bits_to_f32, f16_is_finite, f32_to_bf16_bits, f32_to_f16_bits

__all__ = ["BACKENDS", "decode_tensor"]

_JIT = dict(cache=True, nogil=True)
BACKENDS = ("numba", "reference", "cupy")

# per-row error codes of the chain check, in the order a row is checked (spec section 8)
_CHAIN_PAST_END, _CHAIN_TRAILING_ESCAPE, _CHAIN_COUNT = 1, 2, 3
_OUT_F32, _OUT_F16, _OUT_BF16 = 0, 1, 2


@nb.njit(**_JIT)
def _field(words, position, width):
    """The ``width``-bit field at stream bit ``position`` of little-endian 32-bit words (section 5)."""
    w = position >> 5
    shift = position & 31
    value = np.uint64(words[w])
    if shift + width > 32:
        value |= np.uint64(words[w + 1]) << np.uint64(32)
    return np.int64((value >> np.uint64(shift)) & np.uint64((1 << width) - 1))


@nb.njit(**_JIT)
def _tail_is_zero(words, used_bits):
    """Whether the bits of the last word after ``used_bits`` are zero (padding, section 5)."""
    if words.size == 0 or used_bits == words.size * 32:
        return True
    return (np.uint64(words[words.size - 1]) >> np.uint64(used_bits - (words.size - 1) * 32)) == 0


@nb.njit(**_JIT)
def _segment_starts(count_words, n, count_bits, total):
    """Prefix sums of the segment counts; status 0 ok, 1 sum too large, 2 sum too small, 3 padding."""
    starts = np.zeros(n + 1, dtype=np.int64)
    running = 0
    for j in range(n):
        running += _field(count_words, j * count_bits, count_bits)
        if running > total:
            return starts, 1
        starts[j + 1] = running
    if running != total:
        return starts, 2
    if not _tail_is_zero(count_words, n * count_bits):
        return starts, 3
    return starts, 0


@nb.njit(**_JIT)
def _output_bits(value, out_kind):
    if out_kind == _OUT_F16:
        return np.uint32(f32_to_f16_bits(value))
    if out_kind == _OUT_BF16:
        return np.uint32(f32_to_bf16_bits(value))
    return np.array([value], dtype=np.float32).view(np.uint32)[0]


@nb.njit(**_JIT)
def _decode_bytes(target, source, table_in, bits, units, byte_count, item_size):
    """Decode whole bytes of codes: each wide unit of ``target`` holds the outputs of a run of
    codes, looked up at once in a table built by doubling (pairs of codes, then pairs of pairs)."""
    codes_per_unit = target.itemsize // item_size
    field_bits = codes_per_unit * bits  # at most 8
    table = table_in.astype(np.uint64)
    run = 1
    while run < codes_per_unit:
        size = table.size
        doubled = np.empty(size * size, dtype=np.uint64)
        shift = np.uint64(run * item_size * 8)
        for high in range(size):
            for low in range(size):
                doubled[high * size + low] = table[low] | (table[high] << shift)
        table = doubled
        run *= 2
    narrow = table.astype(target.dtype)
    mask = (1 << field_bits) - 1
    for i in range(byte_count):
        b = source[i]
        for u in range(units):
            target[i * units + u] = narrow[(b >> (u * field_bits)) & mask]


@nb.njit(parallel=True, **_JIT)
def _decode_rows(out, wide, units, params, code_words, code_bytes, row_words, cols, bits, inlier_book, outlier_book,
                 starts, gap_words, gap_bit_base, gap_bits, segment, outliers, out_kind, chains):  # fmt: skip
    """Decode rows into ``out`` (uint16 or uint32 bit patterns); returns per-row error flags.

    ``wide`` is ``out`` viewed with a wider unsigned type, ``units`` of them per byte of codes, or
    an empty array when no such view exists; then codes are decoded a whole byte at a time.
    flags[r] = (non-finite parameter, code padding set, chain error code, segment of the error).
    """
    rows = out.shape[0]
    flags = np.zeros((rows, 4), dtype=np.int64)
    levels_in = inlier_book.size
    half = outlier_book.size
    segments = (cols + segment - 1) // segment
    escape = (1 << gap_bits) - 1
    for r in nb.prange(rows):
        finite = True
        for k in range(params.shape[1]):
            finite = finite and f16_is_finite(params[r, k])
        if not finite:
            flags[r, 0] = 1
            continue
        # spec section 7: binary32 levels, exact products, one rounding, then the output rounding
        offset, scale = f16_bits_to_f32(params[r, 0]), f16_bits_to_f32(params[r, 1])
        table_in = np.empty(levels_in, dtype=out.dtype)
        for q in range(levels_in):
            table_in[q] = _output_bits(offset + inlier_book[q] * scale, out_kind)
        words = code_words[r * row_words : (r + 1) * row_words]
        target = out[r]
        if wide.shape[0] > 0:  # one table lookup and `units` wide stores per byte of codes
            _decode_bytes(wide[r], code_bytes[r * row_words * 4 : (r + 1) * row_words * 4], table_in, bits,
                          units, cols * bits // 8, out.itemsize)  # fmt: skip
        elif 32 % bits == 0:  # whole codes per word: one load per 32 // bits codes
            per_word = 32 // bits
            mask = np.uint32((1 << bits) - 1)
            for w in range(row_words):
                word = words[w]
                base = w * per_word
                for k in range(min(per_word, cols - base)):
                    target[base + k] = table_in[(word >> np.uint32(k * bits)) & mask]
        else:
            for c in range(cols):
                target[c] = table_in[_field(words, c * bits, bits)]
        if not _tail_is_zero(words, cols * bits):
            flags[r, 1] = 1
        if outliers == 0 or not chains:
            continue
        o_offset, o_scale = f16_bits_to_f32(params[r, 2]), f16_bits_to_f32(params[r, 3])
        table_out = np.empty(2 * half, dtype=out.dtype)
        for m in range(half):
            magnitude = o_offset + outlier_book[m] * o_scale
            table_out[m] = _output_bits(magnitude, out_kind)
            table_out[half + m] = _output_bits(-magnitude, out_kind)
        found = 0
        for s in range(segments):
            length = min(segment, cols - s * segment)
            first, stop = starts[r * segments + s], starts[r * segments + s + 1]
            cursor = 0
            for i in range(first, stop):
                v = _field(gap_words, i * gap_bits - gap_bit_base, gap_bits)
                if v == escape:
                    cursor += escape
                    continue
                p = cursor + v
                if p >= length:
                    flags[r, 2], flags[r, 3] = _CHAIN_PAST_END, s
                    break
                c = s * segment + p
                out[r, c] = table_out[_field(words, c * bits, bits)]
                found += 1
                cursor = p + 1
            if (
                flags[r, 2] == 0
                and stop > first
                and _field(gap_words, (stop - 1) * gap_bits - gap_bit_base, gap_bits) == escape
            ):
                flags[r, 2], flags[r, 3] = _CHAIN_TRAILING_ESCAPE, s
            if flags[r, 2]:
                break
        if flags[r, 2] == 0 and found != outliers:
            flags[r, 2], flags[r, 3] = _CHAIN_COUNT, found
    return flags


def _words(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u4").astype(np.uint32, copy=False)


def decode_tensor(header: Header, record: TensorRecord, read_at: ReadAt, rows: tuple[int, int] | None = None,
                  backend: str = "numba") -> np.ndarray:  # fmt: skip
    """Decode one tensor (or rows ``rows[0]`` to ``rows[1] - 1``) with the chosen backend."""
    if backend == "reference":
        from .reference import decode_tensor as reference_decode

        return reference_decode(header, record, read_at, rows)
    if backend == "cupy":
        from .gpu import decode_tensor as gpu_decode

        return gpu_decode(header, record, read_at, rows)
    if backend != "numba":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    payload = Payload(header, record, read_at)
    if rows is None:
        payload.verify_all()
    if record.coding == CODING_RAW:
        from .reference import decode_raw

        out = decode_raw(payload, rows)
    else:
        out = _decode_icq(payload, rows)
    if rows is None:
        payload.check_section_padding()
    return out


def _decode_icq(payload: Payload, rows: tuple[int, int] | None) -> np.ndarray:
    record, p = payload.record, payload.record.params
    name = record.name
    first, stop = rows if rows is not None else (0, record.rows)
    count, cols = stop - first, record.cols
    per_row = 4 if p.outliers else 2

    inlier_book = np.arange(1 << p.bits, dtype=np.float32)
    outlier_book = np.arange(1 << (p.bits - 1), dtype=np.float32)
    if "codebook" in payload.layout.sections:
        book = np.frombuffer(payload.section("codebook"), dtype="<f2").astype(np.float32)
        if not np.isfinite(book).all():
            raise CorruptStreamError(f"tensor {name!r}: codebook holds a value that is not finite", section="6.2")
        inlier_book = book[: 1 << p.bits]
        if p.outliers:
            outlier_book = book[1 << p.bits :]

    params = np.frombuffer(payload.section("params", first * per_row * 2, count * per_row * 2), dtype="<u2")
    params = params.astype(np.uint16).reshape(count, per_row)
    row_stride = packed_size(cols, p.bits)
    code_words = _words(payload.section("codes", first * row_stride, count * row_stride))

    segments = -(-cols // p.segment)
    starts = np.zeros(1, dtype=np.int64)
    gap_words, gap_bit_base, chain_status = np.zeros(1, dtype=np.uint32), 0, 0
    if p.outliers:
        count_words = _words(payload.section("counts"))
        starts, chain_status = _segment_starts(count_words, record.rows * segments, p.count_bits, p.total_symbols)
        if chain_status == 0:
            starts = starts[first * segments : stop * segments + 1]
            word_first = int(starts[0]) * p.gap_bits // 32
            word_stop = packed_size(int(starts[-1]), p.gap_bits) // 4
            gap_words = _words(payload.section("gaps", 4 * word_first, 4 * (word_stop - word_first)))
            gap_bit_base = word_first * 32
            if gap_words.size == 0:
                gap_words = np.zeros(1, dtype=np.uint32)

    out_kind = {dtypes.FLOAT32: _OUT_F32, dtypes.FLOAT16: _OUT_F16, dtypes.BFLOAT16: _OUT_BF16}[record.dtype]
    out = np.empty((count, cols), dtype=np.uint32 if out_kind == _OUT_F32 else np.uint16)
    wide, units = _wide_view(out, p.bits)
    with _KERNEL_LOCK:
        flags = _decode_rows(out, wide, units, params, code_words, code_words.view(np.uint8), row_stride // 4, cols,
                             p.bits, inlier_book, outlier_book,
                             starts, gap_words, gap_bit_base, max(p.gap_bits, 1), p.segment, p.outliers,
                             out_kind, chain_status == 0)  # fmt: skip
    _raise_first(name, first, flags, chain_status, p.outliers)
    if p.outliers and rows is None and not _tail_is_zero(gap_words, p.total_symbols * p.gap_bits - gap_bit_base):
        raise CorruptStreamError(f"tensor {name!r}: padding bits of the gap symbols are not zero", section="8")
    shape = record.shape if rows is None else (count, cols)
    return out.view(dtypes.numpy_dtype(record.dtype)).reshape(shape)


def _wide_view(out: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """``out`` viewed in units of up to 8 bytes covering one byte of codes each, where possible."""
    cols = out.shape[1]
    if 8 % bits or (cols * bits) % 8:
        return np.zeros((0, 1), np.uint8), 1
    span = (8 // bits) * out.itemsize  # output bytes per byte of codes
    unit = min(8, span)
    if (cols * out.itemsize) % unit:
        return np.zeros((0, 1), np.uint8), 1
    return out.view(np.dtype(f"<u{unit}")), span // unit


def _raise_first(name: str, first: int, flags: np.ndarray, chain_status: int, expected: int) -> None:
    """Raise the error the reference decoder would raise first (spec section 9.2 step 9)."""
    for column, detail in ((0, "row parameters hold a value that is not finite"),
                           (1, "padding bits of code row {row} are not zero")):  # fmt: skip
        bad = np.flatnonzero(flags[:, column])
        if bad.size:
            raise CorruptStreamError(f"tensor {name!r}: " + detail.format(row=first + bad[0]), section="6.2")
    if chain_status:
        detail = {1: "segment counts exceed total_symbols", 2: "segment counts do not sum to total_symbols",
                  3: "padding bits of the segment counts are not zero"}[chain_status]  # fmt: skip
        raise CorruptStreamError(f"tensor {name!r}: {detail}", section="8")
    bad = np.flatnonzero(flags[:, 2])
    if bad.size:
        r = bad[0]
        code, extra = flags[r, 2], flags[r, 3]
        where = f"tensor {name!r} row {first + r} segment {extra}: "
        if code == _CHAIN_PAST_END:
            raise CorruptStreamError(where + "gap chain runs past the end of the segment", section="8")
        if code == _CHAIN_TRAILING_ESCAPE:
            raise CorruptStreamError(where + "segment ends with an escape", section="8")
        raise CorruptStreamError(
            f"tensor {name!r}: row {first + r} has {extra} outliers, expected {expected}", section="8"
        )


def _bytes_reader(data: bytes | bytearray | memoryview) -> tuple[ReadAt, int]:
    view = memoryview(data).cast("B")

    def read_at(offset: int, size: int) -> bytes:
        return view[offset : offset + size]

    return read_at, len(view)


def check_output_size(header: Header, records, max_output_size: int | None) -> None:
    """Refuse before allocating when the decoded tensors would exceed ``max_output_size`` bytes."""
    if max_output_size is None:
        return
    total = sum(r.elements * dtypes.item_size(r.dtype) for r in records)
    if total > max_output_size:
        raise ValueError(f"decoded size {total} bytes is above max_output_size={max_output_size}")


def decode(data: bytes | bytearray | memoryview, *, backend: str = "numba",
           max_output_size: int | None = None) -> np.ndarray:  # fmt: skip
    """Decode an ICQ file that holds exactly one tensor.

    Args:
        data: the file's bytes.
        backend: ``"numba"`` (fast, parallel), ``"reference"`` (readable, slow) or ``"cupy"``.
        max_output_size: refuse (ValueError) before decoding if the output would be larger.

    Returns:
        The decoded array, of the tensor's shape and output dtype.

    Raises:
        FormatError: the bytes are not a valid ICQ 1.x file (its subclass names the category).
        ValueError: the file holds another number of tensors than one, or is too large.

    Example:
        >>> import numpy as np, icqcodec
        >>> w = np.linspace(-1, 1, 4096, dtype=np.float32).reshape(16, 256)
        >>> icqcodec.decode(icqcodec.encode(w, bits=4)).dtype
        dtype('float32')
    """
    from .container import read_header

    read_at, size = _bytes_reader(data)
    header = read_header(read_at, size)
    if len(header.tensors) != 1:
        raise ValueError(f"decode() needs a file of one tensor; this one has {len(header.tensors)}: use load()")
    check_output_size(header, header.tensors, max_output_size)
    return decode_tensor(header, header.tensors[0], read_at, backend=backend)
