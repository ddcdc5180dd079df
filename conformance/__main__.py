"""``python -m conformance run --backend numba|reference|cupy`` or ``--decoder 'CMD {input} {output}'``;
``python -m conformance decode INPUT OUTPUT`` (the reference decoder under the external contract);
``python -m conformance bundle OUT.tar.gz [--force]`` (everything an implementer needs, in one archive)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .runner import external, in_process, report, run


def decode_command(source: str, target: str) -> int:
    """The reference decoder behind the external-decoder contract (conformance/README.md)."""
    from icqcodec import FormatError, annex_safetensors, dtypes, files

    try:
        if source.endswith(".safetensors"):
            tensors = annex_safetensors.load_file(source, backend="reference")
        else:
            tensors = files.load(Path(source).read_bytes(), backend="reference")
    except FormatError as error:
        print(error.category)
        print(error, file=sys.stderr)
        return 1
    out = Path(target)
    listing = []
    for index, (name, array) in enumerate(tensors.items()):
        (out / f"{index}.bin").write_bytes(array.tobytes())
        listing.append({"name": name, "dtype": dtypes.NAMES[dtypes.code_of(array.dtype)],
                        "shape": list(array.shape), "file": f"{index}.bin"})  # fmt: skip
    (out / "tensors.json").write_text(json.dumps(listing, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="run every vector against a decoder")
    which = runner.add_mutually_exclusive_group(required=True)
    which.add_argument("--backend", choices=["numba", "reference", "cupy"])
    which.add_argument("--decoder", metavar="CMD", help="a command with {input} and {output}")
    runner.add_argument("--only", metavar="TEXT", help="only vectors whose name contains TEXT")
    decoder = sub.add_parser("decode", help="the reference decoder under the external contract")
    decoder.add_argument("input")
    decoder.add_argument("output")
    bundle = sub.add_parser("bundle", help="the spec, the vectors and a standard-library runner in one archive")
    bundle.add_argument("output", help="the .tar.gz to write")
    bundle.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    args = parser.parse_args(argv)
    if args.command == "decode":
        return decode_command(args.input, args.output)
    if args.command == "bundle":
        from .bundle import write_bundle

        try:
            count = write_bundle(Path(args.output), force=args.force)
        except FileExistsError:
            print(f"error: {args.output} exists; --force replaces it", file=sys.stderr)
            return 1
        print(f"wrote {args.output}: {count} files")
        return 0
    return report(*run(in_process(args.backend) if args.backend else external(args.decoder), only=args.only))


if __name__ == "__main__":
    sys.exit(main())
