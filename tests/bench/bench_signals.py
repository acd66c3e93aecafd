"""Quality signals over a big project: judged whole (the baseline) and in parts, time and peak RSS.

``run_signals`` reads every pair's head revision and runs the detectors (``analysis.signals``).
A project of more than ``SIGNAL_PART_PAIRS`` pairs is judged in parts, after one pass that
measures what the detectors compare a pair with over every part (``signals.whole_project``), so
that memory holds one part's text at a time. The baseline is the same call judging the whole
project at once (``part_pairs`` above the project's size), as every project was before.

Each run is its own child process on the same seeded project (``bench_app.seed`` without a run:
generated pairs of 30-word responses) and reports its own peak RSS. Rounds alternate (whole,
parts, whole, parts...) and the ratios are the medians of the per-round ratios. Above
``--whole-max`` pairs only parts run: judged whole, 1M pairs peaked at 4.3 GB, so 10M would need
some 43 GB.

Issue 19 asks for signals on a 10M-pair project on this 24 GB machine; there is no goal ratio.

    python -m tests.bench.bench_signals [N ...] [--rounds 2] [--whole-max 3000000]   (default N: 1000000)
    python -m tests.bench.bench_signals --project DIR    (a project of your own; its signals are replaced)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from analysis.curate import run_signals
from store.db import Project
t0 = time.perf_counter()
out = run_signals(Project(Path({project!r})), part_pairs={part_pairs})
print(json.dumps({{"seconds": time.perf_counter() - t0, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "flagged": int(out["flagged"].sum()), "scored": int(out["scored"].sum()), "pairs": int(out["pairs"][0])}}))
"""


def child(project: Path, part_pairs: int) -> dict:
    code = CHILD.format(repo=str(REPO), project=str(project), part_pairs=part_pairs)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": f"exit {res.returncode}: {res.stderr.strip()[-300:]}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    from analysis.curate import SIGNAL_PART_PAIRS
    from tests.bench.bench_app import seed

    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int, default=[1_000_000])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--whole-max", type=int, default=3_000_000, help="largest project also judged whole")
    ap.add_argument("--project", type=Path, help="judge this project (its signals are replaced) instead of seeding")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-signals-") as tmp:
        for n in [0] if a.project else a.sizes:
            if a.project:
                from store import pairs as pairs_store
                from store.db import Project

                project = a.project.resolve()
                with Project(project).connect() as con:
                    n = pairs_store.stored_pairs(con)
                print(f"{project}: {n:,} pairs", flush=True)
            else:
                info = seed(Path(tmp) / f"p{n}", n, run=False)
                print(f"seeded {n:,} pairs in {info['seconds']:.0f} s", flush=True)
                project = info["project"].root
            whole_too = n <= a.whole_max
            runs: dict[str, list[dict]] = {"whole": [], "parts": []}
            for r in range(a.rounds):
                for what in (["whole"] if whole_too else []) + ["parts"]:
                    got = child(project, n + 1 if what == "whole" else SIGNAL_PART_PAIRS)
                    runs[what].append(got)
                    print(f"  round {r + 1} {what}: {got}", flush=True)
            rows.append((n, runs, whole_too))
    print("\n| pairs | run | seconds (median) | peak RSS MB (median) | whole / parts time (median per round) "
          "| whole / parts memory |")
    print("|---:|---|---:|---:|---:|---:|")
    for n, runs, whole_too in rows:
        for what in ("whole", "parts"):
            ok = [x for x in runs[what] if "error" not in x]
            if not runs[what]:
                continue
            if not ok:
                print(f"| {n:,} | {what} | failed: {runs[what][0]['error'][:80]} | | | |")
                continue
            sec = statistics.median(x["seconds"] for x in ok)
            mem = statistics.median(x["peak_mb"] for x in ok)
            ratio_t = ratio_m = ""
            if what == "parts" and whole_too and all("error" not in x for x in runs["whole"] + runs["parts"]):
                ratio_t = f"{statistics.median(w['seconds'] / p['seconds'] for w, p in zip(runs['whole'], runs['parts'])):.2f}x"
                ratio_m = f"{statistics.median(w['peak_mb'] / p['peak_mb'] for w, p in zip(runs['whole'], runs['parts'])):.2f}x"
            print(f"| {n:,} | {what} | {sec:.1f} | {mem:,.0f} | {ratio_t} | {ratio_m} |")
        same = {(x["flagged"], x["scored"]) for x in runs["whole"] + runs["parts"] if "error" not in x}
        print(f"|  | stored flags, scores | {'the same in every run' if len(same) == 1 else f'DIFFER: {same}'} | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
