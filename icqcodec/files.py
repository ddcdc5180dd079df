"""Many tensors in one ICQ file: ``save``/``load`` on bytes, ``save_file``/``load_file``/``safe_open``
on paths, in the shape safetensors users know.

Files are written to a temporary file beside the target and renamed into place, so a reader never
sees a partial file and an existing file is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import dtypes
from .atomic import write_atomically
from .calibration import Statistics
from .constants import CODING_RAW, DEFAULT_SEGMENT_LOG2, RESERVED_KEY_PREFIX
from .container import TensorRecord, bytes_reader, read_header
from .decode import BACKENDS, check_output_size, decode_tensor
from .encode import ENCODER_METADATA, EncodeOptions, assemble, encode_tensor
from .hessian import DAMPING
from .imatrix import load_calibration
from .payload import Payload, check_payload_padding
from .sub_records import slice_record

__all__ = ["save", "load", "save_file", "load_file", "safe_open"]


def _encode_all(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None, options: EncodeOptions,
                coding: str | Mapping[str, str], dtype: str | None,
                calibration: Statistics | str | os.PathLike | None = None) -> list[bytes | memoryview]:  # fmt: skip
    user = dict(metadata or {})
    for key, value in user.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata keys and values must be str, got {key!r}: {value!r}")
        if key.startswith(RESERVED_KEY_PREFIX):
            raise ValueError(f"metadata key {key!r}: keys starting with {RESERVED_KEY_PREFIX!r} are reserved")
    if calibration is not None and not isinstance(calibration, Statistics):
        calibration = load_calibration(calibration, tensors.keys())
    if calibration is not None:
        calibration.check({name: np.shape(array) for name, array in tensors.items()})
    encoded = []
    for name, array in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        tensor_coding = coding.get(name, "auto") if isinstance(coding, Mapping) else coding
        statistic = None
        if calibration is not None:
            statistic = calibration.prepared(name, damping=options.damping, order=options.order)
        encoded.append(encode_tensor(name, array, options, coding=tensor_coding, dtype=dtype, statistic=statistic))
    full = {**user, **ENCODER_METADATA, "icq.encoder_options": options.to_json()}
    return assemble(encoded, full)


def save(tensors: Mapping[str, np.ndarray], *, metadata: Mapping[str, str] | None = None, bits: int = 2,
         outlier_ratio: float = 0.05, quantizer: str = "uniform", coding: str | Mapping[str, str] = "auto",
         dtype: str | None = None, calibration: Statistics | str | os.PathLike | None = None,
         order: str = "activation", damping: float = DAMPING, segment_log2: int = DEFAULT_SEGMENT_LOG2,
         outliers_per_segment: bool = False) -> bytes:  # fmt: skip
    """Encode named tensors into the bytes of one ICQ file.

    Args:
        tensors: name -> array. Names are non-empty; the file keeps them in byte order.
        metadata: str -> str, kept in the file (like safetensors' ``__metadata__``).
        bits, outlier_ratio, quantizer: options of the icq coding (see :func:`icqcodec.encode`).
        coding: ``"auto"`` (the default rule: floating-point matrices with at least 64 columns and
            4096 finite elements are quantized, the rest stored raw), ``"icq"``, ``"raw"``, or a
            mapping name -> coding (missing names are ``"auto"``).
        dtype: output dtype of quantized tensors (default: the source's where possible).
        calibration: statistics of the tensors' inputs (:mod:`icqcodec.calibration`: a file, a
            llama.cpp importance matrix ``.gguf`` (:mod:`icqcodec.imatrix`) or a
            :class:`~icqcodec.calibration.Statistics`); quantized tensors they name get
            Hessian-guided codes, chosen in ``order`` with ``damping``.
        segment_log2, outliers_per_segment: segments of ``2^segment_log2`` columns for the outlier
            positions; with ``outliers_per_segment``, the same outliers in each segment of every row,
            so that any run of whole segments is an icq tensor of its own (:meth:`safe_open.slice_record`).

    Raises:
        InputError: a statistic names no tensor, or does not fit its tensor's input size.

    Example:
        >>> import numpy as np, icqcodec
        >>> data = icqcodec.save({"w": np.ones((64, 64), np.float32), "b": np.arange(3)}, metadata={"format": "pt"})
        >>> sorted(icqcodec.load(data))
        ['b', 'w']
    """
    options = EncodeOptions(bits=bits, outlier_ratio=outlier_ratio, quantizer=quantizer, order=order, damping=damping,
                            segment_log2=segment_log2, outliers_per_segment=outliers_per_segment)  # fmt: skip
    return b"".join(_encode_all(tensors, metadata, options, coding, dtype, calibration))


def load(data: bytes | bytearray | memoryview, *, backend: str = "numba",
         max_output_size: int | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Decode every tensor of an ICQ file's bytes; checks in the order of spec section 9.2.

    Args:
        data: the file's bytes.
        backend: ``"numba"``, ``"reference"`` or ``"cupy"`` (CuPy arrays on the GPU).
        max_output_size: refuse (ValueError) before decoding if the tensors would take more bytes.

    Raises:
        FormatError: the bytes are not a valid ICQ 1.x file.
    """
    read_at, size = bytes_reader(data)
    header = read_header(read_at, size)
    check_output_size(header.tensors, max_output_size)
    tensors = {r.name: decode_tensor(header, r, read_at, backend=backend) for r in header.tensors}
    check_payload_padding(header, read_at)
    return tensors


def save_file(tensors: Mapping[str, np.ndarray], path: str | os.PathLike, *, overwrite: bool = False,
              **options) -> None:  # fmt: skip
    """Encode tensors into an ICQ file at ``path``, atomically (see :func:`save` for the options).

    Raises FileExistsError if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    names = [field.name for field in dataclasses.fields(EncodeOptions)]
    encode_options = EncodeOptions(**{k: options.pop(k) for k in names if k in options})
    pieces = _encode_all(tensors, options.pop("metadata", None), encode_options, options.pop("coding", "auto"),
                         options.pop("dtype", None), options.pop("calibration", None))  # fmt: skip
    if options:
        raise TypeError(f"unexpected options: {', '.join(options)}")
    write_atomically(path, pieces, overwrite=overwrite)


def _backend_of(backend: str, device: str | None, framework: str | None) -> str:
    """The one backend switch; ``device`` and ``framework`` are the deprecated ways to ask for CuPy."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for argument, value, cpu, gpu in (("device", device, ("cpu",), "cuda"),
                                      ("framework", framework, ("numpy", "np"), "cupy")):  # fmt: skip
        if value is None:
            continue
        warnings.warn(f"{argument}= is deprecated and will be removed in 0.3.0; pass backend='cupy' for the GPU "
                      "or leave it out for the CPU", DeprecationWarning, stacklevel=3)  # fmt: skip
        if value == gpu:
            backend = "cupy"
        elif value not in cpu:
            raise ValueError(f"{argument} must be {cpu[0]!r} or {gpu!r}, got {value!r}")
    return backend


