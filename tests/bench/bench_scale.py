"""Benchmark: the local engine against Ray local (2 CPUs) on the same machine (issue 19).

- partition: ``ingest`` of the 7-file sample corpus copied ``--copies`` times (72 -> 504
  documents), each run a fresh process (as a user's command: the Ray run starts its own local
  runtime and its workers import the parsers); local = 2 parser workers, and the issue's
  single-process baseline (1 parser worker) beside it. The sample's documents are small (~35 ms
  of parsing each, so fixed costs weigh); ``--pdf-pages N`` adds an N-page report PDF to every
  copy (``--copies 63 --pdf-pages 30``: 504 documents, 63 of them 30-page PDFs). Copies share
  most of their text, which unstructured's per-text cache makes cheaper when they parse one
  after another; every engine starts files in one order (``ingest.workers.order``), so each
  gets that alike. Ray runs twice: as a user's first command (it starts a local runtime, ~4 s) and
  against a 2-CPU cluster that is up before the run (``--ray-address``; its start untimed), which
  is what a cluster's user waits for.
- embeddings: ``analysis.curate.embed`` of ``--embed-pairs`` pairs (fp32), each run into a fresh
  copy of one project; the Ray runtime is started once, before the rounds (a cluster is up
  before work reaches it; its start is reported on its own).
- MinHash signatures of ``--minhash-pairs`` texts: ``dedupe._signatures_from_shingles`` against
  ``analysis.on_ray.signatures`` (the same shingles; banding and verification are local either way).

Rounds alternate the baseline and Ray (A B A B); each ratio is the median of the per-round ratios
(baseline seconds / Ray seconds: above 1 means Ray is faster). Goals on 2 cores (the issue's):
partitioning >= 1.6x against a single process, the others no slower (>= 1.0x); partitioning
against 2 local workers (the same cores without Ray) is shown beside it.

Usage: python -m tests.bench.bench_scale [--copies 72] [--pdf-pages 0] [--embed-pairs 20000] [--minhash-pairs 1000000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.bench.bench_ingest import build_corpus, child


def run_partition(corpus: Path, project_dir: Path, engine: str, address: str | None = None) -> dict:
    t0 = time.perf_counter()
    from ingest.documents import IngestConfig, ingest
    from scale.engine import Engine
    from store.db import Project

    project = Project(project_dir).init()
    cfg = IngestConfig(generators=("qa", "sections"), workers=1 if engine == "single" else 2,
                       engine=Engine("ray", address, 2) if engine.startswith("ray") else Engine())
    report = ingest(project, [corpus], cfg)
    return {"seconds": time.perf_counter() - t0, "docs": len(report.files), "failed": len(report.failed),
            "pairs": sum(f.pairs_total for f in report.files)}


def partition_on_running_cluster(corpus: Path, project_dir: Path) -> dict:
    """``ingest --engine ray --ray-address ...`` against a 2-CPU cluster started before the run (by
    this process, untimed, and stopped after it): what a user of a running cluster waits for, without
    the runtime's own start that a fresh local one pays. The cluster runs only around this run, so
    its idle processes do not slow the other engines' runs."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        address = ray.get_runtime_context().gcs_address
        return child("tests.bench.bench_scale", ["--child", "partition", "--engine", "ray-up", "--ray-address", address,
                                                 "--corpus", str(corpus), "--project", str(project_dir)])
    finally:
        ray.shutdown()


def _texts(n: int, seed: int = 0) -> list[str]:
    """Support-style questions with shared boilerplate and near copies, like a real dataset."""
    rng = np.random.default_rng(seed)
    subjects = ["card", "transfer", "top-up", "refund", "account", "PIN", "exchange rate", "statement", "loan", "fee"]
    verbs = ["was declined", "is missing", "arrived late", "was charged twice", "shows the wrong amount", "is blocked"]
    where = ["at the shop", "abroad", "online", "yesterday", "this morning", "on my phone", "in the app"]
    out = []
    for i in range(n):
        s, v, w = (rng.integers(len(x)) for x in (subjects, verbs, where))
        out.append(f"My {subjects[s]} {verbs[v]} {where[w]}, order {rng.integers(10_000)}; what should I do "
                   f"about case {i % 997}? Thanks for your help.")
    return out


def _project_with_pairs(root: Path, n: int) -> Path:
    from store import pairs as pairs_store
    from store.db import Project
    from store.records import NewPair, PairContent

    project = Project(root).init()
    texts = _texts(n)
    with project.transaction() as con:
        for s in range(0, n, 10_000):
            pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=t, response="See the help page."))
                                        for t in texts[s:s + 10_000]])
    return root


def embed_rounds(tmp: Path, n: int, rounds: int) -> list[dict]:
    from analysis.curate import embed
    from scale.engine import Engine
    from store.db import Project

    template = _project_with_pairs(tmp / "embed-template", n)
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    start_s = time.perf_counter() - t0
    out = []
    try:
        for k in range(rounds):
            r = {}
            for name, eng in (("local", None), ("ray", Engine("ray", None, 2))):
                root = tmp / f"embed-{name}-{k}"
                shutil.copytree(template, root)
                t0 = time.perf_counter()
                got = embed(Project(root), field="prompt", precision="fp32", engine=eng)
                r[name] = time.perf_counter() - t0
                assert got["embedded"] == n, got
                shutil.rmtree(root)
            print(f"embeddings round {k + 1}: local {r['local']:.1f}s, ray {r['ray']:.1f}s", flush=True)
            out.append(r)
    finally:
        ray.shutdown()
    out[0]["ray_start"] = start_s
    return out


