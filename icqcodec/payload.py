"""Payload reads (spec section 4.4): every byte a decoder reads is first checked against its
chunk's CRC-32C; and the padding rules of sections 6 (after each body section) and 9.2 step 10
(between payloads).

Shared by every decoder; the reference decoder keeps its own readable copy of step 10.
"""

from __future__ import annotations

import numpy as np

from .constants import SECTION_ALIGNMENT
from .container import Header, ReadAt, TensorRecord, align, crc32c, tensor_layout
from .errors import ChecksumError, CorruptStreamError

__all__ = ["chunk_table", "verify_table", "verify_chunks", "Payload", "check_payload_padding", "is_zero"]


def is_zero(data: bytes | memoryview) -> bool:
    """Whether every byte of ``data`` is zero (vectorized)."""
    return not np.frombuffer(data, dtype=np.uint8).any()


# ---- 4.4 chunk checksums ----------------------------------------------------------------------


def chunk_table(body: bytes | memoryview, chunk_log2: int) -> bytes:
    """The chunk table of a payload body: one CRC-32C per ``2^chunk_log2`` bytes (spec 4.4)."""
    chunk = 1 << chunk_log2
    view = memoryview(body)
    return b"".join(crc32c(view[i : i + chunk]).to_bytes(4, "little") for i in range(0, len(view), chunk))


def verify_table(record: TensorRecord, table: bytes) -> None:
    if crc32c(table) != record.table_crc:
        raise ChecksumError(f"tensor {record.name!r}: table_crc does not match its chunk table",
                            section="4.4", offset=record.record_offset)  # fmt: skip


def verify_chunks(
    record: TensorRecord, header: Header, table: bytes, read_payload: ReadAt, first: int, stop: int
) -> None:
    """Check chunks ``first`` to ``stop - 1`` of a tensor's body against its (verified) table."""
    chunk = header.chunk_size
    body_size = tensor_layout(record, header.chunk_log2).body_size
    for index in range(first, stop):
        start = index * chunk
        data = read_payload(start, min(chunk, body_size - start))
        if crc32c(data) != int.from_bytes(table[4 * index : 4 * index + 4], "little"):
            raise ChecksumError(f"tensor {record.name!r}: chunk {index} does not match its CRC-32C",
                                section="4.4", offset=header.data_offset + record.offset + start)  # fmt: skip


# ---- 4.4 Checksummed payload reads -------------------------------------------------------------------


class Payload:
    """A tensor's payload body; every read first checks the chunks it touches (spec section 4.4).

    Decoders read it as they read a :class:`icqcodec.column_slices.ColumnWindow`: rows and segments
    counted from ``row_first`` and ``segment_first`` in their messages, and every row's outliers
    checked against ``expected_outliers``.
    """

    row_first = 0
    segment_first = 0

    def __init__(self, header: Header, record: TensorRecord, read_at: ReadAt) -> None:
        self.header, self.record = header, record
        self.layout = tensor_layout(record, header.chunk_log2)
        self.start = header.data_offset + record.offset
        self.read_at = read_at
        # "table_crc: CRC-32C of the payload's chunk table"
        self.table = bytes(read_at(self.start + self.layout.body_size, 4 * self.layout.chunk_count))
        verify_table(record, self.table)
        self.verified: set[int] = set()
        self.expected_outliers = record.params.outliers if record.params else None

    def _read_payload(self, offset: int, size: int) -> bytes:
        return self.read_at(self.start + offset, size)

    def read(self, offset: int, size: int) -> bytes:
        """Body bytes ``offset`` to ``offset + size - 1``, their chunks verified first."""
        chunk = self.header.chunk_size
        index, stop = offset // chunk, -(-(offset + size) // chunk)
        while index < stop:
            run = index  # a run of chunks not yet verified, checked in order in one call
            while index < stop and index not in self.verified:
                index += 1
            if index > run:
                verify_chunks(self.record, self.header, self.table, self._read_payload, run, index)
                self.verified.update(range(run, index))
            else:
                index += 1
        return self._read_payload(offset, size)

    def section(self, name: str, start: int = 0, size: int | None = None) -> bytes:
        begin, length = self.layout.sections[name]
        return self.read(begin + start, length - start if size is None else size)

    def verify_all(self) -> None:
        """Check every chunk, in order (spec section 9.2 step 9)."""
        self.read(0, self.layout.body_size)

    def check_section_padding(self) -> None:
        """Each section is padded with zeros to a multiple of 64 bytes (spec section 6)."""
        for name, (begin, length) in self.layout.sections.items():
            if not is_zero(self.read(begin + length, align(length, SECTION_ALIGNMENT) - length)):
                raise CorruptStreamError(f"tensor {self.record.name!r}: padding after section {name} is not zero",
                                         section="6", offset=self.start + begin + length)  # fmt: skip


def check_payload_padding(header: Header, read_at: ReadAt) -> None:
    """Step 10 of spec section 9.2: the bytes between payloads are zero."""
    for record, following in zip(header.tensors, header.tensors[1:], strict=False):
        end = record.offset + record.size
        if not is_zero(read_at(header.data_offset + end, following.offset - end)):
            raise CorruptStreamError("padding between payloads is not zero", section="4.3",
                                     offset=header.data_offset + end)  # fmt: skip
