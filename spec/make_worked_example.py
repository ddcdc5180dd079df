"""Writes the worked examples of spec section 13, byte by byte, from the reference encoder.

``python spec/make_worked_example.py`` prints spec/worked-example.md, ``--second`` prints
spec/worked-example-2.md; tests/test_spec.py checks the committed pages equal what this prints, so
the examples cannot drift from the code.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from dataclasses import dataclass

import numpy as np

from icqcodec import dtypes, files
from icqcodec.bitstream import unpack
from icqcodec.container import bytes_reader, read_header, tensor_layout
from icqcodec.encode import EncodeOptions, assemble, encode_tensor
from icqcodec.index_coding import decode_segment, segment_bounds

WEIGHTS = np.array(
    [
        [0.10, -0.20, 0.05, 0.90, 0.00, -0.15, 0.20, -0.05, 0.10, 0.15, -0.10, 0.05, 0.00, -0.25, 0.20, 0.10,
         -0.05, -1.10, 0.15, 0.05],
        [-0.30, 0.10, 0.20, -0.10, 0.00, 0.05, 0.25, -0.20, 0.10, 0.60, -0.05, 0.15, -0.15, 0.10, 0.70, 0.00,
         0.05, -0.10, 0.20, -0.25],
    ],
    dtype=np.float32,
)  # fmt: skip
OPTIONS = EncodeOptions(bits=2, outlier_ratio=0.1, segment_log2=4)
SHOWN_LINES = 4  # hex lines shown at each end of a long section
SHOWN_VALUES = 24  # decoded values shown of a tensor of more than SHOWN_ALL
SHOWN_ALL = 128


@dataclass(frozen=True)
class Entry:
    name: str
    array: np.ndarray
    options: EncodeOptions
    coding: str
    dtype: str | None
    prose: str  # how it was made, so it can be regenerated without this script


@dataclass(frozen=True)
class Example:
    title: str
    intro: str
    entries: tuple[Entry, ...]
    metadata: dict[str, str]
    chunk_log2: int = 16

    def file(self) -> bytes:
        encoded = [encode_tensor(e.name, e.array, e.options, coding=e.coding, dtype=e.dtype) for e in self.entries]
        return b"".join(assemble(encoded, self.metadata, chunk_log2=self.chunk_log2))


def first() -> Example:
    prose = ("the weights below, `EncodeOptions(bits=2, outlier_ratio=0.1, segment_log2=4)` (uniform kind, "
             "`round(0.1 * 20)` = 2 outliers per row), output float16, `chunk_log2` 16")  # fmt: skip
    return Example(
        "Worked example: one ICQ file, byte by byte",
        "The file holds one tensor `w` of shape 2 x 20, coded icq with 2-bit codes, 2 outliers per row,\n"
        "16-column segments (`segment_log2` = 4), output float16, and one metadata entry `format` = `pt`.",
        (Entry("w", WEIGHTS, OPTIONS, "icq", "float16", prose),),
        {"format": "pt"},
    )


def second() -> Example:
    r, c = np.arange(4)[:, None], np.arange(2100)[None, :]
    mlp = (((c * 37 + r * 11) % 101 - 50) / 250).astype(np.float32)
    mlp[:, ::97] *= 8  # every 97th column an outlier
    attention = np.zeros((2, 64), np.float32)
    attention[0] = ((np.arange(64) * 13) % 29 - 14) / 40
    attention[0, [3, 40, 62]] = [1.5, -1.25, 2.0]
    attention[1, 0] = -0.0  # row 1 is zero: its three outliers are columns 0 to 2, of magnitude 0
    return Example(
        "Worked example 2: codebook, bfloat16 and float32, escapes, -0.0, raw, two chunks",
        "The file holds three tensors, in name order: `attn.v` (codebook kind, 3-bit codes, bfloat16 output,\n"
        "gap symbols of more than one bit with an escape, and an outlier that decodes to -0.0), `mlp.w`\n"
        "(uniform kind, 4-bit codes, float32 output, a body of two 4096-byte checksum chunks) and `norm`\n"
        "(raw float32). Checksum chunks are 4096 bytes (`chunk_log2` = 12); there is no metadata.",
        (
            Entry(
                "attn.v",
                attention,
                EncodeOptions(bits=3, quantizer="codebook", segment_log2=6),
                "icq",
                "bfloat16",
                "shape 2 x 64; row 0: `((13 c) mod 29 - 14) / 40` for column c, then columns 3, 40 and 62 set "
                'to 1.5, -1.25 and 2.0; row 1: zeros, -0.0 in column 0; `EncodeOptions(bits=3, quantizer="codebook", '
                "segment_log2=6)` (5% outliers: `round(0.05 * 64)` = 3 per row)",
            ),
            Entry(
                "mlp.w",
                mlp,
                EncodeOptions(bits=4),
                "icq",
                "float32",
                "shape 4 x 2100; `((37 c + 11 r) mod 101 - 50) / 250` for row r, column c, times 8 in every "
                "column c with `c mod 97 = 0`; `EncodeOptions(bits=4)` (uniform, 5% outliers: 105 per row, "
                "1024-column segments)",
            ),
            Entry(
                "norm",
                np.array([1.0, -0.5, 0.25, 2.0], np.float32),
                OPTIONS,
                "raw",
                None,
                "the float32 values 1, -0.5, 0.25, 2, stored raw",
            ),
        ),  # fmt: skip
        {},
        chunk_log2=12,
    )


def hexdump(data: bytes, start: int, end: int, *, shorten: bool = False) -> str:
    lines = []
    for row in range(start - start % 16, end, 16):
        cells = [f"{data[i]:02x}" if start <= i < end else "  " for i in range(row, min(row + 16, len(data)))]
        lines.append(f"{row:08x}  {' '.join(cells[:8])}  {' '.join(cells[8:])}".rstrip())
    if shorten and len(lines) > 2 * SHOWN_LINES + 1:
        lines = lines[:SHOWN_LINES] + [f"... ({len(lines) - 2 * SHOWN_LINES} lines)"] + lines[-SHOWN_LINES:]
    return "\n".join(lines)


def render(example: Example) -> str:
    data = example.file()
    header = read_header(*bytes_reader(data))
    out = []
    w = out.append
    w(f"# {example.title}\n")
    w("Informative. Generated by `spec/make_worked_example.py` from the reference encoder; the test suite")
    w("checks that this page matches it. " + example.intro + "\n")
    w("How each tensor was made (enough to regenerate the file with any encoder that follows section 10):\n")
    for entry in example.entries:
        w(f"- `{entry.name}`: {entry.prose}.")
    w("")
    if example.entries[0].array.size <= 64:
        w("Input weights (float32):\n")
        w("```")
        for row in example.entries[0].array:
            w("  ".join(f"{v:+.2f}" for v in row))
        w("```\n")
    w(f"The file is {len(data)} bytes.\n")
    w("## Fixed header (section 4.1)\n")
    w("```\n" + hexdump(data, 0, 64) + "\n```\n")
    fields = struct.unpack_from("<8sHHIQQQIIIB3sII", data, 0)
    names = ["magic", "major", "minor", "flags", "directory_size", "data_offset", "data_size", "tensor_count",
             "metadata_count", "feature_count", "chunk_log2", "reserved", "directory_crc", "header_crc"]  # fmt: skip
    offsets = [0, 8, 10, 12, 16, 24, 32, 40, 44, 48, 52, 53, 56, 60]
    w("| offset | field | value |\n|---:|---|---|")
    for offset, name, value in zip(offsets, names, fields, strict=True):
        shown = value.hex(" ") if isinstance(value, bytes) else (f"0x{value:08x}" if "crc" in name else str(value))
        w(f"| {offset} | `{name}` | {shown} |")
    w("")
    w("## Directory (section 4.2)\n")
    w("```\n" + hexdump(data, 64, 64 + header.directory_size) + "\n```\n")
    w("- no feature records;")
    if header.metadata:
        for key, value in header.metadata.items():
            w(
                f"- metadata record: key length {len(key.encode())}, `{key}`, value length {len(value.encode())}, `{value}`;"
            )
    else:
        w("- no metadata records;")
    for record in header.tensors:
        shape = " x ".join(str(d) for d in record.shape)
        w(f"- tensor record: name length {len(record.name.encode())}, `{record.name}`; dtype {record.dtype} "
          f"({dtypes.NAMES[record.dtype]}), source_dtype {record.source_dtype} ({dtypes.NAMES[record.source_dtype]}), "
          f"coding {record.coding} ({'icq' if record.coding else 'raw'}),")  # fmt: skip
        w(f"  rank {len(record.shape)}, reserved 0, offset {record.offset}, size {record.size}, "
          f"table_crc 0x{record.table_crc:08x},")  # fmt: skip
        p = record.params
        if p is None:
            w(f"  params_length 0, shape {shape}.")
        else:
            w(
                f"  params_length 24, shape {shape}; coding parameters: bits {p.bits}, kind {p.kind}, gap_bits {p.gap_bits},"
            )
            w(
                f"  count_bits {p.count_bits}, segment_log2 {p.segment_log2}, reserved 0, codebook_size {p.codebook_size},"
            )
            w(f"  outliers {p.outliers}, reserved 0, total_symbols {p.total_symbols}.")
    w("")
    w(f"Bytes {64 + header.directory_size} to {header.data_offset - 1} are padding up to `data_offset` = "
      f"{header.data_offset}.\n")  # fmt: skip
    decoded = files.load(data, backend="reference")
    for record in header.tensors:
        render_payload(w, data, header, record, len(header.tensors) > 1)
        render_values(w, record, decoded[record.name])
    return "\n".join(out).rstrip("\n") + "\n"


def render_payload(w, data: bytes, header, record, named: bool) -> None:
    p = record.params
    layout = tensor_layout(record, header.chunk_log2)
    base = header.data_offset + record.offset
    w(f"## Payload{f' of `{record.name}`' if named else ''} (sections 6 and 4.4)\n")
    chunks = "one chunk CRC" if layout.chunk_count == 1 else f"{layout.chunk_count} chunk CRCs"
    w(f"The payload starts at file offset {base}. The body is {layout.body_size} bytes: each section padded to "
      f"64 bytes. Then {chunks}.\n")  # fmt: skip
    for name, (start, size) in layout.sections.items():
        raw = data[base + start : base + start + size]
        w(f"### {name}: body bytes {start} to {start + size - 1}\n")
        w("```\n" + hexdump(data, base + start, base + start + size, shorten=True) + "\n```\n")
        if name == "codebook":
            book = np.frombuffer(raw, "<f2")
            inlier, outlier = book[: 1 << p.bits], book[1 << p.bits :]
            w(f"- inlier_book: {', '.join(f'{float(v):.8g}' for v in inlier)}")
            w(f"- outlier_book: {', '.join(f'{float(v):.8g}' for v in outlier)}")
        elif name == "params":
            per_row = 4 if p.outliers else 2
            values = np.frombuffer(raw, "<f2").reshape(record.rows, per_row)
            labels = ("inlier_offset", "inlier_scale", "outlier_offset", "outlier_scale")
            for r, row in enumerate(values[:4]):
                parts = (
                    f"{label} {float(v):.8g} (0x{int(v.view(np.uint16)):04x})"
                    for label, v in zip(labels[: row.size], row, strict=True)
                )
                w(f"- row {r}: {', '.join(parts)}")
        elif name == "codes":
            stride = len(raw) // record.rows
            for r in range(min(record.rows, 4)):
                codes = unpack(raw[r * stride : (r + 1) * stride], record.cols, p.bits)
                shown = " ".join(str(int(c)) for c in codes[:64])
                w(f"- row {r} codes (column 0 first{', first 64' if record.cols > 64 else ''}): {shown}")
        elif name == "counts":
            segments = len(segment_bounds(record.cols, p.segment))
            counts = unpack(raw, record.rows * segments, p.count_bits)
            w(f"- {p.count_bits}-bit counts, (row, segment) in row-major order: "
              f"{', '.join(str(int(c)) for c in counts)}")  # fmt: skip
        elif name == "gaps":
            render_gaps(w, data, base, layout, record)
        elif name == "raw":
            w(f"- float32 values: {', '.join(f'{float(v):g}' for v in np.frombuffer(raw, '<f4'))}")
        w("")
    table = data[base + layout.body_size : base + record.size]
    w(f"Chunk table: {layout.chunk_count} CRC-32C of the {layout.body_size}-byte body (chunks counted from the "
      f"body's first byte), `{table.hex(' ')}`; its own CRC-32C is `table_crc` = 0x{record.table_crc:08x}.\n")  # fmt: skip


def render_gaps(w, data: bytes, base: int, layout, record) -> None:
    p = record.params
    raw = data[base + layout.sections["gaps"][0] :]
    symbols = unpack(raw, p.total_symbols, p.gap_bits)
    bounds = segment_bounds(record.cols, p.segment)
    counts = unpack(data[base + layout.sections["counts"][0] :], record.rows * len(bounds), p.count_bits)
    shown = symbols[:64].tolist()
    more = f", ... ({p.total_symbols} in all)" if p.total_symbols > 64 else ""
    w(f"- {p.gap_bits}-bit symbols (escape M = {(1 << p.gap_bits) - 1}): {', '.join(map(str, shown))}{more}")
    k = lines = 0
    for r in range(record.rows):
        for s, (first, length) in enumerate(bounds):
            n = int(counts[r * len(bounds) + s])
            if lines < 4:
                positions = decode_segment(symbols[k : k + n].tolist(), length, p.gap_bits)
                w(f"- row {r} segment {s} (columns {first} to {first + length - 1}): symbols "
                  f"{symbols[k : k + n].tolist()} -> outliers at columns {[first + q for q in positions]}")  # fmt: skip
                lines += 1
            k += n


def render_values(w, record, array: np.ndarray) -> None:
    name = record.name
    w(f"## Decoded values of `{name}` (section {'7' if record.coding else '6.1'})\n")
    if record.coding:
        w("Inlier code q gives `inlier_offset + B(q) * inlier_scale`; an outlier code q gives sign `q >> (bits - 1)`")
        w("and magnitude `outlier_offset + O(q & (2^(bits-1) - 1)) * outlier_scale`, in binary32; then each level")
        w(f"is converted to {dtypes.NAMES[record.dtype]}.\n")
    size = array.dtype.itemsize
    bits = np.ascontiguousarray(array).view(f"<u{size}").reshape(-1, array.shape[-1] if array.ndim else 1)
    values = np.asarray(array, dtype=np.float32).reshape(bits.shape)
    if array.size > SHOWN_ALL:
        w(f"The first {SHOWN_VALUES} of {array.size} values, row-major; the SHA-256 of all {array.size * size} "
          f"output bytes (little-endian) is `{hashlib.sha256(array.tobytes()).hexdigest()}`.\n")  # fmt: skip
        bits, values = bits.reshape(1, -1)[:, :SHOWN_VALUES], values.reshape(1, -1)[:, :SHOWN_VALUES]
    w("```")
    for row in values:
        w("  ".join(f"{float(v):+.4f}" for v in row))
    w("```\n")
    w(f"The same values as {dtypes.NAMES[record.dtype]} bit patterns (hex, row-major):\n")
    w("```")
    for row in bits:
        w(" ".join(f"{int(v):0{2 * size}x}" for v in row))
    w("```\n")


EXAMPLES = {"worked-example.md": first, "worked-example-2.md": second}


if __name__ == "__main__":
    page = "worked-example-2.md" if "--second" in sys.argv[1:] else "worked-example.md"
    sys.stdout.write(render(EXAMPLES[page]()))
