"""The conformance suite: committed vectors equal the generator's, every backend passes them, the
external-decoder contract works, and mutated vectors give a decode or FormatError, nothing else."""

import json
import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import icqcodec
from icqcodec import files

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conformance import generate, runner  # noqa: E402
from conformance.builder import patch  # noqa: E402

MANIFEST = json.loads((ROOT / "conformance" / "MANIFEST.json").read_text())
VALID = [e for e in MANIFEST["vectors"] if e["kind"] == "valid"]


def test_generator_rebuilds_the_committed_vectors():
    assert generate.main(["--check"]) == 0


def test_manifest_counts():
    kinds = [e["kind"] for e in MANIFEST["vectors"]]
    assert kinds.count("valid") >= 60 and kinds.count("invalid") >= 40 and kinds.count("future") >= 5
    assert all(e["expected"] in ("ok", *icqcodec.errors.ERROR_CLASSES) for e in MANIFEST["vectors"])
    assert all(e["expected"].startswith("unsupported") for e in MANIFEST["vectors"] if e["kind"] == "future")


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_backends_pass_every_vector(backend):
    passed, failures = runner.run(runner.in_process(backend))
    assert failures == [] and passed == len(MANIFEST["vectors"])


@pytest.mark.parametrize("only", ["codebook-3bit", "non-ascii-names", "truncated", "major-2"])
def test_external_decoder_contract(only):
    """The reference decoder behind the command-line contract (one process per vector, so a few)."""
    command = f"{sys.executable} -m conformance decode {{input}} {{output}}"
    passed, failures = runner.run(runner.external(command), only=only)
    assert failures == [] and passed == sum(only in e["name"] for e in MANIFEST["vectors"]) > 0


def test_runner_reports_a_wrong_decoder(tmp_path):
    script = tmp_path / "liar.py"
    script.write_text("import sys; print('corrupt'); sys.exit(1)\n")
    passed, failures = runner.run(runner.external(f"{sys.executable} {script} {{input}} {{output}}"))
    assert passed == sum(e["expected"] == "corrupt" for e in MANIFEST["vectors"])
    assert any("expected a decode" in line for line in failures)


def test_readme_lists_every_vector():
    text = (ROOT / "conformance" / "README.md").read_text()
    for entry in MANIFEST["vectors"]:
        assert f"`{entry['name']}`" in text, entry["name"]


def vector(entry) -> bytes:
    return (ROOT / "conformance" / "vectors" / entry["kind"] / f"{entry['name']}.icq").read_bytes()


def rechecksum(data: bytes) -> bytes:
    """Recompute header and directory CRCs and every payload's chunk table (edits reach deep checks)."""
    from icqcodec.container import crc32c, read_header, tensor_layout
    from icqcodec.decode import _bytes_reader

    data = bytearray(data)
    try:
        header = read_header(*_bytes_reader(bytes(data)))
    except icqcodec.FormatError:
        return patch(bytes(data), 0, b"")
    directory = bytearray(data[64 : 64 + header.directory_size])
    for record in header.tensors:
        layout = tensor_layout(record, header.chunk_log2)
        start = header.data_offset + record.offset
        body = bytes(data[start : start + layout.body_size])
        chunk = header.chunk_size
        table = b"".join(crc32c(body[i : i + chunk]).to_bytes(4, "little") for i in range(0, len(body), chunk))
        data[start + layout.body_size : start + record.size] = table
        at = record.record_offset - 64 + 4 + len(record.name.encode()) + 24
        directory[at : at + 4] = crc32c(table).to_bytes(4, "little")
    data[64 : 64 + header.directory_size] = directory
    data[56:60] = crc32c(bytes(directory)).to_bytes(4, "little")
    return patch(bytes(data), 0, b"")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Bit flips, byte swaps, truncations, splices, field edits; half get their checksums fixed."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        if not data:
            break
        i = rng.randrange(len(data))
        if choice == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif choice == 1:
            j = rng.randrange(len(data))
            data[i], data[j] = data[j], data[i]
        elif choice == 2:
            del data[rng.randrange(len(data)) :]
        elif choice == 3:
            j = rng.randrange(len(data))
            data[i:i] = data[j : j + rng.randint(1, 64)]
        elif choice == 4:  # a field edit: an interesting integer at an aligned spot
            value = rng.choice([0, 1, 2, 255, 256, 65535, 2**31, 2**32 - 1, 2**48, 2**63])
            at = i - i % 4
            data[at : at + 8] = struct.pack("<Q", value)[: len(data[at : at + 8])]
        else:
            data[i] = rng.randrange(256)
    data = bytes(data)
    return rechecksum(data) if rng.random() < 0.5 else data


def decode_or_reject(data: bytes, backend: str) -> None:
    """The decoder invariant: a decode whose names, shapes and dtypes match the header, or
    FormatError (or a refusal by the output bound); nothing else."""
    from icqcodec import dtypes
    from icqcodec.container import read_header
    from icqcodec.decode import _bytes_reader

    try:
        tensors = files.load(data, backend=backend, max_output_size=1 << 26)
    except icqcodec.FormatError:
        return
    except ValueError as error:
        assert "max_output_size" in str(error)
        return
    header = read_header(*_bytes_reader(data))
    assert list(tensors) == [r.name for r in header.tensors]
    # spec section 4.5: a file decodes to at most 32 times its size
    assert sum(array.nbytes for array in tensors.values()) <= 32 * len(data)
    for record in header.tensors:
        array = tensors[record.name]
        assert array.shape == record.shape and array.dtype == dtypes.numpy_dtype(record.dtype)


def check_one(data: bytes) -> None:
    for backend in ("numba", "reference"):
        decode_or_reject(data, backend)


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(st.integers(0, len(VALID) - 1), st.integers(0, 2**32 - 1))
def test_mutated_vectors_decode_or_raise_format_error(index, seed):
    check_one(mutate(vector(VALID[index]), random.Random(seed)))


def test_rechecksum_reaches_deep_checks():
    rng = random.Random(1)
    deep = 0
    for entry in VALID:
        data = bytearray(vector(entry))
        data[-10] ^= 0x40
        try:
            files.load(rechecksum(bytes(data)))
        except icqcodec.ChecksumError:
            continue
        except icqcodec.FormatError:
            deep += 1
        else:
            deep += 1
    assert deep > len(VALID) // 2 and rng  # most edits pass the checksums and meet the content rules


def test_decodes_match_numpy_expectations():
    entry = next(e for e in VALID if e["name"] == "raw-float64")
    folder = ROOT / "conformance" / "vectors" / "valid" / "raw-float64.expected"
    expected = np.frombuffer((folder / "0.bin").read_bytes(), "<f8")
    assert files.load(vector(entry))["r"].ravel().tobytes() == expected.tobytes()
