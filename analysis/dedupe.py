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
- The kept member of a cluster is chosen by a keep rule (``priority``: accepted first by default,
  or first imported, longest, best quality score; ties by ``created_at``, then ``pair_id``), so
  re-running on unchanged data keeps the same member and the same cluster id
  (``dc_<kind>_<kept pair id>``): dedupe is idempotent.
- Same prompt with different responses is a ``conflict`` cluster: listed for review, never
  marked (``to_mark`` only marks ``MARKED_KINDS``).
- Near duplicates are greedy clusters, never chains: every member matches its kept member
  directly (``greedy_clusters``), and a cluster holds at most ``max_cluster`` rows. Each member
  records its similarity *to the kept member*. Lexical similarity is the Jaccard index of
  shingle sets after boilerplate removal (lines and word shingles shared by >= 20 % of rows:
  a system prompt or tool description would otherwise make every row look alike); rows under
  ``short_words`` words use character n-grams. MinHash LSH only proposes candidate pairs, each
  is then verified with the exact index (the MinHash estimate above ``max_exact_pairs``
  candidates); semantic similarity is the cosine of normalised embeddings.
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

from analysis.boilerplate import boilerplate
from analysis.normalize import FIELD_SEP, _utf8_buffers, loose_hash, normalize_series

KINDS = ("exact_prompt", "exact_full", "conflict", "near_lexical", "near_semantic")
_KIND_TAG = {"exact_prompt": "prompt", "exact_full": "full", "conflict": "conflict", "near_lexical": "lex",
             "near_semantic": "sem"}
MARKED_KINDS = ("exact_full", "near_lexical", "near_semantic")  # "conflict" is for review, never marked
FIELDS = ("prompt", "response", "full")
KEEP_RULES = ("accepted", "first", "longest", "quality")
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
    ordered = grouped.sort([*group_cols, "_prio"])
    return ordered.with_columns(
        kept_pair_id=pl.col("pair_id").first().over(group_cols),
    ).with_columns(
        cluster_id=pl.lit(f"dc_{tag}_") + pl.col("kept_pair_id").str.strip_prefix("p_"),
        is_kept=pl.col("pair_id") == pl.col("kept_pair_id"),
        kind=pl.lit(kind),
    )


def exact_clusters(df: pl.DataFrame, kind: str = "exact_full", keep: str = "accepted") -> pl.DataFrame:
    """Clusters of pairs whose normalised key is identical (size >= 2), similarity 1.0; kept by ``keep``."""
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
        alive = _shared(loose) | non_ascii
        rows, loose, non_ascii = rows[alive], loose[alive], non_ascii[alive]
        if len(rows) < 2:
            return empty_members()
    cand = df[rows]
    # Stage 2 (exact): the normalised key of the candidates only.
    keyed = cand.lazy().select("pair_id", "revision_id", "status", "created_at").with_columns(
        _k=pl.lit(_key(cand, kind)), _prio=pl.lit(pl.Series(priority(cand, keep)))
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


def priority(df: pl.DataFrame, keep: str = "accepted") -> np.ndarray:
    """Rank of each row as the kept member of a cluster (0 = kept first), by the ``keep`` rule.

    accepted: accepted, then pending/needs-fix, duplicate, rejected; first: earliest imported;
    longest: most characters of prompt + response; quality: lowest ``quality_penalty`` (the sum
    of flagged quality-signal scores, a column the caller adds; missing = 0). Every rule but
    ``accepted`` still puts duplicate and rejected rows last; ties go to ``created_at``, then ``pair_id``.
    """
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_RULES)}, not {keep!r}")
    dead = pl.col("status").cast(pl.String).is_in(["duplicate", "rejected"])
    penalty = pl.col("quality_penalty").fill_null(0.0) if "quality_penalty" in df.columns else pl.lit(0.0)
    keys = {"accepted": [_rank_expr()], "first": [dead], "longest": [dead, -full_text_expr(df).str.len_chars().cast(pl.Int64)],
            "quality": [dead, penalty]}[keep]
    order = df.select(pl.arg_sort_by([*keys, pl.col("created_at"), pl.col("pair_id")])).to_series().to_numpy()
    rank = np.empty(df.height, dtype=np.int64)
    rank[order] = np.arange(df.height)
    return rank


