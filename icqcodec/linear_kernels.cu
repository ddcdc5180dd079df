// Kernels of icqcodec.linear: y = x @ L^T from an icq payload (spec sections 6.2, 7 and 8), and the
// levels L themselves, one warp per weight row. The payload's bytes are read as they are stored.
//
// A row's dot product is its inliers' sum over every column, each code taken as an inlier, plus,
// for each outlier of its gap chains, x times (outlier level - inlier level) of the same code: the
// codes are stored in place, so the first pass needs no mask. The chains are walked 32 symbols at
// a time with a warp prefix sum of the cursor advances. The host has checked the payload (the
// numba decoder) before upload, so every chain is valid; positions are still bounded to the row.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define MAX_ACTIVATION_ROWS 16

// The tensor's arguments, first in every kernel (CuPy passes scalars and pointers, not structs).
#define TENSOR_ARGS const unsigned char *body_, long long codebook_, long long params_, long long codes_, \
    long long gaps_, const long long *starts_, int rows_, int cols_, int bits_, int outliers_, int gap_bits_, \
    int segment_log2_, long long row_stride_
#define TENSOR {body_, codebook_, params_, codes_, gaps_, starts_, rows_, cols_, bits_, outliers_, gap_bits_, \
    segment_log2_, row_stride_}

struct Tensor {
    const unsigned char* body;
    long long codebook, params, codes, gaps;  // section starts within the body (codebook: -1 if none)
    const long long* starts;                   // rows * segments + 1 symbol starts (prefix of the counts)
    int rows, cols, bits, outliers, gap_bits, segment_log2;
    long long row_stride;                      // bytes per code row

    __device__ __forceinline__ int segments() const { return (cols + (1 << segment_log2) - 1) >> segment_log2; }
};

__device__ __forceinline__ unsigned field(const unsigned* words, long long position, int width) {
    long long w = position >> 5;
    int shift = (int)(position & 31);
    unsigned long long value = words[w];
    if (shift + width > 32) value |= (unsigned long long)words[w + 1] << 32;
    return (unsigned)((value >> shift) & ((1ull << width) - 1));
}

__device__ __forceinline__ float load(const void* x, long long i, int bf16) {
    return bf16 ? __bfloat162float(((const __nv_bfloat16*)x)[i]) : __half2float(((const __half*)x)[i]);
}

__device__ __forceinline__ void store(void* y, long long i, float v, int bf16) {
    if (bf16) ((__nv_bfloat16*)y)[i] = __float2bfloat16_rn(v);
    else ((__half*)y)[i] = __float2half_rn(v);
}

struct Row {  // one weight row's levels (spec section 7)
    float offset, scale, o_offset, o_scale;
    const float* book;  // shared: inlier entries then outlier entries; null for the uniform kind
    int bits;

    __device__ __forceinline__ float inlier(unsigned q) const {
        return fmaf(book ? book[q] : (float)q, scale, offset);  // the product is exact (spec 7)
    }
    __device__ __forceinline__ float outlier(unsigned q) const {
        unsigned m = q & ((1u << (bits - 1)) - 1);
        float magnitude = fmaf(book ? book[(1u << bits) + m] : (float)m, o_scale, o_offset);
        return (q >> (bits - 1)) ? -magnitude : magnitude;
    }
};

__device__ __forceinline__ Row row_levels(const Tensor& t, int n, const float* book) {
    const __half* p = (const __half*)(t.body + t.params) + (long long)n * (t.outliers ? 4 : 2);
    Row r;
    r.offset = __half2float(p[0]);
    r.scale = __half2float(p[1]);
    r.o_offset = t.outliers ? __half2float(p[2]) : 0.0f;
    r.o_scale = t.outliers ? __half2float(p[3]) : 0.0f;
    r.book = book;
    r.bits = t.bits;
    return r;
}

__device__ __forceinline__ const float* shared_book(const Tensor& t, float* book) {
    if (t.codebook < 0) return nullptr;
    int entries = (1 << t.bits) + (t.outliers ? (1 << (t.bits - 1)) : 0);
    const __half* stored = (const __half*)(t.body + t.codebook);
    for (int i = threadIdx.x; i < entries; i += blockDim.x) book[i] = __half2float(stored[i]);
    __syncthreads();
    return book;
}

