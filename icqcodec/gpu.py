"""The GPU decoder (spec section 9 on CUDA): CuPy RawModule kernels, imported lazily.

The host parses and checks the container, verifies checksums and the cheap per-row rules (finite
parameters, code padding, segment counts, gap padding) before any launch. One warp per (row,
segment) walks the segment's gap chain with a warp prefix sum, patching the outliers into shared
memory, then decodes the codes by table lookup straight into 16-byte stores; each segment's status
(outliers placed, or minus its chain error) comes back per segment, and the host raises the first
error in the normative order. Products in the level formula are exact, so the fused multiply-add that
NVRTC emits gives the CPU decoders' bits. The kernels' source is ``gpu_kernels.cu`` beside this file.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources

import numpy as np

from . import dtypes
from . import payload_checks as checks
from .bitstream import packed_size
from .column_slices import ColumnWindow
from .constants import CODING_RAW
from .container import Header, ReadAt, TensorRecord
from .errors import BackendUnavailableError
from .jit import tail_is_zero
from .payload import Payload
from .raw_coding import decode_raw

__all__ = ["available", "decode_tensor", "decode_window", "upload", "Plan", "KernelVariant", "kernel_variant", "launch_shape",
           "kernel", "grid_limit", "warp_shared_bytes", "chain_flags"]  # fmt: skip


_THREADS = 256  # threads per block of the fallback chain walker
MIN_BLOCKS_PER_SM = 4  # of the segments kernel: caps its registers at 64 per thread
WARPS_PER_BLOCK = 8  # warps of a block of the segments kernel, each on its own items
SEGMENT_COLUMNS = 1024  # columns of a warp item of the segments kernel: 16-byte chunks, 32 c + lane


def available() -> bool:
    """Whether CuPy and a CUDA device are usable."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _cupy():
    """CuPy, or BackendUnavailableError when it or a CUDA device is missing."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as error:  # ImportError, or CUDA's own errors when there is no driver
        raise BackendUnavailableError(f"the cupy backend needs CuPy and a CUDA GPU ({error})") from None
    return cupy


def warp_shared_bytes(bits: int, item_size: int) -> int:
    """Shared memory of one warp of the segments kernel (Layout and Entry in the source): the
    outlier patch, the entries for groups of codes, the pairs they are built from, the levels, and
    two item slots (gap symbol range, row parameters, code words, 72 words of gap symbols)."""
    codes = 4 if bits == 2 else 2 if bits <= 4 else 0  # per entry
    entries = (1 << codes * bits) * codes * item_size if codes else 0
    units = 4 << 2 * bits if item_size == 2 and codes * item_size > 4 else 0
    slot = 32 + 4 * 32 * bits + 4 * 72
    return SEGMENT_COLUMNS * item_size + entries + units + (8 << bits) + 2 * slot


@dataclass(frozen=True)
class KernelVariant:
    """How the kernels are compiled: the shipped kernel by default; diagnostics pass ``defines``
    (``-DNAME=VALUE`` switches of the source), another register cap (``min_blocks`` resident blocks
    per SM) and, where their switches change it, the shared memory per warp."""

    defines: tuple[str, ...] = ()
    min_blocks: int = MIN_BLOCKS_PER_SM
    warp_bytes: Callable[[int, int], int] = warp_shared_bytes


SHIPPED = KernelVariant()
_variants = [SHIPPED]  # the innermost kernel_variant() block's is in use


@contextlib.contextmanager
def kernel_variant(variant: KernelVariant) -> Iterator[KernelVariant]:
    """Decode with ``variant``'s kernels within the block (benchmarks and diagnostics)."""
    _variants.append(variant)
    try:
        yield variant
    finally:
        _variants.pop()


def current_variant() -> KernelVariant:
    return _variants[-1]


