"""The seeded generator of the conformance vectors: ``python -m conformance.generate [--check]``.

Rebuilds conformance/vectors/{valid,invalid,future}/ and conformance/MANIFEST.json byte for byte (Python's
``random.Random`` with ``getrandbits`` only, so every Python gives the same bytes). Valid vectors are
built field by field from the spec, not by the encoder; their expected outputs come from the
reference decoder. ``--check`` compares instead of writing and exits non-zero on a difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import struct
import sys
from pathlib import Path

from icqcodec.index_coding import encode_segment

from .builder import Tensor, build, icq_params, icq_tensor, pack, patch, safetensors
from .runner import expected_folder, vector_path

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"
SPEC_VERSION = "1.0.3"  # of the manifest; each vector names the revision that added it
SEED = 20261123
F16, BF16, F32 = 9, 10, 11
ITEM = {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 1, 6: 2, 7: 4, 8: 8, 9: 2, 10: 2, 11: 4, 12: 8, 13: 1, 14: 1}


class Vectors:
    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.entries: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.version = "1.0"  # the spec revision of the vectors being added
        self.container = "icq"  # or "safetensors": the annex's vectors

    def add(self, kind: str, name: str, section: str, description: str, data: bytes, category: str | None = None):
        assert name not in {e["name"] for e in self.entries}, name
        from icqcodec.errors import ERROR_CLASSES

        entry = {"name": name, "kind": kind, "spec_version": self.version, "section": section,
                 "description": description, "expected": "ok" if kind == "valid" else category,
                 "error_class": None if kind == "valid" else ERROR_CLASSES[category].__name__,
                 "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
        if self.container != "icq":
            entry["container"] = self.container
        self.entries.append(entry)
        self.files[vector_path(entry)] = data

    # ---- tensor builders ------------------------------------------------------------------------

    def bits(self, width: int) -> int:
        return self.rng.getrandbits(width) if width else 0

    def f16(self, low: float, high: float) -> bytes:
        steps = self.bits(10)
        return struct.pack("<e", low + (high - low) * steps / 1023)

    def icq(self, name="w", rows=3, cols=40, bits=2, kind=0, outliers=2, positions=None, gap_bits=3, count_bits=None,
            segment_log2=4, dtype=F16, source=F32, book=None, codes=None, params=None, total=None,
            counts=None, symbols=None, codebook_size=None) -> Tensor:  # fmt: skip
        """An icq tensor built by the spec's rules; any piece may be given to break a rule."""
        segment = 1 << segment_log2
        if positions is None:
            positions = [sorted(self.rng.sample(range(cols), outliers)) for _ in range(rows)]
        chains, all_counts = [], []
        for row in positions:
            for start in range(0, cols, segment):
                chain = encode_segment([p - start for p in row if start <= p < start + segment], gap_bits)
                chains += chain
                all_counts.append(len(chain))
        counts = all_counts if counts is None else counts
        symbols = chains if symbols is None else symbols
        if count_bits is None:
            count_bits = max(1, max(counts).bit_length()) if outliers else 0
        sections = []
        if kind == 1:
            if book is None:
                book = b"".join(
                    self.f16(-2.0, 4.0) for _ in range((1 << bits) + ((1 << (bits - 1)) if outliers else 0))
                )
            sections.append(book)
        if params is None:
            params = b"".join(self.f16(-1.0, -0.2) + self.f16(0.01, 0.3) + (self.f16(0.5, 1.0) + self.f16(0.05, 0.3)
                              if outliers else b"") for _ in range(rows))  # fmt: skip
        sections.append(params)
        if codes is None:
            codes = [[self.bits(bits) for _ in range(cols)] for _ in range(rows)]
        sections.append(b"".join(pack(row, bits) for row in codes))
        if outliers:
            sections.append(pack(counts, count_bits))
            sections.append(pack(symbols, gap_bits))
        total = len(symbols) if total is None else total
        if codebook_size is None:
            codebook_size = 0 if kind == 0 else (1 << bits) + ((1 << (bits - 1)) if outliers else 0)
        params_bytes = icq_params(bits, kind, gap_bits if outliers else 0, count_bits if outliers else 0, segment_log2,
                                  codebook_size, outliers, total if outliers else 0)  # fmt: skip
        shape = (rows, cols)
        return Tensor(name.encode(), dtype, source, 1, shape, sections, params_bytes)

    def raw(self, name="r", dtype=F32, shape=(2, 3), data=None) -> Tensor:
        count = 1
        for d in shape:
            count *= d
        if data is None:
            data = bytes(self.bits(8) for _ in range(count * ITEM[dtype]))
            if dtype == 0:
                data = bytes(b & 1 for b in data)
        return Tensor(name.encode(), dtype, dtype, 0, tuple(shape), [data])


