"""``IcqLinear``: a linear layer that runs from its icq payload (optional extra ``icqcodec[torch]``).

On a CUDA device, one row of float16 or bfloat16 activations (generation) goes through a kernel
that keeps the activations in registers and multiplies each code's value; 2 to 16 rows through a
tensor-core kernel (uniform kind, 1-7 bits; a CUDA-core fused kernel for the others). Each reads
the codes and row parameters as they are stored, and the outliers' columns from the layout's
outlier index, and never writes the weight to memory; more rows decode the weight to the
activation dtype once per call and use cuBLAS. On the CPU, and for other activation dtypes, the
weight is decoded (numba) and multiplied. The fused path is the custom op
``torch.ops.icqcodec.linear``, so ``torch.compile`` and CUDA graphs capture it. Results are checked
against ``x @ L.T`` in float64 with a stated tolerance (``tests/test_torch.py``); ``dequantize()``
gives the decoders' exact bits.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import dtypes
from .encode import EncodeOptions, assemble, encode_tensor
from .files import safe_open
from .linear import (
    MAX_FUSED_ROWS,
    MMA_ROWS,
    MMA_WARPS,
    WARPS_PER_BLOCK,
    Layout,
    kernels,
    layout_of,
    load_layout,
    mma_kernel,
    mma_splits,
    rows_per_warp,
)

__all__ = ["IcqLinear", "decoded_tensor", "launch", "linear", "mma_linear"]

FUSED_DTYPES = (torch.float16, torch.bfloat16)
ROWS, MMA = 4, 10  # indices in Layout.arguments
MMA_MIN_ROWS = 2  # one row runs faster on the one-row kernel (bench/RESULTS.md)
SPLITS = (1, 2, 4, 8)  # the tensor-core kernel's splits of a tile's columns over the warps of a block


def launch(kernel, tensor_args: list[int], payload: torch.Tensor, index: torch.Tensor, *args,
           rows_per_block: int = WARPS_PER_BLOCK) -> None:  # fmt: skip
    """Launch one of the module's kernels on torch's current stream: the tensor's arguments, then
    ``args``; one block per ``rows_per_block`` weight rows."""
    import cupy

    grid = (-(-tensor_args[ROWS] // rows_per_block),)
    pointers = [np.uint64(payload.data_ptr()), *(np.int64(v) for v in tensor_args[:3]), np.uint64(index.data_ptr()),
                np.int64(tensor_args[3]), *(np.int32(v) for v in tensor_args[4:9]), np.int64(tensor_args[9])]  # fmt: skip
    with cupy.cuda.ExternalStream(torch.cuda.current_stream(payload.device).cuda_stream, payload.device.index):
        kernel(grid, (32 * WARPS_PER_BLOCK,), (*pointers, *args))


def _pointer(tensor: torch.Tensor | None) -> np.uint64:
    return np.uint64(0 if tensor is None else tensor.data_ptr())


@torch.library.custom_op("icqcodec::linear", mutates_args=(), device_types="cuda")
def linear(x: torch.Tensor, payload: torch.Tensor, index: torch.Tensor, tensor_args: list[int],
           bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """``x @ L.T (+ bias)`` for 2-D float16/bfloat16 ``x`` on the GPU, from an icq payload and its
    layout's outlier ``index``; ``tensor_args``: ``Layout.arguments``."""
    fused, levels, one_row = kernels()
    bf16 = np.int32(x.dtype == torch.bfloat16)
    rows, cols = tensor_args[ROWS], tensor_args[ROWS + 1]
    x = x.contiguous()
    bias = None if bias is None else bias.to(x.dtype).contiguous()
    if tensor_args[MMA] and MMA_MIN_ROWS <= x.shape[0] <= MAX_FUSED_ROWS:
        return mma_linear(x, payload, index, tensor_args, bias)
    if x.shape[0] == 1:
        y = torch.empty((1, rows), dtype=x.dtype, device=x.device)
        per_warp = rows_per_warp(rows)
        launch(one_row, tensor_args, payload, index, _pointer(x), bf16, _pointer(bias), _pointer(y),
               np.int32(per_warp), rows_per_block=WARPS_PER_BLOCK * per_warp)  # fmt: skip
        return y
    if x.shape[0] <= MAX_FUSED_ROWS:
        y = torch.empty((x.shape[0], rows), dtype=x.dtype, device=x.device)
        if x.shape[0]:
            launch(fused, tensor_args, payload, index, _pointer(x), np.int64(cols), np.int32(x.shape[0]), bf16,
                   _pointer(bias), _pointer(y))  # fmt: skip
        return y
    weight = torch.empty((rows, cols), dtype=x.dtype, device=x.device)
    launch(levels, tensor_args, payload, index, bf16, _pointer(weight))
    return torch.nn.functional.linear(x, weight, bias)


