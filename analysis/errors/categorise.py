"""Automatic pre-categorisation of a prediction set.

``categorise`` runs every rule detector, the metric check and the grounding check on each
prediction and returns one proposal row per (prediction, category) it found: several
categories per prediction are allowed, and each row carries the detector's
``name@version``, a confidence and the evidence. The store appends these as ``auto``
labels; reviewers' decisions sit beside them and win when read (see ``store.errors``).

The task type decides which checks apply: a *label-like* task (short references drawn from
a small set, e.g. intents) gets the label-set and wrong-label checks; free text gets the
F1/ROUGE-L, length and grounding checks. ``scoring.task_of`` reads it from the references;
``CategoriseConfig.task`` overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from pydantic import ConfigDict

import scoring
from analysis.errors.detectors import DETECTORS, Case, DetectorConfig
from scoring import Task

PROPOSAL_SCHEMA = {
    "prediction_id": pl.String, "pair_id": pl.String, "category_id": pl.String, "detector": pl.String,
    "confidence": pl.Float64, "evidence": pl.String,
}


class CategoriseConfig(DetectorConfig):
    model_config = ConfigDict(extra="forbid")

    task: str = "auto"  # auto, label or text (scoring.TASK_KINDS)
    detectors: list[str] | None = None  # names to run (default: all)


def prediction_task(predictions: pl.DataFrame, labels: Sequence[str] | None = None,
            cfg: CategoriseConfig | None = None) -> Task:
    """The task of a prediction set (``scoring.task_of``): read from ``labels`` (the references of
    the set's slice) when given, else from the predictions' references; a label task's set
    includes both."""
    cfg = cfg or CategoriseConfig()
    refs = [r or "" for r in predictions.get_column("reference").to_list()] if predictions.height else []
    return scoring.task_of_predictions(refs, list(labels or ()), cfg.task)


def case_of(row: dict, task: Task) -> Case:
    reference = row.get("reference") or row.get("response") or ""
    return Case(
        output=row.get("output") or "",
        reference=reference,
        # the question as the user wrote it (instruction + input), not the chat-template rendering
        prompt="\n".join(x for x in (row.get("instruction"), row.get("input")) if x) or row.get("prompt") or "",
        finish_reason=row.get("finish_reason") or "stop",
        source=row.get("source_text") or "",
        label_set=task.labels if task.is_label else None,
        expect_json=task.expect_json,
        judge_faithful=int(row["judge_faithful"]) if row.get("judge_faithful") is not None else None,
    )


def categorise(
    predictions: pl.DataFrame,
    cfg: CategoriseConfig | None = None,
    *,
    labels: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, Task]:
    """Proposals (see ``PROPOSAL_SCHEMA``) for a predictions frame (``store.runs.predictions_frame``
    columns, plus ``source_text``). ``labels``: the references of the run's whole slice (one per
    pair, train and eval); the task type and label set are read from them when given."""
    cfg = cfg or CategoriseConfig()
    task = prediction_task(predictions, labels, cfg)
    wanted = [d for d in DETECTORS if cfg.detectors is None or d.name in cfg.detectors]
    if cfg.detectors is not None:
        unknown = sorted(set(cfg.detectors) - {d.name for d in DETECTORS})
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; known: {', '.join(d.name for d in DETECTORS)}")
    rows: list[dict] = []
    for row in predictions.iter_rows(named=True):
        case = case_of(row, task)
        best: dict[str, dict] = {}
        for det in wanted:
            f = det(case, cfg)
            if f is None:
                continue
            prev = best.get(f.category)
            if prev is None or f.confidence > prev["confidence"]:
                best[f.category] = {"prediction_id": row["prediction_id"], "pair_id": row["pair_id"],
                                    "category_id": f.category, "detector": det.ref,
                                    "confidence": f.confidence, "evidence": f.evidence}
        rows.extend(best.values())
    return pl.DataFrame(rows, schema=PROPOSAL_SCHEMA), task


def score_predictions(predictions: pl.DataFrame, task: Task, cfg: CategoriseConfig | None = None) -> pl.DataFrame:
    """Per prediction: em, f1, rouge_l and ``correct`` (``scoring.score``)."""
    cfg = cfg or CategoriseConfig()
    ref = (pl.coalesce("reference", "response") if "response" in predictions.columns else pl.col("reference"))
    both = predictions.select(pl.col("output").fill_null(""), ref.fill_null("").alias("ref"))
    outs, refs = both["output"].to_list(), both["ref"].to_list()
    sc = scoring.score_all(outs, refs, task, cfg.thresholds())
    schema = {"prediction_id": pl.String, "pair_id": pl.String, "em": pl.Float64, "f1": pl.Float64,
              "rouge_l": pl.Float64, "correct": pl.Boolean}
    return pl.DataFrame({
        "prediction_id": predictions.get_column("prediction_id").to_list() if predictions.height else [],
        "pair_id": predictions.get_column("pair_id").to_list() if predictions.height else [],
        "em": [x.em for x in sc], "f1": [x.f1 for x in sc], "rouge_l": [x.rouge_l for x in sc],
        "correct": [x.correct for x in sc],
    }, schema=schema)
