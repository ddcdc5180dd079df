"""``IcqLinear``: against ``x @ L.T`` in float64 with the stated tolerances, the decoders' bits, the
payload kept byte for byte, the host checks before upload, ``torch.compile``; on the CPU always and
through the fused kernel where there is a GPU."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import icqcodec  # noqa: E402
from icqcodec import files  # noqa: E402
from icqcodec.container import bytes_reader, read_header  # noqa: E402
from icqcodec.torch import MMA, IcqLinear, mma_linear  # noqa: E402

TOLERANCE = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 1e-6}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


def relative_error(layer: IcqLinear, x: torch.Tensor) -> float:
    levels = layer.dequantize().double()
    reference = x.double() @ levels.T + (0 if layer.bias is None else layer.bias.to(x.dtype).double())
    return (torch.linalg.norm(layer(x).double() - reference) / torch.linalg.norm(reference)).item()


def weight(rng, rows: int, cols: int) -> torch.Tensor:
    return torch.from_numpy((rng.standard_t(4, size=(rows, cols)) * 0.02).astype(np.float32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits, quantizer, ratio, segment_log2, cols", [
    (1, "uniform", 0.05, 4, 37), (2, "uniform", 0.05, 10, 700), (3, "codebook", 0.2, 6, 129),
    (4, "uniform", 0.0, 10, 64), (5, "codebook", 0.01, 12, 300), (8, "uniform", 0.05, 5, 1),
])  # fmt: skip
def test_matches_float64_reference(rng, device, bits, quantizer, ratio, segment_log2, cols):
    bias = torch.from_numpy(rng.standard_normal(33).astype(np.float32))
    layer = IcqLinear.from_float(weight(rng, 33, cols), bias, bits=bits, quantizer=quantizer, outlier_ratio=ratio,
                                 segment_log2=segment_log2, dtype="float32", device=device)  # fmt: skip
    for dtype in (torch.float16, torch.bfloat16) if device == "cuda" else (torch.float32, torch.bfloat16):
        for rows in (1, 3, 16, 40):  # the fused kernel up to 16 rows, then decode and cuBLAS
            x = torch.from_numpy(rng.standard_normal((rows, cols)).astype(np.float32)).to(device, dtype)
            assert relative_error(layer, x) <= TOLERANCE[dtype], (dtype, rows)
    x = torch.randn(2, 5, cols, device=device, dtype=torch.bfloat16)
    assert layer(x).shape == (2, 5, 33)


@pytest.mark.parametrize("bits, quantizer, served", [
    (1, "uniform", True), (7, "uniform", True), (8, "uniform", False), (2, "codebook", False),
])  # fmt: skip
def test_the_tensor_core_kernel_serves_the_uniform_kind_below_8_bits(rng, bits, quantizer, served):
    layer = IcqLinear.from_float(weight(rng, 4, 64), bits=bits, quantizer=quantizer, device="cpu")
    assert layer.tensor_args[MMA] == int(served)


@pytest.mark.parametrize("splits", [0, 3, 16])
def test_the_tensor_core_kernel_refuses_a_split_it_has_no_layout_for(rng, splits):
    layer = IcqLinear.from_float(weight(rng, 4, 64), bits=2, device="cpu")
    x = torch.zeros(2, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="splits must be one of"):
        mma_linear(x, layer.payload, layer.index, layer.tensor_args, None, splits=splits)


@pytest.mark.parametrize("device", DEVICES)
def test_dequantize_is_the_decoders_bits_and_the_payload_is_kept(tmp_path, rng, device):
    w = (rng.standard_t(4, size=(48, 300)) * 0.02).astype(np.float32)
    path = tmp_path / "w.icq"
    files.save_file({"layer.weight": w}, path, bits=3, quantizer="codebook", dtype="bfloat16")
    layer = IcqLinear.from_icq(path, "layer.weight", device=device)
    decoded = files.load_file(path)["layer.weight"]
    assert layer.dequantize().dtype == torch.bfloat16
    assert layer.dequantize().cpu().view(torch.uint16).numpy().tobytes() == decoded.view(np.uint16).tobytes()
    data = path.read_bytes()
    header = read_header(*bytes_reader(data))
    record = header.by_name["layer.weight"]
    start = header.data_offset + record.offset
    assert layer.payload_bytes() == data[start : start + record.size]
    resident = layer.payload.numel() + layer.index.numel()
    assert resident <= 1.1 * record.size + 64 * 1024


def test_bad_input_is_refused_before_upload(rng, tmp_path):
    w = (rng.standard_t(4, size=(8, 64)) * 0.02).astype(np.float32)
    data = bytearray(icqcodec.encode(w, bits=2, name="w"))
    data[-40] ^= 0x10  # inside the body: the chunk CRC no longer matches
    with pytest.raises(icqcodec.ChecksumError):
        IcqLinear.from_icq(bytes(data), "w", device="cpu")
    raw = files.save({"r": w}, coding="raw")
    with pytest.raises(ValueError, match="stored raw"):
        IcqLinear.from_icq(raw, "r", device="cpu")
    with pytest.raises(KeyError, match="no tensor named 'x'"):
        IcqLinear.from_icq(raw, "x", device="cpu")
    path = tmp_path / "w.icq"
    path.write_bytes(bytes(data))
    with pytest.raises(icqcodec.ChecksumError):
        IcqLinear.from_icq(path, "w", device="cpu")
    path.write_bytes(b"")
    with pytest.raises(icqcodec.FormatError, match="ends inside the magic"):
        IcqLinear.from_icq(path, "w", device="cpu")
    layer = IcqLinear.from_icq(icqcodec.encode(w, name="w"), "w", device="cpu")
    with pytest.raises(ValueError, match="input of 63 features, expected 64"):
        layer(torch.zeros(1, 63))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_agrees_with_eager(rng, device):
    stack = torch.nn.Sequential(
        IcqLinear.from_float(weight(rng, 96, 64), bits=2, device=device), torch.nn.GELU(),
        IcqLinear.from_float(weight(rng, 32, 96), bits=4, quantizer="codebook", device=device),
    )  # fmt: skip
    dtype = torch.float16 if device == "cuda" else torch.float32
    x = torch.randn(4, 64, device=device, dtype=dtype)
    compiled = torch.compile(stack, backend="inductor" if device == "cuda" else "aot_eager")
    assert torch.equal(compiled(x), stack(x))


@needs_cuda
def test_cuda_graph_replays_the_fused_kernel(rng):
    layer = IcqLinear.from_float(weight(rng, 64, 256), bits=3, device="cuda")
    x = torch.randn(2, 256, device="cuda", dtype=torch.float16)
    eager = layer(x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        layer(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = layer(x)
    x.copy_(torch.randn_like(x))
    graph.replay()
    assert torch.equal(captured, layer(x)) and not torch.equal(captured, eager)


@needs_cuda
def test_resident_bytes_on_the_gpu_are_the_payload_and_its_outlier_index(rng):
    data = icqcodec.encode((rng.standard_t(4, size=(1024, 4096)) * 0.02).astype(np.float32), bits=2, name="w")
    record = read_header(*bytes_reader(data)).by_name["w"]
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    layer = IcqLinear.from_icq(data, "w", device="cuda")
    torch.cuda.synchronize()
    resident = torch.cuda.memory_allocated() - before
    assert layer.payload.numel() == record.size
    index = record.rows * (record.params.outliers + (-(-record.cols // 256) - 1))  # a byte an outlier and a group
    assert resident <= record.size + index + 4 * 1024, (resident, record.size, index)  # and the allocator's rounding
