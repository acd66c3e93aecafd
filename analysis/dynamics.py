"""Dataset cartography from training dynamics (pure): which pairs a run found easy, ambiguous or hard.

As in Swayamdipta et al., "Dataset Cartography" (EMNLP 2020), each train pair gets, over the
epochs a run trained on it:

- ``confidence``: the mean over epochs of its per-epoch confidence (exp(-mean token loss): the
  geometric mean probability the model gave its target tokens while training on it,
  training/data.py ``example_losses``; for a one-token label, the paper's gold-label probability);
- ``variability``: the standard deviation of that per-epoch confidence (population std, as in
  the paper).

Regions (``CartographyConfig``): ``ambiguous`` for the ``ambiguous_share`` of the run's pairs with
the highest variability, as long as it is at least ``ambiguous_variability`` (the model kept
changing its mind). Variability is relative to the run: how far confidence moves across epochs
depends on the number of epochs and the learning rate (a run of 3 epochs on banking77 moved
most pairs by 0.3), so a fixed cut would flag most pairs of a short run. Otherwise
``hard-to-learn`` when confidence < ``hard_confidence`` (low and stable: never learned; on
label-like data mostly wrong labels), else ``easy-to-learn``. A pair seen in fewer than
``min_epochs`` epochs has no region (one epoch has no variability).

``signals`` turns the map into quality signals ``hard_to_learn`` (score 1 - confidence) and
``ambiguous`` (score variability), flagged by region, in the long form
store/curation.py ``save_signals`` takes, so they join the review queue and Explore's filters.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

HARD = "hard_to_learn"
AMBIGUOUS = "ambiguous"
NAMES = (HARD, AMBIGUOUS)
VERSION = "cartography-1"
REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")


@dataclass(frozen=True)
class CartographyConfig:
    min_epochs: int = 2
    hard_confidence: float = 0.5
    ambiguous_share: float = 0.1
    ambiguous_variability: float = 0.1


def cartography(rows: pl.DataFrame, cfg: CartographyConfig | None = None) -> pl.DataFrame:
    """One row per pair from per-epoch rows (pair_id, revision_id, epoch, confidence, loss):
    pair_id, revision_id, epochs, confidence, variability, loss (mean), region (null with too few
    epochs), sorted by pair id."""
    cfg = cfg or CartographyConfig()
    out = rows.group_by("pair_id").agg(
        pl.col("revision_id").last(),
        pl.col("epoch").n_unique().alias("epochs"),
        pl.col("confidence").mean().alias("confidence"),
        pl.col("confidence").std(ddof=0).fill_null(0.0).alias("variability"),
        pl.col("loss").mean().alias("loss"),
    ).sort("pair_id")
    mapped = out.filter(pl.col("epochs") >= cfg.min_epochs)["variability"]
    cut = max(cfg.ambiguous_variability,
              float(mapped.quantile(1.0 - cfg.ambiguous_share, "higher") or 0.0) if mapped.len() else 0.0)
    return out.with_columns(
        region=pl.when(pl.col("epochs") < cfg.min_epochs).then(pl.lit(None, pl.String))
        .when(pl.col("variability") >= cut).then(pl.lit("ambiguous"))
        .when(pl.col("confidence") < cfg.hard_confidence).then(pl.lit("hard-to-learn"))
        .otherwise(pl.lit("easy-to-learn")))


def region_counts(carto: pl.DataFrame) -> dict[str, int]:
    """Pairs per region (every region named, 0 when empty; ``None`` key: too few epochs)."""
    counts = dict(carto.group_by("region").len().iter_rows())
    return {**{r: int(counts.get(r, 0)) for r in REGIONS},
            **({"too few epochs": int(counts[None])} if counts.get(None) else {})}


def signals(carto: pl.DataFrame, run_id: str) -> pl.DataFrame:
    """The quality-signal long form of ``cartography``'s rows that have a region: two rows per pair
    (``hard_to_learn``, ``ambiguous``), flagged by region, with a plain-text reason."""
    m = carto.filter(pl.col("region").is_not_null())
    details = pl.struct(pl.lit(run_id).alias("run_id"), "epochs", pl.col("confidence").round(4),
                        pl.col("variability").round(4)).struct.json_encode()
    common = pl.format("mean confidence {} (std {}) over {} epochs of run {}", pl.col("confidence").round(2),
                       pl.col("variability").round(2), pl.col("epochs"), pl.lit(run_id))
    hard = m.select(
        "revision_id", "pair_id", name=pl.lit(HARD), version=pl.lit(VERSION),
        score=(1.0 - pl.col("confidence")).clip(0.0, 1.0), flagged=pl.col("region") == "hard-to-learn",
        reason=pl.when(pl.col("region") == "hard-to-learn")
        .then(pl.format("{}: low and stable, the model never learned it (a wrong or odd label?)", common))
        .otherwise(pl.lit("")), details=details)
    amb = m.select(
        "revision_id", "pair_id", name=pl.lit(AMBIGUOUS), version=pl.lit(VERSION),
        score=pl.col("variability"), flagged=pl.col("region") == "ambiguous",
        reason=pl.when(pl.col("region") == "ambiguous")
        .then(pl.format("{}: the model kept changing its mind about it", common))
        .otherwise(pl.lit("")), details=details)
    return pl.concat([hard, amb])
