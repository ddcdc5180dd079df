"""Spec section 4: header, directory, alignment, checksums, limits, order of checks."""

import struct

import numpy as np
import pytest
from checks import check_rejected

import icqcodec
from conformance.invariants import rechecksum
from icqcodec import files
from icqcodec.constants import MAGIC
from icqcodec.container import crc32c


@pytest.fixture(scope="module")
def sample() -> bytes:
    rng = np.random.default_rng(0)
    return files.save(
        {"w": rng.standard_normal((8, 128)).astype(np.float32), "b": np.arange(5, dtype=np.int64)},
        metadata={"format": "pt"},
        coding={"w": "icq"},
    )


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_fixed_header_fields(sample):
    assert sample[:8] == MAGIC == b"\x89ICQ\r\n\x1a\n"
    major, minor, flags, directory_size, data_offset, data_size = struct.unpack_from("<HHIQQQ", sample, 8)
    assert (major, minor, flags) == (1, 0, 0)
    assert data_offset == -(-(64 + directory_size) // 256) * 256
    assert len(sample) == data_offset + data_size
    assert struct.unpack_from("<III", sample, 40) == (2, 4, 0)  # tensors, metadata (format + 3 icq.*), features


def test_metadata_round_trip(sample):
    from icqcodec.container import bytes_reader, read_header

    read_at, size = bytes_reader(sample)
    meta = read_header(read_at, size).metadata
    assert meta["format"] == "pt"
    assert meta["icq.encoder"] == "icqcodec"
    assert list(meta) == sorted(meta)


def test_payloads_are_aligned(sample):
    from icqcodec.container import bytes_reader, read_header

    header = read_header(*bytes_reader(sample))
    for record in header.tensors:
        assert (header.data_offset + record.offset) % 256 == 0


@pytest.mark.parametrize(
    "data, category",
    [
        (b"", "truncated"),
        (MAGIC[:5], "truncated"),
        (b"PK\x03\x04", "bad-magic"),
        (b"\x89ICX", "bad-magic"),
        (MAGIC + b"\x01\x00", "truncated"),
        (MAGIC + b"\x02\x00\x00\x00", "unsupported-version"),
        (MAGIC + b"\x01\x00\x00\x00", "truncated"),
    ],
)
def test_short_inputs(data, category):
    check_rejected(data, category=category)


def test_every_strict_prefix_is_rejected(sample):
    for cut in range(len(sample)):
        with pytest.raises(icqcodec.FormatError) as caught:
            files.load(sample[:cut])
        assert caught.value.category in ("truncated", "bad-magic")


def test_trailing_bytes_are_rejected(sample):
    check_rejected(sample + b"\0", category="corrupt")


def test_header_checksum(sample):
    data = bytearray(sample)
    data[40] ^= 1
    check_rejected(bytes(data), icqcodec.ChecksumError, "checksum")


def test_directory_checksum(sample):
    data = bytearray(sample)
    data[70] ^= 1
    data[60:64] = crc32c(bytes(data[:60])).to_bytes(4, "little")
    check_rejected(bytes(data), icqcodec.ChecksumError, "checksum")


def test_chunk_checksum(sample):
    data = bytearray(sample)
    data[-40] ^= 0x10  # inside the last payload's body or table
    check_rejected(bytes(data), icqcodec.ChecksumError, "checksum")


def test_reserved_flags(sample):
    data = bytearray(sample)
    data[12] = 1
    check_rejected(rechecksum(data), icqcodec.CorruptStreamError, "corrupt")


def test_future_major_version_before_crc(sample):
    data = bytearray(sample)
    data[8:10] = (2).to_bytes(2, "little")  # header_crc is now wrong too: version wins
    check_rejected(bytes(data), icqcodec.UnsupportedVersionError, "unsupported-version")


def test_future_minor_version_is_read(sample):
    data = bytearray(sample)
    data[10:12] = (7).to_bytes(2, "little")
    assert sorted(files.load(rechecksum(data))) == ["b", "w"]


@pytest.mark.parametrize("offset, value, category", [
    (16, 1 << 27, "limit"),  # directory_size
    (40, (1 << 20) + 1, "limit"),  # tensor_count
    (52, 11, "corrupt"),  # chunk_log2 below 12
])  # fmt: skip
def test_header_field_rules(sample, offset, value, category):
    data = bytearray(sample)
    width = 8 if offset in (16, 24, 32) else (1 if offset == 52 else 4)
    data[offset : offset + width] = value.to_bytes(width, "little")
    check_rejected(rechecksum(data), category=category)


def test_duplicate_and_unordered_names_are_rejected():
    from icqcodec.container import TensorRecord
    from icqcodec.container_writer import build_payload, write_container

    records, payloads = [], []
    for name in ("b", "a"):
        record = TensorRecord(name, 5, 5, 0, (3,))
        payload, crc = build_payload(record, {"raw": b"abc"}, 16)
        records.append(TensorRecord(name, 5, 5, 0, (3,), table_crc=crc))
        payloads.append(payload)
    data = b"".join(write_container(records, payloads, {}, chunk_log2=16))
    check_rejected(data, category="corrupt")
    records[1] = TensorRecord("b", 5, 5, 0, (3,), table_crc=records[1].table_crc)
    data = b"".join(write_container(records, payloads, {}, chunk_log2=16))
    with pytest.raises(icqcodec.CorruptStreamError, match="duplicate"):
        files.load(data)


def test_whole_error_message():
    with pytest.raises(icqcodec.BadMagicError) as caught:
        files.load(b"GGUF" + bytes(60))
    assert str(caught.value) == "bad-magic: the input does not start with the ICQ magic at offset 0 (spec section 4.1)"
