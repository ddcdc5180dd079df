"""Byte-level construction of ICQ files, valid or deliberately broken, with checksums that hold.

The generator needs files that break exactly one rule, so every field and padding byte can be set
here before the checksums that cover it are computed. Plain Python: it mirrors the spec, not the
encoder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from icqcodec import bitstream
from icqcodec.container import crc32c

MAGIC = b"\x89ICQ\r\n\x1a\n"


def pack(values, width: int) -> bytes:
    """LSB-first fields in whole 32-bit words (spec section 5)."""
    assert all(0 <= value < (1 << width) for value in values)
    return bitstream.pack(np.asarray(values, dtype=np.uint64), width)


def string(raw: bytes) -> bytes:
    return len(raw).to_bytes(4, "little") + raw


def align(value: int, n: int) -> int:
    return -(-value // n) * n


@dataclass
class Tensor:
    """One tensor record and its body sections; every field may be set to anything."""

    name: bytes
    dtype: int
    source_dtype: int
    coding: int
    shape: tuple
    sections: list[bytes]  # body sections in order, unpadded
    params: bytes = b""
    reserved: int = 0
    rank: int | None = None  # None: len(shape)
    section_padding: list[bytes] | None = None  # None: zeros
    offset: int | None = None  # None: the canonical offset
    size: int | None = None  # None: the real payload size
    table_crc: int | None = None  # None: the real CRC
    chunk_crcs: dict[int, int] = field(default_factory=dict)  # chunk index -> CRC to write instead

    def body(self) -> bytes:
        out = b""
        for i, section in enumerate(self.sections):
            pad = align(len(section), 64) - len(section)
            padding = self.section_padding[i] if self.section_padding else bytes(pad)
            assert len(padding) == pad
            out += section + padding
        return out


def icq_params(bits, kind, gap_bits, count_bits, segment_log2, codebook_size, outliers, total, r8=0, r32=0) -> bytes:
    return struct.pack("<BBBBBBHIIQ", bits, kind, gap_bits, count_bits, segment_log2, r8, codebook_size, outliers,
                       r32, total)  # fmt: skip


def build(tensors: list[Tensor], metadata: list[tuple[bytes, bytes]] = (), features: list[tuple] = (), *,
          chunk_log2: int = 12, major: int = 1, minor: int = 0, directory_extra: bytes = b"",
          directory_padding: bytes | None = None, payload_padding: bytes | None = None) -> bytes:  # fmt: skip
    """An ICQ file from parts; checksums are computed over whatever the parts hold."""
    payloads, directory = [], bytearray()
    for feature_id, feature_flags, payload in features:
        directory += struct.pack("<IIQ", feature_id, feature_flags, len(payload)) + payload
    for key, value in metadata:
        directory += string(key) + string(value)
    position = 0
    for t in tensors:
        body = t.body()
        chunk = 1 << chunk_log2
        crcs = [crc32c(body[i : i + chunk]) for i in range(0, len(body), chunk)]
        for index, value in t.chunk_crcs.items():
            crcs[index] = value
        table = b"".join(c.to_bytes(4, "little") for c in crcs)
        payload = body + table
        offset = position if t.offset is None else t.offset
        size = len(payload) if t.size is None else t.size
        table_crc = crc32c(table) if t.table_crc is None else t.table_crc
        rank = len(t.shape) if t.rank is None else t.rank
        directory += string(t.name)
        directory += struct.pack("<BBBBIQQII", t.dtype, t.source_dtype, t.coding, rank, t.reserved, offset, size,
                                 table_crc, len(t.params))  # fmt: skip
        directory += b"".join(d.to_bytes(8, "little") for d in t.shape) + t.params
        payloads.append((position, payload))
        position = align(position + len(payload), 256)
    directory += directory_extra
    data_offset = align(64 + len(directory), 256)
    data_size = payloads[-1][0] + len(payloads[-1][1]) if payloads else 0
    head = struct.pack("<8sHHIQQQIIIB3sI", MAGIC, major, minor, 0, len(directory), data_offset, data_size,
                       len(tensors), len(metadata), len(features), chunk_log2, b"\0\0\0",
                       crc32c(bytes(directory)))  # fmt: skip
    head += crc32c(head).to_bytes(4, "little")
    gap = data_offset - 64 - len(directory)
    out = bytearray(head + bytes(directory) + (bytes(gap) if directory_padding is None else directory_padding))
    for i, (offset, payload) in enumerate(payloads):
        start = data_offset + offset
        fill = start - len(out)
        out += bytes(fill) if payload_padding is None or i == 0 else payload_padding[:fill].ljust(fill, b"\0")
        out += payload
    return bytes(out)


def patch(data: bytes, offset: int, value: bytes, *, fix_header_crc: bool = True) -> bytes:
    """Overwrite bytes of the fixed header (then recompute header_crc) or anywhere else."""
    out = bytearray(data)
    out[offset : offset + len(value)] = value
    if fix_header_crc:
        out[60:64] = crc32c(bytes(out[:60])).to_bytes(4, "little")
    return bytes(out)


# ---- annex: ICQ tensors in safetensors files --------------------------------------------------------


def safetensors(tensors: list[tuple[str, str, list[int], bytes]], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file of (name, dtype name, shape, bytes), in that order."""
    import json

    header: dict = {"__metadata__": metadata} if metadata is not None else {}
    position = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [position, position + len(data)]}
        position += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def icq_tensor(name: str, icq_file: bytes) -> list[tuple[str, str, list[int], bytes]]:
    """The stored tensor of an ICQ tensor under the annex: the U8 vector of its one-tensor ICQ file."""
    return [(name, "U8", [len(icq_file)], icq_file)]
