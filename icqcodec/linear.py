"""An icq tensor laid out for a linear layer on the GPU, and the kernels that run from it.

The layout keeps the tensor's payload byte for byte (so it can be written back unchanged) and adds
two arrays: the start of every (row, segment) gap chain, the prefix sum of the segment counts (spec
section 8), 8 bytes per segment; and the code of every gap symbol in chain order (0 for an escape),
``bits`` bits per symbol, so that the tensor-core kernel streams its outliers' codes instead of
looking each one up in its row. The payload is checked on the host before anything is uploaded:
the whole decode of the numba decoder, so the kernels only ever see valid chains. The kernels
(``linear_kernels.cu``, compiled by NVRTC through CuPy on first use and cached by CuPy) need no
torch; :mod:`icqcodec.torch` wraps them in a module.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources

import numba as nb
import numpy as np

from .bitstream import packed_size
from .constants import CODING_ICQ, KIND_UNIFORM
from .container import Header, TensorRecord, bytes_reader, read_header, tensor_layout
from .decode import decode_tensor
from .icq_params import IcqParams
from .jit import JIT, field, pack_fields
from .payload_checks import segment_starts

__all__ = ["MAX_FUSED_ROWS", "MMA_ROWS", "Layout", "layout_of", "load_layout", "rows_per_warp", "kernels",
           "mma_kernel", "takes_mma"]  # fmt: skip

MAX_FUSED_ROWS = 16  # rows of activations the fused kernel takes (MAX_ACTIVATION_ROWS in the source)
WARPS_PER_BLOCK = 8
MMA_ROWS = 15  # weight rows per block of the tensor-core kernel (MMA_ROWS in the source)
MMA_MAX_BITS = 7  # the bfloat16 magic number holds codes below 2**7


@dataclass(frozen=True)
class Layout:
    """One icq tensor ready for the kernels: its record, its payload as stored and the symbol start
    of every (row, segment)."""

    record: TensorRecord
    chunk_log2: int
    payload: np.ndarray  # uint8: body and chunk table, exactly the file's bytes
    starts: np.ndarray  # int64, rows * segments + 1
    symbol_codes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(1, np.uint32))  # uint32 words

    @property
    def arguments(self) -> tuple[int, ...]:
        """The kernels' scalar tensor arguments after the body pointer: section offsets (codebook -1
        if none), then rows, cols, bits, outliers, gap_bits, segment_log2, row stride; last, not a
        kernel argument, 1 where the tensor-core kernel serves the tensor (:func:`takes_mma`)."""
        p, sections = self.record.params, tensor_layout(self.record, self.chunk_log2).sections
        codebook = sections["codebook"][0] if "codebook" in sections else -1
        gaps = sections["gaps"][0] if "gaps" in sections else 0
        return (codebook, sections["params"][0], sections["codes"][0], gaps, self.record.rows, self.record.cols,
                p.bits, p.outliers, p.gap_bits, p.segment_log2, packed_size(self.record.cols, p.bits),
                int(takes_mma(self.record.params)))  # fmt: skip

    def header(self) -> tuple[Header, TensorRecord]:
        """A header and record that describe the payload alone (at data offset 0), for the decoders."""
        record = dataclasses.replace(self.record, offset=0)
        size = int(self.payload.size)
        return Header(1, 0, self.chunk_log2, 0, 0, size, (), {}, (record,), {record.name: record}), record

    def decode(self) -> np.ndarray:
        """The decoders' exact output (numba decoder)."""
        header, record = self.header()
        return decode_tensor(header, record, bytes_reader(self.payload)[0])