def valid(v: Vectors) -> None:
    add = v.add
    for bits in range(1, 9):
        add("valid", f"uniform-{bits}bit", "7", f"uniform codes of {bits} bits, float16 output",
            build([v.icq(bits=bits)]))  # fmt: skip
    for bits in range(1, 9):
        dtype = (BF16, F32)[bits % 2]
        add("valid", f"codebook-{bits}bit", "7", f"codebook kind, {bits}-bit codes, output dtype {dtype}",
            build([v.icq(bits=bits, kind=1, dtype=dtype)]))  # fmt: skip
    for dtype, label in ((F16, "float16"), (BF16, "bfloat16"), (F32, "float32")):
        add("valid", f"output-{label}", "7", f"3-bit codes decoded to {label}", build([v.icq(bits=3, dtype=dtype)]))
    names = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
             "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"]  # fmt: skip
    for code, label in enumerate(names):
        add("valid", f"raw-{label}", "6.1", f"raw {label} tensor, every bit pattern copied",
            build([v.raw(dtype=code, shape=(3, 5))]))  # fmt: skip
    add("valid", "ratio-zero", "8", "no outliers: sections 4 and 5 absent", build([v.icq(outliers=0)]))
    add("valid", "one-outlier", "8", "one outlier in a one-row tensor", build([v.icq(rows=1, outliers=1)]))
    add("valid", "all-outliers", "8", "every weight an outlier", build([v.icq(cols=20, outliers=20)]))
    add("valid", "gap-equals-escape", "8", "a gap of exactly M = 3 inliers: an escape, then 0",
        build([v.icq(rows=1, cols=16, outliers=1, positions=[[3]], gap_bits=2)]))  # fmt: skip
    add("valid", "longest-gap", "8", "the longest legal gap: an outlier in a segment's last column",
        build([v.icq(rows=1, cols=16, outliers=1, positions=[[15]], gap_bits=2)]))  # fmt: skip
    add("valid", "gap-across-segments", "8", "outliers far apart: chains restart at each segment, empty middle",
        build([v.icq(rows=1, cols=64, outliers=2, positions=[[1, 62]], gap_bits=2)]))  # fmt: skip
    add("valid", "escapes-then-outlier", "8", "a gap of 2M + 1 inliers: two escapes, then 1",
        build([v.icq(rows=1, cols=16, outliers=1, positions=[[7]], gap_bits=2)]))  # fmt: skip
    add("valid", "row-shorter-than-symbol", "8", "rows of 2 columns with 4-bit gap symbols",
        build([v.icq(rows=4, cols=2, outliers=1, gap_bits=4)]))  # fmt: skip
    add("valid", "partial-last-segment", "8", "37 columns in 16-column segments", build([v.icq(cols=37)]))
    add("valid", "one-by-one", "6.2", "a 1 x 1 icq tensor", build([v.icq(rows=1, cols=1, outliers=1)]))
    for rank in range(1, 5):
        t = v.icq(rows=6, cols=10, outliers=1)
        t.shape = {1: (10,), 2: (6, 10), 3: (2, 3, 10), 4: (1, 2, 3, 10)}[rank]
        if rank == 1:
            t = v.icq(rows=1, cols=10, outliers=1)
            t.shape = (10,)
        add("valid", f"rank-{rank}", "6.2", f"icq tensor of rank {rank}: rows are the last axis", build([t]))
    many = sorted([v.raw(name=f"t{i:02d}", dtype=i % 15, shape=(i % 4 + 1, 3)) for i in range(12)] +
                  [v.icq(name=f"w{i:02d}", bits=i % 8 + 1) for i in range(8)], key=lambda t: t.name)  # fmt: skip
    add("valid", "many-tensors", "4.3", "20 tensors, raw and icq, payloads at 256-byte offsets", build(many))
    unicode_names = sorted(["ß", "名前", "Ω.weight", "emoji-😀"], key=lambda n: n.encode())
    add("valid", "non-ascii-names", "4.2", "UTF-8 tensor names, in byte order",
        build([v.raw(name=n, dtype=5, shape=(2,)) for n in unicode_names]))  # fmt: skip
    add("valid", "unknown-optional-feature", "4.2.1", "an optional feature a 1.0 decoder skips",
        build([v.icq()], features=[(0x1234, 0, b"skip me")]))  # fmt: skip
    # a directory of 193 bytes (64 + 193 = 257: 255 padding bytes), and a first payload of 260 bytes
    # (256-byte body and one CRC: 252 padding bytes, the most a payload can need)
    padded = build([v.raw(name="p", dtype=5, shape=(256,)), v.raw(name="q", dtype=5, shape=(1,))],
                   metadata=[(b"k" * 95, b"")])  # fmt: skip
    assert int.from_bytes(padded[16:24], "little") == 193
    add("valid", "largest-alignment-padding", "4.3", "255 padding bytes after the directory, 252 after a payload",
        padded)  # fmt: skip
    add("valid", "metadata", "4.2.2", "metadata entries: an empty value, UTF-8, the encoder keys",
        build([v.raw()], metadata=[(b"format", b"pt"), (b"icq.encoder", b"conformance"), (b"note", "é".encode()),
                                   (b"zero", b"")]))  # fmt: skip
    add("valid", "empty-and-scalar", "4.2.3", "a zero-size tensor and a rank-0 tensor, raw",
        build([v.raw(name="empty", dtype=F16, shape=(0, 4)), v.raw(name="scalar", dtype=12, shape=())]))  # fmt: skip
    add("valid", "no-tensors", "4", "a file with no tensors", build([]))
    add("valid", "future-minor-version", "4.1", "minor version 3: a 1.0 decoder reads it", build([v.icq()], minor=3))
    add("valid", "several-chunks", "4.4", "a body over several 4096-byte checksum chunks",
        build([v.icq(rows=40, cols=300, bits=4, outliers=15, segment_log2=6)]))  # fmt: skip
    add("valid", "gap-bits-16", "8", "16-bit gap symbols", build([v.icq(gap_bits=16)]))
    add("valid", "count-bits-32", "8", "32-bit segment counts (wider than needed)", build([v.icq(count_bits=32)]))
    add("valid", "one-segment-per-row", "8", "segment_log2 = 24", build([v.icq(cols=100, segment_log2=24)]))
    add("valid", "codebook-unsorted", "7", "codebook entries in no order, some negative",
        build([v.icq(bits=2, kind=1, book=struct.pack("<6e", 3.0, -1.0, 0.5, -2.0, 1.5, 0.25))]))  # fmt: skip
    big = struct.pack("<4e", 65504.0, 65504.0, 60000.0, 65504.0)
    add("valid", "overflow-to-infinity", "7", "levels beyond float16's range round to infinity",
        build([v.icq(rows=1, cols=8, bits=8, outliers=1, params=big, dtype=F16)]))  # fmt: skip
    tiny = struct.pack("<4e", 5.96e-08, 5.96e-08, 0.0, 5.96e-08)
    add("valid", "subnormal-parameters", "7", "subnormal float16 parameters, float32 output",
        build([v.icq(rows=1, cols=8, bits=3, outliers=2, params=tiny, dtype=F32)]))  # fmt: skip
    zero_out = struct.pack("<4e", 0.5, 0.25, 0.0, 0.0)
    add("valid", "negative-zero", "7", "an outlier of magnitude +0 with the sign bit decodes to -0.0",
        build([v.icq(rows=1, cols=4, bits=2, outliers=1, positions=[[2]], params=zero_out,
                     codes=[[0, 1, 2, 3]])]))  # fmt: skip
    ties = struct.pack("<4e", 1.0, 2.0**-8, 2.0, 2.0**-7)
    add("valid", "bfloat16-ties", "7", "levels halfway between bfloat16 values round to even",
        build([v.icq(rows=1, cols=8, bits=3, outliers=1, params=ties, dtype=BF16)]))  # fmt: skip


