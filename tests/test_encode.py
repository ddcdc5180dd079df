"""Spec section 10 (informative encoder): options, determinism, golden encodings, refusals."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from golden.inputs import CASES, heavy_tailed

import icqcodec
from icqcodec import files
from icqcodec.encode import should_quantize

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_encodings(name):
    case = CASES[name]
    expected = (GOLDEN / f"{name}.icq").read_bytes()
    produced = icqcodec.encode(heavy_tailed(case["shape"]), **case["options"])
    assert hashlib.sha256(produced).hexdigest() == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("segment_log2", [3, 25, 10.0])
def test_segment_log2_outside_the_spec_is_refused(segment_log2):
    from icqcodec.encode import EncodeOptions

    with pytest.raises(ValueError, match=f"segment_log2 must be an integer from 4 to 24, got {segment_log2!r}"):
        EncodeOptions(segment_log2=segment_log2)


def test_encoder_options_record_every_option():
    import dataclasses
    import json

    from icqcodec.encode import EncodeOptions

    options = EncodeOptions(bits=3, outlier_ratio=0.025, quantizer="codebook", segment_log2=8)
    recorded = json.loads(options.to_json())
    assert set(recorded) == {f.name for f in dataclasses.fields(EncodeOptions)}
    assert EncodeOptions(**recorded) == options
    from icqcodec.container import bytes_reader, read_header

    header = read_header(*bytes_reader(icqcodec.encode(np.ones((4, 64), np.float32))))
    assert json.loads(header.metadata["icq.encoder_options"])["segment_log2"] == 10


def test_deterministic(rng):
    array = rng.standard_t(4, size=(40, 700)).astype(np.float32)
    for quantizer in ("uniform", "codebook"):
        assert icqcodec.encode(array, quantizer=quantizer) == icqcodec.encode(array.copy(), quantizer=quantizer)


def test_outlier_count_per_row(rng):
    array = rng.standard_normal((7, 1000)).astype(np.float32)
    for ratio, expected in ((0.0, 0), (0.05, 50), (0.0004, 0), (0.0006, 1), (1.0, 1000)):
        from icqcodec.container import bytes_reader, read_header

        data = icqcodec.encode(array, outlier_ratio=ratio)
        params = read_header(*bytes_reader(data)).tensors[0].params
        assert params.outliers == expected


def test_outliers_get_their_own_range(rng):
    """On heavy-tailed rows, outliers lower the error at the same code width."""
    array = rng.standard_t(3, size=(64, 1024)).astype(np.float32)

    def error(ratio):
        decoded = icqcodec.decode(icqcodec.encode(array, bits=2, outlier_ratio=ratio, dtype="float32"))
        return float(((decoded - array) ** 2).sum() / (array**2).sum())

    assert error(0.05) < 0.6 * error(0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(bad):
    array = np.ones((4, 64), np.float32)
    array[2, 3] = bad
    with pytest.raises(ValueError, match="finite"):
        icqcodec.encode(array)


def test_values_beyond_float16_parameters_are_refused():
    with pytest.raises(ValueError, match="float16 range"):
        icqcodec.encode(np.full((2, 64), 1e6, np.float32))


@pytest.mark.parametrize("options, match", [
    (dict(bits=0), "bits"), (dict(bits=9), "bits"), (dict(outlier_ratio=1.5), "outlier_ratio"),
    (dict(quantizer="kmeans"), "quantizer"), (dict(dtype="int8"), "dtype"),
])  # fmt: skip
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        icqcodec.encode(np.ones((2, 64), np.float32), **options)


def test_integer_input_is_refused_for_icq():
    with pytest.raises(ValueError, match="floating-point"):
        icqcodec.encode(np.ones((2, 64), np.int32))


def test_default_rule():
    assert should_quantize(np.ones((64, 64), np.float32))
    assert not should_quantize(np.ones(8192, np.float32))  # rank 1
    assert not should_quantize(np.ones((1024, 32), np.float32))  # narrow rows
    assert not should_quantize(np.ones((64, 64), np.int64))
    big = np.ones((64, 64), np.float32)
    big[0, 0] = np.inf
    assert not should_quantize(big)


def test_auto_coding_keeps_passthrough_tensors_bit_exact(rng):
    tensors = {
        "weight": rng.standard_normal((64, 128)).astype(np.float32),
        "bias": rng.standard_normal(128).astype(np.float32),
        "ids": np.arange(10, dtype=np.int64),
        "odd": np.array([np.nan, -0.0, np.inf], np.float32),
    }
    decoded = files.load(files.save(tensors))
    for name in ("bias", "ids", "odd"):
        assert decoded[name].tobytes() == tensors[name].tobytes()
    assert decoded["weight"].dtype == np.float32
    assert not np.array_equal(decoded["weight"], tensors["weight"])  # quantized


def test_outliers_per_segment_fix_each_segments_count():
    from icqcodec.bitstream import unpack
    from icqcodec.container import bytes_reader, read_header, tensor_layout
    from icqcodec.encode import outlier_count

    weights = np.random.default_rng(2).standard_t(3, (16, 700)).astype(np.float32)
    for per_segment in (False, True):
        data = files.save({"w": weights}, bits=2, outlier_ratio=0.1, segment_log2=7, outliers_per_segment=per_segment)
        read_at, size = bytes_reader(data)
        header = read_header(read_at, size)
        record = header.tensors[0]
        p = record.params
        layout = tensor_layout(record, header.chunk_log2)
        start = header.data_offset + record.offset
        gaps = unpack(read_at(start + layout.sections["gaps"][0], layout.sections["gaps"][1]), p.total_symbols,
                      p.gap_bits)  # fmt: skip
        counts = unpack(read_at(start + layout.sections["counts"][0], layout.sections["counts"][1]), 16 * 6,
                        p.count_bits)  # fmt: skip
        placed = np.concatenate([[0], np.cumsum(gaps != (1 << p.gap_bits) - 1)])
        ends = np.cumsum(counts)
        per = (placed[ends] - placed[ends - counts]).reshape(16, 6)
        if per_segment:
            assert (per == [outlier_count(0.1, n) for n in (128,) * 5 + (60,)]).all()
            assert p.outliers == 13 * 5 + 6
        else:
            assert p.outliers == outlier_count(0.1, 700) and len(set(per[:, 0])) > 1
        assert json.loads(header.metadata["icq.encoder_options"])["outliers_per_segment"] is per_segment
