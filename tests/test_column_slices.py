"""Spec section 9.4, columns: a column range decodes from the segments that cover it, on every
backend, to the bits of the whole decode's slice; what a column reader checks and what it cannot."""

import numpy as np
import pytest
from checks import host, same_bits
from hypothesis import given
from hypothesis import strategies as st
from strategies import valid_streams

import icqcodec
from icqcodec import files
from icqcodec.container import bytes_reader, read_header
from icqcodec.decode import BACKENDS, decode_tensor
from icqcodec.errors import ChecksumError, CorruptStreamError
from icqcodec.gpu import available as gpu_available
from icqcodec.jit import pack_fields

HERE = [b for b in BACKENDS if b != "cupy" or gpu_available()]  # hypothesis draws each example's own


def _decode(data: bytes, backend: str, rows=None, columns=None):
    read_at, size = bytes_reader(data)
    header = read_header(read_at, size)
    return header.tensors[0], host(decode_tensor(header, header.tensors[0], read_at, rows, backend=backend,
                                                 columns=columns))  # fmt: skip


@pytest.mark.parametrize("backend", HERE)
@given(data=valid_streams(), cut=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)))
def test_columns_equal_the_slice_of_the_whole_decode(backend, data, cut):
    record, whole = _decode(data, "reference")
    matrix = whole.reshape(record.rows, record.cols)
    r0, r1 = sorted(int(f * record.rows) for f in cut[:2])
    c0, c1 = sorted(int(f * record.cols) for f in cut[2:])
    _, part = _decode(data, backend, (r0, r1), (c0, c1))
    assert same_bits(part.view(matrix.dtype) if part.dtype != matrix.dtype else part, matrix[r0:r1, c0:c1])


def _sliced_file(tmp_path, rng, shape=(6, 8, 200), segment_log2=4):
    path = tmp_path / "t.icq"
    weights = (rng.standard_t(4, size=shape) * 0.02).astype(np.float32)
    files.save_file({"w": weights}, path, bits=3, segment_log2=segment_log2)
    return path


def test_get_slice_cuts_the_leading_and_the_last_axis(tmp_path, rng, backend):
    path = _sliced_file(tmp_path, rng)
    whole = files.load_file(path)["w"]
    with files.safe_open(path, backend=backend) as f:
        s = f.get_slice("w")
        for index in ((slice(1, 4), Ellipsis, slice(17, 133)), (slice(None), slice(None), slice(190, 200)),
                      (Ellipsis, slice(0, 16)), (slice(2, 3), slice(None), slice(5, 5)), slice(0, 6)):  # fmt: skip
            assert same_bits(host(s[index], whole.dtype), whole[index]), index


@pytest.mark.parametrize("index, message", [
    ((slice(0, 4, 2), slice(None), slice(0, 8)), "step 1"),
    ((slice(None), slice(1, 3), slice(0, 8)), "the axes between whole"),
    ((slice(None), slice(None), slice(None), slice(None)), "4 indices for a tensor of rank 3"),
    ((Ellipsis, Ellipsis), "one ... at most"),
    ((slice(None), 3, slice(0, 8)), "step 1"),
])  # fmt: skip
def test_get_slice_refuses_what_it_cannot_cut(tmp_path, rng, index, message):
    path = _sliced_file(tmp_path, rng)
    with files.safe_open(path) as f, pytest.raises(TypeError, match=message):
        f.get_slice("w")[index]


ROWS, SEGMENTS, GAP_BITS = 3, 4, 4  # 2-bit codes, 16-column segments, one outlier in each


def _file(symbols: list[int], counts: list[int]) -> bytes:
    """A tensor of ROWS x 64 whose chains are ``symbols`` (``counts`` of them per row and segment)."""
    from icqcodec.container import TensorRecord
    from icqcodec.encode import assemble
    from icqcodec.icq_params import IcqParams

    rng = np.random.default_rng(5)
    sections = {"params": np.array([0.5, 0.25, 4.0, 1.0] * ROWS, "<f2").tobytes(),
                "codes": pack_fields(rng.integers(0, 4, ROWS * 64), 2),
                "counts": pack_fields(np.array(counts), 2), "gaps": pack_fields(np.array(symbols), GAP_BITS)}  # fmt: skip
    params = IcqParams(2, 0, GAP_BITS, 2, 4, 0, SEGMENTS, len(symbols))
    record = TensorRecord("t", 11, 11, 1, (ROWS, 64), params=params)
    return b"".join(assemble([(record, sections)], {}))