def invalid(v: Vectors) -> None:
    good = build([v.icq()])
    two = build([v.icq(name="a"), v.icq(name="b")])

    def bad(name, section, description, data, category):
        v.add("invalid", name, section, description, data, category)

    bad("bad-magic", "4.1", "a GGUF header", b"GGUF" + bytes(60), "bad-magic")
    bad("bad-magic-text", "4.1", "ASCII text", b"ICQ format 1.0 file\n" * 4, "bad-magic")
    bad("truncated-empty", "9.2", "zero bytes", b"", "truncated")
    bad("truncated-in-magic", "9.2", "5 bytes of the magic", good[:5], "truncated")
    bad("truncated-in-version", "9.2", "10 bytes", good[:10], "truncated")
    bad("truncated-in-header", "9.2", "40 bytes", good[:40], "truncated")
    bad("truncated-in-directory", "9.2", "ends inside the directory", good[:100], "truncated")
    bad("truncated-in-payload", "9.2", "ends inside the payload", good[: len(good) - 70], "truncated")
    bad("truncated-last-byte", "9.2", "the last byte missing", good[:-1], "truncated")
    bad("trailing-byte", "4", "one byte after the data section", good + b"\0", "corrupt")
    bad("trailing-block", "4", "256 bytes after the data section", good + bytes(256), "corrupt")
    bad("reserved-flags", "4.1", "flags = 1", patch(good, 12, b"\1"), "corrupt")
    bad("reserved-header-bytes", "4.1", "byte 53 set", patch(good, 53, b"\1"), "corrupt")
    t = v.icq()
    t.reserved = 7
    bad("reserved-tensor-field", "4.2.3", "tensor record's reserved field set", build([t]), "corrupt")
    t = v.icq()
    t.params = t.params[:5] + b"\1" + t.params[6:]
    bad("reserved-icq-parameter", "6.2", "reserved byte 5 of the icq parameters", build([t]), "corrupt")
    t = v.icq()
    t.params = t.params[:12] + b"\1\0\0\0" + t.params[16:]
    bad("reserved-icq-parameter-32", "6.2", "reserved bytes 12-15 of the icq parameters", build([t]), "corrupt")
    bad("reserved-feature-flags", "4.2.1", "feature flag bit 1", build([v.icq()], features=[(5, 2, b"")]), "corrupt")
    bad("checksum-header", "4.1", "header_crc wrong", patch(good, 60, b"\0\0\0\0", fix_header_crc=False), "checksum")
    bad("checksum-directory", "4.1", "directory_crc wrong", patch(good, 56, b"\0\0\0\0"), "checksum")
    t = v.icq()
    t.table_crc = 1
    bad("checksum-table", "4.4", "table_crc wrong", build([t]), "checksum")
    t = v.icq()
    t.chunk_crcs = {0: 12345}
    bad("checksum-chunk", "4.4", "a chunk CRC wrong (table_crc matches the table)", build([t]), "checksum")
    t = v.icq(name="b")
    t.offset = 0
    bad("overlapping-payloads", "4.3", "second payload at offset 0", build([v.icq(name="a"), t]), "corrupt")
    t = v.icq(name="b")
    t.offset = 260
    bad("misaligned-payload", "4.3", "payload offset not a multiple of 256", build([v.icq(name="a"), t]), "corrupt")
    t = v.icq()
    t.size = 64
    bad("payload-size-wrong", "6", "size differs from the layout formula", build([t]), "corrupt")
    bad("data-offset-misaligned", "4.1", "data_offset not align(64 + directory_size, 256)",
        patch(good, 24, (int.from_bytes(good[24:32], "little") + 64).to_bytes(8, "little")), "corrupt")  # fmt: skip
    size = int.from_bytes(two[32:40], "little")
    bad("data-size-too-large", "4.3", "data_size beyond the last payload (file grown to match)",
        patch(two, 32, (size + 4).to_bytes(8, "little")) + bytes(4), "corrupt")  # fmt: skip
    t = v.raw(shape=(1,) * 9)
    bad("limit-rank", "4.5", "rank 9", build([t]), "limit")
    t = v.raw(shape=(2,), data=b"")
    t.shape = ((1 << 48) + 1,)
    bad("limit-dimension", "4.6", "a dimension above 2^48", build([t]), "limit")
    t = v.raw(shape=(2,), data=b"")
    t.shape = (1 << 40, 1 << 40)
    bad("limit-element-overflow", "4.6", "2^40 x 2^40 elements: the product would overflow", build([t]), "limit")
    bad("limit-name-length", "4.5", "a 1025-byte name", build([v.raw(name="n" * 1025)]), "limit")
    bad("limit-directory-size", "4.5", "directory_size above 2^26", patch(good, 16, (1 << 27).to_bytes(8, "little")),
        "limit")  # fmt: skip
    bad("limit-tensor-count", "4.5", "tensor_count above 2^20", patch(good, 40, ((1 << 20) + 1).to_bytes(4, "little")),
        "limit")  # fmt: skip
    bad("chain-past-segment", "8", "a gap symbol points past the segment end",
        build([v.icq(rows=1, cols=16, outliers=1, positions=[[3]], symbols=[3, 3, 3, 3, 3, 2], gap_bits=2,
                     counts=[6])]), "corrupt")  # fmt: skip
    bad("chain-trailing-escape", "8", "a segment ends with an escape (non-canonical)",
        build([v.icq(rows=1, cols=16, outliers=1, positions=[[3]], symbols=[3, 0, 3], gap_bits=2, counts=[3])]),
        "corrupt")  # fmt: skip
    bad("too-many-outliers", "8", "a row holds more outliers than `outliers`",
        build([v.icq(rows=1, cols=16, outliers=1, positions=[[3]], symbols=[1, 1], gap_bits=2, counts=[2])]),
        "corrupt")  # fmt: skip
    bad("too-few-outliers", "8", "a row holds fewer outliers than `outliers`",
        build([v.icq(rows=1, cols=16, outliers=2, positions=[[3, 5]], symbols=[3, 0], gap_bits=2, counts=[2])]),
        "corrupt")  # fmt: skip
    bad("counts-below-total", "8", "segment counts sum below total_symbols",
        build([v.icq(rows=2, cols=16, outliers=1, positions=[[3], [4]], total=3, gap_bits=3)]), "corrupt")  # fmt: skip
    bad("counts-above-total", "8", "segment counts sum above total_symbols",
        build([v.icq(rows=2, cols=16, outliers=1, positions=[[3], [4]], counts=[2, 1], symbols=[3, 4, 0],
                     total=2, gap_bits=3)]), "corrupt")  # fmt: skip
    t = v.icq(rows=1, cols=5, bits=3)  # 15 code bits in a 32-bit word
    t.sections[1] = (int.from_bytes(t.sections[1], "little") | (1 << 20)).to_bytes(4, "little")
    bad("code-padding-set", "6.2", "a padding bit after a code row", build([t]), "corrupt")
    t = v.icq(rows=1, cols=16, outliers=1)
    t.sections[2] = (int.from_bytes(t.sections[2], "little") | (1 << 31)).to_bytes(4, "little")
    bad("count-padding-set", "8", "a padding bit after the segment counts", build([t]), "corrupt")
    t = v.icq(rows=1, cols=16, outliers=1)
    t.sections[3] = (int.from_bytes(t.sections[3], "little") | (1 << 31)).to_bytes(4, "little")
    bad("gap-padding-set", "8", "a padding bit after the gap symbols", build([t]), "corrupt")
    t = v.icq()
    t.section_padding = [bytes(64 - len(s) % 64 if len(s) % 64 else 0) for s in t.sections]
    t.section_padding[0] = b"\1" + t.section_padding[0][1:]
    bad("section-padding-set", "6", "a padding byte after the row parameters", build([t]), "corrupt")
    bad("directory-padding-set", "4", "a padding byte after the directory", _directory_padding(v), "corrupt")
    bad("payload-padding-set", "4.3", "a padding byte between payloads",
        build([v.icq(name="a"), v.icq(name="b")], payload_padding=b"\1" * 256), "corrupt")  # fmt: skip
    bad("non-finite-parameter", "6.2", "an inlier scale of infinity",
        build([v.icq(rows=1, cols=8, outliers=0, params=struct.pack("<2e", 0.0, float("inf")))]), "corrupt")  # fmt: skip
    bad("non-finite-codebook", "6.2", "a NaN codebook entry",
        build([v.icq(bits=2, kind=1, book=struct.pack("<6e", 0, 1, float("nan"), 3, 0, 1))]), "corrupt")  # fmt: skip
    bad("bad-codebook-size", "6.2", "codebook_size not 2^bits + 2^(bits-1)",
        build([v.icq(bits=2, kind=1, codebook_size=4)]), "corrupt")  # fmt: skip
    bad("bool-not-0-or-1", "3", "a raw bool byte of 2", build([v.raw(dtype=0, shape=(3,), data=b"\0\1\2")]), "corrupt")
    bad("empty-name", "4.2.3", "a tensor named by zero bytes", build([v.raw(name="")]), "corrupt")
    bad("duplicate-names", "4.2.3", "two tensors named a", build([v.raw(name="a"), v.raw(name="a")]), "corrupt")
    bad("unsorted-names", "4.2.3", "b before a", build([v.raw(name="b"), v.raw(name="a")]), "corrupt")
    bad("unsorted-metadata", "4.2.2", "key z before key a", build([v.raw()], metadata=[(b"z", b""), (b"a", b"")]),
        "corrupt")  # fmt: skip
    t = v.raw()
    t.name = b"\xff\xfe"
    bad("name-not-utf8", "4.2", "a name that is not UTF-8", build([t]), "corrupt")
    bad("directory-leftover", "4.2", "bytes after the last record", build([v.raw()], directory_extra=b"\0" * 4),
        "corrupt")  # fmt: skip
    t = v.raw()
    t.params = b""
    record_past = build([t])
    bad("record-past-directory", "4.2", "directory_size cut before the last record ends",
        _shrink_directory(record_past), "corrupt")  # fmt: skip
    bad("chunk-log2-small", "4.1", "chunk_log2 = 11", patch(good, 52, b"\x0b"), "corrupt")
    for name, description, kwargs in (
        ("bits-9", "bits = 9", dict(bits=9)),
        ("kind-2", "kind = 2", dict(kind=2)),
        ("segment-log2-3", "segment_log2 = 3", dict(segment_log2=3)),
    ):
        t = v.icq()
        fields = list(struct.unpack("<BBBBBBHIIQ", t.params))
        index = {"bits": 0, "kind": 1, "segment_log2": 4}[next(iter(kwargs))]
        fields[index] = next(iter(kwargs.values()))
        t.params = struct.pack("<BBBBBBHIIQ", *fields)
        bad(f"param-{name}", "6.2", description, build([t]), "corrupt")
    t = v.icq(rows=1, cols=8, outliers=1)
    fields = list(struct.unpack("<BBBBBBHIIQ", t.params))
    fields[7] = 9
    t.params = struct.pack("<BBBBBBHIIQ", *fields)
    bad("outliers-above-cols", "6.2", "outliers = 9 on 8 columns", build([t]), "corrupt")
    t = v.icq()
    fields = list(struct.unpack("<BBBBBBHIIQ", t.params))
    fields[2] = 0
    t.params = struct.pack("<BBBBBBHIIQ", *fields)
    bad("gap-bits-zero", "6.2", "gap_bits = 0 with outliers", build([t]), "corrupt")
    t = v.icq(rows=2, outliers=2)
    fields = list(struct.unpack("<BBBBBBHIIQ", t.params))
    fields[9] = 1
    t.params = struct.pack("<BBBBBBHIIQ", *fields)
    bad("total-symbols-range", "6.2", "total_symbols below rows * outliers", build([t]), "corrupt")
    bad("icq-integer-output", "6.2", "icq coding with int32 output", build([v.icq(dtype=3)]), "corrupt")
    t = v.raw()
    t.params = b"\0" * 4
    bad("raw-with-parameters", "6.1", "raw coding with 4 parameter bytes", build([t]), "corrupt")
    t = v.raw(dtype=F32)
    t.source_dtype = F16
    bad("raw-source-differs", "6.1", "raw coding with source_dtype float16, dtype float32", build([t]), "corrupt")
    t = v.icq(rows=1, cols=1, outliers=0)
    t.shape = ()
    bad("icq-rank-0", "6.2", "icq coding of a rank-0 tensor", build([t]), "corrupt")
    t = v.icq(rows=1, cols=4, outliers=0)
    t.shape = (0, 4)
    bad("icq-zero-elements", "6.2", "icq coding of a zero-size tensor", build([t]), "corrupt")


