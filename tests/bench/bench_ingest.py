"""Benchmark: ingest the sample corpus scaled up, against a plain loop over unstructured.

Every configuration runs in its own fresh process on the same files, so each pays its own
imports and model loads (as a user's command would):

- ``plain``: ``for f in files: unstructured.partition(filename=f)`` (PDFs with ``fast``, the
  same strategy ingest uses), nothing else;
- ``ingest w=1`` / ``ingest w=2``: ``ingest.documents.ingest`` with the ``qa`` and
  ``sections`` generators into a fresh project: parsing in 1 or 2 worker processes, plus
  layout, chunking, pair generation and one DuckDB transaction per document.

Goals (issue 3): ingest with 1 worker >= 0.9x the plain loop's documents/s; with 2 workers
>= 1.7x. The 2-worker goal needs 2 free cores.

Usage: python -m tests.bench.bench_ingest [--copies 72]   (72 copies x 7 files = 504 documents)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_corpus(root: Path, copies: int) -> list[Path]:
    from tuneloop.sample_corpus import write_corpus

    files: list[Path] = []
    for i in range(copies):
        files += write_corpus(root / f"copy-{i:03d}", variant=i)
    return files


def run_plain(corpus: Path) -> dict:
    t0 = time.perf_counter()
    from ingest import offline

    offline.configure()  # offline + telemetry off: the same environment ingest runs in
    from unstructured.partition.auto import partition

    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    n_el = pages = 0
    for f in files:
        kw = {"strategy": "fast"} if f.suffix == ".pdf" else {}
        els = partition(filename=str(f), **kw)
        n_el += len(els)
        pages += max([e.metadata.page_number or 1 for e in els] or [1])
    return {"docs": len(files), "pages": pages, "pairs": 0, "elements": n_el, "seconds": time.perf_counter() - t0}


def run_ingest(corpus: Path, workers: int, project_dir: Path) -> dict:
    t0 = time.perf_counter()
    from ingest.documents import IngestConfig, ingest
    from store.db import Project

    project = Project(project_dir).init()
    report = ingest(project, [corpus], IngestConfig(generators=("qa", "sections"), workers=workers))
    failed = [(f.uri, f.error) for f in report.failed]
    # pairs made (copies of the corpus make many identical pairs, stored once: "new" counts those)
    return {"docs": len(report.files) - len(failed), "pages": report.pages,
            "pairs": sum(f.pairs_total for f in report.files), "new_pairs": report.pairs_new,
            "failed": failed, "elements": sum(f.n_elements for f in report.files),
            "seconds": time.perf_counter() - t0}


def _child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", DO_NOT_TRACK="true",
               SCARF_NO_ANALYTICS="true", UNSTRUCTURED_DISABLE_NOTICE="1")
    out = subprocess.run([sys.executable, "-m", "tests.bench.bench_ingest", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"benchmark child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=72, help="copies of the 7-file corpus (72 -> 504 documents)")
    ap.add_argument("--child", choices=["plain", "ingest"], help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child == "plain":
        print(json.dumps(run_plain(a.corpus)))
        return 0
    if a.child == "ingest":
        print(json.dumps(run_ingest(a.corpus, a.workers, a.project)))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        corpus = tmp / "corpus"
        n = len(build_corpus(corpus, a.copies))
        print(f"corpus: {n} documents ({a.copies} copies of the sample corpus), cpus={os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        plain = _child(["--child", "plain", "--corpus", str(corpus)])
        rows.append(("plain unstructured loop", plain))
        for w in (1, 2):
            r = _child(["--child", "ingest", "--workers", str(w), "--corpus", str(corpus),
                        "--project", str(tmp / f"proj-w{w}")])
            if r["failed"]:
                print(f"failed files with {w} worker(s): {r['failed'][:5]}")
            rows.append((f"tuneloop ingest, {w} worker{'s' if w > 1 else ''}", r))
        base = plain["docs"] / plain["seconds"]
        print(f"\n{'configuration':<28} {'seconds':>8} {'docs/s':>8} {'pages/s':>8} {'pairs/s':>8} {'vs plain':>9}")
        for name, r in rows:
            s = r["seconds"]
            print(f"{name:<28} {s:8.1f} {r['docs'] / s:8.2f} {r['pages'] / s:8.2f} {r['pairs'] / s:8.2f} "
                  f"{(r['docs'] / s) / base:8.2f}x")
        w1 = (rows[1][1]["docs"] / rows[1][1]["seconds"]) / base
        w2 = (rows[2][1]["docs"] / rows[2][1]["seconds"]) / base
        print(f"(pairs/s counts pairs made; identical pairs across copies are stored once: "
              f"{rows[1][1]['new_pairs']} new)")
        print(f"\ngoals: 1 worker >= 0.90x ({'met' if w1 >= 0.9 else 'NOT met'}: {w1:.2f}x), "
              f"2 workers >= 1.70x ({'met' if w2 >= 1.7 else 'NOT met'}: {w2:.2f}x)")
        print(f"load average after: {os.getloadavg()[0]:.1f} (other processes on this machine skew the figures)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
