"""Spec section 8: gap chains, escapes, canonical form, and their rejections."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icqcodec.errors import CorruptStreamError
from icqcodec.index_coding import decode_segment, encode_segment, segment_bounds


def test_escape_examples():
    # gap_bits 2: M = 3; a gap of exactly M is an escape then 0
    assert encode_segment([3], 2) == [3, 0]
    assert encode_segment([0, 1, 5, 12], 2) == [0, 0, 3, 0, 3, 3, 0]
    assert decode_segment([3, 0], 8, 2) == [3]


@given(st.integers(1, 16), st.sets(st.integers(0, 500)))
def test_round_trip_and_canonical(gap_bits, positions):
    positions = sorted(positions)
    symbols = encode_segment(positions, gap_bits)
    assert decode_segment(symbols, 501, gap_bits) == positions
    assert not symbols or symbols[-1] != (1 << gap_bits) - 1


def test_chain_past_segment_end():
    with pytest.raises(CorruptStreamError, match="past the end"):
        decode_segment([2, 2], 4, 2)


def test_trailing_escape():
    with pytest.raises(CorruptStreamError) as caught:
        decode_segment([0, 3], 10, 2, where="row 4 segment 1: ")
    assert str(caught.value) == "corrupt: row 4 segment 1: segment ends with an escape (spec section 8)"


def test_segment_bounds():
    assert segment_bounds(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert segment_bounds(3, 16) == [(0, 3)]
