"""Error rates per category and per slice of the data, with confidence intervals; confusion.

A prediction *has* category C when its current label for C (see ``store.errors.current_labels``)
is proposed or confirmed; it is an *error* when it has any category. Rates are k/n over the
predictions of a group, with Wilson score intervals (good at small n and at rates near 0 or
1, where the normal approximation gives impossible bounds). Differences between two runs use
Newcombe's hybrid score interval, built from the two Wilson intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

import scoring

Z95 = 1.959964
ANY = "any error"

RATE_SCHEMA = {"group": pl.String, "category_id": pl.String, "category": pl.String, "k": pl.Int64,
               "n": pl.Int64, "rate": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (``(0, 1)`` when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """(p2 - p1, lo, hi): Newcombe's hybrid score interval for a difference of two proportions."""
    p1, p2 = (k1 / n1 if n1 else 0.0), (k2 / n2 if n2 else 0.0)
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p2 - p1
    lo = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    hi = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, max(-1.0, lo), min(1.0, hi)


def flags(predictions: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """One row per prediction, one boolean column per category present (True = has it), plus ``any``."""
    active = labels.filter(pl.col("state") != "rejected") if "state" in labels.columns else labels
    base = predictions.select("prediction_id").unique(maintain_order=True)
    if active.height == 0:
        return base.with_columns(pl.lit(False).alias(ANY))
    wide = (active.select("prediction_id", "category_id").unique().with_columns(pl.lit(True).alias("v"))
            .pivot(on="category_id", index="prediction_id", values="v"))
    out = base.join(wide, on="prediction_id", how="left").fill_null(False)
    cats = [c for c in out.columns if c != "prediction_id"]
    return out.with_columns(pl.any_horizontal(cats).alias(ANY))


def rates(
    predictions: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    by: str | None = None,
    names: dict[str, str] | None = None,
    z: float = Z95,
) -> pl.DataFrame:
    """Error rate per (group, category) with Wilson intervals (``RATE_SCHEMA``).

    ``by`` is a column of ``predictions`` (e.g. document_id, source_uri, slice); a list column
    (tags) counts a prediction once in each of its groups. ``None`` is one group, ``all``.
    The ``any error`` row comes first in each group, then categories by rate.
    """
    names = names or {}
    f = flags(predictions, labels)
    cats = [c for c in f.columns if c not in ("prediction_id", ANY)]
    if by is None:
        g = predictions.select("prediction_id").with_columns(pl.lit("all").alias("group"))
    else:
        g = predictions.select("prediction_id", pl.col(by).alias("group"))
        if g.schema["group"] == pl.List(pl.String) or isinstance(g.schema["group"], pl.List):
            g = g.explode("group")
        g = g.with_columns(pl.col("group").cast(pl.String).fill_null("(none)"))
    joined = g.join(f, on="prediction_id", how="left").fill_null(False)
    agg = joined.group_by("group").agg(pl.len().alias("n"), *[pl.col(c).sum().alias(c) for c in [ANY, *cats]])
    rows = []
    for r in agg.iter_rows(named=True):
        for c in [ANY, *cats]:
            k, n = int(r[c]), int(r["n"])
            lo, hi = wilson(k, n, z)
            rows.append({"group": r["group"], "category_id": c, "category": names.get(c, c), "k": k, "n": n,
                         "rate": k / n if n else 0.0, "lo": lo, "hi": hi})
    out = pl.DataFrame(rows, schema=RATE_SCHEMA)
    return out.sort(["group", pl.col("category_id") != ANY, "rate", "category_id"],
                    descending=[False, False, True, False])


def confusion(references: Sequence[str], outputs: Sequence[str], task: scoring.Task) -> pl.DataFrame:
    """Counts of (reference, predicted) labels as the references spell them (``scoring.Task.canonical``);
    an output outside the task's labels is ``scoring.OTHER``."""
    rows = [(task.canonical(r), task.canonical(o)) for r, o in zip(references, outputs, strict=True)]
    df = pl.DataFrame(rows, schema={"reference": pl.String, "predicted": pl.String}, orient="row")
    return df.group_by("reference", "predicted").agg(pl.len().alias("n")).sort(["n", "reference", "predicted"],
                                                                                descending=[True, False, False])


def most_confused(conf: pl.DataFrame, top: int = 10) -> pl.DataFrame:
    """Unordered label pairs by how often one was predicted for the other (both directions summed)."""
    off = conf.filter((pl.col("reference") != pl.col("predicted")) & (pl.col("predicted") != scoring.OTHER))
    if off.height == 0:
        return pl.DataFrame(schema={"a": pl.String, "b": pl.String, "a_as_b": pl.Int64, "b_as_a": pl.Int64,
                                    "n": pl.Int64})
    d = {(r["reference"], r["predicted"]): int(r["n"]) for r in off.iter_rows(named=True)}
    pairs = {tuple(sorted(k)) for k in d}
    rows = [{"a": a, "b": b, "a_as_b": d.get((a, b), 0), "b_as_a": d.get((b, a), 0),
             "n": d.get((a, b), 0) + d.get((b, a), 0)} for a, b in pairs]
    return pl.DataFrame(rows).sort(["n", "a", "b"], descending=[True, False, False]).head(top)


def accuracy(scored: pl.DataFrame, z: float = Z95) -> dict[str, float]:
    """Share of ``correct`` predictions with its Wilson interval."""
    n = scored.height
    k = int(scored["correct"].sum()) if n else 0
    lo, hi = wilson(k, n, z)
    return {"k": k, "n": n, "accuracy": k / n if n else 0.0, "lo": lo, "hi": hi}
