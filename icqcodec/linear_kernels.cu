// Kernels of icqcodec.linear: y = x @ L^T from an icq payload (spec sections 6.2 and 7) and its
// outlier index, and the levels L themselves. The payload's bytes are read as they are stored.
//
// A row's dot product is its inliers' sum over every column, each code taken as an inlier, plus,
// for each outlier, x times (outlier level - inlier level) of the same code: the codes are stored
// in place, so the first pass needs no mask. The outliers' columns come from the load-time outlier
// index (icqcodec.linear.OutlierIndex), built on the host from the gap chains (spec section 8)
// after the payload has passed the whole decode: for every row its outliers' columns in order, each
// as a byte within its group of 256 columns, and where each group's outliers start.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define MAX_ACTIVATION_ROWS 16
#define GROUP_LOG2 8  // the outlier index's groups of columns (GROUP_LOG2 in icqcodec.linear)

// The tensor's arguments, first in every kernel (CuPy passes scalars and pointers, not structs).
#define TENSOR_ARGS const unsigned char *body_, long long codebook_, long long params_, long long codes_, \
    const unsigned char *index_, long long groups_, int rows_, int cols_, int bits_, int outliers_, \
    int group_bytes_, long long row_stride_
#define TENSOR {body_, codebook_, params_, codes_, index_, groups_, rows_, cols_, bits_, outliers_, group_bytes_, \
    row_stride_}

// A run of rows' outlier index, in global memory or copied to shared memory: row n's outliers are
// entries 0 to outliers - 1, those of column group k from start(n, k) on.
struct IndexView {
    const unsigned char* offsets;  // of row `first` on, `outliers` a row: each column less its group's first
    const unsigned char* groups;   // of row `first` on, `per_row` a row: start(n, k) for k = 1 .. per_row
                                   // (group_bytes 1, 2 or 4 each)
    int first, outliers, per_row, group_bytes;

    __device__ __forceinline__ int start(int n, int k) const {
        if (k <= 0) return 0;
        if (k > per_row) return outliers;
        const long long i = (long long)(n - first) * per_row + k - 1;
        if (group_bytes == 1) return groups[i];
        return group_bytes == 2 ? ((const unsigned short*)groups)[i] : (int)((const unsigned*)groups)[i];
    }
    __device__ __forceinline__ int column(int n, int k, int e) const {
        return (k << GROUP_LOG2) | offsets[(long long)(n - first) * outliers + e];
    }
};

struct Tensor {
    const unsigned char* body;
    long long codebook, params, codes;  // section starts within the body (codebook: -1 if none)
    const unsigned char* index;         // the outlier index: offsets, then its group starts at byte `groups`
    long long groups;
    int rows, cols, bits, outliers, group_bytes;
    long long row_stride;               // bytes per code row

