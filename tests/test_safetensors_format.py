"""The safetensors reader and writer: what the safetensors library writes reads back, and a
malformed header is a ValueError naming the problem, never another exception."""

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from icqcodec import safetensors_format


def test_reads_what_the_library_writes_and_writes_what_it_reads(tmp_path):
    tensors = {"b": np.arange(6, dtype=np.int16).reshape(2, 3), "a": np.ones(4, np.float32)}
    save_file(tensors, tmp_path / "lib.safetensors", metadata={"format": "pt"})
    stored = safetensors_format.read_file(tmp_path / "lib.safetensors")
    assert stored.metadata == {"format": "pt"}
    assert {n: stored.array(n).tobytes() for n in stored.entries} == {n: t.tobytes() for n, t in tensors.items()}
    halves = {"x": np.arange(5).astype(ml_dtypes.bfloat16)}
    with open(tmp_path / "ours.safetensors", "wb") as out:
        safetensors_format.write_file(out, [("x", safetensors_format.DTYPES["BF16"], (5,))],
                                      lambda n: halves[n].tobytes(), {"k": "v"})  # fmt: skip
    again = safetensors_format.read_file(tmp_path / "ours.safetensors")
    assert again.array("x").dtype == ml_dtypes.bfloat16 and again.array("x").tobytes() == halves["x"].tobytes()
    assert again.metadata == {"k": "v"}
    again.close()
    stored.close()


def header(content) -> bytes:
    text = json.dumps(content).encode()
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize(("data", "problem"), [
    (b"\x01\x02", "shorter than the 8-byte header length"),
    (struct.pack("<Q", 1 << 40) + b"{}", "runs past the end"),
    (header([1, 2]), "not a JSON object"),
    (header({"x": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}) + bytes(4), "no known dtype"),
    (header({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}) + bytes(4), "no valid shape"),
    (header({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}) + bytes(4), "no valid data offsets"),
    (header({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}) + bytes(4), "inconsistent data offsets"),
    (header({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}) + bytes(8), "does not end where"),
    (header({"__metadata__": [1]}), "__metadata__ is not a JSON object"),
    (struct.pack("<Q", 4) + b"{{{{", "Expecting"),
])  # fmt: skip
def test_malformed_headers_are_value_errors(tmp_path, data, problem):
    (tmp_path / "bad.safetensors").write_bytes(data)
    with pytest.raises(ValueError, match=problem):
        safetensors_format.read_file(tmp_path / "bad.safetensors")