def _directory_padding(v: Vectors) -> bytes:
    data = build([v.raw()])
    directory_size = int.from_bytes(data[16:24], "little")
    return patch(data, 64 + directory_size, b"\1", fix_header_crc=False)


def _shrink_directory(data: bytes) -> bytes:
    """Cut directory_size by 8 bytes, keeping the CRCs and data_offset right for the shorter directory."""
    from icqcodec.container import crc32c

    size = int.from_bytes(data[16:24], "little") - 8
    out = bytearray(data)
    out[16:24] = size.to_bytes(8, "little")
    out[56:60] = crc32c(bytes(out[64 : 64 + size])).to_bytes(4, "little")
    out[64 + size : 64 + size + 8] = bytes(8)
    return patch(bytes(out), 60, b"", fix_header_crc=True)


def future(v: Vectors) -> None:
    good = build([v.icq()])

    def fut(name, section, description, data):
        v.add("future", name, section, description, data, "unsupported-version" if "major" in name else
              "unsupported-feature")  # fmt: skip

    fut("major-2", "4.1", "format version 2.0", patch(good, 8, b"\2\0"))
    fut("major-65535", "4.1", "format version 65535.0 with a different header after the version",
        patch(good, 8, b"\xff\xff", fix_header_crc=False)[:12] + b"future header")  # fmt: skip
    fut("required-feature", "4.2.1", "an unknown required feature",
        build([v.icq()], features=[(0x10, 1, b"needs support")], minor=1))  # fmt: skip
    t = v.raw()
    t.coding = 2
    fut("coding-method-2", "6", "an unknown coding method", build([t], minor=1))
    fut("dtype-code-15", "3", "an unknown output dtype code", build([v.raw(dtype=15, data=b"\0" * 6)], minor=1))
    t = v.raw()
    t.source_dtype = 99
    fut("source-dtype-99", "3", "an unknown source dtype code", build([t], minor=1))


