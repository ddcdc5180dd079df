"""Runs the ICQ conformance vectors against a decoder program; needs only the Python standard
library (this is ``run.py`` of the bundle that ``python -m conformance bundle`` writes).

    python3 run.py --decoder 'CMD {input} {output}' [--only TEXT]

The command's contract is in README.md ("Testing your decoder").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import external, report, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", metavar="CMD", required=True, help="a command with {input} and {output}")
    parser.add_argument("--only", metavar="TEXT", help="only vectors whose name contains TEXT")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per vector (default 60)")
    args = parser.parse_args(argv)
    return report(*run(external(args.decoder, timeout=args.timeout), only=args.only))


if __name__ == "__main__":
    sys.exit(main())
