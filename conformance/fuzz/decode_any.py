"""Fuzz target: any bytes -> a decode that matches the header, or icqcodec.FormatError; nothing else.

Run with atheris, seeded from the valid vectors, in both modes:

    NUMBA_DISABLE_JIT=1 python conformance/fuzz/decode_any.py -runs=500000 conformance/fuzz/corpus conformance/vectors/valid
    NUMBA_BOUNDSCHECK=1 python conformance/fuzz/decode_any.py -runs=500000 conformance/fuzz/corpus conformance/vectors/valid

``conformance/fuzz/corpus`` holds the inputs that reached new code in earlier runs;
``python -m conformance.parity`` decodes them too.

The first input byte, XORed with the magic's first byte (0x89), picks the options: bit 0 the
backend (numba or reference), bit 1 whether to recompute every checksum first, so that mutations
reach the content checks (as libpng disables its CRCs while fuzzing). The decoder sees that byte as
0x89: a valid vector is a seed as it is (options 0), and the magic's other bytes mutate as usual.
"""

import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Compiled numba functions cannot carry atheris' bytecode probes (numba refuses them): with the
# JIT on, the modules holding them are left out, so coverage comes from the container and
# reference code; NUMBA_DISABLE_JIT=1 turns them into plain Python and instruments everything.
JITTED = [] if os.environ.get("NUMBA_DISABLE_JIT") == "1" else [
    "icqcodec.jit", "icqcodec.float_bits", "icqcodec.numba_decoder", "icqcodec.payload_checks",
    "icqcodec.fitting", "icqcodec.gap_planning", "icqcodec.gpu"]  # fmt: skip
with atheris.instrument_imports(include=["icqcodec"], exclude=JITTED):
    # every module a decode runs, the ones the backend switch imports lazily included
    import icqcodec  # noqa: F401
    import icqcodec.numba_decoder  # noqa: F401
    import icqcodec.raw_coding  # noqa: F401
    import icqcodec.reference  # noqa: F401

from conformance.invariants import decode_or_reject, rechecksum  # noqa: E402


def test_one_input(raw: bytes) -> None:
    if not raw:
        return
    options, data = raw[0] ^ 0x89, b"\x89" + raw[1:]
    if options & 2:
        data = rechecksum(data)
    decode_or_reject(data, "reference" if options & 1 else "numba")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