def clarifications(v: Vectors) -> None:
    """Vectors of revision 1.0.1: one for each answer to a question where two readings of 1.0 differ
    (spec section 14 maps the questions to them)."""
    v.version = "1.0.1"
    add = v.add
    good = build([v.icq()])

    def fields(t: Tensor, **changes) -> None:
        values = list(struct.unpack("<BBBBBBHIIQ", t.params))
        for key, value in changes.items():
            values[{"bits": 0, "kind": 1, "segment_log2": 4, "outliers": 7}[key]] = value
        t.params = struct.pack("<BBBBBBHIIQ", *values)

    # valid
    add("valid", "icq-keys-unchecked", "4.2.2", "an undefined icq. key and icq.encoder_options that is not JSON",
        build([v.raw()], metadata=[(b"icq.encoder_options", b"not json {"), (b"icq.later", b"")]))  # fmt: skip
    names = sorted(n.encode() for n in ("\0", "\ufeffbom", "\ufdd0", "\uffff", "\U0010ffff"))
    add("valid", "names-edge-scalar-values", "4.2", "names U+0000, U+FDD0, U+FEFF (BOM, kept), U+FFFF, U+10FFFF",
        build([Tensor(n, F32, F32, 0, (1,), [bytes(4)]) for n in names]))  # fmt: skip
    add("valid", "chunks-of-a-later-payload", "4.4", "a second payload of three chunks: chunks count from its body",
        build([v.icq(name="a"), v.icq(name="b", rows=4, cols=2100, bits=8, outliers=40, segment_log2=8)]))  # fmt: skip
    params = struct.pack("<8e", 0.5, -0.25, -1.0, 0.5, -0.0, 0.0, -0.0, -0.125)
    add("valid", "negative-parameters", "7", "negative and zero scales, a negative outlier_offset (sign 1 gives +)",
        build([v.icq(rows=2, cols=16, outliers=2, bits=3, dtype=F32, params=params)]))  # fmt: skip
    book = struct.pack("<6e", 1.0, 1.0, -2.0, -2.0, -0.5, -0.0)
    add("valid", "codebook-repeated-negative", "6.2", "repeated inlier entries, negative and -0.0 outlier entries",
        build([v.icq(rows=2, cols=16, outliers=2, bits=2, kind=1, book=book, dtype=F32)]))  # fmt: skip
    book = struct.pack("<6e", -65504.0, 0.0, 65504.0, 65504.0, 0.0, 65504.0)
    largest = struct.pack("<4e", 65504.0, 65504.0, 65504.0, 65504.0)
    add("valid", "codebook-largest-levels", "7", "kind 1 levels of 65504 + 65504 * 65504 in float32, bfloat16 and float16 (inf)",
        build([v.icq(name=n, rows=1, cols=16, outliers=2, bits=2, kind=1, book=book, params=largest, dtype=d)
               for n, d in (("bf16", BF16), ("f16", F16), ("f32", F32))]))  # fmt: skip

    # levels whose binary32 rounding lands on a float16 / bfloat16 midpoint: 1 + 2^-11 + 2^-29 and
    # 1 + 2^-8 + 6 * 2^-29 round to 1.0 (ties to even), but to the next value without binary32
    tensors = []
    for name, dtype, entry, scale in (("bf16", BF16, 1141 * 2.0**-10, 1838 * 2.0**-19),
                                      ("f16", F16, 185 * 2.0**-5, 1417 * 2.0**-24)):  # fmt: skip
        book, params = struct.pack("<2e", entry, 0.0), struct.pack("<2e", 1.0, scale)
        tensors.append(v.icq(name=name, rows=1, cols=8, bits=1, kind=1, outliers=0, book=book, params=params,
                             codes=[[0, 1] * 4], dtype=dtype))  # fmt: skip
    add("valid", "binary32-intermediate", "7", "levels rounded to binary32 first, then to a 16-bit midpoint: ties to even",
        build(tensors))  # fmt: skip

    # invalid
    def bad(name, section, description, data, category):
        v.add("invalid", name, section, description, data, category)

    past = (5000).to_bytes(4, "little") + b"k" * 8
    bad("string-length-past-directory", "4.2", "a metadata key of length 5000 (over the limit) running past the directory",
        patch(build([], directory_extra=past), 44, (1).to_bytes(4, "little")), "corrupt")  # fmt: skip
    bad("name-length-past-directory", "4.2", "a tensor name of length 5000 (over the limit) running past the directory",
        patch(build([], directory_extra=past), 40, (1).to_bytes(4, "little")), "corrupt")  # fmt: skip
    t = v.raw(shape=(2, 3))
    t.rank = 200
    bad("rank-200-past-directory", "4.2.3", "rank 200: the shape runs past the directory before rank is checked",
        build([t]), "corrupt")  # fmt: skip
    a = v.icq(name="a", rows=1, cols=8, outliers=0, params=struct.pack("<2e", 0.0, float("inf")))
    b = v.icq(name="b")
    b.chunk_crcs = {0: 12345}
    bad("content-before-next-checksum", "9.2", "tensor a's contents are corrupt, tensor b's chunk CRC is wrong",
        build([a, b]), "corrupt")  # fmt: skip
    a = v.icq(name="a", bits=2, kind=1, book=struct.pack("<6e", 0, 1, float("nan"), 3, 0, 1))
    b = v.icq(name="b")
    b.table_crc = 1
    bad("content-before-next-table-crc", "9.2", "tensor a has a NaN codebook entry, tensor b a wrong table_crc",
        build([a, b]), "corrupt")  # fmt: skip
    bad("flags-before-limit", "9.2", "flags = 1 and directory_size above 2^26",
        patch(patch(good, 12, b"\1"), 16, (1 << 27).to_bytes(8, "little")), "corrupt")  # fmt: skip
    bad("chunk-log2-before-limit", "9.2", "chunk_log2 = 11 and tensor_count above 2^20",
        patch(patch(good, 52, b"\x0b"), 40, ((1 << 20) + 1).to_bytes(4, "little")), "corrupt")  # fmt: skip
    bad("required-feature-then-corrupt", "4.2.1", "an unknown required feature, then tensors out of order",
        build([v.raw(name="b"), v.raw(name="a")], features=[(0x10, 1, b"")], minor=1), "unsupported-feature")  # fmt: skip
    t = v.raw(shape=(0, 2), data=b"")
    t.shape = (0, 1 << 49)
    bad("limit-dimension-after-zero", "4.6", "shape (0, 2^49): each dimension is checked", build([t]), "limit")
    bad("truncated-version-2", "9.2", "11 bytes holding major 2", patch(good, 8, b"\2\0")[:11], "truncated")
    for name, raw, what in (("name-surrogate", b"\xed\xa0\x80", "an encoded surrogate U+D800"),
                            ("name-overlong", b"\xc0\x80", "an overlong U+0000")):  # fmt: skip
        t = v.raw()
        t.name = raw
        bad(name, "4.2", f"a name holding {what}", build([t]), "corrupt")
    t = v.raw(shape=(0, 3), data=b"")
    t.table_crc = 5
    bad("empty-body-table-crc", "4.4", "an empty body whose table_crc is not 0", build([t]), "checksum")
    for log2 in (3, 25):
        t = v.icq(outliers=0)
        fields(t, segment_log2=log2)
        bad(f"segment-log2-{log2}-no-outliers", "6.2", f"segment_log2 = {log2} in a tensor without outliers",
            build([t]), "corrupt")  # fmt: skip
    bad("escape-past-segment-end", "8", "escapes carry the cursor past the segment end, then a symbol",
        build([v.icq(rows=1, cols=16, outliers=1, positions=[[3]], symbols=[3] * 6 + [0], gap_bits=2, counts=[7])]),
        "corrupt")  # fmt: skip