def load_file(path: str | os.PathLike, *, backend: str = "numba", max_output_size: int | None = None,
              device: str | None = None) -> dict:  # fmt: skip
    """Decode every tensor of the ICQ file at ``path``.

    With ``backend="cupy"`` the compressed data section goes to the GPU in one copy and is decoded
    there into CuPy arrays (bfloat16 tensors as uint16 bit patterns, since CuPy has no bfloat16;
    ``torch.from_dlpack(a).view(torch.bfloat16)`` reads them without a copy). ``device="cuda"`` is a
    deprecated spelling of ``backend="cupy"``.
    """
    backend = _backend_of(backend, device, None)
    with safe_open(path, backend=backend, max_output_size=max_output_size) as f:
        check_output_size(f.header.tensors, max_output_size)
        if f.device == "cuda":
            f.upload()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
        f.check_padding()
        return tensors


class safe_open:  # noqa: N801 - the name safetensors users know
    """Open an ICQ file lazily: the header is read and checked at once, tensors on demand.

    Args:
        path: the file.
        backend: ``"numba"``, ``"reference"`` or ``"cupy"`` (decodes on the GPU into CuPy arrays).
        max_output_size: refuse (ValueError) a ``get_tensor`` or ``get_slice`` whose output would
            take more bytes.
        framework, device: deprecated; ``framework="cupy"`` or ``device="cuda"`` mean ``backend="cupy"``.

    Example:
        >>> import numpy as np, tempfile, os, icqcodec
        >>> path = os.path.join(tempfile.mkdtemp(), "m.icq")
        >>> icqcodec.save_file({"w": np.ones((128, 64), np.float32)}, path, bits=4)
        >>> with icqcodec.safe_open(path) as icq:
        ...     icq.keys(), icq.get_slice("w")[2:5].shape
        (['w'], (3, 64))
    """

    def __init__(self, path: str | os.PathLike, *, backend: str = "numba", max_output_size: int | None = None,
                 framework: str | None = None, device: str | None = None) -> None:  # fmt: skip
        self.backend = _backend_of(backend, device, framework)
        self.device = "cuda" if self.backend == "cupy" else "cpu"
        self.max_output_size = max_output_size
        self._device_data = None
        self._file = open(path, "rb")
        size = os.fstat(self._file.fileno()).st_size
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        view = memoryview(self._map) if self._map is not None else memoryview(b"")

        def read_at(offset: int, length: int) -> memoryview:
            return view[offset : offset + length]

        self._view, self.read_at = view, read_at
        try:
            self.header = read_header(read_at, size)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> safe_open:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        # an array still pointing into the map keeps it alive; it is freed with that array
        for resource in (getattr(self, "_view", None), getattr(self, "_map", None)):
            try:
                if isinstance(resource, memoryview):
                    resource.release()
                elif resource is not None:
                    resource.close()
            except BufferError:
                pass
        self._view = self._map = None
        self._file.close()

    def keys(self) -> list[str]:
        return [r.name for r in self.header.tensors]

    def metadata(self) -> dict[str, str]:
        return dict(self.header.metadata)

    def record(self, name: str) -> TensorRecord:
        try:
            return self.header.by_name[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r}") from None

    def upload(self) -> None:
        """Copy the whole compressed data section to the GPU once (``backend="cupy"``)."""
        from .gpu import upload

        start = self.header.data_offset
        self._device_data = upload(self._view[start : start + self.header.data_size])

    def decode(self, record: TensorRecord, rows: tuple[int, int] | None = None,
               columns: tuple[int, int] | None = None):  # fmt: skip
        """Decode ``record``, or its rows ``rows[0]`` to ``rows[1] - 1`` (and of them the columns
        ``columns[0]`` to ``columns[1] - 1``), within ``max_output_size``."""
        if self.max_output_size is not None:
            elements = record.elements
            if rows is not None:  # rows of the leading dimension (raw) or icq rows
                leading = record.shape[0] if record.coding == CODING_RAW else record.rows
                elements = (rows[1] - rows[0]) * (record.elements // leading if leading else 0)
            if columns is not None and record.cols:
                elements = elements // record.cols * (columns[1] - columns[0])
            size = elements * dtypes.item_size(record.dtype)
            if size > self.max_output_size:
                raise ValueError(f"decoded size {size} bytes is above max_output_size={self.max_output_size}")
        return decode_tensor(self.header, record, self.read_at, rows, backend=self.backend,
                             device_data=self._device_data, columns=columns)  # fmt: skip

    def get_tensor(self, name: str) -> np.ndarray:
        return self.decode(self.record(name))

    def get_slice(self, name: str) -> _Slice:
        return _Slice(self, self.record(name))

    def slice_record(self, name: str, columns: tuple[int, int], rows: tuple[int, int] | None = None) -> bytes:
        """Columns ``columns[0]`` to ``columns[1] - 1`` of icq tensor ``name`` (and of its leading
        axis ``rows``) as a one-tensor ICQ file of their own, cut at segment boundaries without
        decoding (:func:`icqcodec.sub_records.slice_record`): what a tensor-parallel loader ships
        each device."""
        return slice_record(Payload(self.header, self.record(name), self.read_at), columns, rows)

    def check_padding(self) -> None:
        """9.2 step 10: the padding between payloads (after decoding every tensor)."""
        check_payload_padding(self.header, self.read_at)


class _Slice:
    """``get_slice(name)[a:b]`` decodes only rows ``a`` to ``b - 1`` of the leading dimension;
    ``[a:b, c0:c1]`` (``[a:b, ..., c0:c1]`` above rank 2) only the segments that cover columns
    ``c0`` to ``c1 - 1`` of the last axis, too."""

    def __init__(self, owner: safe_open, record: TensorRecord) -> None:
        self.owner, self.record = owner, record

    def get_shape(self) -> list[int]:
        return list(self.record.shape)

    def __getitem__(self, index) -> np.ndarray:
        record = self.record
        shape = record.shape
        if not shape:
            raise TypeError(f"tensor {record.name!r} has rank 0: get_slice needs an axis to cut")
        ranges = _ranges(index, shape)
        (start, stop), (c0, c1) = ranges[0], ranges[-1]
        columns = None if (c0, c1) == (0, shape[-1]) else (c0, c1)
        if len(shape) == 1:
            return self.owner.decode(record, None, columns)
        inner = 1 if record.coding == CODING_RAW else record.rows // shape[0]
        out = self.owner.decode(record, (start * inner, stop * inner), columns)
        return out.reshape((stop - start, *shape[1:-1], c1 - c0))


def _ranges(index, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """The (start, stop) of every axis that ``index`` asks for: slices of step 1 on the leading and
    the last axis, every axis between taken whole (TypeError otherwise)."""
    items = list(index) if isinstance(index, tuple) else [index]
    if items.count(Ellipsis) > 1:
        raise TypeError("get_slice takes one ... at most")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * max(0, len(shape) - len(items) + 1)
    if len(items) > len(shape):
        raise TypeError(f"get_slice got {len(items)} indices for a tensor of rank {len(shape)}")
    items += [slice(None)] * (len(shape) - len(items))
    ranges = []
    for axis, (item, size) in enumerate(zip(items, shape, strict=True)):
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("get_slice supports [start:stop] of step 1 on the leading and the last axis only")
        start, stop, _ = item.indices(size)
        if 0 < axis < len(shape) - 1 and (start, stop) != (0, size):
            raise TypeError("get_slice cuts the leading and the last axis only; take the axes between whole")
        ranges.append((start, max(start, stop)))
    return ranges
