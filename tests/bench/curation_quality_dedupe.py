"""Benchmark: near-duplicate *quality* on a labelled tool-use-like set (issue 14).

    python -m tests.bench.curation_quality_dedupe [N]

Every prompt starts with the same ~40-word tool description (on its own line for half the rows,
inline before the request for the other half), then a 5-60-word user request built from an
intent phrase and random words of a 3,000-word vocabulary, so unrelated rows differ. Planted:
one-word changes, swaps of two adjacent words and light paraphrases (one or two synonym swaps)
of base requests (same tool-call answer), plus same-prompt-different-answer conflicts.

Printed per method: precision / recall / F1 over duplicate pairs (pairs in one cluster; rows of
conflicts left out, they are judged by ``conflict_clusters``), recall and precision on one-word
changes of 5-20-word requests, and the largest cluster. "old" is the previous default: word
3-gram Jaccard >= 0.8 on the prompt, no boilerplate removal, connected components.
Goals: F1 >= 0.85 with the header present; short one-word recall >= 0.8 at precision >= 0.9.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

import numpy as np
import polars as pl
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from analysis import dedupe as dd

HEADER = (
    "You are an assistant that can call tools. Available tools: search_flights(origin, destination, date) finds "
    "flights; get_weather(city, date) returns the forecast; book_table(restaurant, people, time) reserves a table. "
    "Answer with one JSON tool call and nothing else."
)
INTENTS = ["find flights to", "what is the weather in", "book a table at", "can you check", "please look up",
           "i need help with", "show me options for", "is it possible to get", "tell me about", "remind me of"]
SYNONYMS = {"find": "search", "show": "display", "tell": "inform", "check": "verify", "help": "assistance",
            "options": "choices", "possible": "feasible", "please": "kindly", "need": "require", "book": "reserve"}


def _vocab(rng: np.random.Generator, n: int = 3000) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, int(rng.integers(3, 9)))) for _ in range(n)]


def make_set(n: int, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(frame, group, variant kind, request words, is_conflict): rows of one group > -1 are duplicates."""
    rng = np.random.default_rng(seed)
    vocab = _vocab(rng)
    n_base = int(n * 0.7)
    reqs, groups, kinds = [], [], []
    for g in range(n_base):
        intent = INTENTS[int(rng.integers(len(INTENTS)))].split()
        length = int(rng.integers(5, 61))
        words = intent + [str(w) for w in rng.choice(vocab, max(3, length - len(intent)))]
        reqs.append(words)
        groups.append(g)
        kinds.append("base")
    n_dup = int(n * 0.2)
    for _ in range(n_dup):
        g = int(rng.integers(n_base))
        w = list(reqs[g])
        kind = ["one_word", "swap", "paraphrase"][int(rng.integers(3))]
        if kind == "one_word":
            w[int(rng.integers(len(w)))] = str(rng.choice(vocab))
        elif kind == "swap":
            k = int(rng.integers(len(w) - 1))
            w[k], w[k + 1] = w[k + 1], w[k]
        else:
            swapped = [k for k, x in enumerate(w) if x in SYNONYMS]
            if swapped:
                w = [SYNONYMS.get(x, x) for x in w]
            else:  # nothing to swap: an inserted filler word is a light paraphrase too
                w.insert(int(rng.integers(len(w))), str(rng.choice(["please", "now", "quickly"])))
        reqs.append(w)
        groups.append(g)
        kinds.append(kind)
    answers = [f'{{"tool": "search", "query": "{" ".join(r[-3:])}"}}' for r in reqs]
    conflict = [False] * len(reqs)
    n_conf = n - len(reqs)
    for _ in range(n_conf // 2):  # same prompt, another answer: a conflict
        g = int(rng.integers(n_base))
        for _ in range(2):
            reqs.append(list(reqs[g]))
            answers.append(f'{{"tool": "get_weather", "city": "{rng.choice(vocab)}"}}')
            groups.append(-1)
            kinds.append("conflict")
            conflict.append(True)
    inline = rng.random(len(reqs)) < 0.5
    prompts = [HEADER + (" " if il else "\n") + " ".join(r) for r, il in zip(reqs, inline)]
    t0 = dt.datetime(2026, 1, 1)
    df = pl.DataFrame({
        "pair_id": [f"p_{i:07d}" for i in range(len(prompts))], "revision_id": [f"r_{i}" for i in range(len(prompts))],
        "instruction": prompts, "input": [""] * len(prompts), "response": answers,
        "status": ["pending"] * len(prompts), "created_at": [t0 + dt.timedelta(seconds=i) for i in range(len(prompts))],
    })
    lens = np.array([len(r) for r in reqs])
    return df, np.array(groups), np.array(kinds), lens, np.array(conflict)


def _labels_from_members(n: int, members: pl.DataFrame) -> np.ndarray:
    labels = np.arange(n, dtype=np.int64)
    if members.height:
        idx = members["pair_id"].str.slice(2).cast(pl.Int64).to_numpy()
        comp = members["cluster_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64) + n
        labels[idx] = comp
    return labels


def old_defaults(df: pl.DataFrame) -> np.ndarray:
    """The previous behaviour: word 3-gram Jaccard >= 0.8 on the prompt, nothing removed, connected components."""
    p = dd.MinHashParams(threshold=0.8, boilerplate_share=2.0, short_words=0, one_edit=False)
    prep = dd._prepare(df, p, "prompt")
    cand = dd._lsh(prep, p, 0.8, 0.8)
    jac, ok = dd._similarity(prep, p, len(cand))(cand[:, 0], cand[:, 1])
    g = sparse.coo_matrix((np.ones(int(ok.sum())), (cand[ok, 0], cand[ok, 1])), shape=(df.height, df.height))
    return connected_components(g, directed=False)[1]


def _pairs(labels: np.ndarray, rows: np.ndarray) -> set[tuple[int, int]]:
    sub = np.flatnonzero(rows)
    order = sub[np.argsort(labels[sub], kind="stable")]
    lab = labels[order]
    bounds = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1], True])
    out: set[tuple[int, int]] = set()
    for a, b in zip(bounds[:-1], bounds[1:]):
        g = sorted(order[a:b].tolist())
        if len(g) > 200:  # a chained giant: count its pairs without listing them all
            g = g[:200]
        out |= {(g[i], g[j]) for i in range(len(g)) for j in range(i + 1, len(g))}
    return out


