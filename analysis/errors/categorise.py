"""Automatic pre-categorisation of a prediction set.

``categorise`` runs every rule detector, the metric check and the grounding check on each
prediction and returns one proposal row per (prediction, category) it found: several
categories per prediction are allowed, and each row carries the detector's
``name@version``, a confidence and the evidence. The store appends these as ``auto``
labels; reviewers' decisions sit beside them and win when read (see ``store.errors``).

The task type decides which checks apply: a *label-like* task (short references drawn from
a small set, e.g. intents) gets the label-set and wrong-label checks; free text gets the
F1/ROUGE-L, length and grounding checks. ``infer_task`` guesses it from the references;
``CategoriseConfig.task`` overrides the guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
from pydantic import ConfigDict

from analysis.errors import text
from analysis.errors.detectors import DETECTORS, Case, DetectorConfig

PROPOSAL_SCHEMA = {
    "prediction_id": pl.String, "pair_id": pl.String, "category_id": pl.String, "detector": pl.String,
    "confidence": pl.Float64, "evidence": pl.String,
}


class CategoriseConfig(DetectorConfig):
    model_config = ConfigDict(extra="forbid")

    task: str = "auto"  # auto, label or text
    detectors: list[str] | None = None  # names to run (default: all)
    label_max_words: int = 6


@dataclass(frozen=True)
class Task:
    kind: str  # label or text
    labels: frozenset[str] | None
    expect_json: bool


def infer_task(references: Sequence[str], cfg: CategoriseConfig | None = None) -> Task:
    """Label-like when references are short and repeat (at most half as many labels as rows)."""
    cfg = cfg or CategoriseConfig()
    refs = [r for r in references if r and r.strip()]
    expect_json = bool(refs) and sum(text.looks_like_json(r) for r in refs) >= 0.8 * len(refs)
    labels = frozenset(text.normalize_label(r) for r in refs)
    if cfg.task == "text" or not refs:
        return Task("text", None, expect_json)
    # words as written: an identifier label ("balance_not_updated_after_cheque_or_cash_deposit")
    # is one word however many parts it has
    short = all(len(r.split()) <= cfg.label_max_words and "\n" not in r.strip() for r in refs)
    if cfg.task == "label" or (short and not expect_json and len(labels) <= max(2, len(refs) // 2)):
        return Task("label", labels, False)
    return Task("text", None, expect_json)


def task_of(predictions: pl.DataFrame, labels: Sequence[str] | None = None,
            cfg: CategoriseConfig | None = None) -> Task:
    """The task of a prediction set: read from ``labels`` (the slice's references) when given,
    else from the predictions' references; a label task's set includes both."""
    refs = [r or "" for r in predictions.get_column("reference").to_list()] if predictions.height else []
    task = infer_task(list(labels) if labels else refs, cfg)
    if task.labels is not None:
        task = Task(task.kind, task.labels | {text.normalize_label(r) for r in refs if r.strip()}, task.expect_json)
    return task


def case_of(row: dict, task: Task) -> Case:
    reference = row.get("reference") or row.get("response") or ""
    return Case(
        output=row.get("output") or "",
        reference=reference,
        # the question as the user wrote it (instruction + input), not the chat-template rendering
        prompt="\n".join(x for x in (row.get("instruction"), row.get("input")) if x) or row.get("prompt") or "",
        finish_reason=row.get("finish_reason") or "stop",
        source=row.get("source_text") or "",
        label_set=task.labels,
        expect_json=task.expect_json,
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
    task = task_of(predictions, labels, cfg)
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
    """Per prediction: em, f1, rouge_l and ``correct`` (label tasks: the normalised label matches;
    text: EM, or F1/ROUGE-L at or above the thresholds)."""
    cfg = cfg or CategoriseConfig()
    out = []
    for row in predictions.iter_rows(named=True):
        ref = row.get("reference") or row.get("response") or ""
        s = text.scores(row.get("output") or "", ref)
        if task.kind == "label":
            correct = text.normalize_label(row.get("output") or "") == text.normalize_label(ref)
        else:
            correct = bool(s["em"]) or s["f1"] >= cfg.f1_threshold or s["rouge_l"] >= cfg.rouge_threshold
        out.append({"prediction_id": row["prediction_id"], "pair_id": row["pair_id"], **s, "correct": correct})
    schema = {"prediction_id": pl.String, "pair_id": pl.String, "em": pl.Float64, "f1": pl.Float64,
              "rouge_l": pl.Float64, "correct": pl.Boolean}
    return pl.DataFrame(out, schema=schema)
