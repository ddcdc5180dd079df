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

import oracle  # noqa: E402

from conformance import generate, runner  # noqa: E402
from conformance.invariants import decode_or_reject, mutate, rechecksum  # noqa: E402

MANIFEST = json.loads((ROOT / "conformance" / "MANIFEST.json").read_text())
VALID = [e for e in MANIFEST["vectors"] if e["kind"] == "valid" and "container" not in e]  # ICQ files
ANNEX_VALID = [e for e in MANIFEST["vectors"] if e["kind"] == "valid" and e.get("container") == "safetensors"]


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


@pytest.mark.parametrize("only", ["codebook-3bit", "non-ascii-names", "truncated", "major-2", "icq-tensor"])
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
    return (ROOT / "conformance" / runner.vector_path(entry)).read_bytes()


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


@pytest.mark.parametrize("entry", VALID + ANNEX_VALID, ids=[e["name"] for e in VALID + ANNEX_VALID])
def test_expected_outputs_agree_with_an_independent_oracle(entry):
    """The expected bytes come from the reference decoder; an oracle sharing no code with it (the
    float64 level formula, tests/oracle.py) must give the same bits."""
    folder = ROOT / "conformance" / runner.expected_folder(entry)
    expected = json.loads((folder / "tensors.json").read_text())
    decoded = (oracle.decode_safetensors if entry in ANNEX_VALID else oracle.decode)(vector(entry))
    assert [(n, d, s) for n, d, s, _ in decoded] == [(e["name"], e["dtype"], e["shape"]) for e in expected]
    for (name, _, _, content), e in zip(decoded, expected, strict=True):
        assert content == (folder / e["file"]).read_bytes(), name


def test_bundle_holds_everything_and_runs_with_the_standard_library(tmp_path):
    import hashlib
    import importlib.util
    import os
    import subprocess
    import tarfile

    from conformance import __main__ as cli

    target = tmp_path / "icq.tar.gz"
    assert cli.main(["bundle", str(target)]) == 0
    first = target.read_bytes()
    assert cli.main(["bundle", str(target)]) == 1 and target.read_bytes() == first  # never clobbered
    assert cli.main(["bundle", str(target), "--force"]) == 0 and target.read_bytes() == first  # reproducible
    with tarfile.open(target) as tar:
        tar.extractall(tmp_path, filter="data")
    top = tmp_path / f"icq-conformance-{generate.SPEC_VERSION}"
    sums = [line.split("  ", 1) for line in (top / "SHA256SUMS").read_text().splitlines()]
    assert len(sums) == sum(1 for p in top.rglob("*") if p.is_file()) - 1
    assert all(hashlib.sha256((top / name).read_bytes()).hexdigest() == digest for digest, name in sums)
    for name in (
        "spec/icq-format.md",
        "spec/icq-safetensors.md",
        "spec/worked-example.md",
        "spec/worked-example-2.md",
        "README.md",
    ):
        assert (top / name).is_file(), name

    # the bundled runner, in isolated mode without site-packages, drives the reference decoder
    decoder = f"{sys.executable} -m conformance decode {{input}} {{output}}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-I", "-S", "run.py", "--decoder", decoder, "--only=-past-"],
                          cwd=top, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    expected = sum("-past-" in e["name"] for e in MANIFEST["vectors"])
    assert done.returncode == 0 and done.stdout.strip().endswith(f"{expected} passed, 0 failed"), done

    # and every bundled vector with its manifest passes the reference decoder in process
    spec = importlib.util.spec_from_file_location("bundled_runner", top / "runner.py")
    bundled = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundled)
    passed, failures = bundled.run(bundled.in_process("reference"))
    assert failures == [] and passed == len(MANIFEST["vectors"])