    __device__ __forceinline__ int column_groups() const { return (cols + (1 << GROUP_LOG2) - 1) >> GROUP_LOG2; }
    __device__ __forceinline__ IndexView index_view() const {
        return {index, index + groups, 0, outliers, column_groups() - 1, group_bytes};
    }
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

// Calls visit(column) for the outliers of row n in column groups k0 to k1 - 1 that thread `lane`
// of `stride` takes: every stride-th, in column order.
template <typename Visit>
__device__ __forceinline__ void outliers_in(const IndexView& index, int n, int k0, int k1, int lane, int stride,
                                            Visit visit) {
    const int end = index.start(n, k1);
    int k = k0, next = index.start(n, k0 + 1);
    for (int e = index.start(n, k0) + lane; e < end; e += stride) {
        while (e >= next) next = index.start(n, ++k + 1);
        visit(index.column(n, k, e));
    }
}

// Calls visit(column, code) for every outlier of row n, from the lanes of one warp.
template <typename Visit>
__device__ __forceinline__ void outliers_of(const Tensor& t, int n, const unsigned* codes, Visit visit) {
    outliers_in(t.index_view(), n, 0, t.column_groups(), threadIdx.x & 31, 32,
                [&](int column) { visit(column, field(codes, (long long)column * t.bits, t.bits)); });
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

// Tensor-core kernel for 1-16 rows of activations, uniform kind, 1-7 bits. A warp takes a tile of
// 15 weight rows and a 16th, the ones row, whose product is the activations' sum, over a range of
// whole column groups: one warp the whole row on a tall matrix, up to 8 warps splitting it on a
// short one (`splits`, from icqcodec.linear.mma_splits), so that every shape fills the GPU in about
// one wave. It steps 128 columns at a time, with the codes of the next steps in flight (Depth) and
// the activations of the next one. Lane (g, t) of a warp (g = lane / 4, t = lane % 4) reads
// columns 32t..32t+31 of every 128: the `BITS` whole code words of rows g and g + 8 and those 32
// activations of row g (or the last). Codes become bfloat16 (or float16) pairs by the magic number
// (128 + q, or 1024 + q, exact), one instruction a pair (Pairs: which two columns, and one shift
// for several pairs); the activations are permuted into the same pairs (one byte permute a
// register) instead of the codes being moved. The mma's float32 sums give each row's sum(x v(q)),
// and the level offset + scale v(q) is applied after (spec section 7). The block's outlier index is
// copied to shared memory while the inliers run; then each warp adds its own range's outlier
// corrections, 16 lanes a row, and the block sums the warps of a tile in a fixed order, so every
// call gives the same bits.
#define MMA_ROWS 15
#define MMA_WARPS 8
#define MMA_STEP 128  // columns a warp takes per step: two steps a column group

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

// The 16 code pairs of a lane's 32 columns in a step, in the order the mma's take them. For a width
// dividing 16 a pair is two codes 16 bits apart in one word (columns c and c + 16 / BITS of the
// word's); one shift of the word then serves the `window` pairs whose codes lie in the 16-bit
// float's mantissa together, each at its own power of two 2^(BITS u) (u: its place in the window,
// the pair's set). Pairs are ordered by set, so that each mma takes pairs of one set and sums them
// in that set's accumulators, scaled back once at the end. Other widths pair columns k and k + 16,
// one set.
template <int BITS>
struct Pairs {
    static constexpr bool in_word = 16 % BITS == 0;
    static constexpr int half = in_word ? 16 / BITS : 16;                          // pairs a word
    static constexpr int window = !in_word ? 1 : BITS == 1 ? 2 : BITS == 2 ? 3 : 1;  // codes in 7 mantissa bits
    static constexpr int sets = window;
    static constexpr int words = in_word ? BITS : 1;  // words a row a lane a step

    // Pair k as its word times `half` plus its place in the word.
    __host__ __device__ static constexpr int slot(int k) {
        int n = 0;
        for (int u = 0; u < window; ++u)
            for (int i = 0; i < words; ++i)
                for (int c = u; c < half; c += window)
                    if (n++ == k) return i * half + c;
        return -1;
    }
    __host__ __device__ static constexpr int word(int k) { return in_word ? slot(k) / half : 0; }
    __host__ __device__ static constexpr int set(int k) { return in_word ? slot(k) % half % window : 0; }
    __host__ __device__ static constexpr int shift(int k) { return BITS * window * (slot(k) % half / window); }
    __host__ __device__ static constexpr int low(int k) {
        return in_word ? word(k) * 2 * half + slot(k) % half : k;
    }
    __host__ __device__ static constexpr int high(int k) { return low(k) + half; }
    // Every mma's two pairs of a row are of one set.
    __host__ __device__ static constexpr bool sets_even() {
        for (int k = 0; k < 16; k += 2)
            if (set(k) != set(k + 1)) return false;
        return true;
    }
    static_assert(sets_even(), "an mma takes two pairs of one set");
};

// The 16-bit float whose mantissa's low bits are those of a word: 2^7 (bfloat16) or 2^10 (float16).
template <int BF16>
struct Magic {
    static constexpr unsigned pair = BF16 ? 0x43004300u : 0x64006400u;
    static constexpr float value = BF16 ? 128.0f : 1024.0f;
};

// Whether the magic stays in the products: in bfloat16 the mma's float32 sums lose about 2e-5 of
// a row's sum to it (bench/RESULTS.md), and the ones row, then codes 0, takes it out once; in
// float16 its 2^10 would cost about a third of the output's rounding, so each pair is less the magic.
template <int BF16>
struct Fold {
    static constexpr bool magic = BF16 != 0;
};

// (a & mask) | bits in one instruction (the compiler splits it in two where both are constants).
__device__ __forceinline__ unsigned masked_or(unsigned a, unsigned mask, unsigned bits) {
    unsigned r;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(a), "r"(mask), "r"(bits));
    return r;
}

// Pair k of a lane's codes as two 16-bit floats (the low column in the low half): q 2^(BITS set),
// plus the magic where it is folded.
template <int BITS, int BF16>
__device__ __forceinline__ unsigned code_pair(const unsigned* w, int k) {
    using P = Pairs<BITS>;
    constexpr unsigned magic = Magic<BF16>::pair, mask = (1u << BITS) - 1;
    unsigned bits;
    if (P::in_word) {
        const int place = BITS * P::set(k);
        bits = masked_or(w[P::word(k)] >> P::shift(k), mask << place | mask << (16 + place), magic);
    } else {
        bits = code_at<BITS>(w, P::low(k)) | code_at<BITS>(w, P::high(k)) << 16 | magic;
    }
    if (Fold<BF16>::magic) return bits;
    if (BF16) {
        __nv_bfloat162 v = __hsub2(*(__nv_bfloat162*)&bits, *(const __nv_bfloat162*)&magic);
        return *(unsigned*)&v;
    }
    __half2 v = __hsub2(*(__half2*)&bits, *(const __half2*)&magic);
    return *(unsigned*)&v;
}

// Pair k of a lane's 32 activations (xw[i] holds columns 2i and 2i + 1).
template <int BITS>
__device__ __forceinline__ unsigned activation_pair(const unsigned* xw, int k) {
    const int low = Pairs<BITS>::low(k), high = Pairs<BITS>::high(k);
    return __byte_perm(xw[low >> 1], xw[high >> 1], (low & 1 ? 0x32 : 0x10) | (high & 1 ? 0x7600 : 0x5400));
}

// A lane's whole code words of a step (16-byte aligned rows) and its 32 activations (16-byte aligned).
template <int BITS>
__device__ __forceinline__ void whole_codes(const unsigned* row, unsigned* w) {
    if (BITS == 4) {
        const uint4 v = *(const uint4*)row;
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
    } else if (BITS == 2) {
        const uint2 v = *(const uint2*)row;
        w[0] = v.x, w[1] = v.y;
    } else {
#pragma unroll
        for (int i = 0; i < BITS; ++i) w[i] = row[i];
        if (!Pairs<BITS>::in_word) w[BITS] = 0u;
    }
}

__device__ __forceinline__ void whole_activations(const unsigned short* x, unsigned* xw) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint4 v = ((const uint4*)x)[i];
        xw[4 * i] = v.x, xw[4 * i + 1] = v.y, xw[4 * i + 2] = v.z, xw[4 * i + 3] = v.w;
    }
}

