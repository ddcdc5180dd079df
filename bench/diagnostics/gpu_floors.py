"""What limits the GPU decoder: on each benchmark shape, side by side in one run, the time to
write its float16 output (memset; a store-only kernel with the decoder's launch shape, 16-byte
evict-first or plain stores), to copy it, and the 2-bit decode itself, also compiled without its
output stores (compute only) and without its gap chains; then the 28672x8192 decode at 2 and 4
bits with its global reads left out (``FETCH_TWO``) or served from L2 (``FETCH_SAME``); then the
decode with fewer codes per table entry, checked bit-exact against the default. Figures:
bench/RESULTS.md.

    python bench/diagnostics/gpu_floors.py [--variants]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cupy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu import copy_bandwidth, event_time, plan_of  # noqa: E402

import icqcodec  # noqa: E402
from icqcodec.gpu import KernelVariant, kernel_variant  # noqa: E402

_STORES = r"""
extern "C" __global__ void stores(uint4* out, long long chunks, int evict_first) {
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    const long long me = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    const long long pieces = chunks / 128;  // 2 KiB per warp step, like one 1024-column float16 item
    for (long long p = me * pieces / warps; p < (me + 1) * pieces / warps; ++p)
        for (int c = 0; c < 4; ++c) {
            uint4* to = out + p * 128 + c * 32 + lane;
            const uint4 v = make_uint4(lane, c, 0, 0);
            if (evict_first) __stcs(to, v); else *to = v;
        }
}
"""


def decode_time(plan, out, defines: tuple[str, ...]) -> float:
    """Median seconds of ``plan.run`` with the segments kernel compiled with ``defines``."""
    with kernel_variant(KernelVariant(defines)):
        return event_time(lambda: plan.run(out), 30)


def timed_against(plan, decoded, expected, defines: tuple[str, ...]) -> tuple[float, bool | None]:
    """``decode_time`` of a variant, and whether its output equals ``expected`` bit for bit (None
    where ``expected`` is None: a variant that leaves work out)."""
    decoded.fill(0)
    seconds = decode_time(plan, decoded, defines)
    return seconds, None if expected is None else bool((cupy.asnumpy(decoded) == expected).all())


def row(rows: int, cols: int, base: np.ndarray, stores) -> str:
    out = cupy.empty((rows, cols), dtype=cupy.uint16)
    n = out.nbytes
    memset = event_time(lambda: out.fill(0), 30)
    blocks, chunks = 528, np.int64(n // 16)  # the decoder's grid on an H100: 4 blocks x 132 SMs
    cs = event_time(lambda: stores((blocks,), (256,), (out, chunks, np.int32(1))), 30)
    plain = event_time(lambda: stores((blocks,), (256,), (out, chunks, np.int32(0))), 30)
    other = cupy.empty_like(out)
    cp = event_time(lambda: other.__setitem__(Ellipsis, out), 30)
    w = np.tile(base, (-(-rows // 4096), 1))[:rows, :cols]
    _, plan, decoded = plan_of(icqcodec.encode(w, bits=2, dtype="float16"))
    full = decode_time(plan, decoded, ())
    no_stores = decode_time(plan, decoded, ("-DICQ_NO_STORES",))
    no_chain = decode_time(plan, decoded, ("-DICQ_NO_CHAIN",))
    return (
        f"| {rows}x{cols} | {n / memset / 1e9:.0f} | {n / cs / 1e9:.0f} | {n / plain / 1e9:.0f} | "
        f"{2 * n / cp / 1e9:.0f} | {cs * 1e3:.3f} | {full * 1e3:.3f} | {no_stores * 1e3:.3f} | {no_chain * 1e3:.3f} |"
    )


def grouping(base: np.ndarray) -> list[str]:
    """Codes per table entry at 2 and 4 bits (fewer: more lookups, fewer shared-memory bank
    conflicts), float16, bit-exact against the default, side by side."""
    lines = ["| shape | bits | codes per entry | decode ms |", "|---|---|---|---|"]
    for rows, cols in ((8192, 8192), (28672, 8192)):
        w = np.tile(base, (-(-rows // 4096), 1))[:rows, :cols]
        for bits, name, choices in ((2, "ICQ_CODES2", (4, 2)), (4, "ICQ_CODES4", (2, 1))):
            _, plan, decoded = plan_of(icqcodec.encode(w, bits=bits, dtype="float16"))
            plan.run(decoded)
            expected = cupy.asnumpy(decoded)
            for codes in choices:
                seconds, same = timed_against(plan, decoded, expected, (f"-D{name}={codes}",))
                assert same
                lines.append(f"| {rows}x{cols} | {bits} | {codes} | {seconds * 1e3:.3f} |")
    return lines


# Compile-time switches of the segments kernel (see its source): the default twice, to show the
# run-to-run spread, and parts of the work or of the global reads left out
VARIANTS = (
    (),
    ("FETCH_SAME",),
    ("FETCH_TWO",),
    ("NO_CHAIN",),
    ("NO_CHAIN", "FETCH_SAME"),
    ("NO_CHAIN", "FETCH_TWO"),
    ("NO_STORES",),
    (),
)


def variants(base: np.ndarray) -> list[str]:
    """The 28672x8192 decode at 2 and 4 bits with parts of its work or of its global reads
    compiled out, side by side; the default is checked bit-exact against its first run."""
    lines = ["| bits | switches | decode ms |", "|---|---|---|"]
    w = np.tile(base, (7, 1))
    for bits in (2, 4):
        _, plan, decoded = plan_of(icqcodec.encode(w, bits=bits, dtype="float16"))
        plan.run(decoded)
        expected = cupy.asnumpy(decoded)
        for switches in VARIANTS:
            defines = tuple(f"-DICQ_{name}" for name in switches)
            seconds, same = timed_against(plan, decoded, None if switches else expected, defines)
            exact = "" if same is None else " (bit-exact)" if same else " (DIFFERENT)"
            lines.append(f"| {bits} | {' '.join(switches) or 'none'} | {seconds * 1e3:.3f}{exact} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", action="store_true", help="stop after the table of kernel variants")
    args = parser.parse_args()
    stores = cupy.RawKernel(_STORES, "stores")
    rng = np.random.default_rng(0)
    print(f"device-to-device copy, 1 GiB: {copy_bandwidth() / 1e9:.0f} GB/s (read + written)")
    print(
        "| shape | memset GB/s | stores .cs GB/s | stores GB/s | copy GB/s (r+w) | store-only ms | "
        "decode 2-bit ms | without stores ms | without chains ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base = (rng.standard_t(4, size=(4096, 8192)) * 0.02).astype(np.float32)
    for rows, cols in ((8192, 8192), (28672, 8192)):
        print(row(rows, cols, base, stores), flush=True)
    for line in variants(base):
        print(line, flush=True)
    if args.variants:
        return
    for line in grouping(base):
        print(line, flush=True)


if __name__ == "__main__":
    main()
