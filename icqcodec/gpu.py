"""The GPU decoder (spec section 9 on CUDA): CuPy RawModule kernels, imported lazily.

The host parses and checks the container, verifies checksums and the cheap per-row rules (finite
parameters, code padding, segment counts, gap padding) before any launch; one warp per (row, segment)
decodes the codes by table lookup into shared memory, walks the segment's gap chain with a warp
prefix sum to overwrite the outliers there, and stores the segment with 16-byte vectors; chain
errors go to per-row device flags that the host turns into FormatError in the normative order. Products in the level formula are exact, so the fused
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


// The bits of little-endian 32-bit words from bit `bit` on (spec section 5), not yet masked to
// `width`: the next word is read only when the field reaches into it.
__device__ __forceinline__ unsigned int bits_from(const unsigned int* words, int bit, int width) {
    const int j = bit >> 5, shift = bit & 31;
    unsigned int v = words[j] >> shift;
    if (shift + width > 32) v |= words[j + 1] << (32 - shift);
    return v;
}

// The output bits of code q of a row (spec section 7): its inlier level, or its signed outlier level.
template <int OUT>
__device__ __forceinline__ typename Out<OUT>::T level_bits(unsigned int q, bool outlier, int bits, int kind,
                                                           const unsigned short* __restrict__ p,
                                                           const float* __restrict__ book,
                                                           const float* __restrict__ obook) {
    if (!outlier) return round_out<OUT>(f16(p[0]) + (kind ? book[q] : (float)q) * f16(p[1]));
    unsigned int half = 1u << (bits - 1), m = q & (half - 1u);
    float magnitude = f16(p[2]) + (kind ? obook[m] : (float)m) * f16(p[3]);
    return round_out<OUT>(q >= half ? -magnitude : magnitude);
}

// Device error flags: error[r] holds ERROR_NONE - (s * 4 + code) for the first failing segment s
// of row r (atomicMax keeps the smallest s * 4 + code), so a zeroed buffer means "no error".
#define ERROR_NONE 0x7FFFFFFF

// Shared memory through 32-bit addresses: generic pointers would cost 64-bit arithmetic per access.
__device__ __forceinline__ unsigned int shared_at(const void* p) { return (unsigned int)__cvta_generic_to_shared(p); }
__device__ __forceinline__ unsigned int lds32(unsigned int at) {
    unsigned int v;
    asm volatile("ld.shared.b32 %0, [%1];" : "=r"(v) : "r"(at) : "memory");
    return v;
}
__device__ __forceinline__ uint2 lds64(unsigned int at) {
    uint2 v;
    asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(at) : "memory");
    return v;
}
__device__ __forceinline__ uint4 lds128(unsigned int at) {
    uint4 v;
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(at)
                 : "memory");
    return v;
}
__device__ __forceinline__ void sts128(unsigned int at, uint4 v) {
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(at), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}
template <class T>
__device__ __forceinline__ void sts_out(unsigned int at, T v) {
    if (sizeof(T) == 2) asm volatile("st.shared.b16 [%0], %1;" ::"r"(at), "h"((unsigned short)v) : "memory");
    else asm volatile("st.shared.b32 [%0], %1;" ::"r"(at), "r"((unsigned int)v) : "memory");
}
template <class T>
__device__ __forceinline__ T lds_out(unsigned int at) {
    if (sizeof(T) == 2) {
        unsigned short v;
        asm volatile("ld.shared.b16 %0, [%1];" : "=h"(v) : "r"(at) : "memory");
        return (T)v;
    }
    return (T)lds32(at);
}

// A warp's staged segment: lane L's 32 outputs are CPL 16-byte chunks, chunk c in slot
// c * (32 + PAD) + L. Lanes storing their chunk c write consecutive slots, and eight consecutive
// chunks of the segment (read for the global store) fall in eight different bank groups.
template <int CPL>
struct Stage {
    static const int PAD = 8 / CPL, ROW = 32 + PAD, BYTES = CPL * ROW * 16;
    __device__ __forceinline__ static unsigned int slot(int chunk) { return (chunk % CPL) * ROW + chunk / CPL; }
};

// Table entries: one entry holds the outputs of a group of codes (a byte of 2-bit codes, a pair
// of 3- or 4-bit codes), looked up by the group's bits at once; wider codes are looked up one by
// one in the levels. Fewer lookups per output: integer issue is what limits this kernel.
template <int OUT, int BITS> struct Entry {
    static const int CODES = BITS == 2 ? 4 : (BITS <= 4 ? 2 : 1);
    static const bool GROUPED = CODES > 1;
    static const int WORDS = CODES * (int)sizeof(typename Out<OUT>::T) / 4;
    static const int COUNT = GROUPED ? 1 << (CODES * BITS) : 0, BYTES = COUNT * WORDS * 4;
};

#ifndef ICQ_MIN_BLOCKS
#define ICQ_MIN_BLOCKS 4
#endif

// One warp per (row, segment) item, for segments of 32 to 1024 columns (a multiple of 32), or for
// tensors without outliers cut into 1024-column pieces (chain = 0). Lane l holds columns 32l to
// 32l + 31 of the segment: BITS whole code words. Each warp takes a contiguous run of items, so
// it rebuilds the row's tables only when the row changes. Per item: table lookups stage the
// inlier outputs in shared memory while the next item's codes load; the gap chain (spec section
// 8, a warp prefix sum of the symbols' advances) overwrites the outliers there; then the warp
// stores the segment as contiguous 16-byte vectors, evict-first (the output is not read again
// here; measured 8-10% faster than plain stores). Integer issue is the limit at these rates:
// the loop does 32-bit arithmetic, no division and no block-wide barrier.
// Shared memory per warp: the stage, the row's levels (inlier, then outlier), the pair entries.
template <int OUT, int BITS>
__global__ void __launch_bounds__(256, ICQ_MIN_BLOCKS) segments(
        const unsigned int* __restrict__ codes, long long row_words, const unsigned short* __restrict__ params,
        int per_row, const float* __restrict__ book, const float* __restrict__ obook, int kind, int chain,
        const long long* __restrict__ starts, const unsigned int* __restrict__ gaps, long long gap_bit_base,
        int gap_bits, long long rows, long long cols, int segment, long long segments,
        typename Out<OUT>::T* __restrict__ out, int* __restrict__ error, int* __restrict__ found) {
    typedef typename Out<OUT>::T T;
    typedef Entry<OUT, BITS> E;
    const int SIZE = (int)sizeof(T), EPC = 16 / SIZE, CPL = 32 / EPC, LEVELS = 1 << BITS;
    typedef Stage<CPL> S;
    extern __shared__ uint4 shared[];
    const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned int stage = shared_at(shared) + warp * S::BYTES;
    unsigned int* levels = reinterpret_cast<unsigned int*>(reinterpret_cast<char*>(shared) + warps * S::BYTES) +
                           warp * 2 * LEVELS;
    unsigned int* entries = reinterpret_cast<unsigned int*>(reinterpret_cast<char*>(shared) + warps * S::BYTES +
                                                            warps * 8 * LEVELS + warp * E::BYTES);
    const unsigned int levels_at = shared_at(levels), entries_at = shared_at(entries);

    const long long items = rows * segments, all = (long long)gridDim.x * warps;
    const long long me = (long long)blockIdx.x * warps + warp;
    long long item = me * items / all;
    const long long end = (me + 1) * items / all;
    if (item >= end) return;
    long long r = item / segments, s = item - r * segments;
    const long long segment_words = (long long)(segment >> 5) * BITS;

    unsigned int w[BITS];  // this lane's code words of the item being loaded
    const unsigned int* src = codes;
    int length = 0;
    long long first = 0, stop = 0;  // the item's gap symbols
    auto load = [&](long long item, long long r, long long s) {
        length = (int)min((long long)segment, cols - s * segment);
        src = codes + r * row_words + s * segment_words;
        if (chain) {
            first = starts[item];
            stop = starts[item + 1];
        }
        const int words = (length * BITS + 31) >> 5, k = lane * BITS;
        const bool whole = k + BITS <= words;
        const unsigned long long at = reinterpret_cast<unsigned long long>(src + k);
        if constexpr (BITS % 4 == 0) {
            if (whole && (at & 15) == 0) {
#pragma unroll
                for (int j = 0; j < BITS; j += 4) {
                    uint4 v = *reinterpret_cast<const uint4*>(src + k + j);
                    w[j] = v.x; w[j + 1] = v.y; w[j + 2] = v.z; w[j + 3] = v.w;
                }
                return;
            }
        } else if constexpr (BITS == 2) {
            if (whole && (at & 7) == 0) {
                uint2 v = *reinterpret_cast<const uint2*>(src + k);
                w[0] = v.x; w[1] = v.y;
                return;
            }
        }
#pragma unroll
        for (int j = 0; j < BITS; ++j) w[j] = k + j < words ? src[k + j] : 0u;
    };
    load(item, r, s);

    const unsigned int lane_chunks = stage + lane * 16;  // this lane's chunk 0; chunk c is c * ROW slots on
    const unsigned int lane_reads = stage + S::slot(lane) * 16;  // the segment's chunk lane; + 32 / CPL slots per 32
    long long table_row = -1;
    int row_found = 0;
    for (; item < end; ++item) {
        if (r != table_row) {
            if (lane == 0 && row_found) atomicAdd(&found[table_row], row_found);
            row_found = 0;
            __syncwarp();  // the previous row's tables are no longer read
            const unsigned short* p = params + r * per_row;
            for (int idx = lane; idx < (chain ? 2 : 1) * LEVELS; idx += 32)
                levels[idx] = level_bits<OUT>(idx & (LEVELS - 1), idx >= LEVELS, BITS, kind, p, book, obook);
            __syncwarp();
            for (int idx = lane; idx < E::COUNT; idx += 32) {
#pragma unroll
                for (int k = 0; k < E::WORDS; ++k) {
                    const int code = SIZE == 4 ? k : 2 * k;  // the entry's first code in word k
                    unsigned int word = levels[(idx >> (code * BITS)) & (LEVELS - 1)];
                    if (SIZE == 2) word |= levels[(idx >> ((code + 1) * BITS)) & (LEVELS - 1)] << 16;
                    entries[idx * E::WORDS + k] = word;
                }
            }
            __syncwarp();
            table_row = r;
        }
        const int item_length = length;
        const unsigned int* item_src = src;
        const long long item_first = first, item_stop = stop;

        // Inliers: table lookups into this lane's staged chunks
        if (lane * 32 < item_length) {
            unsigned int packed[32 * SIZE / 4];
#pragma unroll
            for (int e = 0; e < 32; e += E::CODES) {
                const unsigned int q = bits_from(w, e * BITS, E::CODES * BITS);
                const int to = e * SIZE / 4;  // the first packed word of these outputs
                if constexpr (!E::GROUPED) {
                    const unsigned int u = lds32(levels_at + (q & (LEVELS - 1)) * 4);
                    if (SIZE == 4) packed[to] = u;
                    else if (e & 1) packed[to] |= u << 16;
                    else packed[to] = u;
                } else if constexpr (E::WORDS == 1) {
                    packed[to] = lds32(entries_at + (q & (E::COUNT - 1)) * 4);
                } else if constexpr (E::WORDS == 2) {
                    const uint2 v = lds64(entries_at + (q & (E::COUNT - 1)) * 8);
                    packed[to] = v.x;
                    packed[to + 1] = v.y;
                } else {
                    const uint4 v = lds128(entries_at + (q & (E::COUNT - 1)) * 16);
                    packed[to] = v.x;
                    packed[to + 1] = v.y;
                    packed[to + 2] = v.z;
                    packed[to + 3] = v.w;
                }
            }
#pragma unroll
            for (int c = 0; c < CPL; ++c)
                sts128(lane_chunks + c * S::ROW * 16,
                       make_uint4(packed[4 * c], packed[4 * c + 1], packed[4 * c + 2], packed[4 * c + 3]));
        }

        // Start loading the next item: the chain below hides the latency
        const long long nr = s + 1 < segments ? r : r + 1, ns = s + 1 < segments ? s + 1 : 0;
        if (item + 1 < end) load(item + 1, nr, ns);
        __syncwarp();

        if (chain) {
            const unsigned int escape = (1u << gap_bits) - 1u;
            // 32 symbols are gap_bits whole words: per round the warp's words advance by gap_bits
            const long long item_bit = item_first * gap_bits - gap_bit_base;
            const unsigned int* round_words = gaps + (item_bit >> 5);
            const int offset = (int)(item_bit & 31) + lane * gap_bits;  // this lane's symbol in a round
            int carry = 0, n = 0;
            bool past = false;
            unsigned int last = 0;
            for (long long base = item_first; base < item_stop && !past; base += 32, round_words += gap_bits) {
                const int left = (int)min(item_stop - base, 32LL);
                const bool live = lane < left;
                const unsigned int v = live ? bits_from(round_words, offset, gap_bits) & escape : 0u;
                int scan = !live ? 0 : (v == escape ? (int)escape : (int)v + 1);
#pragma unroll
                for (int d = 1; d < 32; d <<= 1) {  // inclusive prefix sum of the advances
                    const int other = __shfl_up_sync(0xffffffffu, scan, d);
                    if (lane >= d) scan += other;
                }
                const bool outlier = live && v != escape;
                const int p = carry + scan - 1;
                if (outlier && p < item_length) {
                    const unsigned int q = bits_from(item_src, p * BITS, BITS);
                    const T value = (T)lds32(levels_at + (LEVELS + (q & (LEVELS - 1))) * 4);
                    sts_out<T>(stage + S::slot(p / EPC) * 16 + (p % EPC) * SIZE, value);
                }
                past = __any_sync(0xffffffffu, outlier && p >= item_length);
                n += __popc(__ballot_sync(0xffffffffu, outlier));
                last = __shfl_sync(0xffffffffu, v, left - 1);
                // a saturated cursor is past every segment: an int cannot overflow
                carry = min(carry + __shfl_sync(0xffffffffu, scan, 31), 1 << 22);
            }
            const int code = past ? 1 : ((item_stop > item_first && last == escape) ? 2 : 0);
            if (code && lane == 0) atomicMax(&error[r], ERROR_NONE - (int)(s * 4 + code));
            if (!code) row_found += n;
            __syncwarp();
        }

        // Store the staged segment: 16-byte vectors where the destination allows
        T* dst = out + r * cols + s * segment;
        const bool aligned = (reinterpret_cast<unsigned long long>(dst) & 15) == 0;
        if (aligned && item_length == 32 * 32) {  // a whole 1024-column segment: CPL chunks per lane
            uint4* to = reinterpret_cast<uint4*>(dst) + lane;
#pragma unroll
            for (int i = 0; i < CPL; ++i) __stcs(to + 32 * i, lds128(lane_reads + i * (32 / CPL) * 16));
        } else {
            int e = lane;
            if (aligned) {
                const int chunks = item_length / EPC;
                for (int c = lane; c < chunks; c += 32) __stcs(reinterpret_cast<uint4*>(dst) + c, lds128(stage + S::slot(c) * 16));
                e = chunks * EPC + lane;
            }
            for (; e < item_length; e += 32) dst[e] = lds_out<T>(stage + S::slot(e / EPC) * 16 + (e % EPC) * SIZE);
        }
        __syncwarp();  // the stage is free for the next item
        r = nr;
        s = ns;
    }
    if (lane == 0 && row_found) atomicAdd(&found[table_row], row_found);
}

// Segments outside the warp kernel's range (16 columns, or over 1024): after the inliers are
// decoded, one thread per (row, segment) walks the gap chain and overwrites the outliers.
template <int OUT>
__global__ void outliers(const unsigned int* __restrict__ codes, long long row_words, int bits,
                         const unsigned short* __restrict__ params, const float* __restrict__ book,
                         const float* __restrict__ obook, int kind, const long long* __restrict__ starts,
                         const unsigned int* __restrict__ gaps, long long gap_words, long long gap_bit_base,
                         int gap_bits, long long rows, long long cols, long long segment, long long segments,
                         typename Out<OUT>::T* __restrict__ out, int* __restrict__ error, int* __restrict__ found) {
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= rows * segments) return;
    long long r = t / segments, s = t - r * segments;
    long long length = min(segment, cols - s * segment);
    long long first = starts[t], stop = starts[t + 1];
    unsigned int escape = (1u << gap_bits) - 1u;
    const unsigned int* row = codes + r * row_words;
    long long cursor = 0;
    int n = 0;
    unsigned int v = 0;
    for (long long i = first; i < stop; ++i) {
        v = field(gaps, gap_words, i * gap_bits - gap_bit_base, gap_bits);
        if (v == escape) { cursor += escape; continue; }
        long long p = cursor + v;
        if (p >= length) { atomicMax(&error[r], ERROR_NONE - (int)(s * 4 + 1)); return; }
        long long c = s * segment + p;
        unsigned int q = field(row, row_words, c * bits, bits);
        out[r * cols + c] = level_bits<OUT>(q, true, bits, kind, params + r * 4, book, obook);
        ++n;
        cursor = p + 1;
    }
    if (stop > first && v == escape) { atomicMax(&error[r], ERROR_NONE - (int)(s * 4 + 2)); return; }
    atomicAdd(&found[r], n);
}
"""