template <int BITS>
__device__ __forceinline__ void load_codes(const unsigned* row, int available, unsigned* w) {
    constexpr unsigned long long alignment = BITS == 4 ? 15 : BITS == 2 ? 7 : 3;
    if (available >= BITS && (((unsigned long long)row) & alignment) == 0) {
        whole_codes<BITS>(row, w);
    } else {
#pragma unroll
        for (int i = 0; i < BITS; ++i) w[i] = i < available ? row[i] : 0u;
    }
}

__device__ __forceinline__ void load_activations(const unsigned short* x, int available, bool vectors, unsigned* xw) {
    if (vectors && available >= 32) {
        whole_activations(x, xw);
    } else {
#pragma unroll
        for (int k = 0; k < 16; ++k)
            xw[k] = (2 * k < available ? x[2 * k] : 0u) | (2 * k + 1 < available ? (unsigned)x[2 * k + 1] << 16 : 0u);
    }
}

// The tensor-core kernel's tunables, each defined here unless the compiler's options define it
// (bench/mma_stages.py --variant NAME=VALUE times other values).
#ifndef MMA_MIN_BLOCKS  // blocks a multiprocessor the registers are budgeted for (two: 128 a thread)
#define MMA_MIN_BLOCKS 2
#endif
#define MMA_LAUNCH_BOUNDS __launch_bounds__(256, MMA_MIN_BLOCKS)
#ifndef MMA_OUTLIERS
#define MMA_OUTLIERS 1  // 0 leaves the outlier corrections out (wrong results: for timing the stages apart)
#endif

// Steps of codes a warp has in flight.
template <int BITS, int TILES>
struct Depth {
#ifdef MMA_DEPTH
    static constexpr int steps = MMA_DEPTH;
#else
    static constexpr int steps = TILES == 1 && BITS <= 4 ? 4 : 2;  // more cost registers: fewer warps (RESULTS)
#endif
    static_assert(steps % 2 == 0, "the activations alternate between two buffers");
};

