// The CUDA kernels of the cupy decoder (icqcodec/gpu.py), compiled by NVRTC on first use.

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

// One step of an inclusive warp prefix sum: v += v of lane - d, where that lane exists. The
// shuffle's own in-range predicate guards the add (no lane comparison per step).
__device__ __forceinline__ int scan_step(int v, int d) {
    asm("{\n\t.reg .s32 t;\n\t.reg .pred p;\n\tshfl.sync.up.b32 t|p, %0, %1, 0, -1;\n\t@p add.s32 %0, %0, t;\n\t}"
        : "+r"(v) : "r"(d));
    return v;
}

// The output bits of code q of a row (spec section 7): its inlier level, or its signed outlier level.
template <int OUT>
__device__ __forceinline__ typename Out<OUT>::T level_bits(unsigned int q, bool outlier, int bits, int kind,
                                                           const unsigned short p[4],
                                                           const float* __restrict__ book,
                                                           const float* __restrict__ obook) {
    if (!outlier) return round_out<OUT>(f16(p[0]) + (kind ? book[q] : (float)q) * f16(p[1]));
    unsigned int half = 1u << (bits - 1), m = q & (half - 1u);
    float magnitude = f16(p[2]) + (kind ? obook[m] : (float)m) * f16(p[3]);
    return round_out<OUT>(q >= half ? -magnitude : magnitude);
}

#define FULL 0xffffffffu  // every lane of a warp

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
__device__ __forceinline__ long long lds_s64(unsigned int at) {
    long long v;
    asm volatile("ld.shared.s64 %0, [%1];" : "=l"(v) : "r"(at) : "memory");
    return v;
}

// Asynchronous copies of 4 or 8 bytes from global to shared memory (zero-filled where `valid` is
// false, reading nothing), so a warp can fetch items ahead without holding registers for them.
template <int N>
__device__ __forceinline__ void copy_async(unsigned int to, const void* from, bool valid) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(to), "l"(from), "n"(N), "r"(valid ? N : 0)
                 : "memory");
#else
    if (N == 8) {
        const long long v = valid ? *reinterpret_cast<const long long*>(from) : 0;
        asm volatile("st.shared.s64 [%0], %1;" ::"r"(to), "l"(v) : "memory");
    } else {
        const unsigned int v = valid ? *reinterpret_cast<const unsigned int*>(from) : 0u;
        asm volatile("st.shared.b32 [%0], %1;" ::"r"(to), "r"(v) : "memory");
    }
#endif
}
__device__ __forceinline__ void commit_copies() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_older_copies() {  // all but the most recent group are done
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group 1;" ::: "memory");
#endif
}

// Table entries: one entry holds the outputs of a group of codes (a byte of 2-bit codes, a pair
// of 3- or 4-bit codes), looked up by the group's bits at once; wider codes are looked up one by
// one in the levels. Codes per entry at 2 and 4 bits are compile-time switches for
// bench/gpu_floors.py (fewer: more lookups, fewer shared-memory bank conflicts; measured equal).
#ifndef ICQ_CODES2
#define ICQ_CODES2 4  // codes per entry at 2 bits
#endif
#ifndef ICQ_CODES4
#define ICQ_CODES4 2  // codes per entry at 4 bits
#endif
template <int OUT, int BITS> struct Entry {
    static const int SIZE = (int)sizeof(typename Out<OUT>::T);
    static const int CODES = BITS == 2 ? ICQ_CODES2 : BITS == 4 ? ICQ_CODES4 : BITS < 4 ? 2 : 1;
    static const bool GROUPED = CODES > 1;
    static const int WORDS = CODES * SIZE / 4;
    static const int COUNT = GROUPED ? 1 << (CODES * BITS) : 0, BYTES = COUNT * WORDS * 4;
    // float16 entries of more than one word are built from pairs of levels ("units")
    static const int UNITS = SIZE == 2 && WORDS > 1 ? 1 << (2 * BITS) : 0;
};

