"""Spec section 10.1: sub-records cut at segment boundaries are valid icq tensors that decode to the
slice, and the sub-records of a split put together give the whole tensor."""

import numpy as np
import pytest
from checks import same_bits
from hypothesis import given
from hypothesis import strategies as st
from oracle import decode as oracle_decode

import icqcodec
from icqcodec import files
from icqcodec.container import bytes_reader, read_header

SEGMENT_LOG2 = 4


@st.composite
def sliceable(draw):
    """A file whose tensor fixes its outliers per segment, and a split of its segments."""
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 200))
    seed = draw(st.integers(0, 2**32 - 1))
    options = dict(bits=draw(st.integers(1, 8)), outlier_ratio=draw(st.sampled_from([0.0, 0.05, 0.1, 0.3, 1.0])),
                   quantizer=draw(st.sampled_from(["uniform", "codebook"])),
                   dtype=draw(st.sampled_from(["float16", "bfloat16", "float32"])))  # fmt: skip
    weights = (np.random.default_rng(seed).standard_t(4, (rows, cols)) * 0.05).astype(np.float32)
    data = files.save({"w": weights}, coding="icq", segment_log2=SEGMENT_LOG2, outliers_per_segment=True, **options)
    segments = -(-cols // (1 << SEGMENT_LOG2))
    cuts = sorted(draw(st.sets(st.integers(1, segments), max_size=4)) | {segments})
    bounds = [0] + [min(c << SEGMENT_LOG2, cols) for c in cuts]
    return data, list(zip(bounds, bounds[1:], strict=False))


def _open(tmp_path, data: bytes):
    path = tmp_path / "w.icq"
    path.write_bytes(data)
    return files.safe_open(path)


@given(case=sliceable())
def test_every_sub_record_is_valid_and_decodes_to_its_slice(tmp_path_factory, case):
    data, split = case
    with _open(tmp_path_factory.mktemp("s"), data) as f:
        whole = f.get_tensor("w")
        parts = []
        for c0, c1 in split:
            cut = f.slice_record("w", (c0, c1))
            decoded = icqcodec.decode(cut, backend="reference")  # every rule of the spec checked
            assert same_bits(decoded, whole[:, c0:c1])
            [(_, _, shape, raw)] = oracle_decode(cut)  # and the independent decoder agrees
            assert shape == [whole.shape[0], c1 - c0] and raw == whole[:, c0:c1].tobytes()
            parts.append(decoded)
        assert same_bits(np.concatenate(parts, axis=1), whole)


def test_rows_and_higher_ranks(tmp_path, rng):
    weights = (rng.standard_t(4, (3, 5, 100)) * 0.05).astype(np.float32)
    data = files.save({"w": weights}, bits=3, segment_log2=5, outliers_per_segment=True, coding="icq")
    with _open(tmp_path, data) as f:
        whole = f.get_tensor("w")
        cut = f.slice_record("w", (32, 96), rows=(1, 3))
        assert same_bits(icqcodec.decode(cut), whole[1:3, :, 32:96])
        assert same_bits(icqcodec.decode(f.slice_record("w", (64, 100))), whole[..., 64:100])


def test_refusals(tmp_path, rng):
    weights = (rng.standard_t(4, (8, 256)) * 0.05).astype(np.float32)
    data = files.save({"w": weights, "b": np.arange(4.0)}, bits=2, segment_log2=6, coding={"w": "icq"})
    with _open(tmp_path, data) as f:
        with pytest.raises(ValueError, match="do not start and end on its segments of 64 columns"):
            f.slice_record("w", (32, 128))
        with pytest.raises(ValueError, match="not a range of tensor 'w'"):
            f.slice_record("w", (128, 320))
        with pytest.raises(ValueError, match="stored raw"):
            f.slice_record("b", (0, 2))
        # the default encoder picks each row's largest wherever they are: counts differ per segment
        with pytest.raises(ValueError, match=r"its rows hold \d+ to \d+ outliers in columns 0:64; a sub-record needs"):
            f.slice_record("w", (0, 64))
        assert same_bits(icqcodec.decode(f.slice_record("w", (0, 256))), f.get_tensor("w"))


def test_columns_without_outliers_make_a_sub_record_without_outlier_side(tmp_path):
    weights = np.tile(np.linspace(-1, 1, 96, dtype=np.float32), (4, 1))
    weights[:, 5] = 50.0  # every row's one outlier, in segment 0
    data = files.save({"w": weights}, bits=2, outlier_ratio=1 / 96, segment_log2=5, coding="icq",
                      quantizer="codebook")  # fmt: skip
    with _open(tmp_path, data) as f:
        whole = f.get_tensor("w")
        for c0, c1, outliers in ((0, 32, 1), (32, 64, 0), (64, 96, 0), (32, 96, 0)):
            cut = f.slice_record("w", (c0, c1))
            record = read_header(*bytes_reader(cut)).tensors[0]
            assert record.params.outliers == outliers
            assert record.params.codebook_size == (6 if outliers else 4)
            assert same_bits(icqcodec.decode(cut, backend="reference"), whole[:, c0:c1])
