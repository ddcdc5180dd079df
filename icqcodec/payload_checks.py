"""The rules of spec section 9.2 step 9 that the fast decoders (numba and CuPy) share on the host:
the codebook's finiteness, the segment counts' prefix sums, the flag codes their kernels report per
row, and the first error in the normative order that those flags mean.

The reference decoder checks the same rules in its own readable way (:mod:`icqcodec.reference`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import dtypes
from .errors import CorruptStreamError
from .jit import JIT, field, tail_is_zero
from .payload import Payload

__all__ = [
    "CHAIN_PAST_END",
    "CHAIN_TRAILING_ESCAPE",
    "CHAIN_COUNT",
    "OUT_F32",
    "OUT_F16",
    "OUT_BF16",
    "output_kind",
    "read_codebook",
    "segment_starts",
    "symbol_words",
    "code_padding_set",
    "raise_first",
    "gap_padding_error",
]

# per-row error codes of the chain check, in the order a row is checked (spec section 8)
CHAIN_PAST_END, CHAIN_TRAILING_ESCAPE, CHAIN_COUNT = 1, 2, 3
# the output kinds the kernels write, as bit patterns
OUT_F32, OUT_F16, OUT_BF16 = 0, 1, 2


def output_kind(dtype_code: int) -> int:
    """The kernels' output kind of an icq output dtype (spec section 6.2)."""
    return {dtypes.FLOAT32: OUT_F32, dtypes.FLOAT16: OUT_F16, dtypes.BFLOAT16: OUT_BF16}[dtype_code]


def read_codebook(payload: Payload) -> np.ndarray | None:
    """The codebook section as binary32, or None for the uniform kind; 6.2: "Every entry MUST be
    finite"."""
    if "codebook" not in payload.layout.sections:
        return None
    book = np.frombuffer(payload.section("codebook"), dtype="<f2").astype(np.float32)
    if not np.isfinite(book).all():
        raise CorruptStreamError(f"tensor {payload.record.name!r}: codebook holds a value that is not finite",
                                 section="6.2")  # fmt: skip
    return book


@nb.njit(**JIT)
def segment_starts(count_words, n, count_bits, total):
    """Prefix sums of the segment counts; status 0 ok, 1 sum too large, 2 sum too small, 3 padding."""
    starts = np.zeros(n + 1, dtype=np.int64)
    running = 0
    for j in range(n):
        running += field(count_words, j * count_bits, count_bits)
        if running > total:
            return starts, 1
        starts[j + 1] = running
    if running != total:
        return starts, 2
    if not tail_is_zero(count_words, n * count_bits):
        return starts, 3
    return starts, 0


def symbol_words(starts: np.ndarray, gap_bits: int) -> tuple[int, int]:
    """The 32-bit words of the gap-symbol section, first and past the last, that hold symbols
    ``starts[0]`` to ``starts[-1] - 1`` (a slice of the segment starts: the rows a decoder reads)."""
    return int(starts[0]) * gap_bits // 32, -(-int(starts[-1]) * gap_bits // 32)


def code_padding_set(codes: np.ndarray, count: int, cols: int, bits: int) -> np.ndarray:
    """Per code row of ``codes`` (``count`` rows of whole words), whether a padding bit after its
    ``cols`` codes is set (spec section 6.2)."""
    words = -(-cols * bits // 32)
    used = cols * bits - (words - 1) * 32  # bits of each row's last word that hold codes
    if used == 32 or not count:
        return np.zeros(count, bool)
    return (codes.reshape(count, words)[:, -1] >> np.uint32(used)) != 0


def raise_first(
    name: str, first: int, flags: np.ndarray, chain_status: int, expected: int | None, segment_first: int = 0
) -> None:
    """Raise the error the reference decoder would raise first (spec section 9.2 step 9).

    ``flags[r]``: (non-finite parameter, code padding set, chain error code, its segment or the
    outliers found); ``chain_status``: that of :func:`segment_starts`; rows start at ``first``,
    segments at ``segment_first``.
    """
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
        where = f"tensor {name!r} row {first + r} segment {segment_first + extra}: "
        if code == CHAIN_PAST_END:
            raise CorruptStreamError(where + "gap chain runs past the end of the segment", section="8")
        if code == CHAIN_TRAILING_ESCAPE:
            raise CorruptStreamError(where + "segment ends with an escape", section="8")
        raise CorruptStreamError(
            f"tensor {name!r}: row {first + r} has {extra} outliers, expected {expected}", section="8"
        )


def gap_padding_error(name: str) -> CorruptStreamError:
    """8: the bits after the last gap symbol are zero; raised after every chain error."""
    return CorruptStreamError(f"tensor {name!r}: padding bits of the gap symbols are not zero", section="8")