def test_a_broken_chain_in_the_columns_read_is_rejected_one_outside_is_not(backend):
    symbols = [3] * (ROWS * SEGMENTS)
    symbols[1 * SEGMENTS + 2] = (1 << GAP_BITS) - 1  # row 1, segment 2: its one symbol an escape
    data = _file(symbols, [1] * (ROWS * SEGMENTS))
    with pytest.raises(CorruptStreamError, match="row 1 segment 2: segment ends with an escape"):
        _decode(data, backend, None, (32, 48))
    with pytest.raises(CorruptStreamError, match="row 1 segment 2: segment ends with an escape"):
        _decode(data, backend, (1, 2), (40, 41))
    _, part = _decode(data, backend, None, (0, 32))  # segments 0 and 1 only: none of their rules is broken
    assert part.shape == (ROWS, 32)
    with pytest.raises(CorruptStreamError, match="row 1 segment 2"):
        icqcodec.decode(data, backend=backend)


def test_a_column_reader_does_not_count_a_rows_outliers(backend):
    counts, symbols = [1] * (ROWS * SEGMENTS), [3] * (ROWS * SEGMENTS)
    counts[2 * SEGMENTS + 3] = 0  # row 2 segment 3 has no outlier: row 2 holds 3 of the 4 declared
    del symbols[2 * SEGMENTS + 3]
    counts[0], symbols[0:1] = 2, [15, 0]  # row 0 segment 0: an escape, then column 15 (12 symbols still)
    data = _file(symbols, counts)
    with pytest.raises(CorruptStreamError, match="row 2 has 3 outliers, expected 4"):
        icqcodec.decode(data, backend=backend)
    _, part = _decode(data, backend, None, (16, 64))
    assert part.shape == (ROWS, 48)
    _, rows = _decode(data, "reference", (0, 2))  # rows 0 and 1 hold 4 each
    _, part = _decode(data, backend, (0, 2), (0, 64))
    assert same_bits(part, rows)


def test_every_chunk_a_column_read_touches_is_verified(backend):
    rng = np.random.default_rng(3)
    data = bytearray(icqcodec.encode(rng.standard_normal((64, 4096)).astype(np.float32), bits=2))
    header = read_header(*bytes_reader(bytes(data)))
    record = header.tensors[0]
    from icqcodec.container import tensor_layout

    codes_start, _ = tensor_layout(record, header.chunk_log2).sections["codes"]
    data[header.data_offset + codes_start + 40 * 1024 + 3] ^= 1  # in row 40's codes, columns 12-15
    with pytest.raises(ChecksumError):
        _decode(bytes(data), backend, None, (0, 16))


def test_a_column_read_holding_the_last_column_checks_the_rows_code_padding(backend):
    from icqcodec.encode import EncodeOptions, assemble, encode_tensor

    weights = np.random.default_rng(4).standard_normal((8, 100)).astype(np.float32)
    record, sections = encode_tensor("t", weights, EncodeOptions(bits=3, segment_log2=4), coding="icq")
    codes = bytearray(sections["codes"])
    stride = len(codes) // 8
    codes[2 * stride + stride - 1] |= 0x80  # row 2: a padding bit after its 100 codes of 3 bits
    data = b"".join(assemble([(record, dict(sections, codes=bytes(codes)))], {}))
    for columns in ((90, 100), (99, 100), (0, 100)):
        with pytest.raises(CorruptStreamError, match="padding bits of code row 2 are not zero"):
            _decode(data, backend, None, columns)
    _, part = _decode(data, backend, None, (0, 96))
    assert part.shape == (8, 96)
