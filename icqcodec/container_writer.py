"""Writing the container (spec sections 4 and 6): payloads with their padding and chunk tables,
the directory, the fixed header; whole files at once or tensor by tensor (:class:`StreamWriter`).

Informative: any writer whose bytes obey the spec is as good. The layout rules it follows are the
reader's, in :mod:`icqcodec.container`.
"""

from __future__ import annotations

import struct
from dataclasses import replace

from .constants import CODING_ICQ, DATA_ALIGNMENT, FIXED_HEADER_SIZE, FORMAT_MAJOR, MAGIC
from .container import FEATURE_RECORD, FIXED_HEADER, TENSOR_FIXED, Feature, TensorRecord, align, crc32c, tensor_layout
from .icq_params import ICQ_PARAMS, IcqParams
from .payload import chunk_table

__all__ = ["build_payload", "record_size", "write_container", "StreamWriter"]


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "little") + raw


def build_payload(record: TensorRecord, sections: dict[str, bytes], chunk_log2: int) -> tuple[bytes, int]:
    """Join a tensor's sections with their padding and chunk table; returns (payload, table_crc)."""
    layout = tensor_layout(record, chunk_log2)
    body = bytearray(layout.body_size)
    for name, (start, size) in layout.sections.items():
        data = sections[name]
        assert len(data) == size, (name, len(data), size)
        body[start : start + size] = data
    table = chunk_table(body, chunk_log2)
    return bytes(body) + table, crc32c(table)


def record_size(record: TensorRecord) -> int:
    """Bytes of the tensor's directory record (spec section 4.2.3), as :func:`_directory` writes it."""
    params = ICQ_PARAMS.size if record.coding == CODING_ICQ else 0
    return 4 + len(record.name.encode("utf-8")) + TENSOR_FIXED.size + 8 * len(record.shape) + params


def _directory(records, sizes, metadata: dict[str, str], features) -> tuple[bytes, list[int]]:
    """Directory bytes for records in canonical order with payload sizes; returns it and the offsets."""
    offsets, position = [], 0
    for size in sizes:
        offsets.append(position)
        position = align(position + size, DATA_ALIGNMENT)
    directory = bytearray()
    for feature in features:
        directory += (
            FEATURE_RECORD.pack(feature.feature_id, int(feature.required), len(feature.payload)) + feature.payload
        )
    for key in sorted(metadata, key=lambda k: k.encode("utf-8")):
        directory += _string(key) + _string(metadata[key])
    for record, offset, size in zip(records, offsets, sizes, strict=True):
        params = record.params.to_bytes() if record.params else b""
        directory += _string(record.name)
        directory += TENSOR_FIXED.pack(record.dtype, record.source_dtype, record.coding, len(record.shape), 0,
                                        offset, size, record.table_crc, len(params))  # fmt: skip
        directory += struct.pack(f"<{len(record.shape)}Q", *record.shape) + params
    return bytes(directory), offsets


def _fixed_header(directory: bytes, data_size: int, counts: tuple[int, int, int], chunk_log2: int, minor: int) -> bytes:
    data_offset = align(FIXED_HEADER_SIZE + len(directory), DATA_ALIGNMENT)
    fixed = FIXED_HEADER.pack(MAGIC, FORMAT_MAJOR, minor, 0, len(directory), data_offset, data_size, *counts,
                        chunk_log2, b"\0\0\0", crc32c(directory), 0)  # fmt: skip
    return fixed[:60] + crc32c(fixed[:60]).to_bytes(4, "little")


def write_container(
    records: list[TensorRecord],
    payloads: list[bytes],
    metadata: dict[str, str],
    *,
    chunk_log2: int,
    features: tuple[Feature, ...] = (),
    minor: int = 0,
) -> list[bytes | memoryview]:
    """Serialize a file: header and directory, then payloads; returns the pieces to write in order.

    ``records`` and ``payloads`` must be in canonical (name) order; offsets are assigned here.
    """
    sizes = [len(payload) for payload in payloads]
    directory, offsets = _directory(records, sizes, metadata, features)
    data_size = offsets[-1] + sizes[-1] if payloads else 0
    counts = (len(records), len(metadata), len(features))
    pieces: list[bytes | memoryview] = [_fixed_header(directory, data_size, counts, chunk_log2, minor), directory]
    pieces.append(bytes(align(FIXED_HEADER_SIZE + len(directory), DATA_ALIGNMENT) - FIXED_HEADER_SIZE - len(directory)))
    position = 0
    for offset, payload in zip(offsets, payloads, strict=True):
        pieces.append(bytes(offset - position))
        pieces.append(payload)
        position = offset + len(payload)
    return pieces


class StreamWriter:
    """Writes a file tensor by tensor, holding one payload at a time (bounded memory).

    The directory's length depends only on names, ranks, codings and metadata, so the data section's
    start is known before any tensor is encoded; payloads go there in canonical order, and the
    header and directory are written last.
    """

    def __init__(self, out, plan: list[TensorRecord], metadata: dict[str, str], *, chunk_log2: int) -> None:
        self.out, self.plan, self.metadata, self.chunk_log2 = out, plan, metadata, chunk_log2
        blank = IcqParams(0, 0, 0, 0, 0, 0, 0, 0)  # parameters have a fixed length: any value will do
        sized = [r if r.coding != CODING_ICQ or r.params else replace(r, params=blank) for r in plan]
        placeholder, _ = _directory(sized, [0] * len(plan), metadata, ())
        self.directory_size = len(placeholder)
        self.data_offset = align(FIXED_HEADER_SIZE + self.directory_size, DATA_ALIGNMENT)
        self.records: list[TensorRecord] = []
        self.sizes: list[int] = []
        self.position = 0

    def add(self, record: TensorRecord, payload: bytes | memoryview) -> None:
        expected = self.plan[len(self.records)]
        assert (record.name, len(record.shape), record.coding) == (expected.name, len(expected.shape), expected.coding)
        offset = align(self.position, DATA_ALIGNMENT) if self.records else 0
        self.out.seek(self.data_offset + self.position)
        self.out.write(bytes(offset - self.position))
        self.out.write(payload)
        self.records.append(record)
        self.sizes.append(len(payload))
        self.position = offset + len(payload)

    def finish(self) -> None:
        assert len(self.records) == len(self.plan), "every planned tensor must be added"
        directory, _ = _directory(self.records, self.sizes, self.metadata, ())
        assert len(directory) == self.directory_size
        counts = (len(self.records), len(self.metadata), 0)
        self.out.seek(0)
        self.out.write(_fixed_header(directory, self.position, counts, self.chunk_log2, 0))
        self.out.write(directory)
        self.out.write(bytes(self.data_offset - FIXED_HEADER_SIZE - len(directory)))
