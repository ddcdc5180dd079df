"""The reference decoder, section by section: the bit order (5), raw tensors (6.1), the icq
sections (6.2), the levels (7), the gap chains (8) and the padding between payloads (9.2 step 10);
and that it decodes every valid conformance vector to the expected bytes."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import icqcodec
from icqcodec import payload, reference
from icqcodec.bitstream import pack
from icqcodec.container import bytes_reader, read_header

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "conformance" / "vectors" / "valid"


def test_decodes_every_valid_vector_to_its_expected_bytes():
    manifest = json.loads((ROOT / "conformance" / "MANIFEST.json").read_text())
    valid = [e["name"] for e in manifest["vectors"] if e["kind"] == "valid" and "container" not in e]  # ICQ files
    for name in valid:
        tensors = reference.load((VECTORS / f"{name}.icq").read_bytes())
        expected = json.loads((VECTORS / f"{name}.expected" / "tensors.json").read_text())
        assert list(tensors) == [t["name"] for t in expected], name
        for t in expected:
            content = np.ascontiguousarray(tensors[t["name"]]).tobytes()
            assert hashlib.sha256(content).hexdigest() == t["sha256"], (name, t["name"])
    assert len(valid) >= 60


def test_fields_from_an_odd_bit():
    values = np.array([5, 6, 7, 1, 0, 3], np.uint64)
    data = pack(values, 3)
    # the same fields, one bit later in the stream: shift the whole stream left by one bit
    shifted = (int.from_bytes(data, "little") << 1).to_bytes(len(data) + 1, "little")
    assert reference.unpack_from_bit(shifted, 1, 6, 3).tolist() == values.tolist()
    assert reference.unpack_from_bit(data, 0, 6, 3).tolist() == values.tolist()


def test_dequantize_rows_uses_the_outlier_range_at_outliers_only():
    params = np.array([[0.0, 1.0, 10.0, 2.0]], np.float16)
    codes = np.array([[0, 1, 2, 3]])
    outlier = np.array([[False, True, False, True]])
    values = reference.dequantize_rows(params, codes, outlier, 2, 2, None, None)
    # inliers 0 + q; outliers: q = 1 -> +(10 + 1 * 2), q = 3 -> sign 1, magnitude 10 + 1 * 2
    assert values.tolist() == [[0.0, 12.0, 2.0, -12.0]]


def test_bool_bytes_other_than_0_and_1_are_corrupt():
    data = bytearray(icqcodec.save({"flags": np.array([True, False, True])}))
    header = read_header(*bytes_reader(bytes(data)))
    start = header.data_offset + header.tensors[0].offset
    data[start + 1] = 2
    from conformance.invariants import rechecksum

    with pytest.raises(icqcodec.CorruptStreamError) as caught:
        reference.load(rechecksum(data))
    assert str(caught.value) == "corrupt: tensor 'flags': bool byte other than 0 or 1 (spec section 3)"


def test_padding_between_payloads_readable_and_shared_checks_agree():
    data = bytearray(icqcodec.save({"a": np.arange(3, dtype=np.int8), "b": np.arange(5, dtype=np.int8)}))
    header = read_header(*bytes_reader(bytes(data)))
    first = header.tensors[0]
    gap_at = header.data_offset + first.offset + first.size
    assert header.tensors[1].offset > first.offset + first.size  # there is padding to break
    data[gap_at] = 1
    read_at, _ = bytes_reader(bytes(data))
    errors = []
    for check in (reference.check_payload_padding, payload.check_payload_padding):
        with pytest.raises(icqcodec.CorruptStreamError) as caught:
            check(header, read_at)
        errors.append(str(caught.value))
    assert (
        errors[0] == errors[1] == f"corrupt: padding between payloads is not zero at offset {gap_at} (spec section 4.3)"
    )
