"""Agreement between reviewers beyond chance: Cohen's kappa, Fleiss' kappa, per-label kappa. Pure.

store/users.py reads each reviewer's latest decision per pair and hands the labels here; the
Reviewers page and the tests read the numbers. Every function returns None where the statistic is
undefined (no items; chance agreement of 1, i.e. everyone used the one same label), where
scikit-learn's ``cohen_kappa_score`` gives NaN.

- **Cohen's kappa** (two raters, the same items): (p_o - p_e) / (1 - p_e), p_e from each rater's
  own label shares; equal to ``sklearn.metrics.cohen_kappa_score`` (tests/test_agreement_blind.py).
- **Fleiss' kappa** (Fleiss 1971) over items rated by >= 2 raters each; items with fewer are left
  out. Items may have different numbers of raters: an item's agreement is
  sum_j n_ij (n_ij - 1) / (m_i (m_i - 1)) and the label shares pool every rating, which is Fleiss'
  formula exactly when every item has the same m (Wikipedia's worked example gives 0.210).
- **Per-label kappa** (Fleiss' per-category kappa): kappa_j = 1 - sum_i n_ij (m_i - n_ij) /
  (m_i (m_i - 1)) / (N p_j (1 - p_j)), how well raters agree on "is it label j or not"; the overall
  Fleiss kappa is their average weighted by p_j (1 - p_j).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def cohen_kappa(labels_a: Sequence[str], labels_b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters over the same items; None when undefined (no items, or both raters
    used one and the same label throughout)."""
    n = len(labels_a)
    if n == 0 or n != len(labels_b):
        return None
    p_o = sum(a == b for a, b in zip(labels_a, labels_b)) / n
    ca, cb = Counter(labels_a), Counter(labels_b)
    p_e = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


@dataclass(frozen=True)
class FleissResult:
    """Fleiss' kappa over ``items`` (each rated by ``min_raters``..``max_raters`` raters) and per label."""

    kappa: float | None
    items: int
    min_raters: int
    max_raters: int
    per_label: dict[str, float | None] = field(default_factory=dict)


def fleiss(items: Iterable[Sequence[str]]) -> FleissResult:
    """Fleiss' kappa and per-label kappa of ``items``: for each item, the labels its raters gave."""
    counts = [Counter(labels) for labels in items if len(labels) >= 2]
    if not counts:
        return FleissResult(None, 0, 0, 0)
    sizes = [sum(c.values()) for c in counts]
    n_items, total = len(counts), sum(sizes)
    labels = sorted(set().union(*counts))
    share = {k: sum(c[k] for c in counts) / total for k in labels}
    p_bar = sum(sum(v * (v - 1) for v in c.values()) / (m * (m - 1)) for c, m in zip(counts, sizes)) / n_items
    p_e = sum(p * p for p in share.values())
    per_label: dict[str, float | None] = {}
    for k in labels:
        spread = n_items * share[k] * (1 - share[k])
        disagree = sum(c[k] * (m - c[k]) / (m * (m - 1)) for c, m in zip(counts, sizes))
        per_label[k] = None if spread <= 0 else 1 - disagree / spread
    kappa = None if p_e >= 1.0 else (p_bar - p_e) / (1 - p_e)
    return FleissResult(kappa, n_items, min(sizes), max(sizes), per_label)