def annex(v: Vectors) -> None:
    """Vectors of the annex ``spec/icq-safetensors.md`` 1.0: ICQ tensors in safetensors files."""
    v.version, v.container = "annex-1.0", "safetensors"
    add = v.add
    one = build([v.icq(name="w.weight", rows=4, cols=48)])
    norm = bytes(v.bits(8) for _ in range(2 * 48))
    bias = struct.pack("<4f", 0.5, -1.0, 0.0, 2.0)

    def st(*parts, metadata=None):
        return safetensors([t for part in parts for t in part], metadata)

    add("valid", "icq-tensor", "annex 3", "one ICQ tensor: a U8 vector holding its one-tensor ICQ file",
        st(icq_tensor("w.weight", one)))  # fmt: skip
    add("valid", "icq-and-plain", "annex 3, 6", "an ICQ tensor between plain F32 and BF16 tensors: name order",
        st([("a.bias", "F32", [4], bias)], icq_tensor("w.weight", one), [("z.norm", "BF16", [48], norm)]))  # fmt: skip
    add("valid", "plain-before-icq-in-header", "annex 6",
        "stored order is not output order: plain z first, then the ICQ tensor a",
        st([("z", "F32", [4], bias)], icq_tensor("a", build([v.icq(name="a", kind=1, bits=3, dtype=BF16)]))))  # fmt: skip
    add("valid", "icq-raw-coding", "annex 3", "an ICQ tensor whose file holds a raw-coded tensor",
        st(icq_tensor("r", build([v.raw(name="r", dtype=F32, shape=(2, 3))]))))  # fmt: skip
    add("valid", "icq-metadata-ignored", "annex 3, 5",
        "metadata records in the ICQ file and a __metadata__ map are informative",
        st(icq_tensor("w", build([v.icq(name="w")], metadata=[(b"icq.encoder", b"x"), (b"user", b"y")])),
           metadata={"format": "pt", "icq.annex": "9.9"}))  # fmt: skip
    add("valid", "icq-two-chunk-sizes", "annex 3",
        "two ICQ tensors with chunk_log2 12 and 16, the first body over one chunk",
        st(icq_tensor("a", build([v.icq(name="a", rows=40, cols=1024)], chunk_log2=12)),
           icq_tensor("b", build([v.icq(name="b")], chunk_log2=16))))  # fmt: skip
    add("valid", "plain-only", "annex 3", "no ICQ tensor: plain tensors only", st([("x", "F16", [2], b"\0\x3c\0\xbc")]))
    add("valid", "plain-u8-without-magic", "annex 3", "a U8 vector that does not begin with the magic is plain",
        st([("u", "U8", [9], b"\x89ICQ\r\n\x1a\x0b\0")]))  # fmt: skip
    add("valid", "plain-u8-rank-2-with-magic", "annex 3", "a U8 matrix that begins with the magic is plain",
        st([("u", "U8", [2, 4], b"\x89ICQ\r\n\x1a\n")]))  # fmt: skip
    add("valid", "plain-u8-of-7-bytes", "annex 3", "a U8 vector of 7 bytes, the magic's first 7, is plain",
        st([("u", "U8", [7], b"\x89ICQ\r\n\x1a")]))  # fmt: skip
    two = build([v.icq(name="w.weight"), v.raw(name="w.weight2")])

    def bad(name, section, description, data, category="corrupt"):
        add("invalid", name, section, description, data, category)

    bad(
        "renamed",
        "annex 4 rule 2",
        "the ICQ file's tensor record is named other than N",
        st(icq_tensor("v.weight", one)),
    )
    bad("two-records", "annex 4 rule 1", "the ICQ file holds two tensor records", st(icq_tensor("w.weight", two)))
    bad("zero-records", "annex 4 rule 1", "the ICQ file holds no tensor record", st(icq_tensor("w.weight", build([]))))
    bad("file-short", "annex 4, 4", "the ICQ file one byte short", st(icq_tensor("w.weight", one[:-1])), "truncated")
    bad("file-long", "annex 4, 4", "a byte after the ICQ file's data section", st(icq_tensor("w.weight", one + b"\0")))
    bad(
        "magic-only",
        "annex 3, 9.2",
        "a U8 vector of the 8 magic bytes alone",
        st(icq_tensor("w", one[:8])),
        "truncated",
    )
    flipped = bytearray(one)
    flipped[70] ^= 1
    bad("directory-bit-flip", "annex 3, 4.4", "a flipped bit in the ICQ file's directory",
        st(icq_tensor("w.weight", bytes(flipped))), "checksum")  # fmt: skip
    flipped = bytearray(one)
    flipped[int.from_bytes(one[24:32], "little") + 3] ^= 0x10
    bad("payload-bit-flip", "annex 3, 4.4", "a flipped bit in the ICQ tensor's body",
        st(icq_tensor("w.weight", bytes(flipped))), "checksum")  # fmt: skip
    bad("not-safetensors", "annex 6", "a file that is not safetensors", b"\x10\0\0\0\0\0\0\0{not json}     ")
    bad("safetensors-offsets", "annex 6", "a plain tensor whose data offsets do not match its shape",
        safetensors([("x", "F32", [3], bias)]))  # fmt: skip
    fut = build([v.icq(name="w")], features=[(0x10, 1, b"needs support")], minor=1)
    add("future", "icq-required-feature", "annex 5, 4.2.1", "the ICQ file holds an unknown required feature",
        st(icq_tensor("w", fut)), "unsupported-feature")  # fmt: skip
    add("future", "icq-major-2", "annex 5, 4.1", "the ICQ file is of format version 2.0",
        st(icq_tensor("w", patch(build([v.icq(name="w")]), 8, b"\2\0"))), "unsupported-version")  # fmt: skip


