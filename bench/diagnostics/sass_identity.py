"""Whether another version of the CUDA source compiles to the shipped kernels' machine code: every
instantiation the decoder launches (``segments<OUT,BITS,CHAIN>``, ``outliers<OUT>``), compiled by
NVRTC (cuda-python's bindings) with the shipped options for sm_90, disassembled by ``cuobjdump
-sass``, compared function by function. For edits that must not change the kernels (comments, moves).

    python bench/diagnostics/sass_identity.py OTHER.cu
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from icqcodec import gpu  # noqa: E402

NAMES = [f"segments<{o},{b},{c}>" for o in range(3) for b in range(1, 9) for c in ("true", "false")]
NAMES += [f"outliers<{o}>" for o in range(3)]
ARCH = "sm_90"


def include_dirs() -> list[str]:
    """Folders holding cuda_fp16.h: the toolkit's, or the CUDA headers of the NVIDIA wheels."""
    import glob
    import site

    candidates = [os.path.join(os.environ.get("CUDA_PATH", "/usr/local/cuda"), "include")]
    for root in site.getsitepackages():
        candidates += glob.glob(os.path.join(root, "nvidia", "*", "include"))
        candidates += glob.glob(os.path.join(root, "nvidia", "cu*", "include"))
    return [c for c in candidates if os.path.exists(os.path.join(c, "cuda_fp16.h"))][:1]


def cubin_of(source: str) -> bytes:
    """Every instantiation compiled by NVRTC with the shipped options, for the H100/H200."""
    from cuda.bindings import nvrtc

    def ok(result):
        error, *values = result
        if error != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC: {error}")
        return values[0] if values else None

    program = ok(nvrtc.nvrtcCreateProgram(source.encode(), b"gpu_kernels.cu", 0, [], []))
    for name in NAMES:
        ok(nvrtc.nvrtcAddNameExpression(program, name.encode()))
    options = [b"-std=c++17", f"-DICQ_MIN_BLOCKS={gpu.SHIPPED.min_blocks}".encode(), f"-arch={ARCH}".encode()]
    options += [f"-I{folder}".encode() for folder in include_dirs()]
    (error,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
    if error != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        size = ok(nvrtc.nvrtcGetProgramLogSize(program))
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(program, log)
        raise RuntimeError(log.decode(errors="replace"))
    image = b" " * ok(nvrtc.nvrtcGetCUBINSize(program))
    ok(nvrtc.nvrtcGetCUBIN(program, image))
    return image


def machine_code(source: str) -> dict[str, str]:
    """Function name -> its SASS (whitespace-normalized), for every instantiation."""
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernels.cubin"
        cubin.write_bytes(cubin_of(source))
        dump = subprocess.run(["cuobjdump", "-sass", str(cubin)], capture_output=True, text=True, check=True)
    functions = {}
    for name, body in re.findall(r"Function : (\S+)\n(.*?)(?=\n\s*Function : |\Z)", dump.stdout, re.S):
        functions[name] = "\n".join(line.strip() for line in body.splitlines() if line.strip())
    return functions


def main() -> int:
    other = machine_code(Path(sys.argv[1]).read_text(encoding="utf-8"))
    shipped = machine_code(gpu.source())
    differing = sorted(n for n in shipped.keys() | other.keys() if shipped.get(n) != other.get(n))
    for name in differing:
        print(f"differs: {name}")
    print(f"{len(shipped) - len(differing)} of {len(shipped)} kernel functions have identical SASS "
          f"({sum(body.count(chr(10)) + 1 for body in shipped.values())} lines)")  # fmt: skip
    return 1 if differing or len(shipped) < len(NAMES) else 0


if __name__ == "__main__":
    sys.exit(main())