def minhash_rounds(tmp: Path, n: int, rounds: int) -> list[dict]:
    import polars as pl

    from analysis import dedupe as dd
    from analysis import on_ray
    from scale.engine import Engine

    texts = pl.Series(_texts(n, seed=1))
    params = dd.MinHashParams()
    t0 = time.perf_counter()
    docs, x = dd.shingle_hashes(texts, params.ngram)
    shingle_s = time.perf_counter() - t0
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    out = []
    try:
        for k in range(rounds):
            t0 = time.perf_counter()
            a = dd._signatures_from_shingles(n, docs, x, params)
            t_local = time.perf_counter() - t0
            t0 = time.perf_counter()
            b = on_ray.signatures(Engine("ray", None, 2), n, docs, x, num_perm=params.num_perm, seed=params.seed)
            t_ray = time.perf_counter() - t0
            assert np.array_equal(a, b)
            del a, b
            print(f"minhash round {k + 1}: local {t_local:.1f}s, ray {t_ray:.1f}s (shingling, local, {shingle_s:.1f}s)",
                  flush=True)
            out.append({"local": t_local, "ray": t_ray})
    finally:
        ray.shutdown()
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=72)
    ap.add_argument("--pdf-pages", type=int, default=0, help="add a report PDF of this many pages to every copy")
    ap.add_argument("--embed-pairs", type=int, default=20_000, help="the issue's 100,000 takes ~6 min per run here")
    ap.add_argument("--minhash-pairs", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated: partition, embed, minhash")
    ap.add_argument("--child", choices=["partition"], help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    ap.add_argument("--ray-address", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(run_partition(a.corpus, a.project, a.engine, a.ray_address)))
        return 0
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    skip = set(filter(None, a.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    rows = []
    try:
        if "partition" not in skip:
            corpus = tmp / "corpus"
            n = len(build_corpus(corpus, a.copies))
            if a.pdf_pages:
                from tests.bench.bench_ingest_quality import _long_pdf

                for i in range(a.copies):
                    _long_pdf(corpus / f"copy-{i:03d}" / "report.pdf", a.pdf_pages, note=f"Revision {i} of this report.")
                n += a.copies
            rs = []
            for k in range(a.rounds):
                r = {e: child("tests.bench.bench_scale", ["--child", "partition", "--engine", e, "--corpus", str(corpus),
                                                          "--project", str(tmp / f"p-{e}-{k}")])
                     for e in ("single", "ray", "local")}
                r["ray-up"] = partition_on_running_cluster(corpus, tmp / f"p-ray-up-{k}")
                assert all(x["failed"] == 0 and x["pairs"] == r["ray"]["pairs"] for x in r.values()), r
                print(f"partition round {k + 1}: single process {r['single']['seconds']:.1f}s, local 2 workers "
                      f"{r['local']['seconds']:.1f}s, ray {r['ray']['seconds']:.1f}s, ray with the cluster up "
                      f"{r['ray-up']['seconds']:.1f}s", flush=True)
                rs.append({e: r[e]["seconds"] for e in r})
            rows.append((f"partition {n} docs: 1 process / Ray", [{"local": x["single"], "ray": x["ray"]} for x in rs], 1.6))
            rows.append((f"partition {n} docs: 2 workers / Ray", rs, 1.0))
            rows.append(("  cluster up before: 1 process / Ray", [{"local": x["single"], "ray": x["ray-up"]}
                                                                       for x in rs], 1.6))
            rows.append(("  cluster up before: 2 workers / Ray", [{"local": x["local"], "ray": x["ray-up"]}
                                                                       for x in rs], 1.0))
        if "embed" not in skip:
            rows.append((f"embeddings of {a.embed_pairs:,} pairs", embed_rounds(tmp, a.embed_pairs, a.rounds), 1.0))
        if "minhash" not in skip:
            rows.append((f"MinHash signatures of {a.minhash_pairs:,} pairs",
                         minhash_rounds(tmp, a.minhash_pairs, a.rounds), 1.0))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'stage (baseline / Ray)':<42} {'base s':>8} {'ray s':>8} {'ratio':>10}  goal")
    for name, rs, goal in rows:
        ratio = statistics.median(r["local"] / r["ray"] for r in rs)
        print(f"{name:<42} {statistics.median(r['local'] for r in rs):8.1f} {statistics.median(r['ray'] for r in rs):8.1f} "
              f"{ratio:9.2f}x  >= {goal}x {'met' if ratio >= goal else 'NOT met'}")
        if "ray_start" in rs[0]:
            print(f"{'':<42} (the Ray runtime's own start, before the rounds: {rs[0]['ray_start']:.1f} s)")
    print(f"(median of {a.rounds} alternating rounds; cpus={os.cpu_count()}; peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
