"""`make bench`: run every tests/bench/bench_*.py module in its own process, in turn.

Each benchmark prints its own table with a ratio against a baseline measured in the same
run. One process at a time, so no two model-heavy benchmarks share the 2 cores.
Pass module names to run a subset: `python -m tests.bench bench_import`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("bench_*.py"))
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"tests.bench.{name}"], cwd=HERE.parents[1])
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