// Calls visit(column, code) for every outlier of row n, from the lanes of one warp.
template <typename Visit>
__device__ __forceinline__ void outliers_of(const Tensor& t, int n, const unsigned* codes, Visit visit) {
    int lane = threadIdx.x & 31;
    const int segments = t.segments();
    const unsigned* gaps = (const unsigned*)(t.body + t.gaps);
    unsigned escape = (1u << t.gap_bits) - 1;
    for (int s = 0; s < segments; ++s) {
        long long first = t.starts[(long long)n * segments + s];
        long long count = t.starts[(long long)n * segments + s + 1] - first;
        long long cursor = (long long)s << t.segment_log2;
        for (long long i0 = 0; i0 < count; i0 += 32) {
            long long i = i0 + lane;
            unsigned v = i < count ? field(gaps, (first + i) * t.gap_bits, t.gap_bits) : 0;
            long long advance = i < count ? (v == escape ? (long long)escape : (long long)v + 1) : 0;
            long long total = advance;
            for (int d = 1; d < 32; d <<= 1) {
                long long other = __shfl_up_sync(0xffffffffu, total, d);
                if (lane >= d) total += other;
            }
            long long column = cursor + total - advance + v;
            if (i < count && v != escape && column < t.cols) visit((int)column, field(codes, (long long)column * t.bits, t.bits));
            cursor += __shfl_sync(0xffffffffu, total, 31);
        }
    }
}

// Activations are staged in shared memory a chunk of 1024 columns at a time, shared by the block's
// 8 rows. Lane l takes 32 consecutive columns of the chunk: their codes are exactly `bits` whole
// words, read in order; its activations sit 34 halves apart (32 plus 2 of padding), so the 32 lanes
// read 32 different banks.
#define CHUNK 1024
#define PITCH 34
#define X_ROW (CHUNK / 32 * PITCH)

__device__ __forceinline__ float from_bits(unsigned short u, int bf16) {
    return bf16 ? __uint_as_float((unsigned)u << 16) : __half2float(__ushort_as_half(u));
}

// y[m, n] = sum_k x[m, k] L[n, k] (+ bias[n]) for m < activations <= 16; 8 warps per block.
extern "C" __global__ void __launch_bounds__(256) icq_linear(TENSOR_ARGS, const void* x, long long x_stride,
                                                             int activations, int bf16, const void* bias, void* y) {
    const Tensor t = TENSOR;
    __shared__ float book_store[256 + 128];
    __shared__ unsigned short xs[MAX_ACTIVATION_ROWS * X_ROW];
    const float* book = shared_book(t, book_store);
    int n = blockIdx.x * 8 + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    bool active = n < t.rows;
    Row r = row_levels(t, active ? n : 0, book);
    const unsigned* codes = (const unsigned*)(t.body + t.codes + (long long)(active ? n : 0) * t.row_stride);
    const unsigned short* xbits = (const unsigned short*)x;
    unsigned mask = (1u << t.bits) - 1;
    float acc[MAX_ACTIVATION_ROWS];
#pragma unroll
    for (int m = 0; m < MAX_ACTIVATION_ROWS; ++m) acc[m] = 0.0f;
    for (int c0 = 0; c0 < t.cols; c0 += CHUNK) {
        int width = min(CHUNK, t.cols - c0);
        __syncthreads();  // every warp is done with the previous chunk
        for (int i = threadIdx.x; i < activations * CHUNK; i += blockDim.x) {
            int m = i / CHUNK, c = i % CHUNK;
            xs[m * X_ROW + (c >> 5) * PITCH + (c & 31)] = c < width ? xbits[m * x_stride + c0 + c] : 0;
        }
        __syncthreads();
        int first = c0 + lane * 32;
        if (!active || first >= t.cols) continue;
        const unsigned* words = codes + (long long)(first >> 5) * t.bits;
        int count = min(32, t.cols - first), next = 0, have = 0;
        unsigned long long buffer = 0;
        const unsigned short* mine = xs + lane * PITCH;
        for (int j = 0; j < count; ++j) {
            if (have < t.bits) {
                buffer |= (unsigned long long)words[next++] << have;
                have += 32;
            }
            float level = r.inlier((unsigned)buffer & mask);
            buffer >>= t.bits;
            have -= t.bits;
#pragma unroll
            for (int m = 0; m < MAX_ACTIVATION_ROWS; ++m)
                if (m < activations) acc[m] = fmaf(from_bits(mine[m * X_ROW + j], bf16), level, acc[m]);
        }
    }
    if (!active) return;
    if (t.outliers) {
        outliers_of(t, n, codes, [&](int column, unsigned q) {
            float difference = r.outlier(q) - r.inlier(q);
#pragma unroll
            for (int m = 0; m < MAX_ACTIVATION_ROWS; ++m)
                if (m < activations) acc[m] = fmaf(load(x, m * x_stride + column, bf16), difference, acc[m]);
        });
    }
#pragma unroll
    for (int m = 0; m < MAX_ACTIVATION_ROWS; ++m) {
        if (m >= activations) break;
        float v = acc[m];
        for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
        if (lane == 0) store(y, (long long)m * t.rows + n, bias ? v + load(bias, n, bf16) : v, bf16);
    }
}

