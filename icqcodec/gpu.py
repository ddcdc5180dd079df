"""The GPU decoder (spec section 9 on CUDA): CuPy RawModule kernels, imported lazily.

The host parses and checks the container, verifies checksums and the cheap per-row rules (finite
parameters, code padding, segment counts, gap padding) before any launch; the kernels decode codes
(one 32-bit word of codes per thread, vector stores) and walk the gap chains (one thread per
segment), reporting chain errors through per-row device flags that the host turns into
FormatError in the normative order. Products in the level formula are exact, so the fused
multiply-add that NVRTC emits gives the CPU decoders' bits.
"""

from __future__ import annotations

import functools

import numpy as np

from . import dtypes
from .bitstream import packed_size
from .container import Header, Payload, ReadAt, TensorRecord
from .decode import _OUT_BF16, _OUT_F16, _OUT_F32, _raise_first, _segment_starts, _tail_is_zero
from .errors import BackendUnavailableError, CorruptStreamError

__all__ = ["available", "decode_tensor", "upload"]

_SOURCE = r"""
#include <cuda_fp16.h>

template <int OUT> struct Out;
template <> struct Out<0> { typedef unsigned int T; };   // float32 bit patterns
template <> struct Out<1> { typedef unsigned short T; }; // float16
template <> struct Out<2> { typedef unsigned short T; }; // bfloat16

template <int OUT>
__device__ __forceinline__ typename Out<OUT>::T round_out(float v) {
    if (OUT == 0) return __float_as_uint(v);
    if (OUT == 1) return __half_as_ushort(__float2half_rn(v));
    // spec section 7: (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    unsigned int u = __float_as_uint(v);
    return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float f16(unsigned short bits) { return __half2float(__ushort_as_half(bits)); }

__device__ __forceinline__ unsigned int field(const unsigned int* __restrict__ words, long long n_words,
                                              long long bit, int width) {
    long long w = bit >> 5;
    int shift = (int)(bit & 31);
    unsigned long long value = words[w];
    if (shift + width > 32 && w + 1 < n_words) value |= ((unsigned long long)words[w + 1]) << 32;
    return (unsigned int)((value >> shift) & ((1ull << width) - 1ull));
}

// Outputs of one code word, packed into 32-bit registers (two 16-bit outputs each), then stored with
// 16-byte vector stores where aligned: no local-memory array.
template <int OUT, int PER>
struct Packed {
    static const int SIZE = (int)sizeof(typename Out<OUT>::T);
    static const int WORDS = (PER * SIZE + 3) / 4;
    unsigned int w[WORDS];
    __device__ __forceinline__ void set(int k, typename Out<OUT>::T v) {
        if (SIZE == 4) w[k] = v;
        else if (k & 1) w[k >> 1] |= ((unsigned int)v) << 16;
        else w[k >> 1] = v;
    }
    __device__ __forceinline__ typename Out<OUT>::T get(int k) const {
        return SIZE == 4 ? w[k] : (typename Out<OUT>::T)(w[k >> 1] >> ((k & 1) * 16));
    }
    __device__ __forceinline__ void store(typename Out<OUT>::T* dst, int valid) const {
        if (valid >= PER && (PER * SIZE) % 16 == 0 && (((unsigned long long)dst) & 15) == 0) {
#pragma unroll
            for (int i = 0; i < PER * SIZE / 16; ++i)
                reinterpret_cast<uint4*>(dst)[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
        } else {
            for (int k = 0; k < PER && k < valid; ++k) dst[k] = get(k);
        }
    }
};

// One thread per 32-bit word of codes (bits in 1, 2, 4, 8): 32 / BITS outputs, stored as vectors.
template <int OUT, int BITS>
__global__ void inliers_words(const unsigned int* __restrict__ codes, long long row_words,
                              const unsigned short* __restrict__ params, int per_row,
                              const float* __restrict__ book, int kind, long long rows, long long cols,
                              typename Out<OUT>::T* __restrict__ out) {
    const int PER = 32 / BITS;
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= rows * row_words) return;
    long long r = t / row_words, w = t - r * row_words;
    long long c0 = w * PER;
    if (c0 >= cols) return;
    float offset = f16(params[r * per_row]), scale = f16(params[r * per_row + 1]);
    unsigned int word = codes[t];
    Packed<OUT, PER> v;
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        unsigned int q = (word >> (k * BITS)) & ((1u << BITS) - 1u);
        float base = kind ? book[q] : (float)q;
        v.set(k, round_out<OUT>(offset + base * scale));
    }
    v.store(out + r * cols + c0, (int)min((long long)PER, cols - c0));
}

// Any width: one thread per 8 consecutive codes.
template <int OUT>
__global__ void inliers_generic(const unsigned int* __restrict__ codes, long long row_words, int bits,
                                const unsigned short* __restrict__ params, int per_row,
                                const float* __restrict__ book, int kind, long long rows, long long cols,
                                typename Out<OUT>::T* __restrict__ out) {
    long long groups = (cols + 7) / 8;
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= rows * groups) return;
    long long r = t / groups, c0 = (t - r * groups) * 8;
    float offset = f16(params[r * per_row]), scale = f16(params[r * per_row + 1]);
    const unsigned int* row = codes + r * row_words;
    for (int k = 0; k < 8 && c0 + k < cols; ++k) {
        unsigned int q = field(row, row_words, (c0 + k) * bits, bits);
        float base = kind ? book[q] : (float)q;
        out[r * cols + c0 + k] = round_out<OUT>(offset + base * scale);
    }
}

// One thread per (row, segment): walk the gap chain, overwrite the outliers (spec section 8).
template <int OUT>
__global__ void outliers(const unsigned int* __restrict__ codes, long long row_words, int bits,
                         const unsigned short* __restrict__ params, const float* __restrict__ book, int kind,
                         const long long* __restrict__ starts, const unsigned int* __restrict__ gaps,
                         long long gap_words, long long gap_bit_base, int gap_bits, long long rows, long long cols,
                         long long segment, long long segments, typename Out<OUT>::T* __restrict__ out,
                         int* __restrict__ error, int* __restrict__ found) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= rows * segments) return;
    long long r = t / segments, s = t - r * segments;
    long long length = min(segment, cols - s * segment);
    long long first = starts[t], stop = starts[t + 1];
    unsigned int escape = (1u << gap_bits) - 1u;
    float offset = f16(params[r * 4 + 2]), scale = f16(params[r * 4 + 3]);
    const unsigned int* row = codes + r * row_words;
    int half = 1 << (bits - 1);
    long long cursor = 0;
    int n = 0;
    unsigned int v = 0;
    for (long long i = first; i < stop; ++i) {
        v = field(gaps, gap_words, i * gap_bits - gap_bit_base, gap_bits);
        if (v == escape) { cursor += escape; continue; }
        long long p = cursor + v;
        if (p >= length) { atomicMin(&error[r], (int)(s * 4 + 1)); return; }
        long long c = s * segment + p;
        unsigned int q = field(row, row_words, c * bits, bits);
        unsigned int m = q & (unsigned int)(half - 1);
        float magnitude = offset + (kind ? book[m] : (float)m) * scale;
        out[r * cols + c] = round_out<OUT>(q >= (unsigned int)half ? -magnitude : magnitude);
        ++n;
        cursor = p + 1;
    }
    if (stop > first && v == escape) { atomicMin(&error[r], (int)(s * 4 + 2)); return; }
    atomicAdd(&found[r], n);
}
// Fused, bits in 1, 2, 4, 8, segments of at most 1024 columns: each warp of a block takes one
// (row, segment) item and decodes its gap chain with a warp prefix sum into a shared bitmap of
// outlier columns and a shared table of the row's output values, while the block's code words are
// already loading; then the block decodes all its items' words by table lookup and stores each
// output once. Index arithmetic per word is 32-bit shifts and masks: 64-bit division is costly.
template <int OUT, int BITS>
__global__ void fused_words(const unsigned int* __restrict__ codes, long long row_words,
                            const unsigned short* __restrict__ params, const float* __restrict__ book,
                            const float* __restrict__ obook, int kind,
                            const long long* __restrict__ starts, const unsigned int* __restrict__ gaps,
                            long long gap_words, long long gap_bit_base, int gap_bits, long long rows, long long cols,
                            int segment, long long segments, int item_words_log2,
                            typename Out<OUT>::T* __restrict__ out, int* __restrict__ error, int* __restrict__ found) {
    const int PER = 32 / BITS, MAXW = BITS;  // a 1024-column segment has 32 * BITS words: BITS per lane
    const int LEVELS = 2 << BITS;            // per warp: the row's inlier values, then its outlier values
    extern __shared__ unsigned int marks[];  // per warp: one bit per column of its segment, then levels
    __shared__ long long code_base[32], out_base[32];
    __shared__ int lengths[32], failed[32];
    const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long items = rows * segments, item0 = (long long)blockIdx.x * warps;
    const int mark_words = (segment + 31) / 32;
    const int item_words = 1 << item_words_log2;
    const int total_words = warps << item_words_log2;
    unsigned int* levels = marks + warps * mark_words;

    if (threadIdx.x < warps) {
        long long item = item0 + threadIdx.x;
        long long r = item / segments, s = item - r * segments;
        code_base[threadIdx.x] = r * row_words + (s * segment * BITS) / 32;
        out_base[threadIdx.x] = r * cols + s * segment;
        lengths[threadIdx.x] = item < items ? (int)min((long long)segment, cols - s * segment) : 0;
        failed[threadIdx.x] = 1;
    }
    for (int i = threadIdx.x; i < warps * mark_words; i += blockDim.x) marks[i] = 0u;
    __syncthreads();

    // Start loading this block's code words now: the chain decoding below hides their latency.
    unsigned int prefetched[MAXW];
#pragma unroll
    for (int j = 0; j < MAXW; ++j) {
        int g = threadIdx.x + j * blockDim.x;
        int w_item = g >> item_words_log2, w = g & (item_words - 1);
        prefetched[j] = 0u;
        if (g < total_words && w * PER < lengths[w_item]) prefetched[j] = codes[code_base[w_item] + w];
    }

    long long item = item0 + warp;
    if (item < items) {
        long long r = item / segments, s = item - r * segments;
        int length = lengths[warp];
        unsigned int* mine = marks + warp * mark_words;
        long long first = starts[item], stop = starts[item + 1];
        unsigned int escape = (1u << gap_bits) - 1u;
        long long carry = 0;
        int n = 0, past = 0;
        unsigned int last = 0;
        for (long long base = first; base < stop; base += 32) {
            long long i = base + lane;
            bool live = i < stop;
            unsigned int v = live ? field(gaps, gap_words, i * gap_bits - gap_bit_base, gap_bits) : 0u;
            long long scan = !live ? 0 : (v == escape ? (long long)escape : (long long)v + 1);
            for (int d = 1; d < 32; d <<= 1) {  // inclusive prefix sum of the advances
                long long other = __shfl_up_sync(0xffffffffu, scan, d);
                if (lane >= d) scan += other;
            }
            bool outlier = live && v != escape;
            long long p = carry + scan - 1;
            if (outlier && p >= length) past = 1;
            if (outlier && p < length) atomicOr(&mine[p >> 5], 1u << (p & 31));
            n += __popc(__ballot_sync(0xffffffffu, outlier));
            last = __shfl_sync(0xffffffffu, v, (int)min(31LL, stop - 1 - base));
            carry += __shfl_sync(0xffffffffu, scan, 31);
        }
        int code = __any_sync(0xffffffffu, past) ? 1 : ((stop > first && last == escape) ? 2 : 0);
        // the row's output values for every (outlier flag, code): spec section 7, computed once
        float offset = f16(params[r * 4]), scale = f16(params[r * 4 + 1]);
        float o_offset = f16(params[r * 4 + 2]), o_scale = f16(params[r * 4 + 3]);
        const int half = 1 << (BITS - 1);
        for (int idx = lane; idx < LEVELS; idx += 32) {
            unsigned int q = idx & ((1 << BITS) - 1);
            float level;
            if (idx >> BITS) {
                unsigned int m = q & (unsigned int)(half - 1);
                float magnitude = o_offset + (kind ? obook[m] : (float)m) * o_scale;
                level = q >= (unsigned int)half ? -magnitude : magnitude;
            } else {
                level = offset + (kind ? book[q] : (float)q) * scale;
            }
            levels[warp * LEVELS + idx] = round_out<OUT>(level);
        }
        if (lane == 0) {
            if (code) atomicMin(&error[r], (int)(s * 4 + code));
            else atomicAdd(&found[r], n);
            failed[warp] = code != 0;
        }
    }
    __syncthreads();

#pragma unroll
    for (int j = 0; j < MAXW; ++j) {
        int g = threadIdx.x + j * blockDim.x;
        int w_item = g >> item_words_log2, w = g & (item_words - 1);
        int c0 = w * PER;
        if (g >= total_words || failed[w_item] || c0 >= lengths[w_item]) continue;
        unsigned int word = prefetched[j];
        unsigned int flags = marks[w_item * mark_words + (c0 >> 5)] >> (c0 & 31);
        const unsigned int* table = levels + w_item * LEVELS;
        Packed<OUT, PER> v;
#pragma unroll
        for (int k = 0; k < PER; ++k) {
            unsigned int q = (word >> (k * BITS)) & ((1u << BITS) - 1u);
            v.set(k, (typename Out<OUT>::T)table[q | (((flags >> k) & 1u) << BITS)]);
        }
        v.store(out + out_base[w_item] + c0, lengths[w_item] - c0);
    }
}
"""

