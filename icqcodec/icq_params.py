"""The coding parameters of an icq tensor (spec section 6.2): the 24-byte record and the
consistency rules of sections 4.2.3, 6.1 and 6.2 that a tensor record's coding must obey."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import dtypes
from .constants import (
    CODING_RAW,
    ICQ_PARAMS_LENGTH,
    KIND_CODEBOOK,
    KIND_UNIFORM,
    MAX_BITS,
    MAX_COUNT_BITS,
    MAX_GAP_BITS,
    MAX_SEGMENT_LOG2,
    MIN_BITS,
    MIN_COUNT_BITS,
    MIN_GAP_BITS,
    MIN_SEGMENT_LOG2,
)
from .errors import CorruptStreamError

__all__ = ["ICQ_PARAMS", "IcqParams", "codebook_size_for", "check_coding"]

ICQ_PARAMS = struct.Struct("<BBBBBBHIIQ")  # 6.2, 24 bytes


@dataclass(frozen=True)
class IcqParams:
    """The 24-byte coding parameters of an icq tensor (spec section 6.2)."""

    bits: int
    kind: int
    gap_bits: int
    count_bits: int
    segment_log2: int
    codebook_size: int
    outliers: int
    total_symbols: int

    def to_bytes(self) -> bytes:
        return ICQ_PARAMS.pack(
            self.bits, self.kind, self.gap_bits, self.count_bits, self.segment_log2, 0,
            self.codebook_size, self.outliers, 0, self.total_symbols,
        )  # fmt: skip

    @property
    def segment(self) -> int:
        return 1 << self.segment_log2


def codebook_size_for(bits: int, kind: int, outliers: int) -> int:
    """``codebook_size`` the spec requires (6.2)."""
    if kind == KIND_UNIFORM:
        return 0
    return (1 << bits) + ((1 << (bits - 1)) if outliers else 0)


def check_coding(name, dtype, source_dtype, coding, shape, elements, params_raw, offset) -> IcqParams | None:
    """Consistency rules of spec sections 4.2.3, 6.1 and 6.2 (all ``corrupt``)."""

    def corrupt(detail: str, section: str = "6.2") -> CorruptStreamError:
        return CorruptStreamError(f"tensor {name!r}: {detail}", section=section, offset=offset)

    if coding == CODING_RAW:
        if params_raw:
            raise corrupt(f"raw coding has {len(params_raw)} bytes of parameters, expected 0", "6.1")
        if source_dtype != dtype:
            raise corrupt("raw coding with source_dtype different from dtype", "6.1")
        return None
    if len(params_raw) != ICQ_PARAMS_LENGTH:
        raise corrupt(f"icq coding has {len(params_raw)} bytes of parameters, expected {ICQ_PARAMS_LENGTH}")
    if dtype not in dtypes.ICQ_OUTPUT_CODES:
        raise corrupt(f"icq output dtype {dtypes.NAMES[dtype]} is not float16, bfloat16 or float32")
    if source_dtype not in dtypes.FLOAT_CODES:
        raise corrupt(f"icq source dtype {dtypes.NAMES[source_dtype]} is not a floating-point type")
    if not shape or elements == 0:
        raise corrupt("icq coding needs rank >= 1 and at least one element")
    bits, kind, gap_bits, count_bits, segment_log2, reserved8, codebook_size, outliers, reserved32, total_symbols = (
        ICQ_PARAMS.unpack(params_raw)
    )
    if reserved8 or reserved32:
        raise corrupt("reserved coding parameter is not zero")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise corrupt(f"bits {bits} is outside 1..8")
    if kind not in (KIND_UNIFORM, KIND_CODEBOOK):
        raise corrupt(f"kind {kind} is not 0 (uniform) or 1 (codebook)")
    if not MIN_SEGMENT_LOG2 <= segment_log2 <= MAX_SEGMENT_LOG2:
        raise corrupt(f"segment_log2 {segment_log2} is outside 4..24")
    cols = shape[-1]
    rows = elements // cols
    if outliers > cols:
        raise corrupt(f"outliers {outliers} is above cols {cols}")
    if outliers == 0:
        if gap_bits or count_bits or total_symbols:
            raise corrupt("gap_bits, count_bits and total_symbols must be 0 without outliers")
    else:
        if not MIN_GAP_BITS <= gap_bits <= MAX_GAP_BITS:
            raise corrupt(f"gap_bits {gap_bits} is outside 1..16")
        if not MIN_COUNT_BITS <= count_bits <= MAX_COUNT_BITS:
            raise corrupt(f"count_bits {count_bits} is outside 1..32")
        if not rows * outliers <= total_symbols <= elements:
            raise corrupt(f"total_symbols {total_symbols} is outside {rows * outliers}..{elements}")
    expected_codebook = codebook_size_for(bits, kind, outliers)
    if codebook_size != expected_codebook:
        raise corrupt(f"codebook_size {codebook_size}, expected {expected_codebook}")
    return IcqParams(bits, kind, gap_bits, count_bits, segment_log2, codebook_size, outliers, total_symbols)