// w[n, k] = L[n, k] in the activation dtype (the path for more than 16 rows of activations).
extern "C" __global__ void __launch_bounds__(256) icq_levels(TENSOR_ARGS, int bf16, void* w) {
    const Tensor t = TENSOR;
    __shared__ float book_store[256 + 128];
    const float* book = shared_book(t, book_store);
    int n = blockIdx.x * 8 + (threadIdx.x >> 5);
    if (n >= t.rows) return;
    Row r = row_levels(t, n, book);
    const unsigned* codes = (const unsigned*)(t.body + t.codes + (long long)n * t.row_stride);
    long long base = (long long)n * t.cols;
    for (int k = threadIdx.x & 31; k < t.cols; k += 32) store(w, base + k, r.inlier(field(codes, (long long)k * t.bits, t.bits)), bf16);
    if (t.outliers) {
        __syncwarp();  // the outliers overwrite inlier values this warp stored
        outliers_of(t, n, codes, [&](int column, unsigned q) { store(w, base + column, r.outlier(q), bf16); });
    }
}

// One row of activations (batch-1 generation). Each warp takes `rows_per_warp` weight rows; lane l
// takes 32 consecutive columns of every 1024, keeps their activations in registers for all its
// rows, and reads each row's codes there as exactly BITS whole words. With the levels
// offset + v(q) * scale (v(q) = q, or the codebook entry), a row's inlier sum is
// offset * sum(x) + scale * sum(x * v(q)), so the inner loop is one extraction, one conversion
// (q by the magic-number trick, exact: no integer-to-float instruction) and one FMA per weight.
#define MAX_ROWS_PER_WARP 4

// The code in `column` of a run of whole words that starts at column 0.
template <int BITS>
__device__ __forceinline__ unsigned code_at(const unsigned* w, int column) {
    const int position = column * BITS, word = position >> 5, shift = position & 31;
    unsigned q = w[word] >> shift;
    if (shift + BITS > 32) q |= w[word + 1] << (32 - shift);
    return q & ((1u << BITS) - 1);
}

template <int BITS>
__device__ __forceinline__ float code_value(const unsigned* w, int j, const float* book) {
    const unsigned q = code_at<BITS>(w, j);
    if (book) return book[q];
    return __uint_as_float(0x4B000000u | q) - 8388608.0f;  // 2^23 + q, exact, less 2^23
}

// Measured (bench/RESULTS.md): four FMA chains and the codebook test hoisted out of the loop
// (a kernel per kind) took more registers and ran slower than this.
template <int BITS>
__device__ __forceinline__ void gemv_inliers(const Tensor& t, const float* book, const unsigned short* x, int bf16,
                                             int n0, int count, float* acc, float& sx) {
    const int lane = threadIdx.x & 31;
    const bool vectors = (((unsigned long long)x) & 15) == 0;
    for (int c0 = 0; c0 < t.cols; c0 += 1024) {
        const int first = c0 + lane * 32;
        if (first >= t.cols) break;
        const int width = min(32, t.cols - first);
        unsigned short xb[32];
        if (width == 32 && vectors) {
#pragma unroll
            for (int i = 0; i < 4; ++i) *(uint4*)(xb + 8 * i) = ((const uint4*)(x + first))[i];
        } else {
#pragma unroll
            for (int j = 0; j < 32; ++j) xb[j] = j < width ? x[first + j] : 0;
        }
        float xv[32];
#pragma unroll
        for (int j = 0; j < 32; ++j) xv[j] = from_bits(xb[j], bf16);
#pragma unroll
        for (int j = 0; j < 32; ++j) sx += xv[j];
        const int words = (width * BITS + 31) >> 5;  // a partial chunk reads only the words it has
#pragma unroll
        for (int r = 0; r < MAX_ROWS_PER_WARP; ++r) {
            if (r >= count) break;
            const unsigned* row = (const unsigned*)(t.body + t.codes + (long long)(n0 + r) * t.row_stride) +
                                  (long long)(first >> 5) * BITS;
            unsigned w[BITS + 1];
#pragma unroll
            for (int i = 0; i < BITS; ++i) w[i] = i < words ? row[i] : 0u;
            w[BITS] = 0u;
            float a = 0.0f;
#pragma unroll
            for (int j = 0; j < 32; ++j) a = fmaf(xv[j], code_value<BITS>(w, j, book), a);
            acc[r] += a;
        }
    }
}

