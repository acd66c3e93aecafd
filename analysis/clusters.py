"""Topic clusters with keyword names, and 2-D coordinates for an embedding map (pure).

- Clustering is k-means on L2-normalised embeddings (cosine geometry): ``KMeans`` up to
  20,000 points, ``MiniBatchKMeans`` above, both seeded, so a re-run on the same vectors
  gives the same clusters.
- Names come from class-based TF-IDF (c-TF-IDF, as BERTopic): all texts of a cluster form
  one document; a term's weight is its frequency in the cluster times
  ``log(1 + mean words per cluster / its frequency over all clusters)``; the top terms
  (English stop words removed, unigrams and bigrams) name the cluster.
- Map coordinates are PCA (deterministic, linear, fast at any size) or t-SNE (better local
  structure; at most ``tsne_max`` points, on 50 PCA components).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class ClusterConfig:
    k: int | None = None  # default: sqrt(n / 2), within [2, 100]
    seed: int = 0
    n_keywords: int = 6
    map_method: str = "pca"  # pca or tsne
    tsne_max: int = 20000


def default_k(n: int) -> int:
    return max(2, min(100, int(round(math.sqrt(n / 2)))))


def kmeans(vectors: np.ndarray, k: int, seed: int = 0, threads: int = 1) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    n = vectors.shape[0]
    k = max(1, min(k, n))
    if n > 20000:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=3)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=10)
    with threadpool_limits(threads):  # contended OpenMP threads on a shared box are far slower than one
        return model.fit_predict(np.asarray(vectors, dtype=np.float32)).astype(np.int64)


def ctfidf_keywords(texts: list[str], labels: np.ndarray, n_keywords: int = 6) -> dict[int, list[str]]:
    """Top c-TF-IDF terms per cluster label."""
    from sklearn.feature_extraction.text import CountVectorizer

    clusters = sorted(set(int(x) for x in labels))
    joined = pl.DataFrame({"t": texts, "c": labels}).group_by("c").agg(pl.col("t").str.join(" ")).sort("c")
    docs = joined["t"].to_list()
    order = joined["c"].to_list()
    try:
        cv = CountVectorizer(stop_words="english", ngram_range=(1, 2), min_df=1, token_pattern=r"(?u)\b[^\W\d_]{2,}\b")
        counts = cv.fit_transform(docs)
    except ValueError:  # only stop words / empty
        return {c: [] for c in clusters}
    vocab = np.asarray(cv.get_feature_names_out())
    tf = counts.toarray().astype(np.float64)
    words_per_class = tf.sum(axis=1, keepdims=True)
    avg = float(words_per_class.mean()) or 1.0
    freq = tf.sum(axis=0)
    idf = np.log(1.0 + avg / np.maximum(freq, 1.0))
    w = (tf / np.maximum(words_per_class, 1.0)) * idf
    out: dict[int, list[str]] = {}
    for row, c in enumerate(order):
        top = np.argsort(-w[row])[: n_keywords * 3]
        chosen: list[str] = []
        for t in top:
            if w[row, t] <= 0:
                break
            term = str(vocab[t])
            # skip a unigram already inside a chosen bigram and vice versa
            if any(term in c2.split() or c2 in term.split() for c2 in chosen):
                continue
            chosen.append(term)
            if len(chosen) == n_keywords:
                break
        out[int(c)] = chosen
    return out


def map_coords(vectors: np.ndarray, method: str = "pca", seed: int = 0, tsne_max: int = 20000) -> np.ndarray:
    """(n, 2) coordinates; t-SNE falls back to PCA above ``tsne_max`` points."""
    from sklearn.decomposition import PCA

    v = np.asarray(vectors, dtype=np.float32)
    n = v.shape[0]
    if n < 3:
        return np.zeros((n, 2))
    if method == "tsne" and n <= tsne_max:
        from sklearn.manifold import TSNE

        base = PCA(n_components=min(50, v.shape[1], n - 1), random_state=seed).fit_transform(v)
        return TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(30.0, (n - 1) / 3)).fit_transform(base)
    if method not in ("pca", "tsne"):
        raise ValueError(f"map method must be pca or tsne, not {method!r}")
    return PCA(n_components=2, random_state=seed).fit_transform(v)


def cluster(texts: list[str], vectors: np.ndarray, cfg: ClusterConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(topics, points): topics has cluster, name, keywords, size; points has row, cluster, x, y."""
    cfg = cfg or ClusterConfig()
    n = vectors.shape[0]
    if n == 0:
        raise ValueError("nothing to cluster: no embedded pairs (run `tuneloop embed` first)")
    k = cfg.k or default_k(n)
    labels = kmeans(vectors, k, cfg.seed)
    kw = ctfidf_keywords(texts, labels, cfg.n_keywords)
    xy = map_coords(vectors, cfg.map_method, cfg.seed, cfg.tsne_max)
    sizes = np.bincount(labels, minlength=int(labels.max()) + 1)
    topics = pl.DataFrame({
        "cluster": list(range(len(sizes))),
        "name": [", ".join(kw.get(c, [])[:3]) or f"cluster {c}" for c in range(len(sizes))],
        "keywords": [kw.get(c, []) for c in range(len(sizes))],
        "size": sizes.astype(np.int64),
    }, schema={"cluster": pl.Int32, "name": pl.String, "keywords": pl.List(pl.String), "size": pl.Int32}).filter(pl.col("size") > 0)
    points = pl.DataFrame({"row": np.arange(n), "cluster": labels.astype(np.int32), "x": xy[:, 0].astype(np.float64),
                           "y": xy[:, 1].astype(np.float64)})
    return topics, points