def mma_linear(x: torch.Tensor, payload: torch.Tensor, index: torch.Tensor, tensor_args: list[int],
               bias: torch.Tensor | None, options: tuple[str, ...] = (), splits: int | None = None) -> torch.Tensor:  # fmt: skip
    """``linear`` by the tensor-core kernel, for 1-16 rows of contiguous ``x`` (``bias`` in its
    dtype); ``options``: more compiler options (``-D`` values of the kernel's tunables);
    ``splits``: warps a tile's columns are split over (1, 2, 4 or 8; default ``mma_splits``)."""
    if splits not in (None, *SPLITS):
        raise ValueError(f"splits must be one of {SPLITS}, got {splits!r}")
    rows, cols, bits, outliers = tensor_args[ROWS : ROWS + 4]
    y = torch.empty((x.shape[0], rows), dtype=x.dtype, device=x.device)
    kernel = mma_kernel(bits, x.dtype == torch.bfloat16, 1 if x.shape[0] <= 8 else 2, options)
    splits = splits or mma_splits(rows, cols, outliers, _multiprocessors(x.device.index or 0))
    launch(kernel, tensor_args, payload, index, _pointer(x), np.int64(cols), np.int32(x.shape[0]), np.int32(splits),
           _pointer(bias), _pointer(y), rows_per_block=MMA_ROWS * (MMA_WARPS // splits))  # fmt: skip
    return y


@functools.cache
def _multiprocessors(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


@linear.register_fake
def _(x, payload, index, tensor_args, bias):
    return x.new_empty((x.shape[0], tensor_args[ROWS]))


class IcqLinear(torch.nn.Module):
    """A linear layer whose weight is one icq tensor, kept as its payload.

    Buffers: ``payload`` (uint8, the tensor's payload exactly as in the file) and ``index`` (uint8,
    its outlier index: :class:`icqcodec.linear.OutlierIndex`), ``bias`` if given. Resident bytes
    are the payload plus a byte per outlier and one to four per row and group of 256 columns.
    """

    def __init__(self, layout: Layout, bias: torch.Tensor | None = None, device=None) -> None:
        super().__init__()
        self.layout = layout
        self.in_features, self.out_features = layout.record.cols, layout.record.rows
        self.tensor_args = list(layout.arguments)
        self.register_buffer("payload", torch.from_numpy(layout.payload.copy()).to(device))
        self.register_buffer("index", torch.from_numpy(layout.index.copy()).to(device))
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"bias of shape {tuple(bias.shape)}, expected ({self.out_features},)")
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().to(device), requires_grad=False)

    @classmethod
    def from_icq(cls, file, name: str, bias: torch.Tensor | None = None, device=None) -> IcqLinear:
        """The layer of tensor ``name`` of an .icq file (a path, or its bytes), checked on the host
        before anything reaches ``device`` (default: the current CUDA device, else the CPU)."""
        if isinstance(file, (bytes, bytearray, memoryview)):
            layout = load_layout(file, name)
        else:  # mapped: one layer of a large checkpoint reads its own bytes only
            with safe_open(file) as mapped:
                layout = layout_of(mapped.header, mapped.record(name), mapped.read_at)
        return cls(layout, bias, _device(device))

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, *, bits: int = 2,
                   outlier_ratio: float = 0.05, quantizer: str = "uniform", segment_log2: int = 10,
                   dtype: str | None = None, device=None) -> IcqLinear:  # fmt: skip
        """Encode a float weight (out_features x in_features) with the icq coding and wrap it."""
        options = EncodeOptions(bits=bits, outlier_ratio=outlier_ratio, quantizer=quantizer, segment_log2=segment_log2)
        array = weight.detach().to(torch.float32).cpu().numpy()
        output = dtype or {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(weight.dtype, "float32")
        data = b"".join(assemble([encode_tensor("weight", array, options, coding="icq", dtype=output)], {}))
        device = _device(device) if device is not None or weight.device.type == "cpu" else weight.device
        return cls(load_layout(data, "weight"), bias, device)

    def payload_bytes(self) -> bytes:
        """The tensor's payload, byte for byte as it was read."""
        return self.payload.cpu().numpy().tobytes()

    @torch.compiler.disable  # numpy and numba code: torch.compile calls it as it is
    def dequantize(self) -> torch.Tensor:
        """The weight as the decoders give it (the file's output dtype, exact bits), on this device."""
        return decoded_tensor(self.layout, self.payload.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input of {x.shape[-1]} features, expected {self.in_features}")
        flat = x.reshape(-1, self.in_features)
        if x.is_cuda and x.dtype in FUSED_DTYPES:
            y = linear(flat, self.payload, self.index, self.tensor_args, self.bias)
        else:
            bias = None if self.bias is None else self.bias.to(x.dtype)
            y = torch.nn.functional.linear(flat, self.dequantize().to(x.dtype), bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        p = self.layout.record.params
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={p.bits}, "
                f"kind={p.kind}, outliers={p.outliers}, bias={self.bias is not None}")  # fmt: skip


def decoded_tensor(layout: Layout, device) -> torch.Tensor:
    """A layout's weight as the decoders give it, as a torch tensor on ``device`` (bfloat16 bit for
    bit: numpy has none)."""
    array = layout.decode()
    if layout.record.dtype == dtypes.BFLOAT16:
        tensor = torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(device)


def _device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
