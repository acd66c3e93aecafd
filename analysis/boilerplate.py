"""Boilerplate of a set of texts: the runs of words that a large share of rows hold (a shared
system prompt, tool description or sign-off), and the texts without them (pure: no database, no
model). ``analysis.dedupe``'s near passes compare rows without their boilerplate.

Invariants: a word is boilerplate when a word n-gram covering it occurs within rows at least
max(min_rows, share x rows) times; counts are exact whether the rows are read at once or in
parts; templates are told apart by a hash of their word hashes, and only they become text.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import polars as pl

BOILERPLATE_CHUNK_ROWS = 200_000  # rows read at a time: their words, hashes and n-grams (~3 KB a row all at once)


def boilerplate(texts: pl.Series, share: float = 0.2, min_rows: int = 20, ngram: int = 3,
                rows: int = BOILERPLATE_CHUNK_ROWS) -> tuple[pl.Series, pl.DataFrame]:
    """(texts without boilerplate, templates) of already-normalised texts.

    A word is boilerplate when a word ``ngram``-gram covering it occurs at least
    max(``min_rows``, ``share`` x rows) times within rows: a shared system prompt, tool description
    or template says nothing about whether two rows are the same example, yet it dominates their
    shingle sets (and, inline before the request, hides how short the request is). Templates
    are the runs of boilerplate words, with the rows that hold them: text, rows, share.

    Rows are read ``rows`` at a time, so memory holds one part's words, not every row's. Counts
    stay exact: an n-gram found ``need`` times over k parts is found ceil(need / k) times in one
    of them (pigeonhole), so the n-grams that reach that in some part are the only candidates, and
    a second pass counts those exactly. One part (the usual case below ``rows``) is one pass.
    """
    n = len(texts)
    schema = {"text": pl.String, "rows": pl.Int64, "share": pl.Float64}
    if n == 0:
        return texts.fill_null(""), pl.DataFrame(schema=schema)
    need = max(min_rows, math.ceil(share * n))
    starts = list(range(0, n, rows))
    seen: dict[int, tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]] = {}  # the one part's words and n-grams, when there is one part (read once)

    def part(s: int) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
        if s in seen:
            return seen[s]
        w = pl.DataFrame({"doc": pl.int_range(s, s + min(rows, n - s), dtype=pl.Int64, eager=True),
                          "t": texts.slice(s, rows).fill_null("")}).select(
            "doc", word=pl.col("t").str.split(" ")).explode("word").filter(pl.col("word").fill_null("") != "")
        h = w.select(pl.col("word").hash(7)).to_series().to_numpy()
        doc = w["doc"].to_numpy()
        m = max(len(h) - (ngram - 1), 0)
        g = np.zeros(m, dtype=np.uint64)
        for j in range(ngram):
            g = g * np.uint64(0x9E3779B97F4A7C15) + h[j:j + m]
        ok = doc[:m] == doc[ngram - 1:ngram - 1 + m]  # n-grams within one row
        out = (w, h, g, ok)
        if len(starts) == 1:
            seen[s] = out
        return out

    def counts(s: int, only: np.ndarray | None, at_least: int) -> pl.DataFrame:
        _, _, g, ok = part(s)
        g = g[ok]
        if only is not None:
            g = g[np.isin(g, only)]
        return pl.DataFrame({"g": g}).group_by("g").len().filter(pl.col("len") >= at_least)

    per_part = math.ceil(need / len(starts))
    found = pl.concat([counts(s, None, per_part) for s in starts])
    if len(starts) > 1 and found.height:
        cand = found["g"].unique().to_numpy()
        found = pl.concat([counts(s, cand, 1) for s in starts])
    common = found.group_by("g").agg(pl.col("len").sum()).filter(pl.col("len") >= need)["g"].to_numpy()
    if len(common) == 0:
        return texts.fill_null(""), pl.DataFrame(schema=schema)
    kept, runs = [], []
    for s in starts:
        w, h, g, ok = part(s)
        hit = ok & np.isin(g, common)
        covered = np.zeros(w.height, dtype=bool)
        for j in range(ngram):
            covered[j:j + len(hit)] |= hit
        kept.append(w.filter(~pl.Series(covered)).group_by("doc", maintain_order=True).agg(pl.col("word").str.join(" ")))
        runs.append(_runs(w["doc"].to_numpy(), h, covered).with_columns(part=pl.lit(s, pl.Int64)))
    out = pl.DataFrame({"doc": pl.int_range(0, n, dtype=pl.Int64, eager=True)}).join(
        pl.concat(kept), on="doc", how="left").sort("doc")["word"].fill_null("")
    templates = _templates(pl.concat(runs), need, lambda s: part(s)[0]["word"]).with_columns(share=pl.col("rows") / n)
    return out, templates.select(list(schema))


def _runs(doc: np.ndarray, h: np.ndarray, covered: np.ndarray) -> pl.DataFrame:
    """Each key of a run of covered words (within a row) in one part: the rows holding it, its first
    word's place and its length. Runs are told apart by a 64-bit hash of their word hashes in order,
    so only the few templates become text (the runs of every row as strings took ~1.2 KB a row)."""
    at = np.flatnonzero(covered)
    if len(at) == 0:
        return pl.DataFrame(schema={"key": pl.UInt64, "rows": pl.Int64, "start": pl.Int64, "n": pl.Int64})
    new_run = np.r_[True, (np.diff(at) != 1) | (doc[at][1:] != doc[at][:-1])]
    starts = np.flatnonzero(new_run)
    lengths = np.diff(np.r_[starts, len(at)])
    pos = np.arange(len(at)) - np.repeat(starts, lengths)  # place of each word in its run
    powers = np.cumprod(np.r_[np.uint64(1), np.full(int(lengths.max()) - 1, 0x100000001B3, dtype=np.uint64)],
                        dtype=np.uint64)
    key = np.add.reduceat(h[at].astype(np.uint64) * powers[pos], starts) ^ lengths.astype(np.uint64)
    return pl.DataFrame({"key": key, "doc": doc[at][starts], "start": at[starts].astype(np.int64),
                         "n": lengths.astype(np.int64)}).group_by("key").agg(
        rows=pl.col("doc").n_unique().cast(pl.Int64), start=pl.col("start").min(), n=pl.col("n").first())


def _templates(runs: pl.DataFrame, need: int, words: Callable[[int], pl.Series]) -> pl.DataFrame:
    """The run keys (``_runs`` of every part, with its ``part``) that ``need`` rows or more hold:
    text (from the part it was first seen in, ``words(part)``), rows; most first."""
    common = runs.sort("part").group_by("key", maintain_order=True).agg(
        pl.col("rows").sum(), part=pl.col("part").first(), start=pl.col("start").first(),
        n=pl.col("n").first()).filter(pl.col("rows") >= need)
    text: list[str] = []
    of_part: dict[int, pl.Series] = {}
    for p, start, k in zip(common["part"], common["start"], common["n"]):
        if p not in of_part:
            of_part[p] = words(p)
        text.append(" ".join(of_part[p].slice(start, k).to_list()))
    return pl.DataFrame({"text": text, "rows": common["rows"]}, schema={"text": pl.String, "rows": pl.Int64}).sort(
        ["rows", "text"], descending=[True, False])
