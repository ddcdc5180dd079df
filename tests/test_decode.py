"""Spec sections 6 to 9: round trips, the pinned arithmetic, sizes, and rejection of damaged streams."""

import struct
import threading

import numpy as np
import pytest
from checks import check_backends_agree, check_rejected, same_bits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import encodings, valid_streams, weight_arrays

import icqcodec
from icqcodec import dtypes
from icqcodec.bitstream import unpack
from icqcodec.container import bytes_reader, read_header, tensor_layout
from icqcodec.index_coding import decode_segment, segment_bounds

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(data: bytes):
    header = read_header(*bytes_reader(data))
    record = header.tensors[0]
    layout = tensor_layout(record, header.chunk_log2)
    base = header.data_offset + record.offset

    def section(name):
        start, size = layout.sections[name]
        return data[base + start : base + start + size]

    return record, section


def formula_values(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode by the spec's formulas, independently: float64 arithmetic (exact here), one rounding.

    Returns (values as float32 before the output rounding, outlier mask, offsets, scales).
    """
    record, section = parse(data)
    p = record.params
    rows, cols = record.rows, record.cols
    per_row = 4 if p.outliers else 2
    params = np.frombuffer(section("params"), "<f2").reshape(rows, per_row).astype(np.float64)
    stride = -(-cols * p.bits // 32) * 4
    codes = np.stack([unpack(section("codes")[r * stride : (r + 1) * stride], cols, p.bits) for r in range(rows)])
    codes = codes.astype(np.int64)
    inlier_base = np.arange(1 << p.bits, dtype=np.float64)
    outlier_base = np.arange(1 << (p.bits - 1), dtype=np.float64)
    if p.kind == 1:
        book = np.frombuffer(section("codebook"), "<f2").astype(np.float64)
        inlier_base, outlier_base = book[: 1 << p.bits], book[1 << p.bits :]
    mask = np.zeros((rows, cols), bool)
    if p.outliers:
        segments = -(-cols // p.segment)
        counts = unpack(section("counts"), rows * segments, p.count_bits).astype(np.int64)
        symbols = unpack(section("gaps"), p.total_symbols, p.gap_bits).astype(np.int64)
        k = 0
        for r in range(rows):
            for s, (start, length) in enumerate(segment_bounds(cols, p.segment)):
                n = counts[r * segments + s]
                for pos in decode_segment(symbols[k : k + n].tolist(), length, p.gap_bits):
                    mask[r, start + pos] = True
                k += n
    exact = params[:, [0]] + inlier_base[codes] * params[:, [1]]  # exact in float64
    if p.outliers:
        half = 1 << (p.bits - 1)
        magnitude = params[:, [2]] + outlier_base[codes & (half - 1)] * params[:, [3]]
        signed = np.where(codes >= half, -magnitude, magnitude)
        exact = np.where(mask, signed, exact)
    return exact.astype(np.float32), mask, params[:, 0], params[:, 1]


@SETTINGS
@given(encodings())
def test_round_trip_backends_agree_and_match_the_formula(case):
    array, options = case
    data = icqcodec.encode(array, **options)
    decoded = check_backends_agree(data)["tensor"]
    assert decoded.shape == array.shape
    assert decoded.dtype == dtypes.numpy_dtype(dtypes.code_of(options["dtype"]))
    values, _, _, _ = formula_values(data)
    expected = values.astype(decoded.dtype).reshape(array.shape)
    assert same_bits(decoded, expected)


@SETTINGS
@given(weight_arrays(), st.integers(1, 8), st.sampled_from([0.0, 0.05]))
def test_inliers_inside_the_clipping_interval_decode_within_half_a_step(array, bits, ratio):
    data = icqcodec.encode(array, bits=bits, outlier_ratio=ratio, dtype="float32")
    decoded = icqcodec.decode(data).reshape(-1, array.shape[-1])
    values, mask, offsets, scales = formula_values(data)
    x = array.reshape(-1, array.shape[-1]).astype(np.float64)
    top = offsets[:, None] + ((1 << bits) - 1) * scales[:, None]
    inside = ~mask & (x >= offsets[:, None]) & (x <= top)
    error = np.abs(decoded.astype(np.float64) - x)
    slack = scales[:, None] / 2 * (1 + 1e-6) + np.abs(x) * 2**-23  # half a step, plus binary32 rounding
    assert (error <= slack)[inside].all()


@SETTINGS
@given(encodings())
def test_file_size_equals_the_spec_formula(case):
    array, options = case
    data = icqcodec.encode(array, **options)
    record, _ = parse(data)
    p = record.params
    rows, cols = record.rows, record.cols

    def padded(n):
        return -(-n // 64) * 64

    def words(n, w):
        return -(-n * w // 32) * 4

    segments = -(-cols // (1 << p.segment_log2))
    sections = [2 * p.codebook_size, rows * 2 * (2 + (2 if p.outliers else 0)), rows * words(cols, p.bits)]
    if p.outliers:
        sections += [words(rows * segments, p.count_bits), words(p.total_symbols, p.gap_bits)]
    body = sum(padded(s) for s in sections)
    payload = body + 4 * -(-body // (1 << 16))
    directory_size = struct.unpack_from("<Q", data, 16)[0]
    assert len(data) == -(-(64 + directory_size) // 256) * 256 + payload


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_damaged_streams_are_rejected(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    array = rng.standard_normal((data.draw(st.integers(1, 6)), data.draw(st.integers(1, 200)))).astype(np.float32)
    good = icqcodec.encode(array, bits=data.draw(st.integers(1, 8)), outlier_ratio=0.05)
    position = data.draw(st.integers(0, len(good) * 8 - 1))
    flipped = bytearray(good)
    flipped[position // 8] ^= 1 << (position % 8)
    check_rejected(bytes(flipped))
    check_rejected(good[: data.draw(st.integers(0, len(good) - 1))])
    check_rejected(good + bytes(data.draw(st.binary(min_size=1, max_size=300))))


def test_decoded_bits_match_independent_float_rounding(rng):
    """float16 and bfloat16 outputs are the float32 outputs rounded to nearest even."""
    array = rng.standard_normal((32, 300)).astype(np.float32)
    for dtype in ("float16", "bfloat16"):
        data = icqcodec.encode(array, bits=3, dtype=dtype)
        f32, _, _, _ = formula_values(data)
        assert same_bits(icqcodec.decode(data), f32.astype(dtypes.numpy_dtype(dtypes.code_of(dtype))))


def test_concurrent_decodes_from_threads(rng):
    blobs = [icqcodec.encode(rng.standard_normal((64, 512)).astype(np.float32), bits=b) for b in (2, 3, 4, 5)]
    expected = [icqcodec.decode(b) for b in blobs]
    failures = []

    def work(i):
        for _ in range(5):
            if not same_bits(icqcodec.decode(blobs[i % 4]), expected[i % 4]):
                failures.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_max_output_size(rng):
    data = icqcodec.encode(rng.standard_normal((4, 64)).astype(np.float32))
    with pytest.raises(ValueError, match="max_output_size"):
        icqcodec.decode(data, max_output_size=4 * 64 * 4 - 1)
    assert icqcodec.decode(data, max_output_size=4 * 64 * 4).shape == (4, 64)


def test_unknown_backend(rng):
    data = icqcodec.encode(rng.standard_normal((4, 64)).astype(np.float32))
    with pytest.raises(ValueError, match="backend"):
        icqcodec.decode(data, backend="fortran")


@SETTINGS
@given(valid_streams())
def test_random_valid_streams_decode_identically(data):
    decoded = check_backends_agree(data)["t"]
    values, _, _, _ = formula_values(data)
    with np.errstate(over="ignore"):
        assert same_bits(decoded, values.astype(decoded.dtype))
