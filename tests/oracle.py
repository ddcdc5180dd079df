"""An independent decoder of valid ICQ files for checking the conformance vectors' expected outputs.

Written from the spec alone and sharing no code with icqcodec: plain ``struct`` parsing, Python
integers for the bit fields, and the level of spec section 7 computed in float64 (exact for the
product; the float64 sum rounded to float32 rounds as binary32 would) before numpy and ml_dtypes
convert it to the output type. It checks nothing a valid file could fail; it only decodes.
"""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np

NAMES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "bfloat16",
         "float32", "float64", "float8_e4m3fn", "float8_e5m2"]  # fmt: skip
ITEM = [1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8, 1, 1]
OUTPUT = {9: np.float16, 10: ml_dtypes.bfloat16, 11: np.float32}


def words(n: int, width: int) -> int:
    return -(-n * width // 32) * 4


def fields(raw: bytes, n: int, width: int) -> list[int]:
    value = int.from_bytes(raw, "little")
    return [(value >> (i * width)) & ((1 << width) - 1) for i in range(n)]


def decode(data: bytes) -> list[tuple[str, str, list[int], bytes]]:
    """(name, dtype name, shape, raw little-endian bytes) of every tensor, in file order."""
    (_, _, _, _, directory_size, data_offset, _, tensors, metadata, features, _, _, _, _) = struct.unpack_from(
        "<8sHHIQQQIIIB3sII", data
    )
    pos = 64

    def string() -> bytes:
        nonlocal pos
        (n,) = struct.unpack_from("<I", data, pos)
        pos += 4 + n
        return data[pos - n : pos]

    for _ in range(features):
        pos += 16 + struct.unpack_from("<IIQ", data, pos)[2]
    for _ in range(2 * metadata):
        string()
    out = []
    for _ in range(tensors):
        name = string().decode("utf-8")
        dtype, _, coding, rank, _, offset, _, _, params_length = struct.unpack_from("<BBBBIQQII", data, pos)
        pos += 32
        shape = list(struct.unpack_from(f"<{rank}Q", data, pos))
        pos += 8 * rank
        params = data[pos : pos + params_length]
        pos += params_length
        body = data[data_offset + offset :]
        elements = int(np.prod(shape, dtype=object)) if shape else 1
        if coding == 0:
            out.append((name, NAMES[dtype], shape, bytes(body[: elements * ITEM[dtype]])))
        else:
            out.append((name, NAMES[dtype], shape, icq_values(body, params, shape, dtype)))
    assert pos == 64 + directory_size
    return out


def icq_values(body: bytes, params: bytes, shape: list[int], dtype: int) -> bytes:
    bits, kind, gap_bits, count_bits, segment_log2, _, book_size, outliers, _, total = struct.unpack("<BBBBBBHIIQ",
                                                                                                     params)  # fmt: skip
    cols = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=object)) if len(shape) > 1 else 1
    segment = 1 << segment_log2
    segments = -(-cols // segment)
    per_row = 4 if outliers else 2
    sizes = ([2 * book_size] if kind == 1 else []) + [rows * 2 * per_row, rows * words(cols, bits)]
    if outliers:
        sizes += [words(rows * segments, count_bits), words(total, gap_bits)]
    sections, at = [], 0
    for size in sizes:
        sections.append(body[at : at + size])
        at += -(-size // 64) * 64
    if kind == 1:
        book = [float(v) for v in np.frombuffer(sections.pop(0), "<f2")]
        inlier_book, outlier_book = book[: 1 << bits], book[1 << bits :]
    else:
        inlier_book, outlier_book = list(range(1 << bits)), list(range(1 << (bits - 1)))
    row_params = np.frombuffer(sections[0], "<f2").astype(np.float64).reshape(rows, per_row)
    stride = words(cols, bits)
    counts = fields(sections[2], rows * segments, count_bits) if outliers else []
    symbols = fields(sections[3], total, gap_bits) if outliers else []
    escape, k = (1 << gap_bits) - 1, 0
    levels = np.empty((rows, cols), dtype=np.float64)
    for r in range(rows):
        codes = fields(sections[1][r * stride : (r + 1) * stride], cols, bits)
        marked = set()
        for s in range(segments if outliers else 0):
            cursor = 0
            for v in symbols[k : k + counts[r * segments + s]]:
                if v == escape:
                    cursor += escape
                else:
                    marked.add(s * segment + cursor + v)
                    cursor += v + 1
            k += counts[r * segments + s]
        for c, q in enumerate(codes):
            if c in marked:
                o_offset, o_scale = row_params[r, 2], row_params[r, 3]
                magnitude = np.float32(o_offset + outlier_book[q & ((1 << (bits - 1)) - 1)] * o_scale)
                levels[r, c] = -magnitude if q >> (bits - 1) else magnitude
            else:
                levels[r, c] = np.float32(row_params[r, 0] + inlier_book[q] * row_params[r, 1])
    with np.errstate(over="ignore"):  # float16 output of a valid file may be infinite (spec section 7)
        return levels.astype(np.float32).astype(OUTPUT[dtype]).reshape(shape).tobytes()


SAFETENSORS = {"BOOL": 0, "I8": 1, "I16": 2, "I32": 3, "I64": 4, "U8": 5, "U16": 6, "U32": 7, "U64": 8, "F16": 9,
               "BF16": 10, "F32": 11, "F64": 12, "F8_E4M3": 13, "F8_E5M2": 14}  # fmt: skip


def decode_safetensors(data: bytes) -> list[tuple[str, str, list[int], bytes]]:
    """Every tensor of a valid safetensors file under the annex (spec/icq-safetensors.md): plain
    ones as stored; each U8 vector that begins with the ICQ magic decoded as the ICQ file it is; by
    the names' bytes."""
    import json

    (length,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__", None)
    out = {}
    for name, entry in header.items():
        raw = data[8 + length + entry["data_offsets"][0] : 8 + length + entry["data_offsets"][1]]
        if entry["dtype"] == "U8" and len(entry["shape"]) == 1 and raw[:8] == b"\x89ICQ\r\n\x1a\n":
            (out[name],) = decode(raw)
        else:
            out[name] = (name, NAMES[SAFETENSORS[entry["dtype"]]], entry["shape"], raw)
    return [out[name] for name in sorted(out, key=lambda n: n.encode("utf-8"))]