// y[n] = sum_k x[k] L[n, k] (+ bias[n]) for one row of activations; 8 warps per block.
extern "C" __global__ void __launch_bounds__(256) icq_gemv(TENSOR_ARGS, const void* x, int bf16, const void* bias,
                                                           void* y, int rows_per_warp) {
    const Tensor t = TENSOR;
    __shared__ float book_store[256 + 128];
    const float* book = shared_book(t, book_store);
    const int warp = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    const int n0 = warp * rows_per_warp;
    if (n0 >= t.rows) return;  // the whole warp: the chain walks below need every lane
    const int count = min(rows_per_warp, t.rows - n0);
    const unsigned short* xs = (const unsigned short*)x;
    float acc[MAX_ROWS_PER_WARP], sx = 0.0f;
#pragma unroll
    for (int r = 0; r < MAX_ROWS_PER_WARP; ++r) acc[r] = 0.0f;
#define GEMV_WIDTH(B) case B: gemv_inliers<B>(t, book, xs, bf16, n0, count, acc, sx); break;
    switch (t.bits) { GEMV_WIDTH(1) GEMV_WIDTH(2) GEMV_WIDTH(3) GEMV_WIDTH(4) GEMV_WIDTH(5) GEMV_WIDTH(6)
                      GEMV_WIDTH(7) GEMV_WIDTH(8) }
#undef GEMV_WIDTH
    for (int d = 16; d > 0; d >>= 1) sx += __shfl_xor_sync(0xffffffffu, sx, d);
#pragma unroll
    for (int r = 0; r < MAX_ROWS_PER_WARP; ++r) {
        if (r >= count) break;
        const int n = n0 + r;
        const Row levels = row_levels(t, n, book);
        float correction = 0.0f;
        if (t.outliers) {
            const unsigned* codes = (const unsigned*)(t.body + t.codes + (long long)n * t.row_stride);
            outliers_of(t, n, codes, [&](int column, unsigned q) {
                correction = fmaf(load(x, column, bf16), levels.outlier(q) - levels.inlier(q), correction);
            });
        }
        float v = acc[r], c = correction;
        for (int d = 16; d > 0; d >>= 1) {
            v += __shfl_down_sync(0xffffffffu, v, d);
            c += __shfl_down_sync(0xffffffffu, c, d);
        }
        if (lane == 0) {
            float out = fmaf(levels.offset, sx, fmaf(levels.scale, v, c));
            store(y, n, bias ? out + load(bias, n, bf16) : out, bf16);
        }
    }
}

// Tensor-core kernel for 1-16 rows of activations, uniform kind, 1-7 bits. A block takes 15 weight
// rows and a 16th row of ones, whose product is the activations' sum; its 8 warps split the
// columns, 128 at a time. Lane (g, t) of a warp (g = lane / 4, t = lane % 4) reads columns
// 32t..32t+31 of every 128: the `BITS` whole code words of rows g and g + 8 and, when g is an
// activation row, those 32 activations. Codes become bfloat16 (or float16) pairs by the magic
// number (128 + q, or 1024 + q, exact) less the magic, two codes per instruction; which two columns
// form a pair is fixed by where the codes sit in their word, and the activations are permuted into
// the same pairs (one byte permute a register) instead of the codes being moved. The mma's
// float32 sums give each row's sum(x v(q)), and the level offset + scale v(q) is applied after
// (spec section 7). A warp has the codes of several steps in flight (Depth). The outliers are then
// walked by the block's threads, 16 per row (row_corrections), from the tile's segment starts, gap
// symbols and outlier codes copied to shared memory while the inliers run, and summed in a fixed
// order, so every call gives the same bits.
#define MMA_ROWS 15
#define MMA_WARPS 8