def greedy_clusters(
    prio: np.ndarray, i: np.ndarray, j: np.ndarray, sim: np.ndarray, max_size: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept row, member row, similarity) of clusters without chaining: every member is a direct
    match of its kept row, which has the best ``prio`` in the cluster.

    Rounds over the remaining match graph: a row better than all its unassigned matches keeps a
    cluster and takes its unassigned matches (each goes to the best such row; at most
    ``max_size - 1`` per cluster, most similar first, the rest wait for a later round).
    """
    a, b, s = np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([sim, sim])
    n = len(prio)
    assigned = np.zeros(n, dtype=bool)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while len(a):
        live = ~assigned[a] & ~assigned[b]
        a, b, s = a[live], b[live], s[live]
        if not len(a):
            break
        best_nb = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best_nb, a, prio[b])
        is_rep = prio < best_nb
        e = is_rep[a]
        ra, rb, rs = a[e], b[e], s[e]
        o = np.lexsort((prio[ra], rb))  # each member to its best kept row
        ra, rb, rs = ra[o], rb[o], rs[o]
        first = np.r_[True, rb[1:] != rb[:-1]]
        ra, rb, rs = ra[first], rb[first], rs[first]
        o = np.lexsort((prio[rb], -rs, ra))  # cap: the most similar members of each kept row
        ra, rb, rs = ra[o], rb[o], rs[o]
        starts = np.flatnonzero(np.r_[True, ra[1:] != ra[:-1]])
        pos = np.arange(len(ra)) - np.repeat(starts, np.diff(np.r_[starts, len(ra)]))
        fit = pos < max(1, max_size - 1)
        ra, rb, rs = ra[fit], rb[fit], rs[fit]
        assigned[ra] = True
        assigned[rb] = True
        out.append((ra, rb, rs))
    if not out:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    return tuple(np.concatenate(c) for c in zip(*out))  # type: ignore[return-value]


def clusters_from_edges(
    df: pl.DataFrame, left: np.ndarray, right: np.ndarray, sims: np.ndarray, kind: str, keep: str = "accepted",
    max_size: int = 50,
) -> pl.DataFrame:
    """Greedy clusters (``greedy_clusters``) of the verified matches (row indices into ``df``) as a members frame."""
    if len(left) == 0:
        return empty_members()
    reps, mem, sim = greedy_clusters(priority(df, keep), left, right, np.asarray(sims, dtype=np.float64), max_size)
    ureps = np.unique(reps)
    rows = np.concatenate([ureps, mem])
    kept = np.concatenate([ureps, reps])
    base = df.select("pair_id", "revision_id")
    tag = _KIND_TAG[kind]
    out = pl.DataFrame({
        "pair_id": base["pair_id"].gather(rows), "revision_id": base["revision_id"].gather(rows),
        "kept_pair_id": base["pair_id"].gather(kept),
        "is_kept": np.r_[np.ones(len(ureps), bool), np.zeros(len(mem), bool)],
        "similarity": np.r_[np.ones(len(ureps)), sim],
    }).with_columns(cluster_id=pl.lit(f"dc_{tag}_") + pl.col("kept_pair_id").str.strip_prefix("p_"), kind=pl.lit(kind))
    return out.sort("cluster_id", "is_kept", "similarity", "pair_id", descending=[False, True, True, False]).select(
        list(MEMBER_SCHEMA)).cast(MEMBER_SCHEMA)  # type: ignore[arg-type]


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
    boilerplate_share: float = 0.2  # a line (or word shingle) in this share of rows is boilerplate ...
    boilerplate_min_rows: int = 20  # ... when it is also in at least this many rows
    short_words: int = 30  # rows with fewer words (boilerplate removed) are shingled by characters
    char_ngram: int = 5
    one_edit: bool = True  # also match pairs that differ by one edit's worth of shingles ...
    min_jaccard: float = 0.4  # ... whose Jaccard is at least this
    max_cluster: int = 50  # largest cluster; more matches of one kept row wait for a later round


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


VERIFY_CHUNK = 500_000  # candidate pairs verified at a time (11.5M at once took 7 GB on 100K templated rows)
MAX_CANDIDATE_PAIRS = 10_000_000  # all-pairs candidates of the small buckets (the join took ~280 B a pair: 8.4 GB for 30M)


def candidate_pairs(sig: np.ndarray, bands: int, rows: int, valid: np.ndarray, max_bucket: int = 64,
                    max_pairs: int = MAX_CANDIDATE_PAIRS) -> np.ndarray:
    """Unique (i, j), i < j, sharing at least one LSH band bucket, sorted. Large buckets link to their first doc.

    A bucket of up to ``max_bucket`` docs gives all its pairs; when that would exceed ``max_pairs``
    (millions of templated rows: 3M generated pairs ran out of 24 GB here), ``max_bucket`` is
    halved until it fits, so more buckets link to their first doc instead: fewer candidates, the
    same verification.

    One band at a time, in numpy: the bucket sizes of every band first (they decide
    ``max_bucket``), then each band's pairs, merged into the unique set as they come. Memory is a
    few arrays of one band's rows plus the candidates, not every band's rows at once (a frame of
    rows x bands, its window counts and self-join: 3.3 GB at 300K templated rows)."""
    idx = np.flatnonzero(valid)
    if len(idx) < 2:
        return np.empty((0, 2), dtype=np.int64)
    rng = np.random.default_rng(12345)
    mult = rng.integers(1, 2**63 - 1, size=rows, dtype=np.uint64) | np.uint64(1)
    width = np.int64(int(idx[-1]) + 1)  # a pair (i, j) is coded i * width + j

    def buckets(band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(docs ordered by bucket, each multi-doc bucket's start in it, its size); docs ascend in a bucket."""
        block = sig[idx, band * rows:(band + 1) * rows].astype(np.uint64)
        key = (block * mult[None, :]).sum(axis=1, dtype=np.uint64) ^ np.uint64(band * 0x9E3779B97F4A7C15 % 2**64)
        order = np.argsort(key, kind="stable")
        k = key[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        sizes = np.diff(np.r_[starts, len(k)])
        multi = sizes > 1
        return idx[order], starts[multi], sizes[multi]

    sizes = np.concatenate([buckets(band)[2] for band in range(bands)]).astype(np.int64)
    while max_bucket > 2 and int((sizes * (sizes - 1) // 2)[sizes <= max_bucket].sum()) > max_pairs:
        max_bucket //= 2
    found = np.empty(0, dtype=np.int64)  # sorted, unique
    new: list[np.ndarray] = []  # codes not merged into it yet
    for band in range(bands):
        docs, starts, size = buckets(band)
        small = size <= max_bucket
        s_starts, s_sizes = starts[small], size[small]
        for d in range(1, int(s_sizes.max(initial=1))):  # each doc with the one d places after it in its bucket
            has = s_sizes > d
            pos = _spans(s_starts[has], s_sizes[has] - d)
            new.append(docs[pos] * width + docs[pos + d])
        b_starts, b_sizes = starts[~small], size[~small]
        if len(b_starts):  # a big bucket: each doc with the bucket's first
            members = docs[_spans(b_starts, b_sizes)]
            first = np.repeat(docs[b_starts], b_sizes)
            new.append((first * width + members)[members != first])
        if sum(map(len, new)) > max(len(found), 1 << 22) or band == bands - 1:  # merge: amortised, bounded
            found = _sorted_unique(np.concatenate([found, *new]))
            new = []
    return _decode(found, width)


def _decode(codes: np.ndarray, width: np.int64, part: int = 1 << 24) -> np.ndarray:
    """(i, j) rows of pair codes ``i * width + j``: int32 below 2^31 rows (half the memory of the
    candidates, 220M at 10M templated rows), decoded a part at a time (divmod's int64 temporaries)."""
    out = np.empty((len(codes), 2), dtype=np.int32 if width < 2**31 else np.int64)
    for s in range(0, len(codes), part):
        out[s:s + part, 0], out[s:s + part, 1] = np.divmod(codes[s:s + part], width)
    return out


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` of int64 codes by sorting in place: numpy 2's hash-based unique took 1.6 s a
    call on a few million codes here, the sort 0.2 s."""
    a.sort()
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def _spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions start, start+1, ..., start+length-1 of every span, concatenated."""
    total = int(lengths.sum())
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)


def estimated_jaccard(sig: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Share of equal MinHash values of each pair (i, j), ``chunk`` pairs at a time: 8192 keeps the
    gathered rows (4 MB a side) in memory the allocator reuses; at 65536 (32 MB a side) every chunk
    was mapped and zeroed anew, and 4M pairs took 1.7x as long (system time of a 10M-row run)."""
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        out[s:s + chunk] = (sig[i[s:s + chunk]] == sig[j[s:s + chunk]]).mean(axis=1)
    return out


def _overlap(docs: np.ndarray, x: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(intersection, union) sizes of the shingle-hash sets of documents ``i`` and ``j`` (vectorised joins).

    ``docs`` ascend (as ``_in_row_chunks`` gives them): the shingles of the documents in a pair are
    taken by their ranges, not by a pass over every shingle (150M at 3M rows, once per chunk)."""
    if len(i) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    ids = _sorted_unique(np.concatenate([i, j]).astype(np.int64))
    lo, hi = np.searchsorted(docs, ids, "left"), np.searchsorted(docs, ids, "right")
    keep = _spans(lo, hi - lo)  # only the shingles of documents in a candidate pair
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
        .select(c=pl.col("c").fill_null(0), u=pl.col("ni").fill_null(0) + pl.col("nj").fill_null(0) - pl.col("c").fill_null(0))
    )
    return out["c"].to_numpy().astype(np.int64), out["u"].to_numpy().astype(np.int64)


def exact_jaccard(docs: np.ndarray, x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle-hash sets of documents ``i`` and ``j``."""
    c, u = _overlap(docs, x, i, j)
    return np.where(u > 0, c / np.maximum(u, 1), 0.0).astype(np.float64)


# ------------------------------------------------------------------------------ near: boilerplate


def field_text(df: pl.DataFrame, field: str) -> pl.Series:
    """The raw text compared for ``field`` (prompt, response or full), one line per field."""
    if field not in FIELDS:
        raise ValueError(f"field must be one of {', '.join(FIELDS)}, not {field!r}")
    expr = {"prompt": prompt_text_expr(df), "full": full_text_expr(df),
            "response": pl.col("response").fill_null("")}[field]
    return df.select(expr.str.replace_all(FIELD_SEP, "\n", literal=True)).to_series()


def char_shingle_hashes(texts: pl.Series, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc index, 32-bit hash) of every byte n-gram of already-normalised texts (shorter texts: one shingle)."""
    s = texts.fill_null("").rechunk()
    if len(s) == 0:
        return np.empty(0, np.int64), np.empty(0, np.uint64)
    offsets, data, _ = _utf8_buffers(s)
    lens = np.diff(offsets)
    n_sh = np.maximum(lens - (ngram - 1), 0)
    doc = np.repeat(np.arange(len(s), dtype=np.int64), n_sh)
    start = _spans(offsets[:-1], n_sh)  # each shingle's first byte
    g = np.zeros(len(doc), dtype=np.uint64)
    for k in range(ngram):
        g = g * np.uint64(0x100000001B3) + data[start + k].astype(np.uint64) + np.uint64(1)
    short = np.flatnonzero((lens > 0) & (lens < ngram))
    if len(short):
        wh = s.gather(short).hash(23).to_numpy()
        doc = np.concatenate([doc, short])
        g = np.concatenate([g, wh])
        order = np.argsort(doc, kind="stable")
        doc, g = doc[order], g[order]
    g = g * np.uint64(0x9E3779B97F4A7C15)  # mix the low bytes into the high ones before folding
    return doc, (g ^ (g >> np.uint64(32))) & _MERSENNE_MASK


@dataclass(frozen=True)
class _Prepared:
    """Every row after boilerplate removal (``texts``; its shingles are not kept: ``shingles``), its
    signature, and which rows take the short (character) path."""
    texts: pl.Series
    params: MinHashParams
    valid: np.ndarray
    short: np.ndarray
    sig: np.ndarray
    templates: pl.DataFrame
    wdocs: np.ndarray  # (doc, word hash): the word sets of the one-edit rule
    wx: np.ndarray
    wsketch: np.ndarray  # ``set_sketch`` of those word sets: rules out most pairs before the exact check

    def shingles(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, 32-bit hash) of every shingle, rows ascending: taken again from ``texts`` when the
        candidates are few enough to verify exactly, instead of being held beside the signatures
        (8 bytes a shingle: 3.6 GB at 10M templated rows, where the MinHash estimate verifies)."""
        return _row_shingles(self.texts, self.short, self.params)


def without_boilerplate(df: pl.DataFrame, field: str, params: MinHashParams | None = None
                        ) -> tuple[pl.Series, pl.Series, pl.DataFrame]:
    """(normalised ``field`` texts, the same without boilerplate, templates) of ``df``'s rows: what
    both the lexical and the semantic near-duplicate passes compare."""
    params = params or MinHashParams()
    whole = normalize_series(field_text(df, field))
    texts, templates = boilerplate(whole, params.boilerplate_share, params.boilerplate_min_rows, params.ngram)
    return whole, texts, templates


Signer = Callable[[int, np.ndarray, np.ndarray, MinHashParams], np.ndarray]
"""(n_docs, sorted doc index per shingle, shingle hashes, params) -> signatures: where they are
computed (``_signatures_from_shingles`` here; ``analysis.on_ray.signatures`` on Ray)."""


def _prepare(df: pl.DataFrame, params: MinHashParams, field: str, sign: Signer | None = None) -> _Prepared:
    whole, texts, templates = without_boilerplate(df, field, params)
    n = len(texts)
    words = texts.str.count_matches(r"\S+").to_numpy()
    short = words < params.short_words
    docs, x = _row_shingles(texts, short, params)
    valid = np.bincount(docs, minlength=n) > 0
    sig = (sign or _signatures_from_shingles)(n, docs, x, params)
    del docs, x  # before the word sets are taken: not both at once
    # one edit is judged on the whole text: a near copy of a row may miss a template the row has
    wdocs, wx = _in_row_chunks(whole, lambda t, _: shingle_hashes(t, 1)) if params.one_edit else (
        np.empty(0, np.int32), np.empty(0, np.uint32))
    sketch = set_sketch(wdocs, wx, n) if params.one_edit else np.zeros((0, SKETCH_BUCKETS), np.uint8)
    return _Prepared(texts, params, valid, short, sig, templates, wdocs, wx, sketch)


SHINGLE_CHUNK_ROWS = 200_000  # rows shingled at a time: the temporaries are ~5 arrays of 8 bytes a shingle


def _row_shingles(texts: pl.Series, short: np.ndarray, params: MinHashParams,
                  rows: int = SHINGLE_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(row, 32-bit hash) of every shingle, rows in order: word n-grams of long rows, character
    n-grams of short ones (``short``)."""
    def shingle(part: pl.Series, offset: int) -> tuple[np.ndarray, np.ndarray]:
        is_short = short[offset:offset + len(part)]
        pieces = []
        for rows, fn in ((np.flatnonzero(~is_short), lambda t: shingle_hashes(t, params.ngram)),
                         (np.flatnonzero(is_short), lambda t: char_shingle_hashes(t, params.char_ngram))):
            if len(rows):
                d, h = fn(part.gather(rows))
                pieces.append((rows[d], h))
        d = np.concatenate([p[0] for p in pieces]) if pieces else np.empty(0, np.int64)
        h = np.concatenate([p[1] for p in pieces]) if pieces else np.empty(0, np.uint64)
        order = np.argsort(d, kind="stable")  # a row is either long or short: its shingles keep their order
        return d[order], h[order]
    return _in_row_chunks(texts, shingle, rows)


def _in_row_chunks(texts: pl.Series, fn: Callable[[pl.Series, int], tuple[np.ndarray, np.ndarray]],
                   rows: int = SHINGLE_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """``fn(part, first row)``'s (row in part, hash) pairs over ``texts`` taken ``rows`` at a time, compacted (``_compact``) and
    joined in row order: the same arrays as one call, with one chunk's temporaries at a time."""
    n = len(texts)
    docs, xs = [], []
    for s in range(0, max(n, 1), rows):
        part = texts.slice(s, rows)
        d, h = fn(part, s)
        d, h = _compact(d + s, h, n)
        docs.append(d)
        xs.append(h)
    return np.concatenate(docs), np.concatenate(xs)


SKETCH_BUCKETS = 64


def set_sketch(docs: np.ndarray, x: np.ndarray, n: int, buckets: int = SKETCH_BUCKETS,
               rows: int = SHINGLE_CHUNK_ROWS) -> np.ndarray:
    """(n, ``buckets``) uint8: how many *distinct* hashes of each row's set (``docs`` ascending, as
    ``_in_row_chunks`` gives them) fall in each bucket (hash mod ``buckets``), capped at 255.

    The L1 distance of two rows' sketches is at most the size of their sets' symmetric difference
    (a hash in one set only moves one bucket count by one; the cap only shrinks differences), so a
    pair whose sketches differ by more than the one-edit allowance cannot match: ``_similarity``
    drops it without the exact join. On templated rows this left 108K of 4.7M pairs to check
    (300K generated rows; the exact join was 90 % of verification). Rows taken ``rows`` at a time."""
    out = np.zeros((n, buckets), dtype=np.uint8)
    if len(docs) == 0:
        return out
    bounds = np.searchsorted(docs, np.arange(0, n + rows, rows).clip(max=n))
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        first = s * rows
        key = _sorted_unique((docs[a:b].astype(np.uint64) - np.uint64(first)) << np.uint64(32) | x[a:b].astype(np.uint64))
        cell = (key >> np.uint64(32)).astype(np.int64) * buckets + (key % np.uint64(buckets)).astype(np.int64)
        counts = np.bincount(cell, minlength=min(rows, n - first) * buckets)
        out[first:first + min(rows, n - first)] = np.minimum(counts, 255).reshape(-1, buckets)
    return out


def _compact(docs: np.ndarray, x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingles kept for verification in 8 bytes, not 16: hashes are 32-bit already (folded), and
    row numbers fit 32 bits below 2^31 rows."""
    return docs.astype(np.int32 if n < 2**31 else np.int64), x.astype(np.uint32)


def _lsh(prep: _Prepared, params: MinHashParams, long_threshold: float, short_threshold: float) -> np.ndarray:
    """Candidate pairs within the long (word n-gram) rows and within the short (character n-gram) rows."""
    out = []
    for mask, th in ((prep.valid & ~prep.short, long_threshold), (prep.valid & prep.short, short_threshold)):
        if mask.sum() < 2:
            continue
        b, r = (params.bands, params.num_perm // params.bands) if params.bands else lsh_bands(
            round(th, 3), params.num_perm, params.fn_weight)
        out.append(candidate_pairs(prep.sig, b, r, mask))
    if len(out) == 1:  # no copy of what may be hundreds of millions of candidates
        return out[0]
    return np.concatenate(out) if out else np.empty((0, 2), dtype=np.int64)


def _similarity(prep: _Prepared, params: MinHashParams, n_cand: int):
    """(i, j) -> (jaccard, matches): the exact index (the MinHash estimate above ``max_exact_pairs``)
    and the match rule: Jaccard >= threshold, or (``one_edit``) the two *word sets* differ by at
    most one replaced word (words reordered, one word swapped for another) and Jaccard >=
    ``min_jaccard`` (word sets of the whole text, boilerplate included). One word is a large share of a short text, so no Jaccard threshold finds such
    pairs without also joining unrelated ones. The allowance (2 words of symmetric difference at
    threshold <= 0.8) shrinks for stricter thresholds: 1 word at 0.9, none at 0.99."""
    allow = math.floor(2 * min(1.0, max(0.0, 1.0 - params.threshold) / 0.2) + 1e-9)

    docs, x = prep.shingles() if n_cand <= params.max_exact_pairs else (None, None)

    def sim(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if docs is not None and x is not None:
            jac = exact_jaccard(docs, x, i, j)
        else:
            jac = estimated_jaccard(prep.sig, i, j)
        ok = jac >= params.threshold
        check = np.flatnonzero(~ok & (jac >= params.min_jaccard)) if params.one_edit else np.empty(0, np.int64)
        if len(check):  # only pairs whose sketches allow it (a lower bound of the symmetric difference)
            apart = np.abs(prep.wsketch[i[check]].astype(np.int16) - prep.wsketch[j[check]]).sum(axis=1)
            check = check[apart <= allow]
        if len(check):
            c, u = _overlap(prep.wdocs, prep.wx, i[check], j[check])
            ok[check] = (u - c) <= allow
        return jac.astype(np.float64), ok
    return sim


def near_lexical_clusters(
    df: pl.DataFrame, params: MinHashParams | None = None, field: str = "full", keep: str = "accepted"
) -> pl.DataFrame:
    """The members frame of ``near_lexical``."""
    return near_lexical(df, params, field, keep)[0]


def near_lexical(
    df: pl.DataFrame, params: MinHashParams | None = None, field: str = "full", keep: str = "accepted",
    sign: Signer | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Near duplicates by MinHash LSH over shingles of the ``field`` text, boilerplate removed.

    Lines and shingles shared by a large share of rows are dropped first (``boilerplate_lines``,
    ``_drop_common``). Rows of fewer than ``short_words`` words are shingled by character
    n-grams (a one-word change in a five-word prompt keeps most of them), longer rows by word
    n-grams. LSH proposes candidate pairs within each group; each is verified exactly (see
    ``_similarity`` for the match rule); clusters are greedy, so every member matches its kept one.
    Returns (members, templates): the boilerplate found (``boilerplate``). ``sign``: where the
    MinHash signatures are computed (default: here); banding and verification stay here, exact.
    """
    params = params or MinHashParams()
    prep = _prepare(df, params, field, sign)
    if df.height < 2:
        return empty_members(), prep.templates
    low = min(params.threshold, params.min_jaccard) if params.one_edit else params.threshold
    cand = _lsh(prep, params, params.threshold, low)
    if len(cand) == 0:
        return empty_members(), prep.templates
    sim = _similarity(prep, params, len(cand))
    edges: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for s in range(0, len(cand), VERIFY_CHUNK):  # verified in chunks: the overlap arrays grow with the pairs
        c = cand[s:s + VERIFY_CHUNK]
        jac, ok = sim(c[:, 0], c[:, 1])
        edges.append((c[ok, 0], c[ok, 1], jac[ok]))
    i, j, jac = (np.concatenate([e[k] for e in edges]) for k in range(3))
    members = clusters_from_edges(df, i, j, jac, "near_lexical", keep, params.max_cluster)
    return members, prep.templates


def similarity_histogram(
    df: pl.DataFrame, params: MinHashParams | None = None, field: str = "full", floor: float = 0.3, bins: int = 14
) -> tuple[pl.DataFrame, float | None]:
    """Histogram of the verified Jaccard of candidate pairs >= ``floor`` and a suggested threshold.

    Rule: most candidate pairs are unrelated rows that share some words (a mode near the floor);
    true near duplicates pile up near 1. The suggestion is the lower edge of the emptiest bin
    between 0.5 and 0.95 (the lowest such bin on ties), i.e. the valley after the main mode;
    None when there are no candidate pairs.
    """
    params = params or MinHashParams()
    edges = np.linspace(floor, 1.0, bins + 1)
    empty = pl.DataFrame({"low": edges[:-1], "high": edges[1:], "pairs": np.zeros(bins, np.int64)})
    if df.height < 2:
        return empty, None
    prep = _prepare(df, params, field)
    cand = _lsh(prep, params, floor, floor)
    if len(cand) == 0:
        return empty, None
    jac, _ = _similarity(prep, params, len(cand))(cand[:, 0], cand[:, 1])
    counts, _ = np.histogram(jac[jac >= floor], bins=edges)
    hist = empty.with_columns(pairs=pl.Series(counts.astype(np.int64)))
    window = np.flatnonzero((edges[:-1] >= 0.5 - 1e-9) & (edges[:-1] < 0.95))
    if counts.sum() == 0 or len(window) == 0:
        return hist, None
    best = window[np.argmin(counts[window])]
    return hist, round(float(edges[best]), 2)


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


def near_semantic_clusters(
    df: pl.DataFrame, vectors: np.ndarray, threshold: float = 0.95, keep: str = "accepted", max_size: int = 50
) -> pl.DataFrame:
    """Near duplicates by embedding cosine >= threshold (greedy clusters); ``vectors`` row-aligned with ``df``."""
    if df.height != vectors.shape[0]:
        raise ValueError(f"{df.height} pairs but {vectors.shape[0]} vectors")
    if df.height < 2:
        return empty_members()
    i, j, s = similar_pairs(vectors, threshold)
    return clusters_from_edges(df, i, j, s, "near_semantic", keep, max_size)


def cluster_summary(members: pl.DataFrame) -> pl.DataFrame:
    """One row per cluster: cluster_id, kind, kept_pair_id, size, min_similarity."""
    return members.group_by("cluster_id", "kind", "kept_pair_id", maintain_order=True).agg(
        size=pl.len(), min_similarity=pl.col("similarity").min()
    )


def conflict_clusters(df: pl.DataFrame, keep: str = "accepted") -> pl.DataFrame:
    """Same prompt, different responses: ``exact_prompt`` clusters holding more than one distinct
    response, as kind ``conflict``. These are for a person to review (which answer is right?),
    never marked duplicate; same-prompt clusters with one response are ``exact_full`` clusters."""
    prompt = exact_clusters(df, "exact_prompt", keep)
    if prompt.height == 0:
        return empty_members()
    full = exact_clusters(df, "exact_full", keep).select("pair_id", _full="cluster_id")
    j = prompt.join(full, on="pair_id", how="left").with_columns(_g=pl.coalesce("_full", "pair_id"))
    j = j.filter(pl.col("_g").n_unique().over("cluster_id") > 1)
    return j.with_columns(
        kind=pl.lit("conflict"), cluster_id=pl.col("cluster_id").str.replace("^dc_prompt_", "dc_conflict_")
    ).select(list(MEMBER_SCHEMA))


def drop_covered(members: pl.DataFrame, by: pl.DataFrame) -> pl.DataFrame:
    """``members`` without the clusters whose pairs all lie in one cluster of ``by`` (e.g. a near
    cluster that only repeats a conflict: the same prompt with two answers is listed once)."""
    if members.height == 0 or by.height == 0:
        return members
    j = members.join(by.select("pair_id", _by="cluster_id"), on="pair_id", how="left")
    covered = j.group_by("cluster_id").agg(
        ok=(pl.col("_by").null_count() == 0) & (pl.col("_by").n_unique() == 1)).filter("ok")["cluster_id"]
    return members.filter(~pl.col("cluster_id").is_in(covered.implode()))


def explain(kept: str, other: str) -> dict[str, list[str]]:
    """Shared and differing words (normal form) of a member and its kept pair, for a reviewer."""
    a, b = (normalize_series(pl.Series([kept, other])).to_list())
    wa, wb = a.split(), b.split()
    sa, sb = set(wa), set(wb)
    return {"shared": [w for w in dict.fromkeys(wa) if w in sb], "only_kept": [w for w in dict.fromkeys(wa) if w not in sb],
            "only_this": [w for w in dict.fromkeys(wb) if w not in sa]}


def to_mark(members: pl.DataFrame) -> pl.DataFrame:
    """(pair_id, duplicate_of) for every non-kept member of a ``MARKED_KINDS`` cluster.

    A pair in several clusters points at the kept member of its first cluster in kind order
    (exact before near). ``conflict`` and ``exact_prompt`` clusters are never marked: the same
    prompt with a different answer is not a duplicate but a question for a person.
    """
    order = {k: i for i, k in enumerate(MARKED_KINDS)}
    return (
        members.filter(~pl.col("is_kept") & pl.col("kind").is_in(MARKED_KINDS))
        .with_columns(_o=pl.col("kind").replace_strict(order, default=9, return_dtype=pl.Int8))
        .sort("_o", "pair_id")
        .unique("pair_id", keep="first", maintain_order=True)
        .select("pair_id", duplicate_of="kept_pair_id")
    )
