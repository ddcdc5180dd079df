"""Bit packing (spec section 5): LSB-first fields in whole 32-bit little-endian words.

Plain numpy: the reference decoder reads with :func:`unpack`; the conformance builder writes with
:func:`pack` (the encoder packs in numba, in :mod:`icqcodec.encode`).
"""

from __future__ import annotations

import numpy as np

from .constants import WORD_BYTES


def packed_size(count: int, width: int) -> int:
    """Bytes taken by ``count`` fields of ``width`` bits: ``ceil_div(count * width, 32) * 4``."""
    return -(-count * width // 32) * WORD_BYTES


def pack(values: np.ndarray, width: int) -> bytes:
    """Pack non-negative integers below ``2**width`` as consecutive LSB-first fields."""
    values = np.asarray(values, dtype=np.uint64).ravel()
    size = packed_size(values.size, width)
    if values.size == 0:
        return b""
    # bit i of field j goes to stream bit j*width + i
    shifts = np.arange(width, dtype=np.uint64)
    bits = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).ravel()
    stream = np.zeros(size * 8, dtype=np.uint8)
    stream[: bits.size] = bits
    return np.packbits(stream, bitorder="little").tobytes()


def _stream_bits(data: bytes | memoryview) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")


def unpack(data: bytes | memoryview, count: int, width: int) -> np.ndarray:
    """The first ``count`` fields of ``width`` bits of a packed array, as uint64."""
    bits = _stream_bits(data)[: count * width].reshape(count, width).astype(np.uint64)
    return bits @ (np.uint64(1) << np.arange(width, dtype=np.uint64))


def bits_are_zero(data: bytes | memoryview, start_bit: int) -> bool:
    """Whether every bit of ``data`` from stream bit ``start_bit`` on is zero (padding check)."""
    return not _stream_bits(data)[start_bit:].any()
