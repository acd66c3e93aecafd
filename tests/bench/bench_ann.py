"""ANN index (analysis/ann.py, usearch HNSW f16) vs exact numpy top_k: build, size, latency, recall.

    .venv/bin/python -m tests.bench.bench_ann --n 200000
    .venv/bin/python -m tests.bench.bench_ann --n 1000000 --expansion 128 256 512 --index /tmp/ann-1m.usearch

Seeded clustered unit vectors (like sentence embeddings) go straight into an index built with the
project's settings (ann._new_index); no database, so the figures are the index's own. Queries
alternate A (index) B (exact) per round; the ratio is the median of per-round p50 ratios.
Goal (issue 19): p95 <= 100 ms over 1M vectors, recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from usearch.index import Index

from analysis import ann
from analysis.search import top_k


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((max(n // 25, 1), dim)).astype(np.float32)
    x = c[rng.integers(0, len(c), n)]
    for s in range(0, n, 100_000):  # in steps: bounded temporaries
        x[s:s + 100_000] += 0.6 * rng.standard_normal((min(100_000, n - s), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main() -> None:
    from analysis.curate import ANN_OVERFETCH

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--expansion", type=int, nargs="*", default=[ann.EXPANSION_SEARCH],
                    help="expansion_search values to compare on the same index (the first is the project's)")
    ap.add_argument("--index", type=Path, default=None,
                    help="keep the built index here and reuse it on the next run (a 1M build takes ~10 min)")
    a = ap.parse_args()
    fetch = int(4 * 10 * ANN_OVERFETCH)  # what analysis.curate.semantic_search fetches for k=10, no filter
    x = clustered(a.n, a.dim, 0)
    rng = np.random.default_rng(1)
    qs = x[rng.choice(a.n, a.queries, replace=False)] + 0.02 * rng.standard_normal((a.queries, a.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = a.index or Path(d) / "index.usearch"
        build = float("nan")
        if not path.exists():
            t = time.perf_counter()
            index = ann._new_index(a.dim)
            index.add(np.arange(a.n, dtype=np.uint64), x)
            build = time.perf_counter() - t
            index.save(str(path))
            del index
        size = path.stat().st_size
        view = Index.restore(str(path), view=True)
        assert view is not None
        exact_top = [top_k(x, q, 10)[0] for q in qs]
        print(f"n={a.n:,} dim={a.dim} build={build:.1f}s ({a.n / build:,.0f} vec/s) index={size / 2**20:.0f} MiB; "
              f"{fetch} candidates re-ranked exactly (as semantic search fetches for k=10)")
        for expansion in a.expansion:
            view.expansion_search = max(expansion, fetch)  # type: ignore[misc]  # as ann.search sets it
            lat: dict[str, list[float]] = {"A": [], "B": []}
            ratios: list[float] = []
            recall: list[float] = []
            for _ in range(a.rounds):
                per: dict[str, list[float]] = {"A": [], "B": []}
                for label in "AB":
                    for i, q in enumerate(qs):
                        t = time.perf_counter()
                        if label == "A":
                            cand = np.asarray(view.search(q, fetch).keys, dtype=np.int64)
                            got = cand[top_k(x[cand], q, 10)[0]]
                        else:
                            got = top_k(x, q, 10)[0]
                        per[label].append(time.perf_counter() - t)
                        if label == "A" and len(recall) < a.queries:
                            recall.append(len(set(got.tolist()) & set(exact_top[i].tolist())) / 10)
                lat["A"] += per["A"]
                lat["B"] += per["B"]
                ratios.append(np.median(per["B"]) / np.median(per["A"]))
            ms = {k: (1e3 * np.percentile(v, 50), 1e3 * np.percentile(v, 95)) for k, v in lat.items()}
            print(f"expansion_search {view.expansion_search}: A index p50 {ms['A'][0]:.2f} ms p95 {ms['A'][1]:.2f} ms "
                  f"recall@10 {np.mean(recall):.3f} | B exact p50 {ms['B'][0]:.2f} ms p95 {ms['B'][1]:.2f} ms | "
                  f"median per-round speed-up {np.median(ratios):.1f}x", flush=True)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:,.0f} MiB")


if __name__ == "__main__":
    main()
