"""Benchmark: exact and near dedupe against the obvious Python baselines, in the same run.

    python -m tests.bench.bench_dedupe [--exact-n 1000000] [--near-n 100000] [--baseline-n 200000] [--verify-n 200000]

Exact: ``analysis.dedupe.exact_clusters`` on generated pairs (10% planted duplicates with
case, whitespace and punctuation variants) vs a Python loop doing the same normalisation
(NFKC, lower case, ``re.sub`` of non-word runs) + ``hashlib.sha256`` + a ``set``. The loop
runs on the first ``--baseline-n`` rows (its rate is linear); both must find the same
duplicates there.

Near: ``analysis.dedupe.near_lexical_clusters`` (vectorised MinHash + LSH) vs a per-document
``datasketch`` loop (``MinHash.update_batch`` + ``MinHashLSH`` insert/query + Jaccard check +
union-find) on generated documents with planted one- and two-word edits. Truth = the planted
pairs; precision/recall/F1 are over pairs placed in one cluster. The two run in alternating
rounds (A B A B, ``--rounds``); the reported ratio is the median of the per-round ratios.

Verify (``--verify-n``, 0 skips it): the near pass's verification of LSH candidates on templated
rows, word-set sketches first (``dd.set_sketch``) against the exact join for every one-edit
candidate, alternating rounds; both must match the same pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
import unicodedata

import numpy as np
import polars as pl

from analysis import dedupe as dd

WORDS = np.array(
    ["account", "balance", "card", "transfer", "payment", "refund", "order", "delivery", "password", "reset", "login", "error", "screen", "update", "install", "support", "invoice", "price", "discount", "subscription", "cancel", "change", "address", "email", "phone", "report", "sales", "region", "office", "revenue", "quarter", "customer", "product", "feature", "request", "issue", "bug", "crash", "network", "server", "database", "query", "index", "table", "column", "value", "number", "date", "time", "week", "month", "year", "please", "help", "explain", "describe", "write", "list", "summarize", "compare", "translate", "answer", "question", "reason"]
)


def _vocab(rng: np.random.Generator, n: int = 4000) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    made = ["".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(n)]
    return np.concatenate([WORDS, np.array(made)])


def make_pairs(n: int, seed: int = 0, dup_rate: float = 0.1) -> tuple[pl.DataFrame, int]:
    """n pairs; the last dup_rate*n are case/whitespace/punctuation variants of earlier rows."""
    rng = np.random.default_rng(seed)
    vocab = _vocab(rng)
    frags = pl.Series([" ".join(rng.choice(vocab, rng.integers(3, 10))) for _ in range(40000)])
    n_dup = int(n * dup_rate)
    n_base = n - n_dup

    def text(k: int) -> pl.Series:
        parts = [frags.gather(rng.integers(0, len(frags), n_base)) for _ in range(k)]
        return pl.select(pl.concat_str([pl.lit(p) for p in parts], separator=", ")).to_series()

    base = pl.DataFrame({"instruction": text(2) + "?", "input": pl.repeat("", n_base, eager=True),
                         "response": text(6).str.to_titlecase() + "."})
    src = rng.integers(0, n_base, n_dup)
    dup = base[src.tolist()]
    variant = rng.integers(0, 3, n_dup)
    dup = dup.with_columns(
        instruction=pl.when(pl.Series(variant == 0)).then(pl.col("instruction").str.to_uppercase())
        .when(pl.Series(variant == 1)).then(pl.col("instruction").str.replace_all(" ", "  "))
        .otherwise(pl.col("instruction").str.replace_all(",", " ,;")),
    )
    df = pl.concat([base, dup])
    df = df[rng.permutation(n).tolist()].with_columns(
        pair_id=pl.format("p_{}", pl.int_range(0, n, dtype=pl.Int64).cast(pl.String).str.zfill(8)),
        revision_id=pl.format("r_{}", pl.int_range(0, n, dtype=pl.Int64)),
        status=pl.lit("pending"),
        created_at=pl.datetime(2025, 1, 1) + pl.duration(seconds=pl.int_range(0, n, dtype=pl.Int64)),
    )
    return df, n_dup


_NON_WORD = re.compile(r"[\W_]+")


def baseline_exact(df: pl.DataFrame) -> int:
    """The plain Python way: normalise, sha256, set. Returns the number of duplicate rows."""
    seen: set[bytes] = set()
    dups = 0
    for ins, inp, resp in zip(df["instruction"].to_list(), df["input"].to_list(), df["response"].to_list()):
        key = "\x1f".join(
            _NON_WORD.sub(" ", unicodedata.normalize("NFKC", t).lower()).strip() for t in (ins, inp, resp)
        )
        h = hashlib.sha256(key.encode()).digest()
        if h in seen:
            dups += 1
        else:
            seen.add(h)
    return dups


def bench_exact(n: int, baseline_n: int) -> list[tuple]:
    df, planted = make_pairs(n)
    dd.exact_clusters(df.head(1000), "exact_full")  # warm-up: imports, first-call setup
    t = time.perf_counter()
    members = dd.exact_clusters(df, "exact_full")
    ours_s = time.perf_counter() - t
    found = members.filter(~pl.col("is_kept")).height
    sub = df.head(baseline_n)
    t = time.perf_counter()
    base_dups = baseline_exact(sub)
    base_s = time.perf_counter() - t
    ours_sub = dd.exact_clusters(sub, "exact_full").filter(~pl.col("is_kept")).height
    assert ours_sub == base_dups, (ours_sub, base_dups)
    print(f"exact: planted {planted} duplicates in {n} pairs; found {found} "
          f"(baseline and ours agree on the first {baseline_n}: {base_dups})")
    return [
        ("exact: python hashlib+set loop", baseline_n, base_s, baseline_n / base_s, 1.0, "", "", ""),
        ("exact: tuneloop exact_clusters", n, ours_s, n / ours_s, (n / ours_s) / (baseline_n / base_s), "", "", ""),
    ]


def make_near(n: int, seed: int = 1, rate: float = 0.05) -> tuple[pl.DataFrame, set[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    vocab = _vocab(rng, 20000)
    n_near = int(n * rate)
    n_base = n - n_near
    lens = rng.integers(25, 60, n_base)
    words = rng.choice(vocab, int(lens.sum()))
    docs = np.split(words, np.cumsum(lens)[:-1])
    texts = [" ".join(d) for d in docs]
    src = rng.choice(n_base, n_near, replace=False)
    planted = []
    for k, s in enumerate(src):
        d = docs[s].copy()
        for pos in rng.choice(len(d), rng.integers(1, 3), replace=False):
            d[pos] = rng.choice(vocab)
        texts.append(" ".join(d))
        planted.append((int(s), n_base + k))
    df = pl.DataFrame({"instruction": texts, "input": [""] * n, "response": [""] * n}).with_columns(
        pair_id=pl.format("p_{}", pl.int_range(0, n, dtype=pl.Int64).cast(pl.String).str.zfill(8)),
        revision_id=pl.format("r_{}", pl.int_range(0, n, dtype=pl.Int64)),
        status=pl.lit("pending"),
        created_at=pl.datetime(2025, 1, 1) + pl.duration(seconds=pl.int_range(0, n, dtype=pl.Int64)),
    )
    return df, set(planted)


def _trigrams(text: str) -> set[str]:
    w = text.split()
    return {" ".join(w[i:i + 3]) for i in range(len(w) - 2)} if len(w) >= 3 else {text}


def _pairs_from_labels(labels: np.ndarray) -> set[tuple[int, int]]:
    out = set()
    order = np.argsort(labels, kind="stable")
    lab = labels[order]
    bounds = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        g = sorted(order[a:b].tolist())
        out |= {(g[i], g[j]) for i in range(len(g)) for j in range(i + 1, len(g))}
    return out


def baseline_near(texts: list[str], threshold: float, num_perm: int = 128) -> set[tuple[int, int]]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sigs = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([s.encode() for s in _trigrams(t)])
        sigs.append(m)
        lsh.insert(i, m)
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if j != i and m.jaccard(sigs[j]) >= threshold:
                parent[find(i)] = find(j)
    return _pairs_from_labels(np.array([find(i) for i in range(len(texts))]))


def _prf(pred: set, truth: set) -> tuple[float, float, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def bench_near(n: int, threshold: float, rounds: int = 2) -> list[tuple]:
    """Rounds of A (datasketch) then B (ours) on the same documents; the figure is the median
    per-round time ratio, so a machine busy with other work during one round skews one ratio only."""
    df, planted = make_near(n)
    texts = df["instruction"].to_list()
    dd.near_lexical_clusters(df.head(500), dd.MinHashParams(threshold=threshold))  # warm-up
    baseline_near(texts[:50], threshold)
    ratios, base_times, our_times = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        base_pairs = baseline_near(texts, threshold)
        base_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        members = dd.near_lexical_clusters(df, dd.MinHashParams(threshold=threshold))
        our_times.append(time.perf_counter() - t)
        ratios.append(base_times[-1] / our_times[-1])
    idx = members.select(pl.col("pair_id").str.slice(2).cast(pl.Int64).alias("i"), "cluster_id")
    labels = np.arange(n)
    comp = idx["cluster_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64) + n
    labels[idx["i"].to_numpy()] = comp
    ours = _prf(_pairs_from_labels(labels), planted)
    base = _prf(base_pairs, planted)
    base_s, ours_s = float(np.median(base_times)), float(np.median(our_times))
    ratio = float(np.median(ratios))
    print(f"near: {n} docs, {len(planted)} planted one- and two-word edits (the truth); "
          f"per-round ratios {', '.join(f'{r:.1f}x' for r in ratios)}, median {ratio:.1f}x")
    return [
        ("near: datasketch per-doc loop", n, base_s, n / base_s, 1.0, *(f"{x:.3f}" for x in base)),
        ("near: tuneloop near_lexical", n, ours_s, n / ours_s, ratio, *(f"{x:.3f}" for x in ours)),
    ]


def templated_candidates(n: int, seed: int) -> tuple[dd.MinHashParams, dd._Prepared, np.ndarray]:
    """(params, prepared rows, LSH candidates) of ``n`` templated rows (``bench_scale._texts``), full text."""
    from tests.bench.bench_scale import _texts

    df = pl.DataFrame({"pair_id": [f"p{i}" for i in range(n)], "revision_id": [f"r{i}" for i in range(n)],
                       "instruction": _texts(n, seed=seed), "input": [""] * n, "response": ["See the help page."] * n,
                       "status": ["pending"] * n, "created_at": [0] * n})
    params = dd.MinHashParams()
    prep = dd._prepare(df, params, "full")
    return params, prep, dd._lsh(prep, params, params.threshold, min(params.threshold, params.min_jaccard))


def bench_verify(n: int, rounds: int = 2) -> list[tuple]:
    """Verification of near-duplicate candidates on templated rows (``bench_scale._texts``: shared
    boilerplate and near copies): with the word-set sketches ruling pairs out (ours) against checking
    every one-edit candidate with the exact join (baseline: the same code with all-zero sketches),
    A B A B; both must match the same pairs."""
    import dataclasses

    params, prep, cand = templated_candidates(n, seed=1)
    plain = dataclasses.replace(prep, wsketch=np.zeros_like(prep.wsketch))

    def verify(p: dd._Prepared) -> tuple[float, int]:
        sim, t, ok_n = dd._similarity(p, params, len(cand)), time.perf_counter(), 0
        for s in range(0, len(cand), dd.VERIFY_CHUNK):
            c = cand[s:s + dd.VERIFY_CHUNK]
            ok_n += int(sim(c[:, 0], c[:, 1])[1].sum())
        return time.perf_counter() - t, ok_n

    ratios, base_times, our_times = [], [], []
    for _ in range(rounds):
        (b, nb), (o, no) = verify(plain), verify(prep)
        assert nb == no, (nb, no)
        base_times.append(b)
        our_times.append(o)
        ratios.append(b / o)
    print(f"verify: {n} templated rows, {len(cand):,} candidates, {no:,} matches in both; per-round ratios "
          f"{', '.join(f'{r:.1f}x' for r in ratios)}")
    return [("verify: every one-edit candidate joined", n, float(np.median(base_times)), 1.0),
            ("verify: sketches first (ours)", n, float(np.median(our_times)), float(np.median(ratios)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exact-n", type=int, default=1_000_000)
    ap.add_argument("--baseline-n", type=int, default=200_000)
    ap.add_argument("--near-n", type=int, default=100_000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--rounds", type=int, default=2, help="A B rounds of the near comparison (median ratio)")
    ap.add_argument("--verify-n", type=int, default=200_000, help="templated rows of the verification comparison")
    ap.add_argument("--skip-exact", action="store_true")
    a = ap.parse_args()
    rows = ([] if a.skip_exact else bench_exact(a.exact_n, min(a.baseline_n, a.exact_n))) + bench_near(
        a.near_n, a.threshold, a.rounds)
    head = ("method", "docs", "seconds", "docs/s", "ratio", "precision", "recall", "F1")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]:.2f} | {r[3]:,.0f} | {r[4]:.1f}x | {r[5]} | {r[6]} | {r[7]} |")
    if a.verify_n:
        print("\n| verification | rows | seconds | ratio (median per round) |\n|---|---|---|---|")
        for r in bench_verify(a.verify_n, a.rounds):
            print(f"| {r[0]} | {r[1]:,} | {r[2]:.2f} | {r[3]:.1f}x |")


if __name__ == "__main__":
    main()
