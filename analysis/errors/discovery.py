"""Error discovery: cluster the failing predictions so reviewers see kinds of error the
taxonomy lacks.

Each failing prediction is represented by its prompt and its output together (what was
asked and what went wrong), without the chat template: the system prompt, role headers and
special tokens are the same in every prompt, so left in they would decide the clusters and their
keywords. Vectors are sentence embeddings when the caller has them (``models.embeddings``),
else TF-IDF reduced with a seeded SVD; both are L2-normalised and clustered with the project's
seeded k-means (``analysis.clusters``). Each cluster comes with c-TF-IDF keywords, the current
categories of its members (a cluster mostly *uncategorised* is a candidate new category) and the
examples closest to its centre.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from analysis.clusters import ctfidf_keywords, default_k, kmeans
from analysis.errors.text import template_content


def texts_of(failing: pl.DataFrame, special_tokens: Sequence[str] = ()) -> list[str]:
    """What each failing prediction is clustered on: its prompt and output without the chat template
    (``text.template_content``: no system prompt, role headers or special tokens, which every prompt
    shares and which would otherwise decide the clusters and their keywords)."""
    return [f"{template_content(p or '', special_tokens)}\n{template_content(o or '', special_tokens)}"
            for p, o in zip(failing["prompt"].to_list(), failing["output"].to_list())]


def tfidf_vectors(texts: list[str], seed: int = 0, dims: int = 64) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        x = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True).fit_transform(texts)
    except ValueError:  # no usable tokens at all
        return np.zeros((len(texts), 1), dtype=np.float32)
    n_comp = min(dims, x.shape[1] - 1, x.shape[0] - 1)
    v = TruncatedSVD(n_components=n_comp, random_state=seed).fit_transform(x) if n_comp >= 2 else x.toarray()
    return np.asarray(v, dtype=np.float32)


def _normalise(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


CLUSTER_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {"cluster": pl.Int64, "size": pl.Int64, "keywords": pl.List(pl.String),
                  "categories": pl.String, "uncategorised": pl.Int64, "examples": pl.List(pl.String)}


def discover(failing: pl.DataFrame, vectors: np.ndarray | None = None, *, k: int | None = None, seed: int = 0,
             n_examples: int = 3, special_tokens: Sequence[str] = ()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(clusters, members). ``failing``: prediction_id, pair_id, prompt, output, categories ('' = none);
    ``vectors`` (if given) embed ``texts_of(failing, special_tokens)``.

    clusters: ``CLUSTER_SCHEMA``, largest first; members: prediction_id, cluster, distance.
    """
    n = failing.height
    if n < 2:
        raise ValueError(f"error discovery needs at least 2 failing predictions, got {n}; run `tuneloop errors auto` first")
    texts = texts_of(failing, special_tokens)
    v = tfidf_vectors(texts, seed) if vectors is None else np.asarray(vectors, dtype=np.float32)
    if v.shape[0] != n:
        raise ValueError(f"{v.shape[0]} vectors for {n} failing predictions")
    v = _normalise(v)
    k = min(k or default_k(n), n)
    labels = kmeans(v, k, seed)
    kw = ctfidf_keywords(texts, labels, 6)
    rows, members = [], []
    cats = failing["categories"].fill_null("").to_list()
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        centre = v[idx].mean(axis=0)
        dist = 1 - v[idx] @ centre / max(float(np.linalg.norm(centre)), 1e-12)
        order = idx[np.argsort(dist, kind="stable")]
        counts: dict[str, int] = {}
        for i in idx:
            for name in (cats[i].split(", ") if cats[i] else ["(none)"]):
                counts[name] = counts.get(name, 0) + 1
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        rows.append({"cluster": int(c), "size": len(idx), "keywords": kw.get(int(c), []),
                     "categories": ", ".join(f"{name} {m}" for name, m in top[:4]),
                     "uncategorised": counts.get("(none)", 0),
                     "examples": [texts[i].replace("\n", " => ")[:200] for i in order[:n_examples]]})
        members += [{"prediction_id": failing["prediction_id"][int(i)], "cluster": int(c), "distance": float(d)}
                    for i, d in zip(idx, dist)]
    clusters = pl.DataFrame(rows, schema=CLUSTER_SCHEMA).sort(["size", "cluster"], descending=[True, False])
    return clusters, pl.DataFrame(members, schema={"prediction_id": pl.String, "cluster": pl.Int64,
                                                    "distance": pl.Float64})