#define INDEX_STAGE_BYTES 30720  // room for a block's outlier index (INDEX_STAGE_BYTES in icqcodec.linear)

// A 16-byte asynchronous copy from global to shared memory.
__device__ __forceinline__ void copy_async(void* to, const void* from) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((unsigned)__cvta_generic_to_shared(to)),
                 "l"(from));
}

// The bytes of the outlier index of rows first .. first + count - 1: its offsets [o0, o1) and
// group starts [g0, g1), each within the 16-byte aligned run [a, b) that a copy takes (the index's
// sections are 16-byte aligned and padded).
struct IndexRange {
    long long o0, oa, ob, g0, ga, gb;

    __device__ __forceinline__ IndexRange(const Tensor& t, int first, int count) {
        const long long group_row = (long long)(t.column_groups() - 1) * t.group_bytes;
        o0 = (long long)first * t.outliers;
        g0 = t.groups + first * group_row;
        oa = o0 & ~15ll, ob = (o0 + (long long)count * t.outliers + 15) & ~15ll;
        ga = g0 & ~15ll, gb = (g0 + count * group_row + 15) & ~15ll;
    }
    __device__ __forceinline__ bool fits() const { return (ob - oa) + (gb - ga) <= INDEX_STAGE_BYTES; }
    __device__ __forceinline__ int offset_chunks() const { return (int)((ob - oa) >> 4); }
};

// Starts copying the range to `store` when it fits there (complete after cp.async.wait_all and a
// barrier); false where the outlier pass reads it where it is.
__device__ __forceinline__ bool stage_index(const Tensor& t, const IndexRange& range, uint4* store) {
    if (!range.fits()) return false;
    const int offsets = range.offset_chunks(), chunks = offsets + (int)((range.gb - range.ga) >> 4);
    for (int i = threadIdx.x; i < chunks; i += blockDim.x)
        copy_async(store + i, t.index + (i < offsets ? range.oa + 16ll * i : range.ga + 16ll * (i - offsets)));
    asm volatile("cp.async.commit_group;\n" ::);
    return true;
}

// The view of the range as stage_index copied it to `store`, rows from `first` on.
__device__ __forceinline__ IndexView staged_view(const Tensor& t, const IndexRange& range, int first,
                                                 const uint4* store) {
    IndexView view = t.index_view();
    const unsigned char* bytes = (const unsigned char*)store;
    view.offsets = bytes + (range.o0 - range.oa);
    view.groups = bytes + 16ll * range.offset_chunks() + (range.g0 - range.ga);
    view.first = first;
    return view;
}

template <bool B>
struct Flag {
    static constexpr bool value = B;
};

// The activations of one step for the lane: row g (+ 8 in the second tile) of columns `column` on, or
// the last row where there are fewer, so that no lane branches (an mma's columns are independent:
// those of rows past the activations are never read).
template <int TILES>
__device__ __forceinline__ void step_activations(const unsigned short* xs, long long x_stride, int activations,
                                                 int g, int column, int cols, bool vectors, unsigned (*xw)[16]) {
#pragma unroll
    for (int tile = 0; tile < TILES; ++tile) {
        const int m = min(g + 8 * tile, activations - 1);
        if (column < cols)
            load_activations(xs + m * x_stride + column, cols - column, vectors, xw[tile]);
        else {
#pragma unroll
            for (int k = 0; k < 16; ++k) xw[tile][k] = 0u;
        }
    }
}

// Code words of a step for rows a and b (none for b in the ones row: codes 0); WHOLE: the step's
// words are whole and aligned, or past the range (then left as they are: never read).
template <int BITS, bool WHOLE>
__device__ __forceinline__ void step_codes(const unsigned* row_a, const unsigned* row_b, bool ones, int step, int s1,
                                           int q4, int row_words, unsigned* wa, unsigned* wb) {
    const int w0 = (step * 4 + q4) * BITS;
    if (WHOLE) {
        if (step >= s1) return;
        whole_codes<BITS>(row_a + w0, wa);
        if (ones) {
#pragma unroll
            for (int i = 0; i < BITS + !Pairs<BITS>::in_word; ++i) wb[i] = 0u;
        } else {
            whole_codes<BITS>(row_b + w0, wb);
        }
        return;
    }
    const int available = step < s1 ? row_words - w0 : 0;
    load_codes<BITS>(row_a + w0, available, wa);
    load_codes<BITS>(row_b + w0, ones ? 0 : available, wb);
    if (!Pairs<BITS>::in_word) wa[BITS] = wb[BITS] = 0u;  // code_at's look at the next word
}