_THREADS = 256  # threads per block of the fallback chain walker
MIN_BLOCKS_PER_SM = 4  # of the segments kernel: caps its registers at 64 per thread
WARPS_PER_BLOCK = 8  # warps of a block of the segments kernel, each on its own items
SEGMENT_COLUMNS = 1024  # columns of a warp item of the segments kernel: 32 per lane
_ERROR_NONE = 0x7FFFFFFF  # see ERROR_NONE in the kernels


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


def _warp_shared_bytes(bits: int, item_size: int) -> int:
    """Shared memory of one warp of the segments kernel (see Stage and Entry in the source): the
    staged segment, the row's levels (inlier and outlier), the entries for groups of codes."""
    chunks = 32 * item_size // 16  # per lane
    stage = chunks * (32 + 8 // chunks) * 16
    codes = 4 if bits == 2 else 2 if bits <= 4 else 0  # per entry
    entries = (1 << codes * bits) * codes * item_size if codes else 0
    return stage + 4 * (2 << bits) + entries


@functools.cache
def _launch_shape(bits: int, out_kind: int) -> tuple[str, int, int]:
    """The segments kernel for ``bits`` and ``out_kind``: its name, warps per block, shared bytes."""
    warps = WARPS_PER_BLOCK
    shared = warps * _warp_shared_bytes(bits, 4 if out_kind == _OUT_F32 else 2)
    if shared > 48 * 1024:  # the default limit of dynamic shared memory per block
        warps, shared = 4, shared // 2
    return f"segments<{out_kind},{bits}>", warps, shared


@functools.cache
def _kernel(name: str):
    """One kernel of the source, compiled on first use (CuPy caches the binary on disk)."""
    options = ("-std=c++17", f"-DICQ_MIN_BLOCKS={MIN_BLOCKS_PER_SM}")
    module = _cupy().RawModule(code=_SOURCE, options=options, name_expressions=[name])
    return module.get_function(name)


@functools.cache
def _grid_limit(name: str, threads: int, shared: int) -> int:
    """Blocks of ``name`` resident on the whole device at once: the segments kernel's warps each
    take a contiguous run of items, so launching more blocks than fit would leave a tail wave."""
    cupy = _cupy()
    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
    kernel = _kernel(name)
    try:
        per_sm = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.kernel.ptr, threads, shared)
    except Exception:  # a CuPy without the occupancy call: count registers and shared memory
        per_sm = min(2048 // threads, 65536 // (threads * max(32, kernel.num_regs)), (227 << 10) // max(1, shared))
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

    ``run(out)`` launches the kernels into a preallocated uint16/uint32 array; :meth:`finish` turns
    the device error flags into FormatError. Benchmarks time ``run``.
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
        self.d_gaps, self.d_starts, self.gap_bit_base = cupy.zeros(1, cupy.uint32), cupy.zeros(1, cupy.int64), 0
        if p.outliers:
            local = starts[self.first * self.segments : stop * self.segments + 1]
            word_first = int(local[0]) * p.gap_bits // 32
            word_stop = packed_size(int(local[-1]), p.gap_bits) // 4
            if word_stop > word_first:
                self.d_gaps = _section_on_device(cupy, payload, "gaps", 4 * word_first, 4 * (word_stop - word_first),
                                                 device_data, cupy.uint32)  # fmt: skip
            # checked now, raised after the chain errors (spec 9.2 step 9 puts gap padding last)
            self.gap_padding_set = False
            if rows is None:
                gap_words = np.frombuffer(payload.section("gaps"), "<u4").astype(np.uint32)
                self.gap_padding_set = not _tail_is_zero(gap_words, p.total_symbols * p.gap_bits)
            self.d_starts = cupy.asarray(local - local[0])
            self.gap_bit_base = word_first * 32 - int(local[0]) * p.gap_bits
        # per row: the first chain error (ERROR_NONE minus its code), then the outliers found
        self.status = cupy.zeros(2 * max(count, 1), dtype=cupy.int32)
        self.error, self.found = self.status[: max(count, 1)], self.status[max(count, 1) :]

    def empty_output(self):
        cupy = self.cupy
        return cupy.empty((self.count, self.cols), dtype=cupy.uint32 if self.out_kind == _OUT_F32 else cupy.uint16)

    def run(self, out) -> None:
        """Launch the kernels into ``out`` (no synchronization, no host work)."""
        p, count = self.params, self.count
        fused = p.outliers and p.segment % 32 == 0 and p.segment <= SEGMENT_COLUMNS
        segment = p.segment if fused else SEGMENT_COLUMNS
        segments = -(-self.cols // segment)
        if p.outliers:
            self.status.fill(0)
        name, warps, shared = _launch_shape(p.bits, self.out_kind)
        blocks = min(-(-count * segments // warps), _grid_limit(name, 32 * warps, shared))
        if blocks:
            _kernel(name)(
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
                    np.int32(bool(fused)),
                    self.d_starts,
                    self.d_gaps,
                    np.int64(self.gap_bit_base),
                    np.int32(p.gap_bits),
                    np.int64(count),
                    np.int64(self.cols),
                    np.int32(segment),
                    np.int64(segments),
                    out,
                    self.error,
                    self.found,
                ),
                shared_mem=shared,
            )
        if p.outliers and not fused and count * self.segments:
            threads = _THREADS
            _kernel(f"outliers<{self.out_kind}>")(
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
                    self.d_starts,
                    self.d_gaps,
                    np.int64(self.d_gaps.size),
                    np.int64(self.gap_bit_base),
                    np.int32(p.gap_bits),
                    np.int64(count),
                    np.int64(self.cols),
                    np.int64(p.segment),
                    np.int64(self.segments),
                    out,
                    self.error,
                    self.found,
                ),
            )

    def finish(self) -> None:
        """Raise the first chain error the kernels flagged, in the normative order."""
        if not self.params.outliers:
            return
        status = self.cupy.asnumpy(self.status).astype(np.int64).reshape(2, -1)[:, : self.count]
        error, found = status
        flags = self.flags
        bad = error != 0
        first_error = _ERROR_NONE - error[bad]
        flags[bad, 2] = first_error % 4
        flags[bad, 3] = first_error // 4
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
