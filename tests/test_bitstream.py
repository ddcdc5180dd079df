"""Spec section 5: LSB-first packing into whole 32-bit words, with the spec's worked examples."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from icqcodec.bitstream import bits_are_zero, packed_size, unpack
from icqcodec.jit import pack_fields


def test_spec_examples():
    assert pack_fields(np.array([1, 2, 3, 0, 3]), 2) == bytes([0x39, 0x03, 0x00, 0x00])
    assert pack_fields(np.array([5, 6, 7]), 3)[:2] == bytes([0xF5, 0x01])


@given(st.integers(1, 32), st.lists(st.integers(0, 2**32 - 1), max_size=200))
def test_pack_unpack(width, values):
    values = np.array([v % (1 << width) for v in values], dtype=np.uint64)
    data = pack_fields(values, width)
    assert len(data) == packed_size(values.size, width)
    assert (unpack(data, values.size, width) == values).all()
    assert bits_are_zero(data, values.size * width)