#ifndef OUTLIER_BATCH
#define OUTLIER_BATCH 8  // outliers a lane finds the columns of before it loads their codes and activations
#endif

// Adds to correction[m] row n's outlier corrections x[m, column] (outlier level - inlier level) over
// column groups k0 .. k1 - 1 that lane j of 16 takes: every 16th outlier, OUTLIER_BATCH at a time,
// their columns found first so that their code and activation loads are in flight together.
// `difference`: the row's outlier level less inlier level of every code.
template <int BITS, int BF16, int MAXM>
__device__ __forceinline__ void add_corrections(const Tensor& t, const IndexView& index, int n, int k0, int k1, int j,
                                                const float* difference, const unsigned short* xs,
                                                long long x_stride, int activations, float* correction) {
    const unsigned* codes = (const unsigned*)(t.body + t.codes + (long long)n * t.row_stride);
    const int end = index.start(n, k1);
    int k = k0, next = index.start(n, k0 + 1);
    for (int e0 = index.start(n, k0) + j; e0 < end; e0 += 16 * OUTLIER_BATCH) {
        int column[OUTLIER_BATCH];
#pragma unroll
        for (int b = 0; b < OUTLIER_BATCH; ++b) {
            const int e = e0 + 16 * b;
            column[b] = -1;
            if (e < end) {
                while (e >= next) next = index.start(n, ++k + 1);
                column[b] = index.column(n, k, e);
            }
        }
#pragma unroll
        for (int b = 0; b < OUTLIER_BATCH; ++b) {
            if (column[b] < 0) break;
            const float d = difference[code_at<BITS>(codes, column[b])];
            if (activations == 1) {
                correction[0] = fmaf(from_bits(xs[column[b]], BF16), d, correction[0]);
            } else {  // predicated rather than a loop that stops, so that every row's load is in flight together
#pragma unroll
                for (int m = 0; m < MAXM; ++m)
                    if (m < activations)
                        correction[m] = fmaf(from_bits(xs[m * x_stride + column[b]], BF16), d, correction[m]);
            }
        }
    }
}

// The outlier pass of a warp: half-warp h takes rows h, h + 2, ... of the tile from n0, 16 lanes a
// row, over the warp's column groups, and adds each row's corrections to partial[r][m].
template <int BITS, int BF16, int MAXM>
__device__ __forceinline__ void outlier_pass(const Tensor& t, const IndexView& index, int n0, int k0, int k1,
                                             float* differences, const unsigned short* xs, long long x_stride,
                                             int activations, float (*partial)[MAXM]) {
    const int lane = threadIdx.x & 31, h = lane >> 4, j = lane & 15;
    float* difference = differences + h * (1 << BITS);
    for (int r = h; r < 16; r += 2) {
        const int n = n0 + r;
        const bool active = r < MMA_ROWS && n < t.rows;
        __syncwarp();  // the half-warp's table of differences is free again
        if (active) {
            const Row levels = row_levels(t, n, nullptr);
            for (int q = j; q < (1 << BITS); q += 16) difference[q] = levels.outlier(q) - levels.inlier(q);
        }
        __syncwarp();
        float correction[MAXM];
#pragma unroll
        for (int m = 0; m < MAXM; ++m) correction[m] = 0.0f;
        if (active) add_corrections<BITS, BF16, MAXM>(t, index, n, k0, k1, j, difference, xs, x_stride, activations,
                                                     correction);
#pragma unroll
        for (int m = 0; m < MAXM; ++m) {
            if (m >= activations) break;
            float v = correction[m];
            for (int d = 8; d > 0; d >>= 1) v += __shfl_xor_sync(0xffffffffu, v, d);
            correction[m] = v;
        }
        if (j < activations && active) {
            float v = correction[0];
#pragma unroll
            for (int m = 1; m < MAXM; ++m)
                if (m == j) v = correction[m];
            partial[r][j] += v;
        }
    }
}