template <int BF16>
__device__ __forceinline__ void mma_16816(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                          unsigned b1) {
    if (BF16)
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The columns (within a lane's 32) of code pair p: for a width dividing 16, the two codes 16 bits
// apart in one word; otherwise columns p and p + 16.
template <int BITS>
struct Pairs {
    static constexpr bool in_word = 16 % BITS == 0;
    static constexpr int per_word = in_word ? 16 / BITS : 1;
    __device__ static constexpr int low(int p) { return in_word ? (p / per_word) * (32 / BITS) + p % per_word : p; }
    __device__ static constexpr int high(int p) { return in_word ? low(p) + 16 / BITS : p + 16; }
};

// Pair p of a lane's codes as two 16-bit floats (the low column in the low half), exactly q.
template <int BITS, int BF16>
__device__ __forceinline__ unsigned code_pair(const unsigned* w, int p) {
    constexpr unsigned magic = BF16 ? 0x43004300u : 0x64006400u, mask = (1u << BITS) - 1;
    unsigned bits;
    if (Pairs<BITS>::in_word) {
        const int low = Pairs<BITS>::low(p);
        bits = ((w[low * BITS >> 5] >> ((low * BITS) & 31)) & (mask | mask << 16)) | magic;
    } else {
        bits = code_at<BITS>(w, Pairs<BITS>::low(p)) | code_at<BITS>(w, Pairs<BITS>::high(p)) << 16 | magic;
    }
    if (BF16) {
        __nv_bfloat162 v = __hsub2(*(__nv_bfloat162*)&bits, *(const __nv_bfloat162*)&magic);
        return *(unsigned*)&v;
    }
    __half2 v = __hsub2(*(__half2*)&bits, *(const __half2*)&magic);
    return *(unsigned*)&v;
}

// Pair p of a lane's 32 activations (xw[k] holds columns 2k and 2k + 1).
template <int BITS>
__device__ __forceinline__ unsigned activation_pair(const unsigned* xw, int p) {
    const int low = Pairs<BITS>::low(p), high = Pairs<BITS>::high(p);
    return __byte_perm(xw[low >> 1], xw[high >> 1], (low & 1 ? 0x32 : 0x10) | (high & 1 ? 0x7600 : 0x5400));
}

template <int BITS>
__device__ __forceinline__ void load_codes(const unsigned* row, int available, unsigned* w) {
    const bool whole = available >= BITS;
    if (BITS == 4 && whole && (((unsigned long long)row) & 15) == 0) {
        const uint4 v = *(const uint4*)row;
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
    } else if (BITS == 2 && whole && (((unsigned long long)row) & 7) == 0) {
        const uint2 v = *(const uint2*)row;
        w[0] = v.x, w[1] = v.y;
    } else {
#pragma unroll
        for (int i = 0; i < BITS; ++i) w[i] = i < available ? row[i] : 0u;
    }
}

__device__ __forceinline__ void load_activations(const unsigned short* x, int available, bool vectors, unsigned* xw) {
    if (vectors && available >= 32) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint4 v = ((const uint4*)x)[i];
            xw[4 * i] = v.x, xw[4 * i + 1] = v.y, xw[4 * i + 2] = v.z, xw[4 * i + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int k = 0; k < 16; ++k)
            xw[k] = (2 * k < available ? x[2 * k] : 0u) | (2 * k + 1 < available ? (unsigned)x[2 * k + 1] << 16 : 0u);
    }
}

// Reads a run of fixed-width fields (spec section 5) one after another, from bit `position` of `w`.
struct FieldReader {
    const unsigned* words;
    long long word;
    unsigned long long buffer;
    int have, bits;

    __device__ __forceinline__ FieldReader(const unsigned* w, long long position, int width, bool any)
        : words(w), bits(width) {
        word = position >> 5;
        have = 32 - (int)(position & 31);
        buffer = any ? words[word] >> (position & 31) : 0;
    }
    __device__ __forceinline__ unsigned next() {
        if (have < bits) {
            buffer |= (unsigned long long)words[++word] << have;
            have += 32;
        }
        const unsigned v = (unsigned)buffer & ((1u << bits) - 1);
        buffer >>= bits;
        have -= bits;
        return v;
    }
};

// A run of a section's words, copied to shared memory when it fits there: fields are read from
// `words` at their stream bit less `first_bit`.
struct Staged {
    const unsigned* words;
    long long first_bit;
};

// An asynchronous copy of one 4- or 8-byte value from global to shared memory.
template <typename T>
__device__ __forceinline__ void copy_async(T* to, const T* from) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "cp.async copies 4, 8 or 16 bytes");
    if (sizeof(T) == 4)
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"((unsigned)__cvta_generic_to_shared(to)), "l"(from));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"((unsigned)__cvta_generic_to_shared(to)), "l"(from));
}

// Starts copying the words that hold stream bits [begin, end) of `words` to `store` (room for
// `room` words); the copy is complete after cp.async.wait_all and a barrier.
__device__ __forceinline__ Staged stage(const unsigned* words, long long begin, long long end, unsigned* store,
                                        int room) {
    const long long w0 = begin >> 5, w1 = (end + 31) >> 5;
    if (w1 - w0 > room) return {words, 0};
    for (long long i = threadIdx.x; i < w1 - w0; i += blockDim.x) copy_async(store + i, words + w0 + i);
    return {store, w0 << 5};
}

