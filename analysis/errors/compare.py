"""Compare two runs on the same eval pairs: rates side by side, deltas with intervals,
and the fixed/broken lists.

Predictions are matched by ``pair_id`` (a corrected eval pair keeps its id). Only pairs both
runs predicted are compared; the counts of the rest are reported so a mismatch is visible.
A pair is *wrong* in a run when it has any current error category there (``metrics.flags``);
*fixed* = wrong in A and right in B, *broken* = right in A and wrong in B. Deltas are B - A
with Newcombe intervals; a negative delta of an error rate is an improvement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from analysis.errors.metrics import ANY, Z95, flags, newcombe, wilson

DELTA_SCHEMA = {"category_id": pl.String, "category": pl.String, "n": pl.Int64, "k_a": pl.Int64, "rate_a": pl.Float64,
                "lo_a": pl.Float64, "hi_a": pl.Float64, "k_b": pl.Int64, "rate_b": pl.Float64, "lo_b": pl.Float64,
                "hi_b": pl.Float64, "delta": pl.Float64, "delta_lo": pl.Float64, "delta_hi": pl.Float64}


@dataclass
class Comparison:
    table: pl.DataFrame  # DELTA_SCHEMA, "any error" first
    fixed: pl.DataFrame  # pair_id, output_a, output_b, reference, categories_a
    broken: pl.DataFrame  # pair_id, output_a, output_b, reference, categories_b
    n_common: int
    only_a: int
    only_b: int
    notes: list[str] = field(default_factory=list)


def _cats(labels: pl.DataFrame) -> pl.DataFrame:
    active = labels.filter(pl.col("state") != "rejected") if "state" in labels.columns else labels
    return active.group_by("prediction_id").agg(pl.col("category_id").sort().str.join(", ").alias("categories"))


def compare(
    preds_a: pl.DataFrame,
    labels_a: pl.DataFrame,
    preds_b: pl.DataFrame,
    labels_b: pl.DataFrame,
    *,
    names: dict[str, str] | None = None,
    z: float = Z95,
) -> Comparison:
    """``preds_*``: prediction_id, pair_id, output, reference; ``labels_*``: current labels."""
    names = names or {}
    pa_ = preds_a.select("prediction_id", "pair_id", "output", "reference").unique("pair_id", keep="first")
    pb_ = preds_b.select("prediction_id", "pair_id", "output", "reference").unique("pair_id", keep="first")
    fa = flags(pa_, labels_a)
    fb = flags(pb_, labels_b)
    a = pa_.join(fa, on="prediction_id", how="left")
    b = pb_.join(fb, on="prediction_id", how="left")
    b = b.rename({c: f"b:{c}" for c in b.columns})
    common = a.join(b, left_on="pair_id", right_on="b:pair_id", how="inner")
    n = common.height
    cats = sorted((set(fa.columns) | set(fb.columns)) - {"prediction_id", ANY})

    def count(col: str) -> int:
        return int(common[col].fill_null(False).sum()) if col in common.columns else 0

    rows = []
    for c in [ANY, *cats]:
        ka, kb = count(c), count(f"b:{c}")
        la, ha = wilson(ka, n, z)
        lb, hb = wilson(kb, n, z)
        d, dlo, dhi = newcombe(ka, n, kb, n, z)
        rows.append({"category_id": c, "category": names.get(c, c), "n": n, "k_a": ka, "rate_a": ka / n if n else 0.0,
                     "lo_a": la, "hi_a": ha, "k_b": kb, "rate_b": kb / n if n else 0.0, "lo_b": lb, "hi_b": hb,
                     "delta": d, "delta_lo": dlo, "delta_hi": dhi})
    table = pl.DataFrame(rows, schema=DELTA_SCHEMA)
    table = pl.concat([table.head(1), table.slice(1).sort(["delta", "category_id"])])
    wa, wb = pl.col(ANY).fill_null(False), pl.col(f"b:{ANY}").fill_null(False)
    ca = _cats(labels_a).rename({"categories": "categories_a"})
    cb = _cats(labels_b).rename({"prediction_id": "b:prediction_id", "categories": "categories_b"})
    base = common.join(ca, on="prediction_id", how="left").join(cb, on="b:prediction_id", how="left")
    cols = [pl.col("pair_id"), pl.col("output").alias("output_a"), pl.col("b:output").alias("output_b"),
            pl.col("b:reference").alias("reference"), pl.col("categories_a").fill_null(""),
            pl.col("categories_b").fill_null("")]
    fixed = base.filter(wa & ~wb).select(cols).sort("pair_id")
    broken = base.filter(~wa & wb).select(cols).sort("pair_id")
    only_a, only_b = pa_.height - n, pb_.height - n
    notes = []
    if only_a or only_b:
        notes.append(f"{only_a} pairs predicted only in A and {only_b} only in B are left out")
    ref_changed = common.filter(pl.col("reference") != pl.col("b:reference")).height
    if ref_changed:
        notes.append(f"{ref_changed} eval references were corrected between the runs; each run is scored "
                     "against the reference it was predicted with")
    return Comparison(table, fixed, broken, n, only_a, only_b, notes)