template <int BITS, int BF16, int TILES>
__global__ void MMA_LAUNCH_BOUNDS icq_mma(TENSOR_ARGS, const void* x, long long x_stride, int activations,
                                          int splits, const void* bias, void* y) {
    using P = Pairs<BITS>;
    constexpr int MAXM = 8 * TILES, DEPTH = Depth<BITS, TILES>::steps, SETS = P::sets, WORDS = BITS + !P::in_word;
    constexpr bool FOLD = Fold<BF16>::magic;
    const Tensor t = TENSOR;
    __shared__ float partial[MMA_WARPS][16][MAXM];
    __shared__ uint4 index_store[INDEX_STAGE_BYTES / 16];
    __shared__ float difference_store[MMA_WARPS][2 << BITS];  // a half-warp's row's differences
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q4 = lane & 3;
    const int tiles = MMA_WARPS / splits, block_n0 = blockIdx.x * tiles * MMA_ROWS;
    const int n0 = block_n0 + (warp / splits) * MMA_ROWS, split = warp % splits;
    const IndexRange range(t, block_n0, min(tiles * MMA_ROWS, t.rows - block_n0));
    const bool staged = MMA_OUTLIERS && t.outliers && stage_index(t, range, index_store);  // while the inliers run
    // This warp's columns: column groups k0 .. k1 - 1, steps s0 .. s1 - 1 (none past the matrix).
    const int groups = t.column_groups(), steps = (t.cols + MMA_STEP - 1) / MMA_STEP;
    const int k0 = n0 < t.rows ? groups * split / splits : 0, k1 = n0 < t.rows ? groups * (split + 1) / splits : 0;
    const int s0 = min(2 * k0, steps), s1 = min(2 * k1, steps);
    const int ra = min(n0 + g, t.rows - 1), rb = min(n0 + g + 8, t.rows - 1);
    const bool ones = g == 7;  // row 15 of the tile: the activations' sums
    const unsigned* row_a = (const unsigned*)(t.body + t.codes + (long long)ra * t.row_stride);
    const unsigned* row_b = (const unsigned*)(t.body + t.codes + (long long)rb * t.row_stride);
    const unsigned short* xs = (const unsigned short*)x;
    const bool vectors = (((unsigned long long)x) & 15) == 0 && (x_stride & 7) == 0;
    const int row_words = (int)(((long long)t.cols * BITS + 31) >> 5);
    constexpr unsigned one = BF16 ? 0x3F803F80u : 0x3C003C00u;
    float c[TILES][SETS][4];
#pragma unroll
    for (int tile = 0; tile < TILES; ++tile)
#pragma unroll
        for (int u = 0; u < SETS; ++u) c[tile][u][0] = c[tile][u][1] = c[tile][u][2] = c[tile][u][3] = 0.0f;
    unsigned wa[DEPTH][WORDS], wb[DEPTH][WORDS], xw[2][TILES][16];
#pragma unroll
    for (int d = 0; d < DEPTH; ++d)
        step_codes<BITS, false>(row_a, row_b, ones, s0 + d, s1, q4, row_words, wa[d], wb[d]);
    step_activations<TILES>(xs, x_stride, activations, g, s0 * MMA_STEP + q4 * 32, t.cols, vectors, xw[0]);
    // A round: DEPTH steps from step0 (fewer where the range ends), each refilling its ring slot with
    // the codes DEPTH steps on. In a whole round (every step and every code and activation it loads
    // whole, aligned) the loads take no per-lane checks.
    const int whole_steps = t.cols / MMA_STEP;
    const bool aligned = vectors && ((((unsigned long long)(t.body + t.codes)) | t.row_stride) & 15) == 0;
    const unsigned short* x_lane[TILES];
#pragma unroll
    for (int tile = 0; tile < TILES; ++tile) x_lane[tile] = xs + min(g + 8 * tile, activations - 1) * x_stride + q4 * 32;
    auto round = [&](auto whole, int step0) {
        constexpr bool WHOLE = decltype(whole)::value;
#pragma unroll
        for (int d = 0; d < DEPTH; ++d) {
            const int step = step0 + d;
            if (!WHOLE && step >= s1) break;
            if (WHOLE) {
                if (step + 1 < s1)
#pragma unroll
                    for (int tile = 0; tile < TILES; ++tile)
                        whole_activations(x_lane[tile] + (step + 1) * MMA_STEP, xw[(d + 1) & 1][tile]);
            } else {
                const int next = step + 1 < s1 ? (step + 1) * MMA_STEP + q4 * 32 : t.cols;  // none past the range
                step_activations<TILES>(xs, x_stride, activations, g, next, t.cols, vectors, xw[(d + 1) & 1]);
            }
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const unsigned a0 = code_pair<BITS, BF16>(wa[d], 2 * i), a2 = code_pair<BITS, BF16>(wa[d], 2 * i + 1);
                unsigned a1 = code_pair<BITS, BF16>(wb[d], 2 * i), a3 = code_pair<BITS, BF16>(wb[d], 2 * i + 1);
                if (!FOLD && ones) a1 = a3 = one;
#pragma unroll
                for (int tile = 0; tile < TILES; ++tile)
                    mma_16816<BF16>(c[tile][P::set(2 * i)], a0, a1, a2, a3, activation_pair<BITS>(xw[d & 1][tile], 2 * i),
                                    activation_pair<BITS>(xw[d & 1][tile], 2 * i + 1));
            }
            step_codes<BITS, WHOLE>(row_a, row_b, ones, step + DEPTH, s1, q4, row_words, wa[d], wb[d]);
        }
    };
    for (int step0 = s0; step0 < s1; step0 += DEPTH) {
        if (aligned && min(s1, step0 + 2 * DEPTH) <= whole_steps)
            round(Flag<true>(), step0);
        else
            round(Flag<false>(), step0);
    }
    // This warp's share of y: offset * sum(x) + scale * sum(x v(q)) for rows g and g + 8, activation
    // rows 2t, 2t + 1 (+ 8 in the second tile); the ones row's sums sit in lane (7, t)'s second row,
    // and each set's sums are 2^(BITS set) times their codes'.
    const Row la = row_levels(t, ra, nullptr), lb = row_levels(t, rb, nullptr);