// A warp's shared memory: the outlier patch of its item (one output per column), the entries, the
// pairs they are built from, the levels (inlier outputs, then inlier XOR outlier outputs), and two
// item slots filled ahead by asynchronous copies: each holds the item's [first, stop) gap symbols,
// its row's parameters, its code words and the words of its first 128 gap symbols.
template <int OUT, int BITS> struct Layout {
    typedef Entry<OUT, BITS> E;
    static const int PATCH = 0, ENTRIES = 1024 * E::SIZE, UNITS = ENTRIES + E::BYTES;
    static const int LEVELS = UNITS + 4 * E::UNITS, SLOTS = LEVELS + 8 * (1 << BITS);
    static const int CODE_WORDS = 32 * BITS, GAP_WORDS = 72;  // per slot: 4 gap_bits + 3 words at most
    static const int SLOT_STARTS = 0, SLOT_PARAMS = 16, SLOT_CODES = 32, SLOT_GAPS = SLOT_CODES + 4 * CODE_WORDS;
    static const int SLOT = SLOT_GAPS + 4 * GAP_WORDS, BYTES = SLOTS + 2 * SLOT;
};

// A lane's share of a 1024-column item: 16-byte output chunks k = 32 c + lane (EPC outputs, K code
// bits each), so every store instruction of the warp writes 512 contiguous bytes. The chunk's code
// bits start in word (k K) / 32 of the item, at a shift that depends on the lane only; when they
// may straddle a word boundary one more word is read.
template <int OUT, int BITS> struct Chunks {
    static const int SIZE = (int)sizeof(typename Out<OUT>::T), EPC = 16 / SIZE, K = EPC * BITS;
    static const int PER_LANE = 1024 / (32 * EPC);
    static const bool STRADDLE = K % 32 != 0 && 32 % K != 0;
    static const int KW = (K + 31) / 32, NW = STRADDLE ? KW + 1 : KW;  // words: of the bits, read
};

// Code `index` of an item's code words in shared memory (spec section 5).
template <int BITS>
__device__ __forceinline__ unsigned int code_at(unsigned int words_at, int index) {
    const int bit = index * BITS, shift = bit & 31;
    const unsigned int at = words_at + (bit >> 5) * 4;
    unsigned int v = lds32(at) >> shift;
    if (32 % BITS != 0 && shift + BITS > 32) v |= lds32(at + 4) << (32 - shift);
    return v & ((1u << BITS) - 1u);
}

#ifndef ICQ_MIN_BLOCKS
#define ICQ_MIN_BLOCKS 4
#endif
// Diagnostics only (bench/diagnostics/gpu_floors.py), off unless defined: ICQ_NO_STORES keeps the output stores out (a chunk is
// stored only for one unlikely value, so the decode is not optimized away); ICQ_NO_CHAIN skips the
// gap chains; ICQ_FETCH_TWO copies only a warp's first two items (no global reads after them, the
// slots keep their data); ICQ_FETCH_SAME copies the warp's first item again and again (the same
// copy instructions, served from L2 instead of DRAM).
#ifdef ICQ_NO_STORES
#define ICQ_STORE(to, v) do { const uint4 x_ = (v); if (x_.x == 0x9E3779B9u && x_.y == x_.z) __stcs((to), x_); } while (0)
#else
#define ICQ_STORE(to, v) __stcs((to), (v))
#endif
#ifdef ICQ_NO_CHAIN
#define ICQ_WALK_CHAINS false
#else
#define ICQ_WALK_CHAINS true
#endif
#ifdef ICQ_FETCH_TWO
#define ICQ_FETCH_MORE(fetched) ((fetched) < 2)
#else
#define ICQ_FETCH_MORE(fetched) true
#endif
#ifdef ICQ_FETCH_SAME
#define ICQ_ADVANCE(step) 0
#else
#define ICQ_ADVANCE(step) (step)
#endif

