"""Exact and near duplicates over a frame of pairs (pure: no database, no model).

Input frames have one row per pair with at least ``pair_id``, ``revision_id``,
``instruction``, ``input``, ``response``, ``status`` and ``created_at`` (``messages`` is used
when present). Every function returns a *members* frame with one row per pair that belongs
to a cluster:

    cluster_id, kind, pair_id, revision_id, kept_pair_id, is_kept, similarity

Invariants:
- Exact keys are the normal form of ``analysis.normalize`` over instruction+input
  (``exact_prompt``) and instruction+input+response (``exact_full``); multi-turn pairs add
  their messages to both keys. Rows whose key is empty never cluster.
- The kept member of a cluster is the earliest accepted pair, else the earliest pending or
  needs-fix one, else the earliest at all (``created_at``, then ``pair_id``), so re-running
  on unchanged data keeps the same member and the same cluster id
  (``dc_<kind>_<kept pair id>``): dedupe is idempotent.
- Near duplicates are connected components of the "similar" graph (single link); each
  member records its similarity *to the kept member*, so a chained member shows up with a
  lower score for a reviewer to judge. Lexical similarity is the Jaccard index of word
  n-gram shingle sets: MinHash LSH only proposes candidate pairs, each is then verified with
  the exact index (the MinHash estimate above ``max_exact_pairs`` candidates); semantic
  similarity is the cosine of normalised embeddings.
- Exact dedupe runs in two stages: a cheap hash of each field's multiset of letters and
  digits (invariant under the normalisation, ``normalize.loose_hash``) picks the rows that
  *could* be duplicates; only those are normalised and keyed. Non-ASCII rows always go to
  the exact stage (NFKC can change them).
- Everything is vectorised (Polars, numpy, scipy); nothing loops over rows in Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from analysis.normalize import FIELD_SEP, loose_hash, normalize_series

KINDS = ("exact_prompt", "exact_full", "near_lexical", "near_semantic")
_KIND_TAG = {"exact_prompt": "prompt", "exact_full": "full", "near_lexical": "lex", "near_semantic": "sem"}
_STATUS_RANK = {"accepted": 0, "pending": 1, "needs_fix": 1, "duplicate": 2, "rejected": 3}

MEMBER_SCHEMA = {
    "cluster_id": pl.String,
    "kind": pl.String,
    "pair_id": pl.String,
    "revision_id": pl.String,
    "kept_pair_id": pl.String,
    "is_kept": pl.Boolean,
    "similarity": pl.Float64,
}


def empty_members() -> pl.DataFrame:
    return pl.DataFrame(schema=MEMBER_SCHEMA)


def prompt_text_expr(df: pl.DataFrame) -> pl.Expr:
    """Raw instruction + input (+ messages JSON) joined by the field separator."""
    parts = [pl.col("instruction").fill_null(""), pl.col("input").fill_null("")]
    if "messages" in df.columns:
        parts.append(pl.col("messages").fill_null(""))
    return pl.concat_str(parts, separator=FIELD_SEP)


def full_text_expr(df: pl.DataFrame) -> pl.Expr:
    return pl.concat_str([prompt_text_expr(df), pl.col("response").fill_null("")], separator=FIELD_SEP)


def _rank_expr() -> pl.Expr:
    return pl.col("status").cast(pl.String).replace_strict(_STATUS_RANK, default=1, return_dtype=pl.Int8)


def _key(df: pl.DataFrame, kind: str) -> pl.Series:
    fields = ["instruction", "input"] + (["messages"] if "messages" in df.columns else [])
    if kind == "exact_full":
        fields.append("response")
    return pl.select(
        pl.concat_str([pl.lit(normalize_series(df[f].cast(pl.String))) for f in fields], separator=FIELD_SEP)
    ).to_series()


def _shared(h: np.ndarray) -> np.ndarray:
    """Mask of the entries whose value occurs more than once."""
    return pl.DataFrame({"h": h}).select(pl.len().over("h") > 1).to_series().to_numpy()


def _with_kept(grouped: pl.DataFrame, kind: str, group_cols: list[str]) -> pl.DataFrame:
    """Given rows with a group key, choose the kept member per group and name the cluster."""
    tag = _KIND_TAG[kind]
    ordered = grouped.with_columns(_rank=_rank_expr()).sort([*group_cols, "_rank", "created_at", "pair_id"])
    return ordered.with_columns(
        kept_pair_id=pl.col("pair_id").first().over(group_cols),
    ).with_columns(
        cluster_id=pl.lit(f"dc_{tag}_") + pl.col("kept_pair_id").str.strip_prefix("p_"),
        is_kept=pl.col("pair_id") == pl.col("kept_pair_id"),
        kind=pl.lit(kind),
    )


def exact_clusters(df: pl.DataFrame, kind: str = "exact_full") -> pl.DataFrame:
    """Clusters of pairs whose normalised key is identical (size >= 2), similarity 1.0."""
    if kind not in ("exact_prompt", "exact_full"):
        raise ValueError(f"exact kind must be exact_prompt or exact_full, not {kind!r}")
    if df.height == 0:
        return empty_members()
    # Stage 1 (cheap): a normalisation-invariant hash of each field's letters and digits.
    # Only rows whose loose key is shared (or that hold non-ASCII text) can be duplicates.
    # Fields are hashed one at a time over the rows still in the running, so a long field
    # (the response) is only read for rows whose shorter fields already collide.
    fields = ["instruction", "input"] + (["messages"] if "messages" in df.columns else [])
    if kind == "exact_full":
        fields.append("response")
    rows = np.arange(df.height)
    loose = np.zeros(df.height, dtype=np.uint64)
    non_ascii = np.zeros(df.height, dtype=bool)
    for k, f in enumerate(fields):
        col = df[f].cast(pl.String)
        h, na = loose_hash(col if len(rows) == df.height else col.gather(rows))
        loose = loose * np.uint64(0x9E3779B97F4A7C15 + 2 * k) + h
        non_ascii |= na
        keep = _shared(loose) | non_ascii
        rows, loose, non_ascii = rows[keep], loose[keep], non_ascii[keep]
        if len(rows) < 2:
            return empty_members()
    cand = df[rows]
    # Stage 2 (exact): the normalised key of the candidates only.
    keyed = cand.lazy().select("pair_id", "revision_id", "status", "created_at").with_columns(
        _k=pl.lit(_key(cand, kind))
    ).with_columns(
        # Two independently seeded 64-bit hashes stand in for the key (collisions ~2^-128),
        # which makes the group-by an integer one.
        _h1=pl.col("_k").hash(11),
        _h2=pl.col("_k").hash(29),
        _empty=pl.col("_k").str.replace_all(FIELD_SEP, "", literal=True) == "",
    ).filter(~pl.col("_empty")).drop("_k", "_empty")
    dup = keyed.filter(pl.len().over(["_h1", "_h2"]) > 1).collect()
    if dup.height == 0:
        return empty_members()
    out = _with_kept(dup, kind, ["_h1", "_h2"])
    return out.select(
        "cluster_id", "kind", "pair_id", "revision_id", "kept_pair_id", "is_kept",
        similarity=pl.lit(1.0),
    ).cast(MEMBER_SCHEMA)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ near: graph


def clusters_from_edges(
    df: pl.DataFrame,
    left: np.ndarray,
    right: np.ndarray,
    kind: str,
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> pl.DataFrame:
    """Connected components of the edges (row indices into ``df``) as a members frame."""
    n = df.height
    if len(left) == 0:
        return empty_members()
    graph = sparse.coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    in_cluster = sizes[labels] > 1
    rows = df.select("pair_id", "revision_id", "status", "created_at").with_columns(
        _row=pl.int_range(0, n, dtype=pl.Int64), _comp=pl.Series(labels.astype(np.int64))
    ).filter(pl.Series(in_cluster))
    out = _with_kept(rows, kind, ["_comp"])
    kept_row = out.select(pl.col("_row").first().over("_comp")).to_series().to_numpy()
    rows_idx = out["_row"].to_numpy()
    sim = similarity(rows_idx, kept_row)
    return out.with_columns(similarity=pl.Series(np.where(rows_idx == kept_row, 1.0, sim).astype(np.float64))).select(
        list(MEMBER_SCHEMA)
    ).cast(MEMBER_SCHEMA)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ near: MinHash

_MERSENNE_MASK = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class MinHashParams:
    num_perm: int = 128
    ngram: int = 3  # word n-grams; texts shorter than ngram words are one shingle
    seed: int = 1
    threshold: float = 0.8
    bands: int | None = None  # default: chosen from threshold (see ``lsh_bands``)
    fn_weight: float = 0.9  # LSH band choice favours recall: candidates are verified exactly
    max_exact_pairs: int = 2_000_000  # above this many candidates, verify by MinHash estimate


def shingle_hashes(texts: pl.Series, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc index, 32-bit shingle hash) for every word n-gram of already-normalised texts."""
    n = ngram
    w = pl.DataFrame({"doc": pl.int_range(0, len(texts), dtype=pl.Int64, eager=True), "t": texts.fill_null("")})
    w = w.filter(pl.col("t") != "")
    words = w.select("doc", word=pl.col("t").str.split(" ")).explode("word")
    doc = words["doc"].to_numpy()
    h = words.select(pl.col("word").hash(7)).to_series().to_numpy()
    if n > 1 and len(h):
        # n-gram hash = polynomial combination of word hashes (uint64 arithmetic wraps on purpose)
        mult = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5],
                        dtype=np.uint64)
        m = len(h) - (n - 1)
        g = np.zeros(max(m, 0), dtype=np.uint64)
        for j in range(n):
            g = g * mult[j % 4] + h[j:j + m]
        ok = doc[: max(m, 0)] == doc[n - 1:] if m > 0 else np.zeros(0, dtype=bool)
        # documents shorter than n words become one shingle: the hash of the whole text
        counts = np.bincount(doc, minlength=len(texts))
        short_docs = np.flatnonzero((counts > 0) & (counts < n))
        whole = w.filter(pl.col("doc").is_in(short_docs.tolist())).select("doc", wh=pl.col("t").hash(17))
        docs = np.concatenate([doc[: max(m, 0)][ok], whole["doc"].to_numpy()])
        g = np.concatenate([g[ok], whole["wh"].to_numpy()])
        order = np.argsort(docs, kind="stable")
        docs, g = docs[order], g[order]
    else:
        docs, g = doc, h
    x = (g.astype(np.uint64) ^ (g.astype(np.uint64) >> np.uint64(32))) & _MERSENNE_MASK
    return docs.astype(np.int64), x


