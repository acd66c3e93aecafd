"""Import 1M generated Alpaca pairs: rows/s and peak RSS vs a row-by-row INSERT baseline.

Goal (issue 2): >= 50x the row-by-row baseline, peak RSS < 2 GB. Our import runs in a child
process so its peak RSS is measured alone; the baseline inserts a sample of rows one INSERT
at a time (same hashing, same tables) and its rate is measured in the same run.

    python -m tests.bench.bench_import [N_ROWS] [--dedupe]

At 10M rows (issue 19) the peak RSS goal of 1M does not apply: DuckDB's indexes must fit in
memory (store.pairs.INDEX_BYTES_PER_PAIR); ``--dedupe`` also times exact dedupe of the result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASELINE_ROWS = 5_000


def generate(path: Path, n: int) -> None:
    words = ["refund", "card", "transfer", "account", "limit", "fee", "pin", "travel", "exchange", "cash"]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            w1, w2 = words[i % 10], words[(i // 10) % 10]
            f.write(json.dumps({
                "instruction": f"Customer {i} asks about the {w1} and {w2} policy, case {i * 7919 % 100003}.",
                "input": "" if i % 3 else f"Account tier {i % 5}",
                "output": f"Answer {i}: see section {i % 97} on {w1}.",
            }) + "\n")


CHILD = """
import sys, time, resource
from store.db import Project
from ingest.importer import import_file
p = Project(__import__('pathlib').Path(sys.argv[1])).init()
t0 = time.perf_counter()
r = import_file(p, sys.argv[2], "alpaca")
dt = time.perf_counter() - t0
assert r.fatal is None and r.skipped == 0, (r.fatal, r.errors[:3])
print(r.new, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


DEDUPE_CHILD = """
import sys, time, resource
from store.db import Project
from analysis.curate import DedupeConfig, dedupe
p = Project(__import__('pathlib').Path(sys.argv[1]))
t0 = time.perf_counter()
r = dedupe(p, DedupeConfig(exact=True, prompt=False), author="bench")
print(r["pairs"], time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _child(code: str, *args: str) -> tuple[int, float, float]:
    """(count, seconds, peak RSS MB) printed by a child process, measured alone."""
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode:
        print(out.stderr)
        raise SystemExit(1)
    n, dt, maxrss_kb = out.stdout.strip().splitlines()[-1].split()
    return int(n), float(dt), int(maxrss_kb) / 1024


def baseline(root: Path, path: Path, n: int) -> float:
    """Row by row: parse, hash, one INSERT per revision and per pair (what a naive loader does)."""
    import duckdb

    from store.db import Project
    from store.ids import pair_content
    from store.pairs import batch_row, now

    p = Project(root).init()
    con = duckdb.connect(str(p.db_path))
    ts = now()
    t0 = time.perf_counter()
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            rec = json.loads(line)
            row = batch_row(pair_content(rec["instruction"], rec["input"], rec["output"]))
            con.execute(
                "INSERT INTO pair_revisions (id, pair_id, revision_no, instruction, input, response, system, author, "
                "created_at) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?)",
                [row["revision_id"], row["pair_id"], row["instruction"], row["input"], row["response"], "", "x", ts],
            )
            con.execute(
                "INSERT INTO pairs (id, head_revision_id, version, status, generator, author, updated_by, created_at, "
                "updated_at) VALUES (?, ?, 1, 'pending', 'import', 'x', 'x', ?, ?)",
                [row["pair_id"], row["revision_id"], ts, ts],
            )
    dt = time.perf_counter() - t0
    con.close()
    return n / dt


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "pairs.jsonl"
        t0 = time.perf_counter()
        generate(data, n)
        print(f"generated {n:,} rows ({data.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
        base_rate = baseline(tmp_path / "base", data, BASELINE_ROWS)
        new, dt, child_rss_mb = _child(CHILD, str(tmp_path / "ours"), str(data))
        rate = new / dt
        rows = [
            ("row-by-row INSERT (baseline)", f"{BASELINE_ROWS:,}", f"{BASELINE_ROWS / base_rate:.1f}", f"{base_rate:,.0f}", "-", "1.0x"),
            ("tuneloop import (Arrow/Parquet bulk)", f"{new:,}", f"{dt:.1f}", f"{rate:,.0f}",
             f"{child_rss_mb:,.0f}", f"{rate / base_rate:.0f}x"),
        ]
        if "--dedupe" in sys.argv:  # then exact dedupe of the imported project (pairs/s; no baseline)
            dn, ddt, drss = _child(DEDUPE_CHILD, str(tmp_path / "ours"))
            rows.append(("exact dedupe of the imported pairs", f"{dn:,}", f"{ddt:.1f}", f"{dn / ddt:,.0f}", f"{drss:,.0f}", "-"))
        hdr = ("method", "rows", "seconds", "rows/s", "peak RSS MB", "vs baseline")
        widths = [max(len(str(r[i])) for r in [hdr, *rows]) for i in range(len(hdr))]
        line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        print(line(hdr))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            print(line(r))
        ok = rate / base_rate >= 50 and child_rss_mb < 2048
        print(f"goal >= 50x and peak RSS < 2 GB: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
