"""Label noise for label-like data: confident learning on cross-validated probabilities (pure).

For pairs whose response is one of a small set of labels (intent routing, classification),
a classifier (multinomial logistic regression on the prompt embeddings) is trained with
k-fold cross-validation, so every pair gets out-of-sample probabilities ``p[i, j]``. Then,
as in Northcutt et al., "Confident Learning" (JAIR 2021):

- the per-class threshold ``t_j`` is the mean ``p[i, j]`` over pairs labelled ``j`` (the
  classifier's self-confidence on that class);
- pair ``i`` with given label ``y`` is *confidently* of class ``j*`` = argmax over
  ``{j : p[i, j] >= t_j}`` of ``p[i, j]``; counting (y, j*) gives the confident joint ``C``,
  whose rows are calibrated to the label counts;
- "prune by noise rate": for each off-diagonal cell (i, j), the ``round(C[i, j])`` pairs
  labelled i with the largest margin ``p_j - p_i`` are label issues;
- "both": of those, only pairs whose plain argmax also disagrees with the label are flagged;
  the argmax is the suggested label.

The score is ``p[i, suggested] - p[i, y]``. Labels with fewer members than folds keep their
pairs unflagged (nothing reliable can be learned about them). Seeded: same input, same flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

import scoring

NAME = "label_noise"
VERSION = "cl-both-1"


@dataclass(frozen=True)
class LabelNoiseConfig:
    folds: int = 5
    seed: int = 0
    c: float = 10.0  # inverse regularisation of the logistic regression
    threads: int = 1


def check_label_like(labels: list[str], cfg: LabelNoiseConfig | None = None) -> None:
    """Raise ValueError with advice unless responses are labels from a small set (``scoring.task_of``)
    and there are enough of them to cross-validate."""
    n = len(labels)
    if n < 20:
        raise ValueError(f"label noise needs at least 20 pairs, got {n}")
    if len({scoring.normalize_label(x) for x in labels}) < 2:
        raise ValueError("label noise needs at least two distinct labels (responses)")
    if not scoring.task_of(labels).is_label:
        raise ValueError(
            f"responses do not look like labels: {len(set(labels))} distinct among {n} pairs. Label noise is for "
            f"label-like data (a one-line response of at most {scoring.LABEL_MAX_WORDS} words drawn from a small "
            "label set, such as intent routing); choose such a slice."
        )


def cross_val_probabilities(x: np.ndarray, y: np.ndarray, n_classes: int, cfg: LabelNoiseConfig) -> np.ndarray:
    """Out-of-fold class probabilities (n, n_classes) from a seeded stratified k-fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_classes)
    folds = max(2, min(cfg.folds, int(counts[counts > 0].max())))
    from threadpoolctl import threadpool_limits

    probs = np.zeros((len(y), n_classes), dtype=np.float64)
    # classes smaller than the fold count cannot be stratified; give them their own fold ids
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    strat = np.where(counts[y] >= folds, y, -1)
    # one BLAS/OpenMP thread: on a shared 2-core box two contended threads are ~30x slower
    with threadpool_limits(cfg.threads):
        for train, test in skf.split(x, strat):
            clf = LogisticRegression(C=cfg.c, max_iter=300)
            clf.fit(x[train], y[train])
            probs[np.ix_(test, clf.classes_)] = clf.predict_proba(x[test])
    return probs


def confident_flags(probs: np.ndarray, y: np.ndarray, min_count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(flagged bool (n,), suggested class (n,)): confident joint, prune by noise rate, "both" rule."""
    n, k = probs.shape
    counts = np.bincount(y, minlength=k)
    thresholds = np.array([probs[y == j, j].mean() if counts[j] else 1.1 for j in range(k)])
    above = probs >= thresholds[None, :]
    confident = np.where(above, probs, -1.0).argmax(axis=1)
    has_confident = above.any(axis=1)
    # confident joint C[given, true], calibrated so each row sums to the count of its label
    joint = np.zeros((k, k))
    np.add.at(joint, (y[has_confident], confident[has_confident]), 1.0)
    row = joint.sum(axis=1, keepdims=True)
    joint = np.where(row > 0, joint / np.maximum(row, 1.0) * counts[:, None], 0.0)
    argmax = probs.argmax(axis=1)
    flagged = np.zeros(n, dtype=bool)
    reliable = counts >= min_count
    for i in np.flatnonzero(reliable):
        members = np.flatnonzero(y == i)
        for j in np.flatnonzero(np.round(joint[i]) > 0):
            if j == i:
                continue
            m = int(round(joint[i, j]))
            # the m pairs labelled i with the largest margin p_j - p_i are the likely errors
            margin = probs[members, j] - probs[members, i]
            flagged[members[np.argsort(-margin, kind="stable")[:m]]] = True
    flagged &= argmax != y  # "both": the plain prediction must disagree too
    return flagged, argmax


def find_label_noise(rows: pl.DataFrame, vectors: np.ndarray, cfg: LabelNoiseConfig | None = None) -> pl.DataFrame:
    """Signals for ``rows`` (revision_id, pair_id, response = the label), row-aligned with ``vectors``.

    Returns the quality-signal long form (one row per pair): revision_id, pair_id, name,
    version, score, flagged, reason, details (JSON with given, suggested, p_given, p_suggested).
    """
    cfg = cfg or LabelNoiseConfig()
    labels = [s.strip() for s in rows["response"].fill_null("").to_list()]
    check_label_like(labels, cfg)
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[s] for s in labels], dtype=np.int64)
    probs = cross_val_probabilities(np.asarray(vectors, dtype=np.float32), y, len(names), cfg)
    flagged, suggested = confident_flags(probs, y, min_count=max(2, min(cfg.folds, 5)))
    rng = np.arange(len(y))
    p_given = probs[rng, y]
    p_sugg = probs[rng, suggested]
    score = np.clip(p_sugg - p_given, 0.0, 1.0)
    name_arr = np.asarray(names, dtype=object)
    out = pl.DataFrame({
        "revision_id": rows["revision_id"], "pair_id": rows["pair_id"],
        "given": labels, "suggested": name_arr[suggested].tolist(),
        "p_given": p_given, "p_suggested": p_sugg, "score": score, "flagged": flagged,
    })
    return out.with_columns(
        name=pl.lit(NAME), version=pl.lit(VERSION),
        reason=pl.when(pl.col("flagged")).then(pl.format(
            "label {} looks wrong: the classifier says {} (p={} vs {})",
            pl.col("given"), pl.col("suggested"), pl.col("p_suggested").round(2), pl.col("p_given").round(2),
        )).otherwise(pl.lit("")),
        details=pl.struct(
            "given", "suggested", pl.col("p_given").round(4), pl.col("p_suggested").round(4)
        ).struct.json_encode(),
    ).select("revision_id", "pair_id", "name", "version", "score", "flagged", "reason", "details")