// The tensor-core kernel's tunables, each defined here unless the compiler's options define it
// (bench/mma_stages.py --variant NAME=VALUE times other values).
#ifndef OUTLIER_BATCH
#define OUTLIER_BATCH 8  // outliers whose loads the walk has in flight together
#endif
#ifdef MMA_MIN_BLOCKS  // blocks a multiprocessor the registers are budgeted for
#define MMA_LAUNCH_BOUNDS __launch_bounds__(256, MMA_MIN_BLOCKS)
#else
#define MMA_LAUNCH_BOUNDS __launch_bounds__(256)
#endif
#define ROW_THREADS 16

// Row n's outlier corrections x[m, column] (outlier level - inlier level), by the 16 threads of a
// half-warp: thread j walks the j-th sixteenth of the row's gap symbols, its first column found by
// a scan of the advances over the half-warp that restarts at every chain (a row segment, spec
// section 8); each adds its corrections to c[m] in symbol order. `codes`: the symbols' codes in
// chain order (0 for escapes), or null to read them from the rows' codes; `st`: the row's segment
// starts (t.starts from row n on, or their copy in shared memory). Every lane of the warp calls it;
// `active` is false for a row past the tile.
template <int MAXM>
__device__ __forceinline__ void row_corrections(const Tensor& t, int n, bool active, int j, const long long* st,
                                                Staged gaps, Staged codes, const unsigned short* x,
                                                long long x_stride, int activations, int bf16, float* c) {
    const int segments = t.segments();
    const long long first = st[0], count = active ? st[segments] - first : 0;
    const long long a = first + count * j / ROW_THREADS, b = first + count * (j + 1) / ROW_THREADS;
    int lo = 0, hi = segments - 1;  // the chain of symbol a: the last segment that starts at or before it
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (st[mid] <= a) lo = mid;
        else hi = mid - 1;
    }
    const int s0 = lo;
    const bool chain_start = a < b && a == st[s0];
    const unsigned escape = (1u << t.gap_bits) - 1;
    bool reset = chain_start;
    int advance = 0;  // of the symbols of [a, b) since the last chain start among them
    {
        int s = s0;
        long long next = st[s + 1];
        FieldReader symbols(gaps.words, a * t.gap_bits - gaps.first_bit, t.gap_bits, a < b);
        for (long long i = a; i < b; ++i) {
            while (i == next) {
                next = st[++s + 1];
                reset = true;
                advance = 0;
            }
            const unsigned v = symbols.next();
            advance += v == escape ? (int)escape : (int)v + 1;
        }
    }
    for (int d = 1; d < ROW_THREADS; d <<= 1) {
        const int before = __shfl_up_sync(0xffffffffu, advance, d, ROW_THREADS);
        const int restarted = __shfl_up_sync(0xffffffffu, (int)reset, d, ROW_THREADS);
        if (j >= d && !reset) {
            advance += before;
            reset = restarted;
        }
    }
    int cursor = __shfl_up_sync(0xffffffffu, advance, 1, ROW_THREADS);
    if (j == 0 || chain_start) cursor = 0;
    if (a >= b) return;
    const unsigned* row = (const unsigned*)(t.body + t.codes + (long long)n * t.row_stride);
    const Row levels = row_levels(t, n, nullptr);
    int s = s0;
    long long next = st[s + 1], base = (long long)s0 << t.segment_log2;
    FieldReader symbols(gaps.words, a * t.gap_bits - gaps.first_bit, t.gap_bits, true);
    FieldReader stored(codes.words, a * t.bits - codes.first_bit, t.bits, codes.words != nullptr);
    long long i = a;
    while (i < b) {
        int column[OUTLIER_BATCH];
        unsigned q[OUTLIER_BATCH];
#pragma unroll
        for (int k = 0; k < OUTLIER_BATCH; ++k) {
            column[k] = -1;
            q[k] = 0;
            while (i < b) {
                while (i == next) {
                    next = st[++s + 1];
                    cursor = 0;
                    base = (long long)s << t.segment_log2;
                }
                const unsigned v = symbols.next(), code = codes.words ? stored.next() : 0u;
                ++i;
                if (v == escape) {
                    cursor += (int)escape;
                    continue;
                }
                if (base + cursor + v < t.cols) {
                    column[k] = (int)(base + cursor + v);
                    q[k] = code;
                }
                cursor += (int)v + 1;
                break;
            }
        }
        float difference[OUTLIER_BATCH];
#pragma unroll
        for (int k = 0; k < OUTLIER_BATCH; ++k) {
            const int at = max(column[k], 0);
            const unsigned code = codes.words ? q[k] : field(row, (long long)at * t.bits, t.bits);
            difference[k] = column[k] < 0 ? 0.0f : levels.outlier(code) - levels.inlier(code);
        }
#pragma unroll
        for (int m = 0; m < MAXM; ++m) {
            if (m >= activations) break;
            float xm[OUTLIER_BATCH];
#pragma unroll
            for (int k = 0; k < OUTLIER_BATCH; ++k)
                xm[k] = column[k] < 0 ? 0.0f : from_bits(x[m * x_stride + max(column[k], 0)], bf16);
#pragma unroll
            for (int k = 0; k < OUTLIER_BATCH; ++k) c[m] = fmaf(xm[k], difference[k], c[m]);
        }
    }
}