def generate() -> Vectors:
    v = Vectors()
    valid(v)
    invalid(v)
    future(v)
    clarifications(v)
    annex(v)
    return v


def expected_outputs(data: bytes, container: str = "icq") -> tuple[list[dict], dict[str, bytes]]:
    """The reference decoder's output: a JSON list per tensor and its raw little-endian bytes."""
    from icqcodec import dtypes, files

    if container == "safetensors":
        import tempfile

        from icqcodec import annex_safetensors

        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "v.safetensors").write_bytes(data)
            tensors = annex_safetensors.load_file(Path(folder) / "v.safetensors", backend="reference")
    else:
        tensors = files.load(data, backend="reference")
    described, raw = [], {}
    for index, (name, array) in enumerate(tensors.items()):
        content = array.tobytes()
        described.append({"name": name, "dtype": dtypes.NAMES[dtypes.code_of(array.dtype)],
                          "shape": list(array.shape), "sha256": hashlib.sha256(content).hexdigest(),
                          "file": f"{index}.bin"})  # fmt: skip
        raw[f"{index}.bin"] = content
    return described, raw


def render() -> dict[str, bytes]:
    """Every file of the suite: vectors, expected outputs and MANIFEST.json, by relative path."""
    v = generate()
    out = dict(v.files)
    for entry in v.entries:
        if entry["kind"] != "valid":
            continue
        described, raw = expected_outputs(v.files[vector_path(entry)], entry.get("container", "icq"))
        folder = expected_folder(entry)
        out[f"{folder}/tensors.json"] = (json.dumps(described, indent=1, ensure_ascii=False) + "\n").encode()
        for file, content in raw.items():
            out[f"{folder}/{file}"] = content
    manifest = {"spec_version": SPEC_VERSION, "seed": SEED, "vectors": v.entries}
    out["MANIFEST.json"] = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode()
    out["README.md"] = readme_with_table(v.entries).encode()
    return out


