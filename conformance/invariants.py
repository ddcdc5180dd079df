"""What every decoder must do on any input, and the inputs that test it.

- :func:`decode_or_reject`: the decoder invariant (a decode that matches the header, or
  ``FormatError``; nothing else), shared by the property tests, the fuzz target and the GPU tests.
- :func:`rechecksum`: recompute every checksum after an edit, so that the edit reaches the content
  checks (as libpng disables its CRCs while fuzzing).
- :func:`mutate`: seeded bit flips, swaps, truncations, splices and field edits of a file.
"""

from __future__ import annotations

import random
import struct

from icqcodec import FormatError, dtypes, files
from icqcodec.container import crc32c, read_header, tensor_layout

OUTPUT_BOUND = 1 << 26  # bytes a fuzzed decode may allocate
EXPANSION_LIMIT = 32  # spec section 4.5: a file decodes to at most 32 times its size


def _header_of(data: bytes):
    view = memoryview(data)
    return read_header(lambda offset, size: view[offset : offset + size], len(view))


def _fix_header_crcs(data: bytearray) -> None:
    """directory_crc (where the directory lies within the input), then header_crc."""
    if len(data) < 64:
        return
    directory_size = int.from_bytes(data[16:24], "little")
    if 64 + directory_size <= len(data):
        data[56:60] = crc32c(bytes(data[64 : 64 + directory_size])).to_bytes(4, "little")
    data[60:64] = crc32c(bytes(data[:60])).to_bytes(4, "little")


def rechecksum(data: bytes | bytearray) -> bytes:
    """``data`` with its header and directory CRCs and, where the header then parses, every
    payload's chunk table and ``table_crc`` recomputed."""
    data = bytearray(data)
    _fix_header_crcs(data)
    try:
        header = _header_of(bytes(data))
    except FormatError:
        return bytes(data)
    directory = bytearray(data[64 : 64 + header.directory_size])
    for record in header.tensors:
        layout = tensor_layout(record, header.chunk_log2)
        start = header.data_offset + record.offset
        body = bytes(data[start : start + layout.body_size])
        chunk = header.chunk_size
        table = b"".join(crc32c(body[i : i + chunk]).to_bytes(4, "little") for i in range(0, len(body), chunk))
        data[start + layout.body_size : start + record.size] = table
        # table_crc: the name's length field and bytes, then 24 bytes of the record's fixed part
        at = record.record_offset - 64 + 4 + len(record.name.encode("utf-8")) + 24
        directory[at : at + 4] = crc32c(table).to_bytes(4, "little")
    data[64 : 64 + header.directory_size] = directory
    _fix_header_crcs(data)
    return bytes(data)


INTERESTING = [0, 1, 2, 255, 256, 65535, 2**31, 2**32 - 1, 2**48, 2**63]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Bit flips, byte swaps, truncations, splices, field edits; half get their checksums fixed."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        if not data:
            break
        i = rng.randrange(len(data))
        if choice == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif choice == 1:
            j = rng.randrange(len(data))
            data[i], data[j] = data[j], data[i]
        elif choice == 2:
            del data[rng.randrange(len(data)) :]
        elif choice == 3:
            j = rng.randrange(len(data))
            data[i:i] = data[j : j + rng.randint(1, 64)]
        elif choice == 4:  # a field edit: an interesting integer at an aligned spot
            at = i - i % 4
            data[at : at + 8] = struct.pack("<Q", rng.choice(INTERESTING))[: len(data[at : at + 8])]
        else:
            data[i] = rng.randrange(256)
    data = bytes(data)
    return rechecksum(data) if rng.random() < 0.5 else data


def decode_or_reject(data: bytes, backend: str) -> dict | None:
    """Decode ``data`` and check the invariant: names, shapes and dtypes as the header says, at
    most 32 times the input's size; or a ``FormatError``, or the output bound's refusal. Returns
    the tensors, or None when the input was rejected."""
    try:
        tensors = files.load(data, backend=backend, max_output_size=OUTPUT_BOUND)
    except FormatError:
        return None
    except ValueError as error:
        assert "max_output_size" in str(error), f"a ValueError that is not the output bound: {error}"
        return None
    header = _header_of(data)
    assert list(tensors) == [r.name for r in header.tensors], "decoded names differ from the header's"
    total = sum(array.nbytes for array in tensors.values())
    assert total <= EXPANSION_LIMIT * len(data), f"{total} bytes decoded from {len(data)}"
    for record in header.tensors:
        array = tensors[record.name]
        assert array.shape == record.shape, (record.name, array.shape, record.shape)
        if backend != "cupy":  # CuPy holds bfloat16 and float8 as unsigned bit patterns
            assert array.dtype == dtypes.numpy_dtype(record.dtype), (record.name, array.dtype)
    return tensors