// Steps of 128 columns whose codes one warp has in flight together: the inlier pass is bound by
// memory latency, so as many as the registers allow.
template <int BITS>
struct Depth {
#ifdef MMA_DEPTH
    static constexpr int steps = MMA_DEPTH;
#else
    static constexpr int steps = BITS <= 2 ? 8 : BITS <= 4 ? 4 : 2;
#endif
};

#define GAP_STAGE_WORDS 4096
#define CODE_STAGE_WORDS 2048
#define START_STAGE 512

// The outlier side of a tile of MMA_ROWS rows from row n0, as the outlier pass reads it: its rows'
// segment starts, gap symbols and (where `symbol_codes` is given) their codes, each copied to
// shared memory when it fits there (the walk then waits on no global load but its activations').
struct OutlierStore {
    long long starts[START_STAGE];
    unsigned gaps[GAP_STAGE_WORDS], codes[CODE_STAGE_WORDS];
};

struct TileOutliers {
    const long long* starts;  // of row n0 on
    Staged gaps, codes;
};

// Starts the copies to `store`; they are complete after cp.async.wait_all and a barrier.
__device__ __forceinline__ TileOutliers stage_outliers(const Tensor& t, int n0, const unsigned* symbol_codes,
                                                       OutlierStore& store) {
    const int segments = t.segments();
    const long long* starts = t.starts + (long long)n0 * segments;
    const int entries = min(MMA_ROWS, t.rows - n0) * segments + 1;
    TileOutliers tile = {starts, {nullptr, 0}, {nullptr, 0}};
    if (entries <= START_STAGE) {
        for (int i = threadIdx.x; i < entries; i += blockDim.x) copy_async(store.starts + i, starts + i);
        tile.starts = store.starts;
    }
    const long long begin = starts[0], end = starts[entries - 1];
    tile.gaps = stage((const unsigned*)(t.body + t.gaps), begin * t.gap_bits, end * t.gap_bits, store.gaps,
                      GAP_STAGE_WORDS);
    if (symbol_codes) tile.codes = stage(symbol_codes, begin * t.bits, end * t.bits, store.codes, CODE_STAGE_WORDS);
    asm volatile("cp.async.commit_group;\n" ::);
    return tile;
}