def readme_with_table(entries: list[dict]) -> str:
    """conformance/README.md with its vector table (between the markers) rebuilt from the manifest."""
    text = (HERE / "README.md").read_text()
    head, rest = text.split("<!-- vectors -->", 1)
    tail = rest.split("<!-- /vectors -->", 1)[1]
    rows = ["| vector | kind | expected | spec | what it tests |", "|---|---|---|---|---|"]
    rows += [f"| `{e['name']}` | {e['kind']} | {e['expected']} | {e['section']} | {e['description']} |"
             for e in entries]  # fmt: skip
    return head + "<!-- vectors -->\n" + "\n".join(rows) + "\n<!-- /vectors -->" + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        committed = {str(p.relative_to(HERE)): p.read_bytes() for p in VECTORS.rglob("*") if p.is_file()}
        committed["MANIFEST.json"] = (HERE / "MANIFEST.json").read_bytes()
        committed["README.md"] = (HERE / "README.md").read_bytes()
        differ = sorted(set(files) ^ set(committed) | {k for k in files if committed.get(k) != files[k]})
        for name in differ:
            print(f"differs: {name}")
        return 1 if differ else 0
    for path in VECTORS.rglob("*"):
        if path.is_file():
            path.unlink()
    for name, content in files.items():
        target = HERE / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    print(f"wrote {len(files)} files under {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
