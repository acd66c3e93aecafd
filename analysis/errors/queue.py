"""Review priority: which predictions a reviewer should look at first.

Priority is highest where the model is weakest and the evidence least settled:
- more current error categories on the prediction (each adds 1);
- a confident automatic proposal counts in full, a weak one less (sum of confidences);
- disagreement with the reference (1 - token F1; 1 for a wrong label);
- low model confidence when the prediction carries one (``confidence`` column, 0..1);
- predictions whose labels a human already decided drop to the end (``reviewed``).
Ties break by pair id, so the order is stable between calls.
"""

from __future__ import annotations

import polars as pl


def priority(predictions: pl.DataFrame, labels: pl.DataFrame, scored: pl.DataFrame,
             *, category: str | None = None) -> pl.DataFrame:
    """Predictions with a ``priority`` column, best first. ``category`` keeps those with that category."""
    lab = labels.filter(pl.col("state") != "rejected")
    if category:
        keep = lab.filter(pl.col("category_id") == category).select("prediction_id").unique()
        lab = lab.join(keep, on="prediction_id", how="semi")
    per = lab.group_by("prediction_id").agg(
        pl.len().alias("n_categories"),
        pl.col("confidence").sum().alias("confidence_sum"),
        (pl.col("source") == "human").all().alias("reviewed"),
        pl.col("category").sort().str.join(", ").alias("categories"),
    )
    base = predictions.join(per, on="prediction_id", how="inner" if category else "left").join(
        scored.select("prediction_id", "f1", "correct"), on="prediction_id", how="left")
    model_conf = pl.col("confidence").fill_null(1.0) if "confidence" in base.columns else pl.lit(1.0)
    disagree = pl.when(pl.col("correct").fill_null(True)).then(1 - pl.col("f1").fill_null(1.0)).otherwise(
        pl.max_horizontal(1 - pl.col("f1").fill_null(0.0), pl.lit(0.5)))
    return (
        base.with_columns(pl.col("n_categories").fill_null(0), pl.col("confidence_sum").fill_null(0.0),
                          pl.col("reviewed").fill_null(False), pl.col("categories").fill_null(""))
        .with_columns((pl.col("n_categories") + pl.col("confidence_sum") + disagree + (1 - model_conf)
                       - pl.col("reviewed").cast(pl.Float64) * 10).round(4).alias("priority"))
        .filter((pl.col("n_categories") > 0) | ~pl.col("correct").fill_null(True))
        .sort(["priority", "pair_id"], descending=[True, False])
    )
