"""The conformance suite: committed vectors equal the generator's, every backend passes them, the
external-decoder contract works, and mutated vectors give a decode or FormatError, nothing else."""

import json
import random
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
from conformance.invariants import decode_or_reject, mutate, rechecksum  # noqa: E402

MANIFEST = json.loads((ROOT / "conformance" / "MANIFEST.json").read_text())
VALID = [e for e in MANIFEST["vectors"] if e["kind"] == "valid"]


def test_generator_rebuilds_the_committed_vectors():
    assert generate.main(["--check"]) == 0


def test_manifest_counts():
    kinds = [e["kind"] for e in MANIFEST["vectors"]]
    assert kinds.count("valid") >= 60 and kinds.count("invalid") >= 40 and kinds.count("future") >= 5
    unknown = [e["name"] for e in MANIFEST["vectors"] if e["expected"] not in ("ok", *icqcodec.errors.ERROR_CLASSES)]
    assert unknown == [], unknown
    future = [
        e["name"] for e in MANIFEST["vectors"] if e["kind"] == "future" and not e["expected"].startswith("unsupported")
    ]
    assert future == [], future


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


def check_one(data: bytes) -> None:
    for backend in ("numba", "reference"):
        decode_or_reject(data, backend)


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(st.integers(0, len(VALID) - 1), st.integers(0, 2**32 - 1))
def test_mutated_vectors_decode_or_raise_format_error(index, seed):
    check_one(mutate(vector(VALID[index]), random.Random(seed)))


def test_rechecksum_reaches_deep_checks():
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
    assert deep > len(VALID) // 2, (deep, len(VALID))  # most edits pass the checksums and meet the content rules


def test_decodes_match_numpy_expectations():
    entry = next(e for e in VALID if e["name"] == "raw-float64")
    folder = ROOT / "conformance" / "vectors" / "valid" / "raw-float64.expected"
    expected = np.frombuffer((folder / "0.bin").read_bytes(), "<f8")
    assert files.load(vector(entry))["r"].ravel().tobytes() == expected.tobytes()


def test_decoder_outcomes_as_recorded():
    """Every CPU decoder gives the recorded (category, message) or bits on the vectors, 3,000
    seeded mutations and the fuzz corpus (conformance/outcomes.json, rewritten only by an intended
    change)."""
    from conformance import parity

    assert parity.main(["check", str(ROOT / "conformance" / "outcomes.json")]) == 0
