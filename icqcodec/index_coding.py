"""Index coding of outlier positions (spec section 8), in plain Python.

Each segment of a row carries its outlier positions as a chain of fixed-width gap symbols; the
symbol ``M = 2^gap_bits - 1`` is an escape that skips ``M`` inliers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import CorruptStreamError


def escape_value(gap_bits: int) -> int:
    return (1 << gap_bits) - 1


def decode_segment(symbols: Sequence[int], length: int, gap_bits: int, *, where: str = "") -> list[int]:
    """Outlier positions (relative to the segment start) of one segment's symbols (spec section 8)."""
    escape = escape_value(gap_bits)
    positions = []
    cursor = 0
    for symbol in symbols:
        if symbol == escape:
            cursor += escape
            continue
        position = cursor + symbol
        if position >= length:
            raise CorruptStreamError(f"{where}gap chain runs past the end of the segment", section="8")
        positions.append(position)
        cursor = position + 1
    if symbols and symbols[-1] == escape:
        raise CorruptStreamError(f"{where}segment ends with an escape", section="8")
    return positions


def encode_segment(positions: Iterable[int], gap_bits: int) -> list[int]:
    """The canonical chain of strictly increasing positions: ``d // M`` escapes, then ``d % M``."""
    escape = escape_value(gap_bits)
    symbols = []
    cursor = 0
    for position in positions:
        gap = position - cursor
        assert gap >= 0, "positions must be strictly increasing"
        symbols.extend([escape] * (gap // escape))
        symbols.append(gap % escape)
        cursor = position + 1
    return symbols


def segment_bounds(cols: int, segment: int) -> list[tuple[int, int]]:
    """``(start, length)`` of each segment of a row (spec section 8)."""
    return [(start, min(segment, cols - start)) for start in range(0, cols, segment)]