// One warp per (row, segment) item, for segments of 32 to 1024 columns (a multiple of 32), or for
// tensors without outliers cut into 1024-column pieces (CHAIN false). Each warp takes a contiguous
// run of items, so it rebuilds the row's tables only when the row changes, and it copies each
// item's code words, row parameters and first 128 gap symbols into shared memory two items ahead,
// so no item waits on a global load. Per item: the gap chain (spec section 8; a warp prefix sum of
// the advances of 64 symbols per round) writes, at each outlier, (inlier output XOR outlier
// output) of its code into the warp's patch; then each lane decodes its chunks by table lookup,
// XORs the patch in (clearing it for the next item) and stores them evict-first (the output is not
// read again here). Each item's status goes to status[item], written unconditionally (no buffer to
// zero): the outliers its chain placed, or minus the chain error (1: an outlier past the segment's
// end, 2: the chain ends with an escape). No division in the loop, no block-wide barrier, no atomics.
// The host passes the row geometry: the last segment's length, and how far the codes (in words)
// and the output (in elements) move from a row's last segment to the next row's first.
template <int OUT, int BITS, bool CHAIN>
__global__ void __launch_bounds__(256, ICQ_MIN_BLOCKS) segments(
        const unsigned int* __restrict__ codes, long long row_words, const unsigned short* __restrict__ params,
        int per_row, const float* __restrict__ book, const float* __restrict__ obook, int kind,
        const long long* __restrict__ starts, const unsigned int* __restrict__ gaps, long long gap_words,
        long long gap_bit_base, int gap_bits, long long rows, long long cols, int segment, int segments,
        int last_length, long long code_wrap, long long out_wrap, typename Out<OUT>::T* __restrict__ out,
        int* __restrict__ status) {
    typedef typename Out<OUT>::T T;
    typedef Entry<OUT, BITS> E;
    typedef Layout<OUT, BITS> M;
    typedef Chunks<OUT, BITS> C;
    const int SIZE = C::SIZE, EPC = C::EPC, K = C::K, NW = C::NW, LEVELS = 1 << BITS;
    extern __shared__ uint4 shared[];
    const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    char* const mine = reinterpret_cast<char*>(shared) + warp * M::BYTES;
    unsigned int* const levels = reinterpret_cast<unsigned int*>(mine + M::LEVELS);
    const unsigned int patch_at = shared_at(mine), entries_at = patch_at + M::ENTRIES;
    const unsigned int levels_at = patch_at + M::LEVELS, slots_at = patch_at + M::SLOTS;

    const long long items = rows * segments, all = (long long)gridDim.x * warps;
    const long long me = (long long)blockIdx.x * warps + warp, item = me * items / all;
    const int count = (int)((me + 1) * items / all - item);  // this warp's items (the host keeps it an int)
    if (count <= 0) return;
    const int segment_words = (segment >> 5) * BITS, last_words = (last_length * BITS + 31) >> 5;
    const long long r = item / segments;
    int s = (int)(item - r * segments);
    T* dst = out + r * cols + (long long)s * segment;
    int* item_status = status + item;

    // Copies for the next item to fetch (segment ahead_s, codes ahead_codes, row parameters
    // ahead_params, gap symbols from ahead_starts[0] = ahead_first on) into slot `slot`, one commit
    // group per item (empty past the warp's last item).
    int fetched = 0, ahead_s = s;
    const unsigned int* ahead_codes = codes + r * row_words + (long long)s * segment_words;
    const unsigned short* ahead_params = params + r * per_row;
    const long long* ahead_starts = starts + item;
    long long ahead_first = CHAIN ? ahead_starts[0] : 0;
    const int gap_count = 4 * gap_bits + 3;  // words of the first 128 symbols
    auto fetch = [&](int slot) {
        if (fetched < count && ICQ_FETCH_MORE(fetched)) {
            const unsigned int at = slots_at + slot * M::SLOT + lane * 4;
            const int words = ahead_s + 1 < segments ? segment_words : last_words;
#pragma unroll
            for (int k = 0; k < BITS; ++k) {
                const bool valid = k * 32 + lane < words;
                copy_async<4>(at + M::SLOT_CODES + k * 128, valid ? ahead_codes + k * 32 + lane : codes, valid);
            }
            // `at` is this lane's word of the slot, so lane 2's is the slot's start + 8
            if (lane == 2) copy_async<CHAIN ? 8 : 4>(at - 8 + M::SLOT_PARAMS, ahead_params, true);
            if constexpr (CHAIN) {
                if (lane < 2) copy_async<8>(at + lane * 4 + M::SLOT_STARTS, ahead_starts + lane, true);
                const long long word = (ahead_first * gap_bits - gap_bit_base) >> 5;
                // the words of the first 128 symbols that lie inside the gap section
                const int present = word + gap_count <= gap_words ? gap_count : (int)max(0LL, gap_words - word);
                const unsigned int* from = gaps + (present ? word : 0) + lane;
#pragma unroll
                for (int k = 0; k < 3; ++k) {
                    const bool valid = k * 32 + lane < present;
                    if (k * 32 + lane < gap_count)  // a copy writes its slot words even when zero-filling
                        copy_async<4>(at + M::SLOT_GAPS + k * 128, valid ? from + k * 32 : gaps, valid);
                }
                ahead_first = *(ahead_starts += ICQ_ADVANCE(1));  // read at the next fetch, an item later
            }
            ++fetched;
            ahead_codes += ICQ_ADVANCE(segment_words);
            if (ICQ_ADVANCE(1) && ++ahead_s == segments) {
                ahead_s = 0;
                ahead_codes += code_wrap;
                ahead_params += per_row;
            }
        }
        commit_copies();
    };
    fetch(0);
    fetch(1);
    if constexpr (CHAIN) {
#pragma unroll
        for (int c = 0; c < C::PER_LANE; ++c) sts128(patch_at + (c * 32 + lane) * 16, make_uint4(0, 0, 0, 0));
    }

    const int lane_word = (lane * K) >> 5, code_shift = (lane * K) & 31;  // of every chunk of this lane
    bool new_row = true;
    for (int done = 0, slot = 0;; slot ^= 1) {
        const unsigned int slot_at = slots_at + slot * M::SLOT, codes_at = slot_at + M::SLOT_CODES;
        const int length = s + 1 < segments ? segment : last_length;
        wait_older_copies();
        __syncwarp();  // every lane's copies into this slot are visible
        if (new_row) {
            const uint2 packed = lds64(slot_at + M::SLOT_PARAMS);
            const unsigned short p[4] = {(unsigned short)packed.x, (unsigned short)(packed.x >> 16),
                                         (unsigned short)packed.y, (unsigned short)(packed.y >> 16)};
            for (int idx = lane; idx < (CHAIN ? 2 : 1) * LEVELS; idx += 32) {
                const unsigned int q = idx & (LEVELS - 1);
                unsigned int v = level_bits<OUT>(q, false, BITS, kind, p, book, obook);
                if (idx >= LEVELS) v ^= level_bits<OUT>(q, true, BITS, kind, p, book, obook);
                levels[idx] = v;
            }
            __syncwarp();
            unsigned int* entries = reinterpret_cast<unsigned int*>(mine + M::ENTRIES);
            if constexpr (E::GROUPED && SIZE == 2) {
                unsigned int* pairs = E::UNITS ? reinterpret_cast<unsigned int*>(mine + M::UNITS) : entries;
                for (int idx = lane; idx < LEVELS * LEVELS; idx += 32)
                    pairs[idx] = levels[idx & (LEVELS - 1)] | levels[idx >> BITS] << 16;
                if constexpr (E::UNITS != 0) {
                    __syncwarp();
                    for (int idx = lane; idx < E::COUNT; idx += 32)
#pragma unroll
                        for (int k = 0; k < E::WORDS; ++k)
                            entries[idx * E::WORDS + k] = pairs[(idx >> (k * 2 * BITS)) & (E::UNITS - 1)];
                }
            } else if constexpr (E::GROUPED) {
                for (int idx = lane; idx < E::COUNT; idx += 32)
#pragma unroll
                    for (int k = 0; k < E::WORDS; ++k)
                        entries[idx * E::WORDS + k] = levels[(idx >> (k * BITS)) & (LEVELS - 1)];
            }
            __syncwarp();
        }

        if constexpr (CHAIN) {
            const long long first = lds_s64(slot_at + M::SLOT_STARTS), stop = lds_s64(slot_at + M::SLOT_STARTS + 8);
            const unsigned int escape = (1u << gap_bits) - 1u;
            // this lane's two symbols of a round start at bit `lane_bit` of the round's words
            const int lane_bit = (int)(((unsigned int)first * gap_bits - (unsigned int)gap_bit_base) & 31u) +
                                 2 * lane * gap_bits;
            const int lane_gap_word = lane_bit >> 5, gap_shift = lane_bit & 31;
            int carry = 0, escapes = 0, round = 0;
            bool over = false, last_escape = false;
            for (long long base = first; ICQ_WALK_CHAINS && base < stop; base += 64, ++round) {
                unsigned int g0, g1;  // 64 symbols are 2 gap_bits words
                if (round < 2) {  // in the slot
                    const unsigned int at = slot_at + M::SLOT_GAPS + (lane_gap_word + 2 * gap_bits * round) * 4;
                    g0 = lds32(at);
                    g1 = lds32(at + 4);
                } else {
                    const long long j = ((first * gap_bits - gap_bit_base) >> 5) + 2 * gap_bits * round + lane_gap_word;
                    g0 = j < gap_words ? gaps[j] : 0u;
                    g1 = j + 1 < gap_words ? gaps[j + 1] : 0u;
                }
                const int left = (int)min(stop - base, 64LL);
                const unsigned int two = __funnelshift_r(g0, g1, gap_shift);
                const unsigned int a = two & escape, b = (two >> gap_bits) & escape;
                const bool live_a = 2 * lane < left, live_b = 2 * lane + 1 < left;
                const int advance_a = !live_a ? 0 : (a == escape ? (int)escape : (int)a + 1);
                const int advance_b = !live_b ? 0 : (b == escape ? (int)escape : (int)b + 1);
                int scan = advance_a + advance_b;
#pragma unroll
                for (int d = 1; d < 32; d <<= 1) scan = scan_step(scan, d);  // prefix sum of the advances
                const int at_b = carry + scan - 1, at_a = at_b - advance_b;  // positions if outliers
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const bool outlier = h ? live_b && b != escape : live_a && a != escape;
                    const int at = h ? at_b : at_a;
                    if (outlier && at < length) {
                        const unsigned int q = code_at<BITS>(codes_at, at);
                        sts_out<T>(patch_at + at * SIZE, (T)lds32(levels_at + (LEVELS + q) * 4));
                    }
                    over |= outlier && at >= length;
                }
                escapes += (live_a && a == escape) + (live_b && b == escape);
                last_escape = (2 * lane + 1 == left && a == escape) || (2 * lane + 2 == left && b == escape);
                // a saturated cursor is past every segment: an int cannot overflow
                carry = min(carry + __shfl_sync(FULL, scan, 31), 1 << 22);
                if (__any_sync(FULL, over)) break;
            }
#if __CUDA_ARCH__ >= 800
            escapes = __reduce_add_sync(FULL, escapes);
#else
            for (int d = 16; d; d >>= 1) escapes += __shfl_xor_sync(FULL, escapes, d);
#endif
            const int code = __any_sync(FULL, over) ? 1 : (__any_sync(FULL, last_escape) ? 2 : 0);
            if (lane == 0) *item_status++ = code ? -code : (int)(stop - first) - escapes;
            __syncwarp();  // the patch is complete
        }

        // Inliers: this lane's chunks, patched where the chain placed outliers
        auto chunk = [&](int c) {
            unsigned int w[NW], bits[C::KW];
#pragma unroll
            for (int i = 0; i < NW; ++i) w[i] = lds32(codes_at + (c * K + lane_word + i) * 4);
#pragma unroll
            for (int i = 0; i < C::KW; ++i) {
                if constexpr (C::STRADDLE) bits[i] = __funnelshift_r(w[i], w[i + 1], code_shift);
                else if constexpr (K < 32) bits[i] = w[i] >> code_shift;
                else bits[i] = w[i];
            }
            unsigned int v[4];
            if constexpr (E::GROUPED) {
#pragma unroll
                for (int g = 0; g < EPC / E::CODES; ++g) {
                    const unsigned int key = bits_from(bits, g * E::CODES * BITS, E::CODES * BITS) & (E::COUNT - 1);
                    if constexpr (E::WORDS == 1) {
                        v[g] = lds32(entries_at + key * 4);
                    } else if constexpr (E::WORDS == 2) {
                        const uint2 x = lds64(entries_at + key * 8);
                        v[2 * g] = x.x;
                        v[2 * g + 1] = x.y;
                    } else {
                        const uint4 x = lds128(entries_at + key * 16);
                        v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
                    }
                }
            } else {
#pragma unroll
                for (int e = 0; e < EPC; ++e) {
                    const unsigned int u = lds32(levels_at + (bits_from(bits, e * BITS, BITS) & (LEVELS - 1)) * 4);
                    if (SIZE == 4) v[e] = u;
                    else if (e & 1) v[e / 2] |= u << 16;
                    else v[e / 2] = u;
                }
            }
            uint4 value = make_uint4(v[0], v[1], v[2], v[3]);
            if constexpr (CHAIN) {
                const unsigned int at = patch_at + (c * 32 + lane) * 16;
                const uint4 x = lds128(at);
                value.x ^= x.x; value.y ^= x.y; value.z ^= x.z; value.w ^= x.w;
                sts128(at, make_uint4(0, 0, 0, 0));
            }
            return value;
        };
        const bool vector = (reinterpret_cast<unsigned long long>(dst) & 15) == 0;
        if (vector && length == 1024) {
#pragma unroll
            for (int c = 0; c < C::PER_LANE; ++c) ICQ_STORE(reinterpret_cast<uint4*>(dst) + c * 32 + lane, chunk(c));
        } else {
#pragma unroll
            for (int c = 0; c < C::PER_LANE; ++c) {
                const int at = (c * 32 + lane) * EPC;
                if (at < length) {
                    const uint4 value = chunk(c);
                    if (vector && at + EPC <= length) {
                        __stcs(reinterpret_cast<uint4*>(dst + at), value);
                    } else {
                        const unsigned int v[4] = {value.x, value.y, value.z, value.w};
#pragma unroll
                        for (int e = 0; e < EPC; ++e)
                            if (at + e < length) dst[at + e] = (T)(v[e * SIZE / 4] >> (8 * (e * SIZE % 4)));
                    }
                }
            }
        }

        __syncwarp();  // the slot is read and the patch clear: fetch two items ahead into the slot
        fetch(slot);
        if (++done == count) break;
        dst += segment;
        new_row = ++s == segments;
        if (new_row) {
            s = 0;
            dst += out_wrap;
        }
    }
}

// Segments outside the warp kernel's range (16 columns, or over 1024): after the inliers are
// decoded, one thread per (row, segment) walks the gap chain and overwrites the outliers.
template <int OUT>
__global__ void outliers(const unsigned int* __restrict__ codes, long long row_words, int bits,
                         const unsigned short* __restrict__ params, const float* __restrict__ book,
                         const float* __restrict__ obook, int kind, const long long* __restrict__ starts,
                         const unsigned int* __restrict__ gaps, long long gap_words, long long gap_bit_base,
                         int gap_bits, long long rows, long long cols, long long segment, long long segments,
                         typename Out<OUT>::T* __restrict__ out, int* __restrict__ status) {
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
        if (p >= length) { status[t] = -1; return; }
        long long c = s * segment + p;
        unsigned int q = field(row, row_words, c * bits, bits);
        const unsigned short row_params[4] = {params[r * 4], params[r * 4 + 1], params[r * 4 + 2], params[r * 4 + 3]};
        out[r * cols + c] = level_bits<OUT>(q, true, bits, kind, row_params, book, obook);
        ++n;
        cursor = p + 1;
    }
    status[t] = stop > first && v == escape ? -2 : n;
}
