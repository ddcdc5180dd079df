"""numba plumbing shared by the encoder and the fast decoder: compile options, the kernel lock, and
the packed fields of spec section 5 (read, padding check, pack) in compiled code.

The plain-numpy packing the reference decoder reads with is :mod:`icqcodec.bitstream`.
"""

from __future__ import annotations

import threading

import numba as nb
import numpy as np

from .bitstream import packed_size

__all__ = ["JIT", "KERNEL_LOCK", "field", "tail_is_zero", "copy_bits", "pack_fields", "pack_rows"]

# cache=True keeps compiled kernels on disk between runs; nogil lets threads share the CPU
JIT = dict(cache=True, nogil=True)

# numba's workqueue threading layer must not run two parallel kernels at once
KERNEL_LOCK = threading.Lock()


@nb.njit(**JIT)
def field(words, position, width):
    """The ``width``-bit field at stream bit ``position`` of little-endian 32-bit words (section 5)."""
    w = position >> 5
    shift = position & 31
    value = np.uint64(words[w])
    if shift + width > 32:
        value |= np.uint64(words[w + 1]) << np.uint64(32)
    return np.int64((value >> np.uint64(shift)) & np.uint64((1 << width) - 1))


@nb.njit(**JIT)
def tail_is_zero(words, used_bits):
    """Whether the bits of the last word after ``used_bits`` are zero (padding, section 5)."""
    if words.size == 0 or used_bits == words.size * 32:
        return True
    return (np.uint64(words[words.size - 1]) >> np.uint64(used_bits - (words.size - 1) * 32)) == 0


@nb.njit(**JIT)
def pack_into(words, first_word, values, width):
    """OR ``values`` as consecutive ``width``-bit fields into ``words`` from word ``first_word`` on."""
    for j in range(values.size):
        position = j * width
        w = first_word + (position >> 5)
        shifted = np.uint64(values[j]) << np.uint64(position & 31)
        words[w] |= np.uint32(shifted & np.uint64(0xFFFFFFFF))
        if (position & 31) + width > 32:
            words[w + 1] |= np.uint32(shifted >> np.uint64(32))


@nb.njit(**JIT)
def copy_bits(source, source_bit, target, target_bit, count):
    """OR ``count`` bits of ``source`` from stream bit ``source_bit`` into ``target`` from
    ``target_bit`` (both little-endian 32-bit words, section 5), 32 bits at a time."""
    for k in range(0, count, 32):
        width = min(32, count - k)
        position = target_bit + k
        w = position >> 5
        shifted = np.uint64(field(source, source_bit + k, width)) << np.uint64(position & 31)
        target[w] |= np.uint32(shifted & np.uint64(0xFFFFFFFF))
        if (position & 31) + width > 32:
            target[w + 1] |= np.uint32(shifted >> np.uint64(32))


@nb.njit(parallel=True, **JIT)
def pack_rows(codes, width, row_words):
    """Each row of ``codes`` packed into ``row_words`` words of its own, rows in parallel."""
    words = np.zeros(codes.shape[0] * row_words, dtype=np.uint32)
    for r in nb.prange(codes.shape[0]):
        pack_into(words, r * row_words, codes[r], width)
    return words


def pack_fields(values: np.ndarray, width: int) -> bytes:
    """Pack integers as consecutive ``width``-bit fields in whole words (spec section 5)."""
    words = np.zeros(packed_size(values.size, width) // 4, dtype=np.uint32)
    pack_into(words, 0, np.ascontiguousarray(values), width)
    return words.astype("<u4").tobytes()