_THREADS = 256
FUSED_MAX_SEGMENT = 1 << 10  # each lane of the fused kernel holds its share of a segment's codes in registers
FUSED_WARPS = 4  # (row, segment) items per block of the fused kernel


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


@functools.lru_cache(maxsize=1)
def _module():
    cupy = _cupy()
    names = [f"inliers_words<{o},{b}>" for o in range(3) for b in (1, 2, 4, 8)]
    names += [f"inliers_generic<{o}>" for o in range(3)] + [f"outliers<{o}>" for o in range(3)]
    names += [f"fused_words<{o},{b}>" for o in range(3) for b in (1, 2, 4, 8)]
    return cupy.RawModule(code=_SOURCE, options=("-std=c++17",), name_expressions=names)


def upload(data) -> object:
    """Copy bytes (an .icq file's data section, say) to the GPU once, as a CuPy uint8 array."""
    cupy = _cupy()
    return cupy.asarray(np.frombuffer(data, dtype=np.uint8))


def _launch(kernel, count: int, args) -> None:
    if count:
        kernel(((count + _THREADS - 1) // _THREADS,), (_THREADS,), args)


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
    if record.coding == 0:
        from .reference import decode_raw

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

    ``run(out)`` launches the kernels into a preallocated uint16/uint32 array and returns the
    device error flags; :meth:`finish` turns them into FormatError. Benchmarks time ``run``.
    """

    def __init__(self, cupy, payload: Payload, rows, device_data) -> None:
        record, p = payload.record, payload.record.params
        self.cupy, self.record, self.params = cupy, record, p
        self.whole = rows is None
        self.name = record.name
        self.first, stop = rows if rows is not None else (0, record.rows)
        self.count, self.cols = stop - self.first, record.cols
        per_row = 4 if p.outliers else 2
        row_stride = packed_size(self.cols, p.bits)
        self.row_words = row_stride // 4
        count, cols, name = self.count, self.cols, self.name

        # Host-side checks, in the normative order, before any launch
        books = np.zeros(1, np.float32)
        if "codebook" in payload.layout.sections:
            books = np.frombuffer(payload.section("codebook"), "<f2").astype(np.float32)
            if not np.isfinite(books).all():
                raise CorruptStreamError(f"tensor {name!r}: codebook holds a value that is not finite", section="6.2")
        params = np.frombuffer(payload.section("params", self.first * per_row * 2, count * per_row * 2), "<u2")
        self.flags = np.zeros((count, 4), np.int64)
        self.flags[:, 0] = ((params.reshape(count, per_row) & 0x7C00) == 0x7C00).any(axis=1)
        codes = np.frombuffer(payload.section("codes", self.first * row_stride, count * row_stride), "<u4")
        used = cols * p.bits - (self.row_words - 1) * 32
        if used < 32:
            self.flags[:, 1] = (codes.reshape(count, self.row_words)[:, -1] >> np.uint32(used)) != 0
        chain_status, starts = 0, None
        if p.outliers:
            self.segments = -(-cols // p.segment)
            count_words = np.frombuffer(payload.section("counts"), "<u4").astype(np.uint32)
            starts, chain_status = _segment_starts(count_words, record.rows * self.segments, p.count_bits,
                                                   p.total_symbols)  # fmt: skip
        if self.flags[:, :2].any() or chain_status:
            _raise_first(name, self.first, self.flags, chain_status, p.outliers)

        self.out_kind = {dtypes.FLOAT32: _OUT_F32, dtypes.FLOAT16: _OUT_F16, dtypes.BFLOAT16: _OUT_BF16}[record.dtype]
        self.per_row = per_row
        self.d_params = cupy.asarray(params)
        self.d_codes = _section_on_device(cupy, payload, "codes", self.first * row_stride, count * row_stride,
                                          device_data, cupy.uint32)  # fmt: skip
        self.inlier_book = cupy.asarray(books[: 1 << p.bits] if p.kind else books)
        self.outlier_book = cupy.asarray(books[1 << p.bits :] if p.kind and p.outliers else np.zeros(1, np.float32))
        if p.outliers:
            local = starts[self.first * self.segments : stop * self.segments + 1]
            word_first = int(local[0]) * p.gap_bits // 32
            word_stop = packed_size(int(local[-1]), p.gap_bits) // 4
            if word_stop > word_first:
                self.d_gaps = _section_on_device(cupy, payload, "gaps", 4 * word_first, 4 * (word_stop - word_first),
                                                 device_data, cupy.uint32)  # fmt: skip
            else:  # no symbols in these rows: the kernel reads nothing, but needs a pointer
                self.d_gaps = cupy.zeros(1, cupy.uint32)
            # checked now, raised after the chain errors (spec 9.2 step 9 puts gap padding last)
            self.gap_padding_set = False
            if rows is None:
                gap_words = np.frombuffer(payload.section("gaps"), "<u4").astype(np.uint32)
                self.gap_padding_set = not _tail_is_zero(gap_words, p.total_symbols * p.gap_bits)
            self.d_starts = cupy.asarray(local - local[0])
            self.gap_bit_base = word_first * 32 - int(local[0]) * p.gap_bits
            self.error = cupy.empty(count, dtype=cupy.int32)
            self.found = cupy.empty(count, dtype=cupy.int32)

    def empty_output(self):
        cupy = self.cupy
        return cupy.empty((self.count, self.cols), dtype=cupy.uint32 if self.out_kind == _OUT_F32 else cupy.uint16)

    def run(self, out) -> None:
        """Launch the kernels into ``out`` (no synchronization, no host work)."""
        module, p = _module(), self.params
        kind, count, cols = np.int32(p.kind), np.int64(self.count), np.int64(self.cols)
        row_words = np.int64(self.row_words)
        if p.outliers and 32 % p.bits == 0 and (p.segment * p.bits) % 32 == 0 and p.segment <= FUSED_MAX_SEGMENT:
            self.error.fill(np.iinfo(np.int32).max)
            self.found.fill(0)
            warps = FUSED_WARPS
            kernel = module.get_function(f"fused_words<{self.out_kind},{p.bits}>")
            blocks = -(-self.count * self.segments // warps)
            threads = 32 * warps
            if blocks:
                kernel((blocks,), (threads,), (self.d_codes, row_words, self.d_params, self.inlier_book,
                       self.outlier_book, kind, self.d_starts, self.d_gaps, np.int64(self.d_gaps.size),
                       np.int64(self.gap_bit_base), np.int32(p.gap_bits), count, cols, np.int32(p.segment),
                       np.int64(self.segments), np.int32((p.segment * p.bits // 32).bit_length() - 1), out,
                       self.error, self.found),
                       shared_mem=4 * warps * (-(-p.segment // 32) + (2 << p.bits)))  # fmt: skip
            return
        if 32 % p.bits == 0:
            kernel = module.get_function(f"inliers_words<{self.out_kind},{p.bits}>")
            _launch(kernel, self.count * self.row_words, (self.d_codes, row_words, self.d_params,
                    np.int32(self.per_row), self.inlier_book, kind, count, cols, out))  # fmt: skip
        else:
            kernel = module.get_function(f"inliers_generic<{self.out_kind}>")
            _launch(kernel, self.count * -(-self.cols // 8), (self.d_codes, row_words, np.int32(p.bits),
                    self.d_params, np.int32(self.per_row), self.inlier_book, kind, count, cols, out))  # fmt: skip
        if p.outliers:
            self.error.fill(np.iinfo(np.int32).max)
            self.found.fill(0)
            kernel = module.get_function(f"outliers<{self.out_kind}>")
            _launch(kernel, self.count * self.segments, (self.d_codes, row_words, np.int32(p.bits), self.d_params,
                    self.outlier_book, kind, self.d_starts, self.d_gaps, np.int64(self.d_gaps.size),
                    np.int64(self.gap_bit_base), np.int32(p.gap_bits), count, cols, np.int64(p.segment),
                    np.int64(self.segments), out, self.error, self.found))  # fmt: skip

    def finish(self) -> None:
        """Raise the first chain error the kernels flagged, in the normative order."""
        if not self.params.outliers:
            return
        error, found = self.cupy.asnumpy(self.error), self.cupy.asnumpy(self.found)
        flags = self.flags
        bad = error != np.iinfo(np.int32).max
        flags[bad, 2] = error[bad] % 4
        flags[bad, 3] = error[bad] // 4
        short = ~bad & (found != self.params.outliers)
        flags[short, 2] = 3
        flags[short, 3] = found[short]
        if bad.any() or short.any():
            _raise_first(self.name, self.first, flags, 0, self.params.outliers)
        if self.gap_padding_set:
            raise CorruptStreamError(f"tensor {self.name!r}: padding bits of the gap symbols are not zero", section="8")

    def typed(self, out):
        """The output with its dtype (bfloat16 stays as uint16 bit patterns: CuPy has no bfloat16)."""
        shape = self.record.shape if self.whole else (self.count, self.cols)
        if self.out_kind == _OUT_F32:
            out = out.view(self.cupy.float32)
        elif self.out_kind == _OUT_F16:
            out = out.view(self.cupy.float16)
        return out.reshape(shape)


def _decode_icq(cupy, payload: Payload, rows, device_data):
    plan = Plan(cupy, payload, rows, device_data)
    out = plan.empty_output()
    plan.run(out)
    plan.finish()
    return plan.typed(out)
