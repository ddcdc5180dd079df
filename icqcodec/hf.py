"""Hugging Face transformers loads icq model directories (extra ``icqcodec[hf]``, transformers 5).

``import icqcodec.hf`` registers the ``icq`` quantization config and quantizer with transformers.
Then ``AutoModelForCausalLM.from_pretrained(DIR, device_map=...)`` of a directory that ``icqcodec
export-hf`` wrote builds every linear layer that ``quantization_config.quantized`` names as an
:class:`IcqModelLinear`, whose parameter ``weight`` (uint8, never trained) is the weight's stored ICQ tensor exactly as stored
(a one-tensor ICQ file, spec/icq-safetensors.md), checked when loading ends; ``save_pretrained``
writes it back byte for byte. ``model.dequantize()`` gives a plain float model with the decoders' exact bits.

On CUDA, with CuPy, float16 and bfloat16 activations run through the fused kernels of
:mod:`icqcodec.torch` from the payload (nothing more than the payload and its outlier index, a byte
an outlier and one to four per row and group of 256 columns, stays on the GPU). Elsewhere (the CPU,
other dtypes) the first call decodes the weight and the layer keeps it in the activations' dtype:
memory as the float model's layer, plus the payload.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util

import numpy as np
import torch
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from . import annex_safetensors as annex
from .constants import CODING_ICQ
from .errors import InputError
from .hf_directories import FORMAT_VERSION, QUANT_METHOD, check_quantization_config
from .linear import Layout, layout_of
from .torch import FUSED_DTYPES, decoded_tensor, linear

__all__ = ["IcqConfig", "IcqHfQuantizer", "IcqModelLinear"]

WEIGHT = "weight"
_EMPTY = np.empty(0, np.uint8)  # a layout's payload where it stays in ``weight``


@register_quantization_config(QUANT_METHOD)
class IcqConfig(QuantizationConfigMixin):
    """The ``quantization_config`` of an icq model directory; refuses a newer major version of the
    format or of the annex at once, before any tensor is read."""

    def __init__(self, format_version: str = FORMAT_VERSION, annex_version: str = annex.ANNEX_VERSION,
                 quantized: list[str] | None = None, chunk_log2: int | None = None,
                 metadata: dict[str, str] | None = None, **kwargs) -> None:  # fmt: skip
        self.quant_method = QUANT_METHOD
        self.format_version, self.annex_version = format_version, annex_version
        self.quantized = list(quantized or [])
        self.chunk_log2, self.metadata = chunk_log2, dict(metadata or {})
        check_quantization_config(self.to_dict(), "quantization_config")
        bad = [n for n in self.quantized if not isinstance(n, str) or not n.endswith("." + WEIGHT)]
        if bad:
            raise InputError(f"quantization_config.quantized names {bad[0]!r}, not the weight of a linear layer")


class IcqModelLinear(torch.nn.Module):
    """A linear layer of an icq model directory: its weight's stored ICQ tensor (annex section 3: a
    one-tensor ICQ file) as the uint8 parameter ``weight``, checked and laid out for the kernels by
    :meth:`prepare` once it is loaded."""

    def __init__(self, in_features: int, out_features: int, bias: bool, tensor_name: str) -> None:
        super().__init__()
        self.register_parameter("bias", torch.nn.Parameter(torch.empty(out_features, device="meta"), requires_grad=False)
                                if bias else None)  # fmt: skip
        self._become(in_features, out_features, tensor_name)

    @classmethod
    def in_place_of(cls, module: torch.nn.Linear, tensor_name: str) -> IcqModelLinear:
        """The model's own linear ``module`` made this layer, its bias kept: building a new module
        for each layer (``Module.__init__``) took a tenth of a small model's load."""
        module.__class__ = cls
        module._become(module.in_features, module.out_features, tensor_name)
        return module

    def _become(self, in_features: int, out_features: int, tensor_name: str) -> None:
        # A parameter that never trains rather than a buffer: transformers walks the buffers three
        # times a load, each time asking for every buffer's module by name.
        self._parameters[WEIGHT] = torch.nn.Parameter(torch.empty(0, dtype=torch.uint8), requires_grad=False)
        # Straight into the instance dict: Module.__setattr__ looks every name up in its parameter,
        # buffer and module tables, a cost that hundreds of layers show in the load time.
        vars(self).update(in_features=in_features, out_features=out_features, tensor_name=tensor_name,
                          layout=None, payload=None, index=None, tensor_args=[], decoded=None)  # fmt: skip

    def prepare(self) -> None:
        """Check the ICQ tensor (FormatError or InputError naming it) and lay it out for where it is:
        on a GPU checked whole, by the GPU decoder over the tensor already there, before any kernel
        reads it; on the CPU its fixed header and directory, the first call's decode (which the CPU
        path needs anyway) checking the rest."""
        stored = getattr(self, WEIGHT)
        if stored.is_meta or stored.numel() == 0:
            raise InputError(f"tensor {self.tensor_name!r} is missing from the checkpoint")
        if stored.dtype != torch.uint8 or stored.dim() != 1:
            raise InputError(f"tensor {self.tensor_name!r} is {stored.dtype} of shape {tuple(stored.shape)}, not an "
                             "ICQ tensor (a uint8 vector)")  # fmt: skip
        parsed, read_at = annex.open_stored(self.tensor_name, stored.cpu().numpy().data)
        record = parsed.tensors[0]
        if record.coding != CODING_ICQ or (record.rows, record.cols) != (self.out_features, self.in_features):
            shape = record.shape if record.coding == CODING_ICQ else f"{record.shape}, stored raw"
            raise InputError(f"tensor {self.tensor_name!r} has shape {shape}; the model's config gives "
                             f"({self.out_features}, {self.in_features})")  # fmt: skip
        payload, index, tensor_args = stored[parsed.data_offset :], None, []
        if stored.is_cuda and _cupy_available():
            layout = layout_of(parsed, record, read_at, backend="cupy", device_data=_cupy_view(payload),
                               keep_payload=False)  # fmt: skip
            tensor_args = list(layout.arguments)
            index = torch.from_numpy(layout.index.copy()).to(stored.device)
        else:  # no kernel reads this payload until it is laid out on a GPU
            layout = Layout(record, parsed.chunk_log2, _EMPTY)
        vars(self).update(layout=layout, payload=payload, index=index, tensor_args=tensor_args, decoded=None)

    @torch.compiler.disable  # numpy and numba code: torch.compile calls it as it is
    def dequantize(self) -> torch.Tensor:
        """The weight as the decoders give it (the file's output dtype, exact bits), on this device."""
        return decoded_tensor(dataclasses.replace(self.layout, payload=self.payload.cpu().numpy()), self.payload.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout is None:
            raise RuntimeError(f"{self.tensor_name}: not prepared (load the model with from_pretrained)")
        flat = x.reshape(-1, self.in_features)
        fused = x.is_cuda and x.dtype in FUSED_DTYPES and _cupy_available()
        if self.payload.device != getattr(self, WEIGHT).device or (fused and not self.tensor_args):
            self.prepare()  # moved since it was prepared, or to be checked whole before the kernels read it
        if fused:
            y = linear(flat, self.payload, self.index, self.tensor_args, self.bias)
        else:
            if self.decoded is None or self.decoded.dtype != x.dtype or self.decoded.device != x.device:
                vars(self)["decoded"] = self.dequantize().to(device=x.device, dtype=x.dtype)
            bias = None if self.bias is None else self.bias.to(x.dtype)
            y = torch.nn.functional.linear(flat, self.decoded, bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _torch_dtype(dtype) -> torch.dtype:
    """``model.config.dtype`` may be a name ("bfloat16") or a torch dtype; float32 when unset."""
    if dtype is None:
        return torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _cupy_view(tensor: torch.Tensor):
    """A CuPy array over a CUDA tensor's memory (no copy)."""
    import cupy

    return cupy.from_dlpack(tensor.detach())


@functools.cache  # asked at every call of every layer
def _cupy_available() -> bool:
    return importlib.util.find_spec("cupy") is not None


@register_quantizer(QUANT_METHOD)
class IcqHfQuantizer(HfQuantizer):
    """Builds the named linear layers as :class:`IcqModelLinear` before the weights load, and checks
    and lays out every ICQ tensor after."""

    requires_calibration = True  # loads directories that are already coded, never quantizes

    def __init__(self, quantization_config, **kwargs) -> None:
        super().__init__(quantization_config, **kwargs)
        self.quantized = set(quantization_config.quantized)

    def param_needs_quantization(self, model, param_name: str, **kwargs) -> bool:
        """The ICQ tensors' shapes are their files' lengths, not the layers' weights'."""
        return param_name in self.quantized

    def _process_model_before_weight_loading(self, model, **kwargs):
        modules = dict(model.named_modules())
        for name in self.quantization_config.quantized:
            path = name[: -len("." + WEIGHT)]
            module = modules.get(path)
            if module is None:
                raise InputError(f"tensor {name!r} is ICQ-coded but the model has no module {path!r}")
            if not isinstance(module, torch.nn.Linear):
                raise InputError(f"tensor {name!r} is ICQ-coded but {path!r} is a {type(module).__name__}, not a "
                                 "linear layer: only linear layers load from ICQ tensors")  # fmt: skip
            IcqModelLinear.in_place_of(module, name)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the loaded tensors are complete before CuPy reads them
        for module in model.modules():
            if isinstance(module, IcqModelLinear):
                module.prepare()
        return model

    def _dequantize(self, model, dtype=None):
        for name, module in list(model.named_modules()):
            if isinstance(module, IcqModelLinear):
                weight = module.dequantize().to(_torch_dtype(dtype))
                plain = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                        device=weight.device, dtype=weight.dtype)  # fmt: skip
                with torch.no_grad():
                    plain.weight.copy_(weight)
                    if module.bias is not None:
                        plain.bias.copy_(module.bias)
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, plain)
        return model

    def update_parallel_plan(self, model, plan: dict[str, str]) -> None:
        """Nothing to add: each ICQ tensor has the name of the weight it stands for (transformers'
        own version walks every parameter of the model to find that out, twice a load)."""

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False
