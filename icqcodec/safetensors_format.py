"""The safetensors format itself: its header read and checked, files written tensor by tensor.

Reads with positioned reads, not a memory map: pages of tensors already used are then freed rather
than kept resident, so memory stays bounded on large shards. Errors are ``ValueError`` naming the
problem; callers turn them into their own error class.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from . import dtypes

__all__ = ["DTYPES", "NAMES", "Entry", "StoredFile", "read_file", "write_file"]

# safetensors dtype names <-> ICQ dtype codes
DTYPES = {
    "BOOL": 0, "I8": 1, "I16": 2, "I32": 3, "I64": 4, "U8": 5, "U16": 6, "U32": 7, "U64": 8,
    "F16": 9, "BF16": 10, "F32": 11, "F64": 12, "F8_E4M3": 13, "F8_E5M2": 14,
}  # fmt: skip
NAMES = {code: name for name, code in DTYPES.items()}
MAX_HEADER = 100_000_000  # the safetensors library's own bound on the JSON header


@dataclass(frozen=True)
class Entry:
    """One stored tensor: its ICQ dtype code, shape, and where its bytes lie in the file."""

    dtype: int
    shape: tuple[int, ...]
    offset: int
    size: int


@dataclass
class StoredFile:
    """An open safetensors file: its entries in header order, its ``__metadata__``, its bytes."""

    handle: BinaryIO
    entries: dict[str, Entry]
    metadata: dict[str, str]

    def read(self, name: str, start: int = 0, size: int | None = None) -> bytearray:
        """The tensor's bytes, or ``size`` of them from ``start`` (clipped to the tensor)."""
        entry = self.entries[name]
        start = min(start, entry.size)
        size = entry.size - start if size is None else min(size, entry.size - start)
        data = bytearray(size)
        self.handle.seek(entry.offset + start)
        if self.handle.readinto(data) != size:
            raise ValueError(f"tensor {name!r} is truncated")
        return data

    def array(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        return np.frombuffer(self.read(name), dtype=dtypes.numpy_dtype(entry.dtype)).reshape(entry.shape)

    def close(self) -> None:
        self.handle.close()


def read_file(path: str | os.PathLike) -> StoredFile:
    """Open a safetensors file and check its header: the JSON, every dtype, shape and offset range."""
    handle = open(path, "rb")
    try:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError("shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, MAX_HEADER):
            raise ValueError(f"a header of {length} bytes runs past the end of the file or its bound")
        header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not a JSON object")
        entries, end_of_data = {}, 0
        for name, entry in header.items():
            if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
                raise ValueError(f"tensor {name!r} has no known dtype")
            code = DTYPES[entry["dtype"]]
            shape, offsets = entry.get("shape"), entry.get("data_offsets")
            if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ValueError(f"tensor {name!r} has no valid shape")
            if not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets):
                raise ValueError(f"tensor {name!r} has no valid data offsets")
            begin, end = offsets
            if not 0 <= begin <= end <= size - 8 - length or end - begin != math.prod(shape) * dtypes.item_size(code):
                raise ValueError(f"tensor {name!r} has inconsistent data offsets")
            entries[name] = Entry(code, tuple(shape), 8 + length + begin, end - begin)
            end_of_data = max(end_of_data, end)
        if end_of_data != size - 8 - length:
            raise ValueError("the data section does not end where the last tensor does")
    except (ValueError, TypeError, RecursionError) as error:
        handle.close()
        raise ValueError(str(error)) from None
    return StoredFile(handle, entries, {str(k): str(v) for k, v in metadata.items()})


def write_file(out: BinaryIO, tensors: Iterable[tuple[str, int, tuple[int, ...]]],
               data: Callable[[str], bytes | memoryview], metadata: dict[str, str] | None = None) -> None:  # fmt: skip
    """Write a safetensors file: ``tensors`` as (name, ICQ dtype code, shape), in that order, each
    one's bytes from ``data(name)`` as it is written."""
    tensors = list(tensors)
    header: dict = {"__metadata__": metadata} if metadata else {}
    position = 0
    for name, code, shape in tensors:
        size = math.prod(shape) * dtypes.item_size(code)
        header[name] = {"dtype": NAMES[code], "shape": list(shape), "data_offsets": [position, position + size]}
        position += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    out.write(struct.pack("<Q", len(text)) + text)
    for name, _, _ in tensors:
        out.write(data(name))
