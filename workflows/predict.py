"""Predict, score and categorise: a run's predictions on a slice split, stored with the run's
metrics (``scoring``), then pre-categorised into error categories so the Errors page, the
review queue and comparisons have something to show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store import runs as runs_store
from store.db import Project
from workflows import errors as errors_workflow


@dataclass(frozen=True)
class Predicted:
    run_id: str
    prediction_set_id: str
    categorised: dict[str, Any] | None  # workflows.errors.auto's summary; None when not asked


def predict_and_categorise(
    project: Project,
    run_ref: str,
    *,
    split: str = "eval",
    slice_ref: str | None = None,
    categorise: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **generation: Any,
) -> Predicted:
    """``training.predict.predict_run`` (``generation``: max_new_tokens, temperature, top_p,
    batch_size, limit, seed, perplexity, device, precision, decode, engine: default the project's), then ``workflows.errors.auto`` on the new set."""
    from scale.engine import for_project
    from training.predict import predict_run

    if generation.get("engine") is None:
        generation["engine"] = for_project(project)  # the project's engine (`tuneloop engine`), as every job
    with project.connect() as con:
        run_id = runs_store.get(con, run_ref).id  # an id, a name or an unambiguous id prefix
    psid = predict_run(project, run_id, split=split, slice_ref=slice_ref, progress=progress, **generation)
    summary = errors_workflow.auto(project, run_id, prediction_set=psid) if categorise else None
    return Predicted(run_id, psid, summary)
