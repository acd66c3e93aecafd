"""The errors stage over a project: load a run's predictions, categorise, score, compare, freeze the
corrected slice. What the CLI and the app both call.

Each function reads through ``store`` in short-lived connections, runs the pure functions of
``analysis.errors`` and ``scoring`` with no connection open, and writes back in one short
transaction. Nothing here trains or generates: retraining is ``workflows.retrain``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis.errors import categorise as cat
from analysis.errors import metrics as met
from analysis.errors import queue as queue_mod
from analysis.errors import retrain as retrain_mod
from analysis.errors.compare import Comparison, compare
from analysis.errors.taxonomy import DEFAULT_CATEGORIES, find
from store import errors as errors_store
from store import runs as runs_store
from store import slices as slices_store
from store.db import Project
from store.records import ErrorCategory, Run, Slice


def ensure_taxonomy(project: Project) -> list[ErrorCategory]:
    with project.connect() as con:
        errors_store.ensure_categories(con, DEFAULT_CATEGORIES)
        return errors_store.categories(con)


def category_id(project: Project, ref: str) -> str:
    return find(ensure_taxonomy(project), ref).id


@dataclass(frozen=True)
class RunPredictions:
    run: Run
    prediction_set_id: str
    predictions: pl.DataFrame  # store.errors.predictions_with_source columns


def load(project: Project, run_ref: str, prediction_set: str | None = None) -> RunPredictions:
    """A run's newest prediction set on the eval split (else its newest set, or ``prediction_set``)
    with source texts. Eval first: a later pass over the train split (to find bad training
    labels) must not replace the eval predictions that metrics and comparisons are about."""
    with project.connect() as con:
        run = runs_store.get(con, run_ref)
        psid = prediction_set
        if psid is None:
            sets = runs_store.prediction_sets(con, run.id)
            evals = sets.filter(sets["split"] == "eval")
            psid = (evals if evals.height else sets)["id"][-1] if sets.height else None
        if psid is None:
            raise ValueError(f"run {run_ref!r} has no predictions yet; run `tuneloop predict --run {run_ref}` first")
        preds = errors_store.predictions_with_source(con, psid)
    return RunPredictions(run, psid, preds)


def _slice_labels(project: Project, rp: RunPredictions) -> list[str]:
    """References of the prediction set's whole slice (train side too): they decide the task kind and
    the label set, exactly as when the run's metrics were stored (``store.runs.task_references``)."""
    with project.connect() as con:
        return runs_store.task_references(con, rp.prediction_set_id)


def auto(project: Project, run_ref: str, cfg: cat.CategoriseConfig | None = None, *, author: str = "auto",
         prediction_set: str | None = None) -> dict[str, Any]:
    """Pre-categorise a run's predictions; appends auto labels (re-running is a no-op)."""
    ensure_taxonomy(project)
    rp = load(project, run_ref, prediction_set)
    proposals, task = cat.categorise(rp.predictions, cfg, labels=_slice_labels(project, rp))
    with project.connect() as con:
        added = errors_store.add_auto_labels(con, proposals, author=author)
    counts = proposals.group_by("category_id").len().sort("len", descending=True)
    return {"run_id": rp.run.id, "prediction_set_id": rp.prediction_set_id, "predictions": rp.predictions.height,
            "task": task.kind, "labels_added": added, "proposals": proposals.height,
            "by_category": dict(zip(counts["category_id"].to_list(), counts["len"].to_list()))}


def labels(project: Project, rp: RunPredictions, *, include_rejected: bool = False) -> pl.DataFrame:
    with project.connect() as con:
        return errors_store.current_labels(con, rp.prediction_set_id, include_rejected=include_rejected)


def ensure_labels(project: Project, run_ref: str) -> RunPredictions:
    """The run's predictions, categorised automatically first if they never were."""
    rp = load(project, run_ref)
    with project.connect() as con:
        n = errors_store.labelled_sets(con, rp.prediction_set_id)
    if n == 0:
        auto(project, run_ref, prediction_set=rp.prediction_set_id)
    return rp