#pragma unroll
    for (int tile = 0; tile < TILES; ++tile) {
        float v[4] = {0.0f, 0.0f, 0.0f, 0.0f}, sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
        for (int u = 0; u < SETS; ++u) {
            const float o0 = __shfl_sync(0xffffffffu, c[tile][u][2], 28 + q4);
            const float o1 = __shfl_sync(0xffffffffu, c[tile][u][3], 28 + q4);
            const float place = 1.0f / (float)(1 << (BITS * u)), m0 = FOLD ? o0 : 0.0f, m1 = FOLD ? o1 : 0.0f;
            v[0] = fmaf(c[tile][u][0] - m0, place, v[0]);
            v[1] = fmaf(c[tile][u][1] - m1, place, v[1]);
            v[2] = fmaf(c[tile][u][2] - m0, place, v[2]);
            v[3] = fmaf(c[tile][u][3] - m1, place, v[3]);
            sum0 += o0, sum1 += o1;
        }
        if (FOLD) sum0 *= 1.0f / Magic<BF16>::value, sum1 *= 1.0f / Magic<BF16>::value;  // exact
        const int m = 8 * tile + 2 * q4;
        partial[warp][g][m] = fmaf(la.offset, sum0, la.scale * v[0]);
        partial[warp][g][m + 1] = fmaf(la.offset, sum1, la.scale * v[1]);
        if (!ones) {
            partial[warp][g + 8][m] = fmaf(lb.offset, sum0, lb.scale * v[2]);
            partial[warp][g + 8][m + 1] = fmaf(lb.offset, sum1, lb.scale * v[3]);
        }
    }
    if (MMA_OUTLIERS && t.outliers) {
        asm volatile("cp.async.wait_all;\n" ::);
        __syncthreads();
        float* differences = difference_store[warp];
        if (staged)  // a view made from index_store alone, so that its reads compile to shared-memory loads
            outlier_pass<BITS, BF16, MAXM>(t, staged_view(t, range, block_n0, index_store), n0, k0, k1, differences, xs,
                                           x_stride, activations, partial[warp]);
        else
            outlier_pass<BITS, BF16, MAXM>(t, t.index_view(), n0, k0, k1, differences, xs, x_stride, activations,
                                           partial[warp]);
    }
    __syncthreads();
    // y: each tile's warps summed in split order.
    for (int o = threadIdx.x; o < activations * tiles * MMA_ROWS; o += blockDim.x) {
        const int m = o / (tiles * MMA_ROWS), local = o % (tiles * MMA_ROWS), tile = local / MMA_ROWS, r = local % MMA_ROWS;
        const int n = block_n0 + local;
        if (n >= t.rows) continue;
        float v = 0.0f;
        for (int s = 0; s < splits; ++s) v += partial[tile * splits + s][r][m];
        store(y, (long long)m * t.rows + n, bias ? v + load(bias, n, BF16) : v, BF16);
    }
}
