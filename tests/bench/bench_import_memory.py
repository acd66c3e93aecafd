"""Peak memory of importing a large single-line file: ours (streaming, bounded) vs reading whole.

Two generated inputs of ``--mb`` MB each (200 by default), in a temp folder:

- ``one long line``: a JSONL file whose first line is one record of that size (the 2 GB
  single-line file of issue 12, scaled down), then a normal line;
- ``one-line array``: a JSON array of ~250-byte Alpaca records written without a newline.

``baseline`` is what the importer did before issue 12: read the whole line (``for raw in f``)
or the whole array (``json.loads(f.read())``) and parse it; it only parses, it stores nothing,
so its figure is a floor. ``ours`` is ``import_file`` into a fresh project with the default
limits: the long line is skipped at 16 MB without ever being held, the array is streamed
item by item and every record is stored.

Each run is its own child process and reports its own peak RSS (``ru_maxrss`` of
``RUSAGE_SELF``), so nothing but that run is measured; ours also reports the peak when
reading and staging ended (its last progress call), before the one DuckDB transaction that
inserts the file. A/B rounds: every round runs the baseline and ours back to back
(alternating which goes first), the table shows each round's ratios and their medians.

Goal (issue 12): reading and staging under ~1 GB for any single input. The insert that
follows holds the file's new rows in DuckDB's transaction until commit (~1 KB a row here);
that part belongs to the store (a DuckDB ``memory_limit`` caps it).

    python -m tests.bench.bench_import_memory [--mb 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOAL_MB = 1024

BASELINE = """
import json, resource, sys, time
import orjson
t0 = time.perf_counter()
n = 0
with open(sys.argv[1], "rb") as f:
    if f.read(1) == b"[":
        f.seek(0)
        n = len(json.loads(f.read().decode("utf-8")))
    else:
        f.seek(0)
        for raw in f:
            try:
                orjson.loads(raw.decode("utf-8"))
                n += 1
            except orjson.JSONDecodeError:
                pass
print(n, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

OURS = """
import resource, sys, time
from pathlib import Path
from ingest.importer import import_file
from store.db import Project
p = Project(Path(sys.argv[2])).init()
staged = []
t0 = time.perf_counter()
r = import_file(p, sys.argv[1], "alpaca",
                progress=lambda n: staged.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
assert r.fatal is None, r.fatal
print(staged[-1], r.new, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_long_line(path: Path, mb: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write('{"instruction": "Summarise this.", "output": "')
        chunk = "lorem ipsum dolor sit amet " * 4000
        left = mb * 1_000_000
        while left > 0:
            f.write(chunk[:left])
            left -= len(chunk)
        f.write('"}\n{"instruction": "A short one.", "output": "Fine."}\n')


def write_array(path: Path, mb: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write("[")
        size, i = 1, 0
        while size < mb * 1_000_000:
            rec = json.dumps({"instruction": f"Customer {i} asks about the refund policy for order {i * 7919}.",
                              "input": "", "output": f"Answer {i}: refunds take 5 days; see section {i % 97}. "
                              "Keep the receipt and the order number at hand."})
            f.write(("," if i else "") + rec)
            size += len(rec) + 1
            i += 1
        f.write("]")


def child(code: str, *args: str) -> tuple[int, float, float, float]:
    """Rows, seconds, peak RSS MB and (ours) peak RSS MB when staging ended."""
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    *staged_kb, rows, seconds, rss_kb = out.stdout.split()
    return int(rows), float(seconds), int(rss_kb) / 1024, int(staged_kb[-1]) / 1024 if staged_kb else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200, help="size of each generated file, MB")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows_out = []
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        inputs = {"one long line": t / "long.jsonl", "one-line array": t / "array.json"}
        write_long_line(inputs["one long line"], args.mb)
        write_array(inputs["one-line array"], args.mb)
        for name, path in inputs.items():
            ratios: dict[str, list[float]] = {"staged": [], "total": []}
            for k in range(args.rounds):
                order = ("base", "ours") if k % 2 == 0 else ("ours", "base")
                got = {}
                for who in order:
                    if who == "base":
                        got[who] = child(BASELINE, str(path))
                    else:
                        got[who] = child(OURS, str(path), str(t / f"proj-{name[:3]}-{k}"))
                (b_rows, b_s, b_mb, _), (o_rows, o_s, o_mb, o_staged) = got["base"], got["ours"]
                ratios["staged"].append(b_mb / o_staged)
                ratios["total"].append(b_mb / o_mb)
                worst = max(worst, o_staged)
                rows_out.append((name, str(k + 1), f"{b_mb:,.0f}", f"{b_s:.1f}", f"{o_staged:,.0f}", f"{o_mb:,.0f}",
                                 f"{o_s:.1f}", f"{o_rows:,} of {b_rows:,}", f"{b_mb / o_staged:.1f}x",
                                 f"{b_mb / o_mb:.1f}x"))
                print(f"{name} round {k + 1}: baseline {b_mb:,.0f} MB, ours {o_staged:,.0f} MB staged, "
                      f"{o_mb:,.0f} MB with the insert", flush=True)
            rows_out.append((name, "median", "", "", "", "", "", "", f"{statistics.median(ratios['staged']):.1f}x",
                             f"{statistics.median(ratios['total']):.1f}x"))
    hdr = ("input", "round", "baseline peak MB", "baseline s", "ours staged MB", "ours peak MB", "ours s",
           "rows ours/base", "base/ours staged", "base/ours peak")
    widths = [max(len(r[i]) for r in [hdr, *rows_out]) for i in range(len(hdr))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(f"\n{args.mb} MB inputs, {args.rounds} A/B rounds")
    print(line(hdr))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows_out:
        print(line(r))
    print(f"goal: reading + staging < {GOAL_MB} MB for any single input: {'met' if worst < GOAL_MB else 'NOT met'} "
          f"(worst {worst:,.0f} MB; the peak column adds the DuckDB insert)")


if __name__ == "__main__":
    main()