def task(project: Project, rp: RunPredictions) -> cat.Task:
    return cat.prediction_task(rp.predictions, _slice_labels(project, rp))


def names(project: Project) -> dict[str, str]:
    return {c.id: c.name for c in ensure_taxonomy(project)} | {met.ANY: met.ANY}


@dataclass
class RunMetrics:
    run: Run
    prediction_set_id: str
    task: str
    accuracy: dict[str, float]
    overall: pl.DataFrame
    by_document: pl.DataFrame
    by_tag: pl.DataFrame
    by_slice: pl.DataFrame
    confusion: pl.DataFrame | None
    most_confused: pl.DataFrame | None


def run_metrics(project: Project, run_ref: str) -> RunMetrics:
    rp = ensure_labels(project, run_ref)
    lab = labels(project, rp)
    with project.connect() as con:
        member = errors_store.slice_membership(con, rp.prediction_set_id)
    nm = names(project)
    t = task(project, rp)
    scored = cat.score_predictions(rp.predictions, t)
    p = rp.predictions.with_columns(pl.coalesce(pl.col("document_id"), pl.col("source_uri")).alias("document"))
    slices_of = member.group_by("pair_id").agg(pl.col("slice"))
    p = p.join(slices_of, on="pair_id", how="left")
    conf = mc = None
    if t.is_label:
        conf = met.confusion(rp.predictions["reference"].to_list(), rp.predictions["output"].to_list(), t)
        mc = met.most_confused(conf)
    return RunMetrics(
        rp.run, rp.prediction_set_id, t.kind, met.accuracy(scored),
        met.rates(p, lab, names=nm), met.rates(p, lab, by="document", names=nm), met.rates(p, lab, by="tags", names=nm),
        met.rates(p, lab, by="slice", names=nm), conf, mc,
    )


def save_category_metrics(project: Project, m: RunMetrics) -> int:
    """Store the per-category rates in the ``metrics`` table (scope ``category:<id>``)."""
    rows = []
    for r in m.overall.iter_rows(named=True):
        scope = "errors" if r["category_id"] == met.ANY else f"category:{r['category_id']}"
        rows += [(scope, "error_rate", r["rate"]), (scope, "error_rate_lo", r["lo"]), (scope, "error_rate_hi", r["hi"]),
                 (scope, "error_count", r["k"])]
    with project.connect() as con:
        existing = runs_store.metrics_of(con, m.prediction_set_id)
        keep = [(s, n, v) for s, n, v in existing.iter_rows() if not (s == "errors" or s.startswith("category:"))]
        return runs_store.save_metrics(con, run_id=m.run.id, prediction_set_id=m.prediction_set_id,
                                       rows=keep + rows, slice_id=m.run.slice_id)


def compare_runs(project: Project, run_a: str, run_b: str) -> Comparison:
    a, b = ensure_labels(project, run_a), ensure_labels(project, run_b)
    return compare(a.predictions, labels(project, a), b.predictions, labels(project, b), names=names(project))


def report_input(project: Project, run_ref: str, vs: str | None = None, title: str | None = None):
    """What ``analysis.errors.report`` renders for ``tuneloop report`` and the Compare page: the run's
    metrics (and ``vs``'s, with the comparison) and each run's evaluation section."""
    from analysis.errors import report
    from workflows.judge import evaluation_report

    inp = report.ReportInput(title=title or (f"Errors: {run_ref} vs {vs}" if vs else f"Errors of run {run_ref}"),
                             run_a=run_ref, metrics_a=run_metrics(project, run_ref))
    if vs:
        inp.run_b, inp.metrics_b, inp.comparison = vs, run_metrics(project, vs), compare_runs(project, run_ref, vs)
    inp.evaluation = (evaluation_report(project, vs, run_ref) + evaluation_report(project, run_ref) if vs
                      else evaluation_report(project, run_ref))
    return inp


def accuracy_of(project: Project, run_ref: str, prediction_set: str | None = None) -> dict[str, float]:
    """Accuracy with its Wilson interval of a run's newest eval prediction set (or ``prediction_set``)."""
    rp = load(project, run_ref, prediction_set)
    return met.accuracy(cat.score_predictions(rp.predictions, task(project, rp)))


