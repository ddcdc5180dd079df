"""The documentation builds without warnings, and every example in the guides runs.

The ``pycon`` examples run as doctests (pytest collects docs/guide/*.md); the ``console`` and
``python`` examples run here. Install lines are left to the README's commands, which CI runs.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import tiny_llm
from safetensors.numpy import save_file

from icqcodec import gpu

ROOT = Path(__file__).resolve().parent.parent
GUIDES = sorted((ROOT / "docs" / "guide").glob("*.md"))


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for guide in GUIDES:
        for body in re.findall(rf"```{language}\n(.*?)```", guide.read_text(), re.S):
            found.append((guide.name, body))
    return found


def test_sphinx_builds_without_warnings(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(ROOT / "docs"), str(tmp_path / "html")], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "html" / "reference" / "api.html").read_text()
    cli = (tmp_path / "html" / "reference" / "cli.html").read_text()
    import icqcodec
    from icqcodec import files

    public = [f"icqcodec.{n}" for n in ("encode", "decode", *files.__all__)]
    public += [f"icqcodec.checkpoints.{n}" for n in ("encode_checkpoint", "decode_checkpoint")]
    public += [f"icqcodec.errors.{n}" for n in icqcodec.errors.__all__ if n != "ERROR_CLASSES"]
    for name in public:
        assert f'id="{name}"' in api, name
    for command in ("encode", "decode", "inspect", "verify", "calibrate", "quantize"):
        assert f'id="icqcodec-{command}"' in cli, command


@pytest.fixture
def workdir(tmp_path):
    tiny_llm.build(tmp_path)  # the "model" folder, texts and importance matrix of the guide "Quantize a model"
    tiny_llm.imatrix(tmp_path)
    rng = np.random.default_rng(0)
    save_file({"embeddings.word.weight": rng.standard_normal((128, 64)).astype(ml_dtypes.bfloat16),
               "layer.0.weight": rng.standard_normal((96, 128)).astype(np.float32),
               "layer.0.bias": rng.standard_normal(96).astype(np.float32)},
              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})  # fmt: skip
    return tmp_path


def run_console_examples(workdir) -> int:
    """Run the guides' console commands in order in ``workdir``; returns how many ran."""
    commands = [line[2:].split("  #")[0] for _, body in blocks("console") for line in body.splitlines()
                if line.startswith("$ ") and "pip install" not in line]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in commands:
        argv = [part.replace("python -m", f"{sys.executable} -m") for part in shlex.split(command)]
        argv[0] = sys.executable if argv[0] == "python" else argv[0]
        if argv[0] == "icqcodec":
            argv = [sys.executable, "-m", "icqcodec.cli", *argv[1:]]
            cwd = workdir
        else:
            assert argv[0] == sys.executable and argv[1] == "-m", command
            cwd = ROOT
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    return len(commands)


def test_console_examples_run(workdir):
    assert run_console_examples(workdir) >= 12


def test_python_examples_run(workdir, monkeypatch):
    """After the console examples, whose outputs (statistics, quantized models) they read."""
    examples = blocks("python")
    assert examples
    run_console_examples(workdir)
    for guide, body in examples:
        if ("cuda" in body or "cupy" in body) and not gpu.available():
            continue  # GPU examples run where there is a GPU (tests/test_gpu.py covers the same calls)
        from icqcodec import files

        files.save_file({"w": np.ones((64, 64), np.float32)}, workdir / "model.icq", overwrite=True)
        monkeypatch.chdir(workdir)
        exec(compile(body, guide, "exec"), {})
