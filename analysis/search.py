"""Semantic search over cached embeddings (pure numpy).

Vectors are L2-normalised, so cosine similarity is a dot product; the top k come from
``argpartition`` (O(n)) and are then sorted. Exact, not approximate: at a million 384-d
vectors one query is one matrix-vector product (~0.1 s on 2 cores).
"""

from __future__ import annotations

import numpy as np


def top_k(matrix: np.ndarray, query: np.ndarray, k: int = 10, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, cosines) of the ``k`` rows most similar to ``query``, best first."""
    if matrix.shape[0] == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    q = q / (np.linalg.norm(q) or 1.0)
    sims = np.asarray(matrix, dtype=np.float32) @ q
    if exclude is not None and len(exclude):
        sims[np.asarray(exclude, dtype=np.int64)] = -np.inf
    k = min(k, int(np.isfinite(sims).sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    idx = np.argpartition(-sims, k - 1)[:k]
    idx = idx[np.argsort(-sims[idx], kind="stable")]
    return idx.astype(np.int64), sims[idx]