def review_queue(project: Project, run_ref: str, *, category: str | None = None, limit: int = 50) -> pl.DataFrame:
    rp = ensure_labels(project, run_ref)
    cid = category_id(project, category) if category else None
    scored = cat.score_predictions(rp.predictions, task(project, rp))
    return queue_mod.priority(rp.predictions, labels(project, rp), scored, category=cid).head(limit)


def freeze_corrected_slice(
    project: Project,
    run_ref: str,
    *,
    only_categories: list[str] | None = None,
    upweight: float = 1.0,
    name: str | None = None,
    author: str = "",
) -> tuple[Slice, retrain_mod.Plan]:
    """Freeze the corrected slice of a run's slice (parent = that slice); see ``retrain.plan``."""
    cats = [category_id(project, c) for c in only_categories] if only_categories else None
    with project.connect() as con:
        run = runs_store.get(con, run_ref)
        if not run.slice_id:
            raise ValueError(f"run {run_ref!r} has no slice to correct (a baseline run?); train on a slice first")
        parent = slices_store.get(con, run.slice_id)
        items = slices_store.items(con, parent.id)
        states = errors_store.pair_states(con, [i.pair_id for i in items])
    pl_ = retrain_mod.plan(items, states, only_categories=cats, upweight=upweight)
    if not pl_.replaced and not pl_.dropped:
        raise ValueError(f"nothing to retrain on: no pair of slice {parent.name}@{parent.version} was corrected or "
                         "marked bad since; correct errors first (`tuneloop errors correct ...`)")
    desc = (f"corrected from run {run.name or run.id}: {len(pl_.replaced)} corrected, {len(pl_.dropped)} dropped"
            + (f", {len(pl_.upweighted)} upweighted x{upweight}" if pl_.upweighted else ""))
    with project.connect() as con:
        s = slices_store.freeze(
            con, name or parent.name, pl_.items,
            filter={"corrected_from_run": run.id, "only_categories": cats, "upweight": upweight},
            seed=parent.seed, eval_fraction=parent.eval_fraction, split_by="existing", parent_id=parent.id,
            description=desc, author=author,
        )
    return s, pl_


def discover(project: Project, run_ref: str, *, k: int | None = None, seed: int = 0,
             use_embeddings: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cluster a run's failing predictions (any current category, or incorrect by the metric)."""
    from analysis.errors import discovery

    rp = ensure_labels(project, run_ref)
    lab = labels(project, rp)
    scored = cat.score_predictions(rp.predictions, task(project, rp))
    per = lab.group_by("prediction_id").agg(pl.col("category").sort().str.join(", ").alias("categories"))
    failing = (rp.predictions.join(per, on="prediction_id", how="left")
               .join(scored.select("prediction_id", "correct"), on="prediction_id", how="left")
               .filter(pl.col("categories").is_not_null() | ~pl.col("correct"))
               .select("prediction_id", "pair_id", "prompt", "output", pl.col("categories").fill_null("")))
    special = _special_tokens(rp.run)
    vectors = None
    if use_embeddings:
        vectors = _embed(discovery.texts_of(failing, special)) if failing.height >= 2 else None
    return discovery.discover(failing, vectors, k=k, seed=seed, special_tokens=special)


def _special_tokens(run: Run) -> list[str]:
    """The special tokens of the tokenizer the run predicted with, where a folder of it is at hand
    (the run's adapter or model folder, or a local base model); else none, and discovery strips
    the common template markers only."""
    from pathlib import Path

    from models.lm import special_tokens

    for folder in (run.adapter_path, run.base_model):
        if folder and Path(folder).is_dir() and (found := special_tokens(folder)):
            return found
    return []


def _embed(texts: list[str]):
    """Sentence embeddings of the bundled MiniLM (models/embeddings.py); None (TF-IDF) when it is
    not installed."""
    try:
        from models.embeddings import Encoder

        return Encoder().encode(texts)
    except (ImportError, FileNotFoundError):
        return None
