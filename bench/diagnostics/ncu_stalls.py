"""Where a kernel's warps stall, per SASS instruction, from an Nsight Compute report with source
counters (``ncu --section SourceCounters --section WarpStateStats -o REPORT ...``).

    python bench/diagnostics/ncu_stalls.py REPORT.ncu-rep [TOP]
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys


def main() -> None:
    report, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
    ncu = shutil.which("ncu") or "ncu"
    text = subprocess.run([ncu, "-i", report, "--page", "source", "--csv", "--print-source", "sass"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if '"Source"' in line)
    rows = [r for r in csv.DictReader(io.StringIO("\n".join(lines[header:]))) if r.get("Source")]
    columns = [c for c in rows[0] if c]
    samples = next((c for c in columns if c.startswith("Warp Stall Sampling (All")), None)
    if samples is None:
        print("no stall samples; columns:", columns)
        return
    reasons = [c for c in columns if c.startswith("stall_") and "Not Issued" not in c]  # of all samples

    def number(value: str) -> float:
        try:
            return float(value.replace(",", ""))
        except ValueError:
            return 0.0

    total = sum(number(r[samples]) for r in rows) or 1.0
    print(f"{len(rows)} instructions, {total:.0f} stall samples; columns: {columns}")
    sums = sorted(((sum(number(r[c]) for r in rows), c) for c in reasons), reverse=True)
    print("by reason:", ", ".join(f"{c} {v / total:.1%}" for v, c in sums if v))
    for r in sorted(rows, key=lambda r: -number(r[samples]))[:top]:
        detail = ", ".join(f"{c} {number(r[c]):.0f}" for v, c in sums[:6] if number(r[c]))
        print(f"{number(r[samples]) / total:6.1%}  {r.get('Address', '')}  {r.get('Source', '')[:70]:70}  {detail}")


if __name__ == "__main__":
    main()