def layout_of(header: Header, record: TensorRecord, read_at, *, backend: str = "numba", device_data=None,
              keep_payload: bool = True) -> Layout:  # fmt: skip
    """Check an icq tensor of a file (its whole decode, by ``backend``) and lay it out; FormatError
    if it is bad. ``device_data``: the data section already on the GPU (``backend="cupy"``);
    ``keep_payload=False`` leaves the layout's payload empty, for a caller that holds it elsewhere."""
    if record.coding != CODING_ICQ:
        raise ValueError(f"tensor {record.name!r} is stored raw, not icq-coded; load it as a plain weight")
    if len(record.shape) != 2:
        raise ValueError(f"tensor {record.name!r} has shape {record.shape}; a linear layer needs a matrix")
    decode_tensor(header, record, read_at, backend=backend, device_data=device_data)  # spec 9.2 step 9
    start = header.data_offset + record.offset
    payload = (
        np.frombuffer(bytes(read_at(start, record.size)), np.uint8).copy() if keep_payload else np.empty(0, np.uint8)
    )
    layout = Layout(record, header.chunk_log2, payload, np.zeros(1, np.int64))
    p = record.params
    if not p.outliers:
        return layout
    segments = -(-record.cols // p.segment)
    sections = tensor_layout(record, header.chunk_log2).sections
    words = _words(read_at, start, sections["counts"])
    starts, _ = segment_starts(words, record.rows * segments, p.count_bits, p.total_symbols)
    symbol_codes = _symbol_codes(record, sections, read_at, start, starts)
    return dataclasses.replace(layout, starts=starts, symbol_codes=symbol_codes)


def _words(read_at, start: int, section: tuple[int, int]) -> np.ndarray:
    return np.frombuffer(bytes(read_at(start + section[0], section[1])), dtype="<u4").astype(np.uint32)


def _symbol_codes(record: TensorRecord, sections: dict[str, tuple[int, int]], read_at, start: int,
                  starts: np.ndarray) -> np.ndarray:  # fmt: skip
    """The code of every gap symbol, in chain order, packed ``bits`` bits each (0 for an escape)."""
    p = record.params
    segments = -(-record.cols // p.segment)
    codes = _codes_of_symbols(_words(read_at, start, sections["codes"]), packed_size(record.cols, p.bits) // 4,
                              _words(read_at, start, sections["gaps"]), starts, record.rows, segments, record.cols,
                              p.bits, p.gap_bits, p.segment_log2)  # fmt: skip
    return np.frombuffer(pack_fields(codes, p.bits) + bytes(4), dtype="<u4").astype(np.uint32)  # never empty


@nb.njit(parallel=True, **JIT)
def _codes_of_symbols(code_words, row_words, gap_words, starts, rows, segments, cols, bits, gap_bits, segment_log2):
    values = np.zeros(starts[rows * segments], np.uint8)
    escape = (1 << gap_bits) - 1
    for r in nb.prange(rows):
        for s in range(segments):
            cursor = s << segment_log2
            for i in range(starts[r * segments + s], starts[r * segments + s + 1]):
                v = field(gap_words, i * gap_bits, gap_bits)
                if v == escape:
                    cursor += escape
                    continue
                if cursor + v < cols:
                    values[i] = field(code_words, r * row_words * 32 + (cursor + v) * bits, bits)
                cursor += v + 1
    return values


def load_layout(data, name: str) -> Layout:
    """The layout of tensor ``name`` of an .icq file's bytes (or a memory map of them)."""
    read_at, size = bytes_reader(data)
    header = read_header(read_at, size)
    if name not in header.by_name:
        raise KeyError(f"no tensor named {name!r}")
    return layout_of(header, header.by_name[name], read_at)


def rows_per_warp(rows: int) -> int:
    """Weight rows each warp of the one-row kernel takes: more share its activations' registers,
    fewer keep every multiprocessor busy on a short matrix."""
    return 1 if rows < 16384 else 2


def takes_mma(params: IcqParams) -> bool:
    """Whether the tensor-core kernel serves a tensor: the uniform kind, 1-7 bits."""
    return params.kind == KIND_UNIFORM and params.bits <= MMA_MAX_BITS


def kernel_source() -> str:
    """The CUDA source of the kernels (``linear_kernels.cu``)."""
    return resources.files(__package__).joinpath("linear_kernels.cu").read_text(encoding="utf-8")


@functools.cache
def mma_kernel(bits: int, bf16: bool, tiles: int, options: tuple[str, ...] = ()):
    """The tensor-core kernel for ``bits``-bit codes, bfloat16 (else float16) activations and up to
    8 (``tiles`` 1) or 16 (2) rows of them, compiled on first use (one instantiation of the template);
    ``options``: more compiler options."""
    import cupy

    name = f"icq_mma<{bits}, {int(bf16)}, {tiles}>"
    module = cupy.RawModule(code=kernel_source(), options=("-std=c++17", *options), name_expressions=(name,))
    return module.get_function(name)


@functools.cache
def kernels():
    """(fused linear, levels, one-row linear) kernels, compiled on first use."""
    import cupy

    module = cupy.RawModule(code=kernel_source(), options=("-std=c++17",))
    return module.get_function("icq_linear"), module.get_function("icq_levels"), module.get_function("icq_gemv")