@functools.cache
def launch_shape(bits: int, out_kind: int, chain: bool, variant: KernelVariant = SHIPPED) -> tuple[str, int, int]:
    """The segments kernel for ``bits``, ``out_kind`` and whether it walks the gap chains: its
    name, warps per block, shared bytes."""
    warps = WARPS_PER_BLOCK
    shared = warps * variant.warp_bytes(bits, 4 if out_kind == checks.OUT_F32 else 2)
    if shared > 48 * 1024:  # the default limit of dynamic shared memory per block
        warps, shared = 4, shared // 2
    return f"segments<{out_kind},{bits},{'true' if chain else 'false'}>", warps, shared


@functools.cache
def source() -> str:
    """The CUDA source of the kernels (package data)."""
    return resources.files(__package__).joinpath("gpu_kernels.cu").read_text(encoding="utf-8")


@functools.cache
def kernel(name: str, variant: KernelVariant = SHIPPED):
    """Kernel ``name`` of the source compiled for ``variant`` on first use (CuPy caches the binary
    on disk)."""
    options = ("-std=c++17", f"-DICQ_MIN_BLOCKS={variant.min_blocks}", *variant.defines)
    module = _cupy().RawModule(code=source(), options=options, name_expressions=[name])
    return module.get_function(name)


@functools.cache
def grid_limit(name: str, threads: int, shared: int, variant: KernelVariant = SHIPPED) -> int:
    """Blocks of ``name`` resident on the whole device at once: the segments kernel's warps each
    take a contiguous run of items, so launching more blocks than fit would leave a tail wave."""
    cupy = _cupy()
    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
    compiled = kernel(name, variant)
    try:
        per_sm = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(compiled.kernel.ptr, threads, shared)
    except Exception:  # a CuPy without the occupancy call: count registers and shared memory
        per_sm = min(2048 // threads, 65536 // (threads * max(32, compiled.num_regs)), (227 << 10) // max(1, shared))
    return max(1, per_sm) * sms


def upload(data) -> object:
    """Copy bytes (an .icq file's data section, say) to the GPU once, as a CuPy uint8 array."""
    cupy = _cupy()
    return cupy.asarray(np.frombuffer(data, dtype=np.uint8))


def decode_tensor(header: Header, record: TensorRecord, read_at: ReadAt, rows: tuple[int, int] | None = None,
                  device_data=None):  # fmt: skip
    """Decode one tensor on the GPU into a CuPy array (bfloat16 and float8 tensors as their unsigned
    integer bit patterns, since CuPy has neither).

    ``device_data``: the file's data section already on the GPU (see :func:`upload`); else the
    tensor's sections are uploaded from ``read_at``.
    """
    cupy = _cupy()
    payload = Payload(header, record, read_at)
    if rows is None:
        payload.verify_all()
    if record.coding == CODING_RAW:
        host = decode_raw(payload, rows)
        if rows is None:
            payload.check_section_padding()
        if record.dtype in (dtypes.BFLOAT16, 13, 14):  # CuPy has no bfloat16 or float8: keep the bit patterns
            host = host.view(f"<u{host.dtype.itemsize}")
        return cupy.asarray(host)
    out = _decode_icq(cupy, payload, rows, device_data)
    if rows is None:
        payload.check_section_padding()
    return out


def _section_on_device(cupy, payload: Payload, name: str, start: int, size: int, device_data, dtype):
    """A section's bytes on the GPU: a view into ``device_data`` or a fresh upload (host-verified)."""
    data = payload.section(name, start, size)  # verifies the chunks it touches
    if device_data is not None:
        begin = payload.record.offset + payload.layout.sections[name][0] + start
        return device_data[begin : begin + size].view(dtype)
    return cupy.asarray(np.frombuffer(data, dtype=dtype))


class Plan:
    """An icq tensor's sections on the GPU, checked on the host, ready to decode (spec 9.2 step 9).

    ``run(out)`` launches the kernels into a preallocated uint16/uint32 array; :meth:`finish` turns
    the per-segment status into FormatError. Benchmarks time ``run``.
    """

    def __init__(self, cupy, payload: Payload | ColumnWindow, rows, device_data) -> None:
        record, p = payload.record, payload.record.params
        self.cupy, self.record, self.params = cupy, record, p
        self.whole = rows is None
        self.name = record.name
        self.first, stop = rows if rows is not None else (0, record.rows)
        # where messages count rows and segments from, and the row outlier count checked
        self.row_first, self.segment_first = payload.row_first + self.first, payload.segment_first
        self.expected = payload.expected_outliers
        self.count, self.cols = stop - self.first, record.cols
        per_row = 4 if p.outliers else 2
        row_stride = packed_size(self.cols, p.bits)
        self.row_words = row_stride // 4
        count, cols, name = self.count, self.cols, self.name

        # Host-side checks, in the normative order, before any launch
        books = checks.read_codebook(payload)
        if books is None:
            books = np.zeros(1, np.float32)
        params = np.frombuffer(payload.section("params", self.first * per_row * 2, count * per_row * 2), "<u2")
        self.flags = np.zeros((count, 4), np.int64)
        self.flags[:, 0] = ((params.reshape(count, per_row) & 0x7C00) == 0x7C00).any(axis=1)
        codes = np.frombuffer(payload.section("codes", self.first * row_stride, count * row_stride), "<u4")
        self.flags[:, 1] = checks.code_padding_set(codes, count, cols, p.bits)
        chain_status, starts = 0, None
        if p.outliers:
            self.segments = -(-cols // p.segment)
            count_words = np.frombuffer(payload.section("counts"), "<u4").astype(np.uint32)
            starts, chain_status = checks.segment_starts(count_words, record.rows * self.segments, p.count_bits,
                                                   p.total_symbols)  # fmt: skip
        if self.flags[:, :2].any() or chain_status:
            checks.raise_first(name, self.row_first, self.flags, chain_status, self.expected, self.segment_first)

        self.out_kind = checks.output_kind(record.dtype)
        self.per_row = per_row
        self.d_params = cupy.asarray(params)
        self.d_codes = _section_on_device(cupy, payload, "codes", self.first * row_stride, count * row_stride,
                                          device_data, cupy.uint32)  # fmt: skip
        self.inlier_book = cupy.asarray(books[: 1 << p.bits] if p.kind else books)
        self.outlier_book = cupy.asarray(books[1 << p.bits :] if p.kind and p.outliers else np.zeros(1, np.float32))
        self.d_gaps, self.d_starts, self.gap_bit_base = cupy.zeros(1, cupy.uint32), cupy.zeros(1, cupy.int64), 0
        if p.outliers:
            local = starts[self.first * self.segments : stop * self.segments + 1]
            word_first, word_stop = checks.symbol_words(local, p.gap_bits)
            if word_stop > word_first:
                self.d_gaps = _section_on_device(cupy, payload, "gaps", 4 * word_first, 4 * (word_stop - word_first),
                                                 device_data, cupy.uint32)  # fmt: skip
            # checked now, raised after the chain errors (spec 9.2 step 9 puts gap padding last)
            self.gap_padding_set = False
            if rows is None:
                gap_words = np.frombuffer(payload.section("gaps"), "<u4").astype(np.uint32)
                self.gap_padding_set = not tail_is_zero(gap_words, p.total_symbols * p.gap_bits)
            self.d_starts = cupy.asarray(local - local[0])
            self.gap_bit_base = word_first * 32 - int(local[0]) * p.gap_bits
        # per (row, segment): the outliers its chain placed, or minus its chain error code
        self.status = cupy.empty(max(count * self.segments, 1) if p.outliers else 1, dtype=cupy.int32)

    def empty_output(self):
        cupy = self.cupy
        return cupy.empty(
            (self.count, self.cols), dtype=cupy.uint32 if self.out_kind == checks.OUT_F32 else cupy.uint16
        )

    def run(self, out) -> None:
        """Launch the kernels into ``out`` (no synchronization, no host work)."""
        p, count = self.params, self.count
        fused = p.outliers and p.segment % 32 == 0 and p.segment <= SEGMENT_COLUMNS
        segment = p.segment if fused else SEGMENT_COLUMNS
        segments = -(-self.cols // segment)
        variant = current_variant()
        name, warps, shared = launch_shape(p.bits, self.out_kind, bool(fused), variant)
        blocks = min(-(-count * segments // warps), grid_limit(name, 32 * warps, shared, variant))
        if segments >= 1 << 31 or count * segments >= (1 << 31) * max(1, blocks * warps):
            # the kernel counts segments and each warp's items in ints; no GPU holds such a tensor
            raise BackendUnavailableError(f"tensor {self.name!r} is too large for the cupy backend")
        # the gap chains and the matrix, in both kernels' argument order
        chains = (self.d_starts, self.d_gaps, np.int64(self.d_gaps.size), np.int64(self.gap_bit_base),
                  np.int32(p.gap_bits), np.int64(count), np.int64(self.cols))  # fmt: skip
        if blocks:
            kernel(name, variant)(
                (blocks,),
                (32 * warps,),
                (
                    self.d_codes,
                    np.int64(self.row_words),
                    self.d_params,
                    np.int32(self.per_row),
                    self.inlier_book,
                    self.outlier_book,
                    np.int32(p.kind),
                    *chains,
                    np.int32(segment),
                    np.int32(segments),
                    np.int32(self.cols - (segments - 1) * segment),
                    np.int64(self.row_words - segments * (segment // 32) * p.bits),
                    np.int64(self.cols - segments * segment),
                    out,
                    self.status,
                ),
                shared_mem=shared,
            )
        if p.outliers and not fused and count * self.segments:
            threads = _THREADS
            kernel(f"outliers<{self.out_kind}>", variant)(
                (-(-count * self.segments // threads),),
                (threads,),
                (
                    self.d_codes,
                    np.int64(self.row_words),
                    np.int32(p.bits),
                    self.d_params,
                    self.inlier_book,
                    self.outlier_book,
                    np.int32(p.kind),
                    *chains,
                    np.int64(p.segment),
                    np.int64(self.segments),
                    out,
                    self.status,
                ),
            )

    def finish(self) -> None:
        """Raise the first chain error the kernels flagged, in the normative order."""
        if not self.params.outliers:
            return
        status = self.cupy.asnumpy(self.status)[: self.count * self.segments].reshape(self.count, self.segments)
        if chain_flags(status, self.flags, self.expected):
            checks.raise_first(self.name, self.row_first, self.flags, 0, self.expected, self.segment_first)
        if self.gap_padding_set:
            raise checks.gap_padding_error(self.name)

    def typed(self, out):
        """The output with its dtype (bfloat16 stays as uint16 bit patterns: CuPy has no bfloat16)."""
        shape = self.record.shape if self.whole else (self.count, self.cols)
        if self.out_kind == checks.OUT_F32:
            out = out.view(self.cupy.float32)
        elif self.out_kind == checks.OUT_F16:
            out = out.view(self.cupy.float16)
        return out.reshape(shape)


def chain_flags(status: np.ndarray, flags: np.ndarray, expected: int | None) -> bool:
    """Turn the kernels' per-segment status (rows x segments: outliers placed, or minus the chain
    error code) into the decoders' row flags (columns 2 and 3: code and segment, or code 3 and the
    outliers found when a row's count is not ``expected``, unless that is None); whether any row
    failed."""
    failed = status < 0
    bad = failed.any(axis=1)
    segment = failed.argmax(axis=1)[bad]
    flags[bad, 2] = -status[bad, segment]
    flags[bad, 3] = segment
    found = status.sum(axis=1, dtype=np.int64)
    short = ~bad & (found != expected) if expected is not None else np.zeros_like(bad)
    flags[short, 2] = checks.CHAIN_COUNT
    flags[short, 3] = found[short]
    return bool(bad.any() or short.any())


def decode_window(window: ColumnWindow):
    """Decode the segments of a column slice (spec section 9.4) on the GPU, as a matrix."""
    return _decode_icq(_cupy(), window, None, None)


def _decode_icq(cupy, payload: Payload | ColumnWindow, rows, device_data):
    plan = Plan(cupy, payload, rows, device_data)
    out = plan.empty_output()
    plan.run(out)
    plan.finish()
    return plan.typed(out)