def minhash_signatures(texts: pl.Series, params: MinHashParams, chunk: int = 4096) -> np.ndarray:
    """(n, num_perm) uint32 MinHash signatures of normalised texts; empty texts get all-max rows.

    Permutations are ``h = (a*x + b) mod 2^32`` with odd ``a``, then ``h ^= h >> 15``: each is a bijection of the
    32-bit space, applied to shingle hashes that are already uniformly mixed (Polars'
    64-bit hash folded to 32 bits). Shingles are processed a small chunk at a time so the
    (chunk x num_perm) block stays in cache (7x faster than 64-bit blocks of 128K rows),
    and reduced per document with ``np.minimum.reduceat``.
    """
    docs, x = shingle_hashes(texts, params.ngram)
    return _signatures_from_shingles(len(texts), docs, x, params, chunk)


def _signatures_from_shingles(
    n_docs: int, docs: np.ndarray, x: np.ndarray, params: MinHashParams, chunk: int = 4096
) -> np.ndarray:
    rng = np.random.default_rng(params.seed)
    a = rng.integers(1, 2**32 - 1, size=params.num_perm, dtype=np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32 - 1, size=params.num_perm, dtype=np.uint32)
    x = x.astype(np.uint32)
    sig = np.full((n_docs, params.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if len(docs) == 0:
        return sig
    # chunk on document boundaries so each reduceat segment is one whole document
    start = 0
    total = len(docs)
    while start < total:
        end = min(start + chunk, total)
        if end < total:
            while end > start and docs[end] == docs[end - 1]:
                end -= 1
            if end == start:  # one huge document
                end = min(start + chunk, total)
                while end < total and docs[end] == docs[end - 1]:
                    end += 1
        d = docs[start:end]
        hv = x[start:end, None] * a[None, :]  # wraps mod 2^32, as intended
        hv += b[None, :]
        hv ^= hv >> np.uint32(15)  # xor-shift: still a bijection, mixes high bits into the order
        bounds = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        mins = np.minimum.reduceat(hv, bounds, axis=0)
        ud = d[bounds]
        sig[ud] = np.minimum(sig[ud], mins)
        start = end
    return sig


def _integrate(f, lo: float, hi: float, steps: int = 200) -> float:
    xs = np.linspace(lo, hi, steps + 1)
    ys = f(xs)
    return float(((ys[1:] + ys[:-1]) * 0.5 * np.diff(xs)).sum())


def _false_positive(threshold: float, b: int, r: int) -> float:
    return _integrate(lambda s: 1 - (1 - s**r) ** b, 0.0, threshold)


def _false_negative(threshold: float, b: int, r: int) -> float:
    return _integrate(lambda s: 1 - (1 - (1 - s**r) ** b), threshold, 1.0)


@lru_cache(maxsize=64)
def lsh_bands(threshold: float, num_perm: int, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising weighted false-positive + false-negative mass (datasketch's rule).

    With ``fn_weight=0.5`` this is datasketch's choice; near dedupe uses 0.9 because every
    candidate is verified exactly afterwards, so an extra candidate costs only time while a
    missed one is lost.
    """
    best, best_err = (1, num_perm), math.inf
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = (1 - fn_weight) * _false_positive(threshold, b, r) + fn_weight * _false_negative(threshold, b, r)
            if err < best_err:
                best, best_err = (b, r), err
    return best


def candidate_pairs(sig: np.ndarray, bands: int, rows: int, valid: np.ndarray, max_bucket: int = 64) -> np.ndarray:
    """Unique (i, j), i < j, sharing at least one LSH band bucket. Large buckets link to their first doc."""
    idx = np.flatnonzero(valid)
    rng = np.random.default_rng(12345)
    mult = rng.integers(1, 2**63 - 1, size=rows, dtype=np.uint64) | np.uint64(1)
    frames = []
    for band in range(bands):
        block = sig[idx, band * rows:(band + 1) * rows].astype(np.uint64)
        key = (block * mult[None, :]).sum(axis=1, dtype=np.uint64) ^ np.uint64(band * 0x9E3779B97F4A7C15 % 2**64)
        frames.append(pl.DataFrame({"doc": idx, "key": key}))
    buckets = pl.concat(frames).with_columns(size=pl.len().over("key")).filter(pl.col("size") > 1)
    if buckets.height == 0:
        return np.empty((0, 2), dtype=np.int64)
    small = buckets.filter(pl.col("size") <= max_bucket).select("key", "doc")
    pairs = small.join(small, on="key", suffix="_b").filter(pl.col("doc") < pl.col("doc_b")).select(
        i="doc", j="doc_b"
    )
    big = buckets.filter(pl.col("size") > max_bucket).select(
        "doc", first=pl.col("doc").min().over("key")
    ).filter(pl.col("doc") != pl.col("first")).select(i="first", j="doc")
    allp = pl.concat([pairs, big]).unique()
    return allp.to_numpy().astype(np.int64)


def estimated_jaccard(sig: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        out[s:s + chunk] = (sig[i[s:s + chunk]] == sig[j[s:s + chunk]]).mean(axis=1)
    return out


def exact_jaccard(docs: np.ndarray, x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle-hash sets of documents ``i`` and ``j`` (vectorised joins)."""
    if len(i) == 0:
        return np.empty(0, dtype=np.float64)
    involved = np.zeros(int(max(docs.max(initial=0), i.max(), j.max())) + 1, dtype=bool)
    involved[i] = True
    involved[j] = True
    keep = involved[docs]  # only the shingles of documents in a candidate pair
    sh = pl.DataFrame({"doc": docs[keep], "x": x[keep]}).unique()
    sizes = sh.group_by("doc").agg(n=pl.len())
    cand = pl.DataFrame({"i": i, "j": j, "_k": np.arange(len(i))})
    inter = (
        cand.join(sh, left_on="i", right_on="doc")
        .join(sh, left_on=["j", "x"], right_on=["doc", "x"], how="semi")
        .group_by("_k").agg(c=pl.len())
    )
    out = (
        cand.join(inter, on="_k", how="left")
        .join(sizes.rename({"doc": "i", "n": "ni"}), on="i", how="left")
        .join(sizes.rename({"doc": "j", "n": "nj"}), on="j", how="left")
        .sort("_k")
        .select(pl.col("c").fill_null(0) / (pl.col("ni") + pl.col("nj") - pl.col("c").fill_null(0)))
    )
    return out.to_series().fill_null(0.0).to_numpy().astype(np.float64)


def near_lexical_clusters(df: pl.DataFrame, params: MinHashParams | None = None, field: str = "prompt") -> pl.DataFrame:
    """Near duplicates by MinHash LSH over word n-grams of the normalised prompt (or full) text.

    LSH proposes candidate pairs; each candidate is then checked with the *exact* Jaccard
    index of the two shingle sets (or the MinHash estimate above ``max_exact_pairs``).
    """
    params = params or MinHashParams()
    if df.height < 2:
        return empty_members()
    text_expr = prompt_text_expr(df) if field == "prompt" else full_text_expr(df)
    texts = normalize_series(df.select(text_expr.str.replace_all(FIELD_SEP, " ", literal=True)).to_series())
    docs, x = shingle_hashes(texts, params.ngram)
    sig = _signatures_from_shingles(len(texts), docs, x, params)
    valid = (texts != "").to_numpy()
    b, r = (params.bands, params.num_perm // params.bands) if params.bands else lsh_bands(
        params.threshold, params.num_perm, params.fn_weight)
    cand = candidate_pairs(sig, b, r, valid)
    if len(cand) == 0:
        return empty_members()
    if len(cand) <= params.max_exact_pairs:
        def sim(p: np.ndarray, q: np.ndarray) -> np.ndarray:
            return exact_jaccard(docs, x, p, q)
    else:
        def sim(p: np.ndarray, q: np.ndarray) -> np.ndarray:
            return estimated_jaccard(sig, p, q)
    keep = sim(cand[:, 0], cand[:, 1]) >= params.threshold
    return clusters_from_edges(df, cand[keep, 0], cand[keep, 1], "near_lexical", sim)


# ------------------------------------------------------------------------------ near: semantic


def similar_pairs(vectors: np.ndarray, threshold: float, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, cosine), i < j, with cosine >= threshold; rows must be L2-normalised.

    Exact (block-wise matrix products), O(n^2 d): about a minute for 100K x 384 on 2 cores.
    """
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    n = v.shape[0]
    ii, jj, ss = [], [], []
    for s in range(0, n, block):
        sims = v[s:s + block] @ v[s:].T
        rows, cols = np.nonzero(sims >= threshold)
        gi, gj = rows + s, cols + s
        m = gi < gj
        ii.append(gi[m])
        jj.append(gj[m])
        ss.append(sims[rows[m], cols[m]])
    if not ii:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64), np.concatenate(ss)


def near_semantic_clusters(df: pl.DataFrame, vectors: np.ndarray, threshold: float = 0.95) -> pl.DataFrame:
    """Near duplicates by embedding cosine >= threshold; ``vectors`` row-aligned with ``df``."""
    if df.height != vectors.shape[0]:
        raise ValueError(f"{df.height} pairs but {vectors.shape[0]} vectors")
    if df.height < 2:
        return empty_members()
    i, j, _ = similar_pairs(vectors, threshold)
    v = np.asarray(vectors, dtype=np.float32)
    return clusters_from_edges(df, i, j, "near_semantic", lambda a, k: np.einsum("ij,ij->i", v[a], v[k]).astype(np.float64))


def cluster_summary(members: pl.DataFrame) -> pl.DataFrame:
    """One row per cluster: cluster_id, kind, kept_pair_id, size, min_similarity."""
    return members.group_by("cluster_id", "kind", "kept_pair_id", maintain_order=True).agg(
        size=pl.len(), min_similarity=pl.col("similarity").min()
    )


def to_mark(members: pl.DataFrame) -> pl.DataFrame:
    """(pair_id, duplicate_of) for every non-kept member.

    A pair in several clusters points at the kept member of its widest cluster: an
    ``exact_full`` cluster lies inside the ``exact_prompt`` cluster of the same prompt, whose
    kept member is never marked itself, so no pointer leads to another duplicate.
    """
    order = {k: i for i, k in enumerate(("exact_prompt", "exact_full", "near_lexical", "near_semantic"))}
    return (
        members.filter(~pl.col("is_kept"))
        .with_columns(_o=pl.col("kind").replace_strict(order, default=9, return_dtype=pl.Int8))
        .sort("_o", "pair_id")
        .unique("pair_id", keep="first", maintain_order=True)
        .select("pair_id", duplicate_of="kept_pair_id")
    )