def evaluate(labels: np.ndarray, groups: np.ndarray, kinds: np.ndarray, lens: np.ndarray,
             conflict: np.ndarray) -> dict[str, float]:
    rows = ~conflict
    truth_labels = np.where(groups >= 0, groups, -np.arange(1, len(groups) + 1))
    truth = _pairs(truth_labels, rows)
    pred = _pairs(labels, rows)
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(truth) if truth else 1.0
    short = rows & (lens >= 5) & (lens <= 20)
    one = {(a, b) for a, b in truth if short[a] and short[b] and "one_word" in (kinds[a], kinds[b])}
    pred_short = {(a, b) for a, b in pred if short[a] and short[b]}
    truth_short = {(a, b) for a, b in truth if short[a] and short[b]}
    sizes = np.bincount(np.unique(labels, return_inverse=True)[1])
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "short_1word_recall": len(one & pred) / len(one) if one else 1.0,
            "short_precision": len(pred_short & truth_short) / len(pred_short) if pred_short else 1.0,
            "largest": int(sizes.max())}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 5000
    df, groups, kinds, lens, conflict = make_set(n)
    print(f"{df.height} rows; header {len(HEADER.split())} words on every prompt; "
          f"{int((groups >= 0).sum() - len(set(groups[groups >= 0].tolist())))} planted near duplicates, "
          f"{int(conflict.sum())} conflict rows")
    results = []
    t = time.perf_counter()
    results.append(("old defaults (prompt, 0.8, CC)", evaluate(old_defaults(df), groups, kinds, lens, conflict),
                    time.perf_counter() - t))
    for field in ("prompt", "full"):
        t = time.perf_counter()
        m = dd.near_lexical_clusters(df, dd.MinHashParams(), field=field)
        results.append((f"new defaults ({field}, 0.8, greedy)",
                        evaluate(_labels_from_members(df.height, m), groups, kinds, lens, conflict),
                        time.perf_counter() - t))
    hist, suggested = dd.similarity_histogram(df, field="full")
    t = time.perf_counter()
    conf = dd.conflict_clusters(df)
    found = set(conf["pair_id"].str.slice(2).cast(pl.Int64).to_list())
    head = ("method", "precision", "recall", "F1", "short 1-word recall", "short precision", "largest", "seconds")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, r, s in results:
        print(f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['short_1word_recall']:.3f} "
              f"| {r['short_precision']:.3f} | {r['largest']} | {s:.2f} |")
    print(f"\nconflicts: {len(found & set(np.flatnonzero(conflict).tolist()))} of {int(conflict.sum())} conflict rows "
          f"in conflict clusters ({conf['cluster_id'].n_unique() if conf.height else 0} clusters)")
    print(f"suggested threshold (full): {suggested}")
    print(hist)


if __name__ == "__main__":
    main()
