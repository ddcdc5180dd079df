"""Fuzz target: any bytes -> a decode that matches the header, or icqcodec.FormatError; nothing else.

Run with atheris, seeded from the valid vectors, in both modes:

    NUMBA_DISABLE_JIT=1 python conformance/fuzz/decode_any.py -runs=500000 CORPUS conformance/vectors/valid
    NUMBA_BOUNDSCHECK=1 python conformance/fuzz/decode_any.py -runs=500000 CORPUS conformance/vectors/valid

The first input byte picks the options: bit 0 the backend (numba or reference), bit 1 whether to
recompute every checksum first, so that mutations reach the content checks (as libpng disables
its CRCs while fuzzing).
"""

import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Compiled numba functions cannot carry atheris' bytecode probes (numba refuses them): with the
# JIT on, the modules holding them are left out, so coverage comes from the container and
# reference code; NUMBA_DISABLE_JIT=1 turns them into plain Python and instruments everything.
JITTED = [] if os.environ.get("NUMBA_DISABLE_JIT") == "1" else ["icqcodec.decode", "icqcodec.encode",
                                                                 "icqcodec.float_bits", "icqcodec.gpu"]  # fmt: skip
with atheris.instrument_imports(include=["icqcodec"], exclude=JITTED):
    import icqcodec  # noqa: F401 - imported here to be instrumented

from conformance.invariants import decode_or_reject, rechecksum  # noqa: E402


def test_one_input(raw: bytes) -> None:
    if not raw:
        return
    options, data = raw[0], raw[1:]
    if options & 2:
        data = rechecksum(data)
    decode_or_reject(data, "reference" if options & 1 else "numba")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
