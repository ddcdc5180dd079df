"""The GPU decoder's memory traffic without its work: a kernel with the decoder's launch shape
(persistent warps, 32 per SM) that, per 1024-column float16 item, copies the item's compressed
bytes (256 at 2 bits, 512 at 4) into shared memory two items ahead with asynchronous copies and
stores the item's 2 KiB of output (four 512-byte evict-first stores per warp, whose values depend
on the copied bytes). Side by side, for the 28672x8192 output: reads from DRAM (asynchronous
copies, or plain loads into registers two items ahead), from L2 (the first item's bytes again) or
none, and items in contiguous runs per warp (the decoder's order) or
strided over all warps (neighbouring warps on neighbouring items). Figures: bench/RESULTS.md.

    python bench/diagnostics/gpu_traffic.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cupy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu import copy_bandwidth, event_time  # noqa: E402

_TRAFFIC = r"""
extern "C" __global__ void __launch_bounds__(256, 4) traffic(const uint4* __restrict__ in, uint4* __restrict__ out,
                                                             long long items, int pieces, int strided, int reads) {
    __shared__ uint4 slots[8][2][32];  // per warp: two slots of up to 32 16-byte pieces
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long all = (long long)gridDim.x * 8, me = (long long)blockIdx.x * 8 + warp;
    long long first, step;
    int count;
    if (strided) {
        first = me, step = all;
        count = me < items ? (int)((items - 1 - me) / all + 1) : 0;
    } else {
        first = me * items / all, step = 1;
        count = (int)((me + 1) * items / all - first);
    }
    auto fetch = [&](int k, int slot) {
        if (k < count && reads && lane < pieces) {
            const long long item = reads == 2 ? first : first + k * step;
            const unsigned int to = (unsigned int)__cvta_generic_to_shared(&slots[warp][slot][lane]);
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(to), "l"(in + item * pieces + lane)
                         : "memory");
        }
        asm volatile("cp.async.commit_group;" ::: "memory");
    };
    auto store = [&](int k, uint4 v) {
        uint4* to = out + (first + k * step) * 128;
#pragma unroll
        for (int c = 0; c < 4; ++c) __stcs(to + c * 32 + lane, make_uint4(v.x ^ c, v.y, v.z, v.w));
    };
    if (reads == 3) {  // plain loads into registers, two items ahead
        auto load = [&](int k) {
            return k < count ? __ldg(in + (first + k * step) * pieces + lane % pieces) : make_uint4(0, 0, 0, 0);
        };
        uint4 a = load(0), b = load(1);
        for (int k = 0; k < count; k += 2) {
            store(k, a);
            a = load(k + 2);
            if (k + 1 < count) store(k + 1, b);
            b = load(k + 3);
        }
        return;
    }
    fetch(0, 0);
    fetch(1, 1);
    for (int k = 0; k < count; ++k) {
        const int slot = k & 1;
        asm volatile("cp.async.wait_group 1;" ::: "memory");
        __syncwarp();
        const uint4 v = slots[warp][slot][lane % pieces];
        __syncwarp();
        fetch(k + 2, slot);
        store(k, v);
    }
}

// The pattern of a plain unpack kernel: one thread per 4 bytes read, writing 16 outputs (2-bit
// codes to float16: two 16-byte stores), no persistence, no shared memory.
extern "C" __global__ void elementwise(const unsigned int* __restrict__ in, uint4* __restrict__ out, long long words) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= words) return;
    const unsigned int w = __ldg(in + t);
    __stcs(out + 2 * t, make_uint4(w, w >> 1, w >> 2, w >> 3));
    __stcs(out + 2 * t + 1, make_uint4(w >> 4, w >> 5, w >> 6, w >> 7));
}
"""


def main() -> None:
    kernel = cupy.RawKernel(_TRAFFIC, "traffic", options=("-std=c++17",))
    unpack = cupy.RawKernel(_TRAFFIC, "elementwise", options=("-std=c++17",))
    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
    print(f"device-to-device copy, 1 GiB: {copy_bandwidth() / 1e9:.0f} GB/s (read + written)")
    print("| output | bytes read per item | order | reads | ms | GB/s (read + written) |")
    print("|---|---|---|---|---|---|")
    for rows, cols in ((8192, 8192), (28672, 8192)):
        items = rows * cols // 1024
        out = cupy.empty((rows, cols), dtype=cupy.uint16)
        shape = f"{rows}x{cols}"
        memset = event_time(lambda out=out: out.fill(0), 30)
        print(f"| {shape} | 0 | memset | none | {memset * 1e3:.3f} | {out.nbytes / memset / 1e9:.0f} |")
        for pieces in (16, 32):
            source = cupy.asarray(np.random.default_rng(0).integers(0, 2**32, size=items * pieces * 4, dtype=np.uint32))
            for strided, order in ((0, "contiguous runs"), (1, "strided")):
                for reads, label in ((1, "DRAM, async copies"), (3, "DRAM, loads"), (2, "L2 (same item)"), (0, "none")):
                    args = (source, out, np.int64(items), np.int32(pieces), np.int32(strided), np.int32(reads))
                    seconds = event_time(lambda args=args: kernel((4 * sms,), (256,), args), 30)
                    moved = out.nbytes + (source.nbytes if reads in (1, 3) else 0)
                    print(f"| {shape} | {16 * pieces} | {order} | {label} | {seconds * 1e3:.3f} | "
                          f"{moved / seconds / 1e9:.0f} |", flush=True)  # fmt: skip
        source = cupy.asarray(np.random.default_rng(0).integers(0, 2**32, size=items * 64, dtype=np.uint32))
        for strided, order in ((0, "contiguous runs"), (1, "strided")):  # 64 warps per SM instead of 32
            args = (source, out, np.int64(items), np.int32(16), np.int32(strided), np.int32(1))
            seconds = event_time(lambda args=args: kernel((8 * sms,), (256,), args), 30)
            print(f"| {shape} | 256 | {order}, 64 warps per SM | DRAM, async copies | {seconds * 1e3:.3f} | "
                  f"{(out.nbytes + source.nbytes) / seconds / 1e9:.0f} |", flush=True)  # fmt: skip
        words = out.nbytes // 32
        source = cupy.asarray(np.random.default_rng(0).integers(0, 2**32, size=words, dtype=np.uint32))
        args = (source, out, np.int64(words))
        blocks = -(-words // 256)
        seconds = event_time(lambda args=args, blocks=blocks: unpack((blocks,), (256,), args), 30)
        print(f"| {shape} | 256 | unpack kernel (a thread per 4 bytes read) | DRAM | {seconds * 1e3:.3f} | "
              f"{(out.nbytes + source.nbytes) / seconds / 1e9:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
