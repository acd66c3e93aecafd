"""How soon an ingest job started from the app starts on its first file, and finishes it.

What the Ingest page runs (``app.ingest_job``, one parser worker) on one small Markdown file, in a
fresh process per run (as the app starts it: cold), timed from the moment the process is launched:

- ``start``: the job's first progress line (the page shows the batch);
- ``first file started``: a parser process has the first file (``parsing`` event);
- ``first file done``: the first file is parsed, its pairs generated and stored (``file`` event).

Variants, alternated round by round (A B A B ...) so drift on a shared machine hits both alike:

- ``baseline``: the path before issue 13, kept callable here: import the ingest library, then
  report the start, start the forkserver and ingest with forkserver workers only, so the first
  file waits for the forkserver to preload every parser (``ingest.worker_boot``);
- ``ours``: ``app.ingest_job`` as it is: the start reported before any heavy import, and a cold
  worker that loads only the Markdown parser starts on the first file; the forkserver warms
  after that (for replacement workers and later batches).

Goal (issue 13): the first file starts within 5 s. Ratio: per round, baseline / ours; the median
over rounds is reported.

    python -m tests.bench.bench_ingest_start [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GOAL_START_S = 5.0
HANDBOOK = """# Larkspur Labs field handbook

## Calibrating the Cobalt sensor

Calibrate the Cobalt sensor every six months, and always after a firmware update. Hold the reset
button for five seconds until the light blinks blue.

## Returning hardware

Hardware can be returned within 30 days of delivery. Print the return label from the customer portal.
"""
SPEC = {"generators": ["sections"], "options": {}, "chunk_max": 1500}


def baseline_job(spec_json: str, files: list[str]) -> int:
    """The ingest job as it was before issue 13 (events as ``app.ingest_job`` writes them)."""
    from dataclasses import asdict

    from ingest import parser_server
    from ingest.documents import IngestConfig, ingest
    from store.db import open_project

    parser_server.forkserver_warm = lambda: True  # the old pool: every worker forked from the (warming) forkserver
    spec = json.loads(spec_json)
    with (Path(os.environ["TUNELOOP_JOB_DIR"]) / "events.jsonl").open("a", encoding="utf-8") as fh:
        def emit(event: str, **fields) -> None:
            fh.write(json.dumps({"event": event, "t": round(time.time(), 3), **fields}) + "\n")
            fh.flush()

        emit("start", files=len(files))
        parser_server.prestart()  # what ingest() did first: the forkserver warms while files are collected
        cfg = IngestConfig(generators=tuple(spec["generators"]), chunk_max_chars=int(spec["chunk_max"]), workers=1)
        report = ingest(open_project(os.environ["TUNELOOP_PROJECT"]), files, cfg,
                        progress=lambda r: emit("file", **asdict(r)),
                        parsing=lambda r, loading: emit("parsing", uri=r.uri, loading=loading))
        emit("end", seconds=report.seconds, pairs_new=report.pairs_new, failed=len(report.failed))
    return 1 if report.failed else 0


def one_run(tmp: Path, variant: str, k: int) -> dict[str, float]:
    """Launch one job on a fresh project; seconds from launch to each milestone."""
    from store.db import Project

    root = tmp / f"{variant}-{k}"
    project = Project(root).init()
    doc = root / "field-handbook.md"
    doc.write_text(HANDBOOK, encoding="utf-8")
    job_dir = root / "job"
    job_dir.mkdir()
    env = {**os.environ, "TUNELOOP_PROJECT": str(project.root), "TUNELOOP_JOB_DIR": str(job_dir),
           "TUNELOOP_USER": "bench", "PYTHONPATH": str(REPO)}
    cmd = ([sys.executable, "-m", "app.ingest_job"] if variant == "ours"
           else [sys.executable, "-m", "tests.bench.bench_ingest_start", "--baseline-job"])
    log = job_dir / "log.txt"
    with log.open("wb") as fh:  # a file, as app.jobs gives a job (a pipe would also wait for its children)
        t0 = time.time()
        rc = subprocess.run([*cmd, json.dumps(SPEC), str(doc)], cwd=REPO, env=env, stdout=fh,
                            stderr=subprocess.STDOUT, timeout=600, check=False).returncode
        exited = time.time() - t0
    if rc:
        raise SystemExit(f"{variant} job failed:\n{log.read_text(errors='replace')[-3000:]}")
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    at = {e["event"]: e["t"] - t0 for e in reversed(events)}  # the first of each kind
    return {"start": at["start"], "started": at["parsing"], "done": at["file"], "total": exited}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline-job", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.baseline_job is not None:
        return baseline_job(a.baseline_job[0], a.baseline_job[1:])
    print(f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "ours": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-start-"))
    try:
        for r in range(a.rounds):
            for v in runs:
                res = one_run(tmp, v, r)
                runs[v].append(res)
                print(f"  round {r + 1} {v:8s}: start {res['start']:.2f} s, first file started {res['started']:.2f} s, "
                      f"done {res['done']:.2f} s, job {res['total']:.2f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\none Markdown file, 1 parser worker, a fresh job process per run; medians of {a.rounds} rounds\n")
    print("| variant | start shown (s) | first file started (s) | first file done (s) | job (s) | started < 5 s |")
    print("|---|---:|---:|---:|---:|:-:|")
    for v, rs in runs.items():
        med = {m: statistics.median(x[m] for x in rs) for m in ("start", "started", "done", "total")}
        print(f"| {v} | {med['start']:.2f} | {med['started']:.2f} | {med['done']:.2f} | {med['total']:.2f} | "
              f"{'yes' if med['started'] < GOAL_START_S else 'no'} |")
    for m, name in (("started", "first file started"), ("done", "first file done")):
        ratios = [b[m] / max(o[m], 1e-3) for b, o in zip(runs["baseline"], runs["ours"])]
        print(f"\n{name}, baseline / ours per round: {', '.join(f'{x:.1f}x' for x in ratios)}; "
              f"median {statistics.median(ratios):.1f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f} (other processes on this machine skew the figures)")
    return 0 if statistics.median(x["started"] for x in runs["ours"]) < GOAL_START_S else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