template <int BITS, int BF16, int TILES>
__global__ void MMA_LAUNCH_BOUNDS icq_mma(TENSOR_ARGS, const void* x, long long x_stride, int activations,
                                               const unsigned* symbol_codes, const void* bias, void* y) {
    constexpr int MAXM = 8 * TILES, DEPTH = Depth<BITS>::steps;
    const Tensor t = TENSOR;
    __shared__ float partial[MMA_WARPS][16][MAXM];
    __shared__ OutlierStore outlier_store;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q4 = lane & 3;
    const int n0 = blockIdx.x * MMA_ROWS;
    TileOutliers tile = {nullptr, {nullptr, 0}, {nullptr, 0}};  // to shared memory while the inliers run
    if (t.outliers) tile = stage_outliers(t, n0, symbol_codes, outlier_store);
    const int ra = min(n0 + g, t.rows - 1), rb = min(n0 + g + 8, t.rows - 1);
    const bool ones = g == 7;  // row 15 of the tile: the activations' sums
    const unsigned* row_a = (const unsigned*)(t.body + t.codes + (long long)ra * t.row_stride);
    const unsigned* row_b = (const unsigned*)(t.body + t.codes + (long long)rb * t.row_stride);
    const unsigned short* xs = (const unsigned short*)x;
    const bool vectors = (((unsigned long long)x) & 15) == 0 && (x_stride & 7) == 0;
    const int row_words = (int)(((long long)t.cols * BITS + 31) >> 5);
    const int steps = (t.cols + 127) >> 7, s0 = steps * warp / MMA_WARPS, s1 = steps * (warp + 1) / MMA_WARPS;
    constexpr unsigned one = BF16 ? 0x3F803F80u : 0x3C003C00u;
    float c[TILES][4];
#pragma unroll
    for (int tile = 0; tile < TILES; ++tile) c[tile][0] = c[tile][1] = c[tile][2] = c[tile][3] = 0.0f;
    for (int step0 = s0; step0 < s1; step0 += DEPTH) {
        unsigned wa[DEPTH][BITS + 1], wb[DEPTH][BITS + 1];
#pragma unroll
        for (int d = 0; d < DEPTH; ++d) {
            const int w0 = ((step0 + d) * 4 + q4) * BITS, available = step0 + d < s1 ? row_words - w0 : 0;
            load_codes<BITS>(row_a + w0, available, wa[d]);
            load_codes<BITS>(row_b + w0, available, wb[d]);
            wa[d][BITS] = wb[d][BITS] = 0u;
        }
#pragma unroll
        for (int d = 0; d < DEPTH; ++d) {
            if (step0 + d >= s1) break;
            const int column = (step0 + d) * 128 + q4 * 32;
            unsigned xw[TILES][16];
#pragma unroll
            for (int tile = 0; tile < TILES; ++tile) {
                const int m = g + 8 * tile;
                if (m < activations)
                    load_activations(xs + m * x_stride + column, t.cols - column, vectors, xw[tile]);
                else {
#pragma unroll
                    for (int k = 0; k < 16; ++k) xw[tile][k] = 0u;
                }
            }
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const unsigned a0 = code_pair<BITS, BF16>(wa[d], 2 * i), a2 = code_pair<BITS, BF16>(wa[d], 2 * i + 1);
                const unsigned a1 = ones ? one : code_pair<BITS, BF16>(wb[d], 2 * i);
                const unsigned a3 = ones ? one : code_pair<BITS, BF16>(wb[d], 2 * i + 1);
#pragma unroll
                for (int tile = 0; tile < TILES; ++tile)
                    mma_16816<BF16>(c[tile], a0, a1, a2, a3, activation_pair<BITS>(xw[tile], 2 * i),
                                    activation_pair<BITS>(xw[tile], 2 * i + 1));
            }
        }
    }
    // This warp's share of y: offset * sum(x) + scale * sum(x v(q)) for rows g and g + 8, activation
    // rows 2t, 2t + 1 (+ 8 in the second tile); the sums sit in lane (7, t)'s second row.
    const Row la = row_levels(t, ra, nullptr), lb = row_levels(t, rb, nullptr);
#pragma unroll
    for (int tile = 0; tile < TILES; ++tile) {
        const float sum0 = __shfl_sync(0xffffffffu, c[tile][2], 28 + q4);
        const float sum1 = __shfl_sync(0xffffffffu, c[tile][3], 28 + q4);
        const int m = 8 * tile + 2 * q4;
        partial[warp][g][m] = fmaf(la.offset, sum0, la.scale * c[tile][0]);
        partial[warp][g][m + 1] = fmaf(la.offset, sum1, la.scale * c[tile][1]);
        if (!ones) {
            partial[warp][g + 8][m] = fmaf(lb.offset, sum0, lb.scale * c[tile][2]);
            partial[warp][g + 8][m + 1] = fmaf(lb.offset, sum1, lb.scale * c[tile][3]);
        }
    }
    // Outliers: the 16 threads (r, j) of a half-warp take row n0 + r.
    const int r = threadIdx.x / ROW_THREADS, j = threadIdx.x % ROW_THREADS;
    const bool active = r < MMA_ROWS && n0 + r < t.rows;
    float correction[MAXM];
#pragma unroll
    for (int m = 0; m < MAXM; ++m) correction[m] = 0.0f;
    if (t.outliers) {
        asm volatile("cp.async.wait_all;\n" ::);
        __syncthreads();
        row_corrections<MAXM>(t, active ? n0 + r : n0, active, j, tile.starts + (active ? r : 0) * t.segments(),
                              tile.gaps, tile.codes, xs, x_stride, activations, BF16, correction);
    }
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
        if (m >= activations) break;
        float v = correction[m];
        for (int d = ROW_THREADS / 2; d > 0; d >>= 1) v += __shfl_xor_sync(0xffffffffu, v, d);
        correction[m] = v;
    }
    __syncthreads();
    if (j < activations && active) {
        float v = correction[0];
#pragma unroll
        for (int m = 1; m < MAXM; ++m)
            if (m == j) v = correction[m];
#pragma unroll
        for (int w = 0; w < MMA_WARPS; ++w) v += partial[w][r][j];
        const int n = n0 + r;
        store(y, (long long)j * t.rows + n, bias ? v + load(bias, n, BF16) : v, BF16);
    }
}
