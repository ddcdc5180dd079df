"""An icq tensor laid out for a linear layer on the GPU, and the kernels that run from it.

The layout keeps the tensor's payload byte for byte (so it can be written back unchanged) and adds
its outlier index: for every row its outliers' columns in order, each a byte within its group of
256 columns, and where each group's outliers start (a byte each; two where a row has 256 outliers
or more, four from 65536). The kernels read the index, not the gap chains: every outlier's column
is a byte away, with no chain to walk. The payload is checked on the host before anything is
uploaded (the whole decode of the numba decoder), and the index is built from its chains (spec
section 8). The kernels (``linear_kernels.cu``, compiled by NVRTC through CuPy on first use and
cached by CuPy) need no torch; :mod:`icqcodec.torch` wraps them in a module.
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
from .jit import JIT, field
from .payload_checks import segment_starts

__all__ = ["MAX_FUSED_ROWS", "MMA_ROWS", "Layout", "OutlierIndex", "layout_of", "load_layout", "rows_per_warp",
           "kernels", "mma_kernel", "mma_splits", "outlier_index", "takes_mma"]  # fmt: skip

MAX_FUSED_ROWS = 16  # rows of activations the fused kernel takes (MAX_ACTIVATION_ROWS in the source)
WARPS_PER_BLOCK = 8
MMA_ROWS = 15  # weight rows per block of the tensor-core kernel (MMA_ROWS in the source)
MMA_MAX_BITS = 7  # the bfloat16 magic number holds codes below 2**7
MMA_WARPS = 8  # warps per block of the tensor-core kernel (MMA_WARPS in the source)
GROUP_LOG2 = 8  # the outlier index's groups of columns: 256, so a column within its group is a byte
INDEX_STAGE_BYTES = 30720  # the tensor-core block's shared memory for its outlier index (the source's)
WAVE_WARPS = 24  # warps a multiprocessor that the tensor-core kernel's split aims at


@dataclass(frozen=True)
class OutlierIndex:
    """Where each row's outliers are: ``offsets`` (rows x outliers, uint8), their columns in order,
    each less the first column of its group of 256; ``groups`` (rows x (groups - 1); uint8 where a
    row has fewer than 256 outliers, uint16 where fewer than 65536, else uint32: :func:`group_bytes`),
    the index within the row of each group's first outlier, from group 1 on (group 0 starts at 0)."""

    offsets: np.ndarray
    groups: np.ndarray

    def columns(self) -> np.ndarray:
        """Every outlier's column (rows x outliers, int64)."""
        rows, outliers = self.offsets.shape
        group = np.zeros((rows, outliers), np.int64)
        for k in range(self.groups.shape[1]):  # each row's outliers from group k + 1 on are past its start
            group += np.arange(outliers)[None, :] >= self.groups[:, k : k + 1].astype(np.int64)
        return (group << GROUP_LOG2) + self.offsets

    def buffer(self) -> tuple[np.ndarray, int]:
        """The index as the kernels read it: one uint8 array, the offsets then the groups
        (little-endian), each section 16-byte aligned and padded; and the groups' byte offset."""
        first = _aligned(self.offsets.nbytes)
        groups = self.groups.astype(self.groups.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
        out = np.zeros(max(16, first + _aligned(groups.size)), np.uint8)
        out[: self.offsets.size] = self.offsets.reshape(-1)
        out[first : first + groups.size] = groups
        return out, first


def group_bytes(outliers: int) -> int:
    """Bytes of each group start in the outlier index of a tensor with ``outliers`` a row."""
    return 1 if outliers < 1 << 8 else 2 if outliers < 1 << 16 else 4


def _aligned(size: int) -> int:
    return -(-size // 16) * 16


@dataclass(frozen=True)
class Layout:
    """One icq tensor ready for the kernels: its record, its payload as stored and its outlier index
    as the kernels read it (:meth:`OutlierIndex.buffer`)."""

    record: TensorRecord
    chunk_log2: int
    payload: np.ndarray  # uint8: body and chunk table, exactly the file's bytes
    index: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(16, np.uint8))
    index_groups: int = 0  # byte offset of the group starts in ``index``

    @property
    def arguments(self) -> tuple[int, ...]:
        """The kernels' scalar tensor arguments, in order, less the body and index pointers (which
        come before the first and fourth): the codebook, row parameters and codes' offsets in the
        body (codebook -1 if none), the index's group offset, then rows, cols, bits, outliers, bytes
        of a group start, row stride; last, not a kernel argument, 1 where the tensor-core kernel
        serves the tensor (:func:`takes_mma`)."""
        p, sections = self.record.params, tensor_layout(self.record, self.chunk_log2).sections
        codebook = sections["codebook"][0] if "codebook" in sections else -1
        return (codebook, sections["params"][0], sections["codes"][0], self.index_groups, self.record.rows,
                self.record.cols, p.bits, p.outliers, group_bytes(p.outliers), packed_size(self.record.cols, p.bits),
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
    layout = Layout(record, header.chunk_log2, payload)
    if not record.params.outliers:
        return layout
    index, groups = outlier_index(record, header.chunk_log2, read_at, start).buffer()
    return dataclasses.replace(layout, index=index, index_groups=groups)


def outlier_index(record: TensorRecord, chunk_log2: int, read_at, start: int) -> OutlierIndex:
    """The outlier index of an icq tensor whose payload starts at ``start`` and has passed the whole
    decode, from its segment counts and gap chains (spec section 8)."""
    p = record.params
    segments = -(-record.cols // p.segment)
    sections = tensor_layout(record, chunk_log2).sections
    starts, _ = segment_starts(_words(read_at, start, sections["counts"]), record.rows * segments, p.count_bits,
                               p.total_symbols)  # fmt: skip
    groups = -(-record.cols // (1 << GROUP_LOG2))
    offsets = np.zeros((record.rows, p.outliers), np.uint8)
    starts_of_groups = np.zeros((record.rows, groups - 1), f"u{group_bytes(p.outliers)}")
    _outlier_columns(_words(read_at, start, sections["gaps"]), starts, segments, record.cols, p.gap_bits,
                     p.segment_log2, offsets, starts_of_groups)  # fmt: skip
    return OutlierIndex(offsets, starts_of_groups)


def _words(read_at, start: int, section: tuple[int, int]) -> np.ndarray:
    return np.frombuffer(bytes(read_at(start + section[0], section[1])), dtype="<u4").astype(np.uint32)


@nb.njit(parallel=True, **JIT)
def _outlier_columns(gap_words, starts, segments, cols, gap_bits, segment_log2, offsets, groups):
    escape = (1 << gap_bits) - 1
    rows, outliers = offsets.shape
    per_row = groups.shape[1]
    for r in nb.prange(rows):
        found, k = 0, 1
        for s in range(segments):
            cursor = s << segment_log2
            for i in range(starts[r * segments + s], starts[r * segments + s + 1]):
                v = field(gap_words, i * gap_bits, gap_bits)
                if v == escape:
                    cursor += escape
                    continue
                column = cursor + v
                cursor += v + 1
                if column >= cols or found >= outliers:  # both rejected by the decode already
                    continue
                while k <= per_row and column >= k << GROUP_LOG2:
                    groups[r, k - 1] = found
                    k += 1
                offsets[r, found] = column & ((1 << GROUP_LOG2) - 1)
                found += 1
        while k <= per_row:
            groups[r, k - 1] = found
            k += 1


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


def mma_splits(rows: int, cols: int, outliers: int, multiprocessors: int) -> int:
    """Warps of the tensor-core kernel that split each tile's columns (1, 2, 4 or 8): enough that
    the tiles fill the GPU in about one wave, and that a block's outlier index fits its shared
    memory."""
    tiles, splits = -(-rows // MMA_ROWS), 1
    while splits < MMA_WARPS and tiles * splits * 2 <= WAVE_WARPS * multiprocessors:
        splits *= 2
    per_row = outliers + (-(-cols // (1 << GROUP_LOG2)) - 1) * group_bytes(outliers)
    while splits < MMA_WARPS and min(rows, MMA_ROWS * MMA_WARPS // splits) * per_row + 64 > INDEX_STAGE_BYTES:
        splits *= 2
    return splits


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
