"""The correction round: freeze the corrected slice of a run and train on it with the run's config.

The new slice's parent is the run's slice (``analysis.errors.retrain.plan``: corrected revisions
replace their parents on the same split side, rejected / needs-fix pairs drop out); the new run's
parent is the run, so lineage (slice v1 -> run A -> corrections -> slice v2 -> run B) is a query.
The new run starts through ``workflows.train.train``, so it predicts its eval split when it
succeeds, like any other run (config ``predict_after``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.errors.retrain import Plan
from store import runs as runs_store
from store.db import Project
from store.records import Run, Slice
from workflows import errors as errors_workflow


@dataclass(frozen=True)
class Retrained:
    parent: Run
    slice: Slice
    plan: Plan
    run_id: str


def retrain(
    project: Project,
    from_run: str,
    *,
    only_categories: Sequence[str] | None = None,
    upweight: float = 1.0,
    continue_adapter: bool = False,
    name: str = "",
    slice_name: str | None = None,
    overrides: Sequence[str] = (),
    author: str = "",
    wait: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Retrained:
    """Freeze the corrected slice of ``from_run`` and start a run on it with ``from_run``'s config
    (plus ``overrides``, ``key=value``). ``continue_adapter`` starts from the run's adapter instead
    of the base model. ``wait`` blocks until the new run ends. Raises ValueError when there is
    nothing to retrain on or no adapter to continue from."""
    from workflows.train import train

    with project.connect() as con:
        parent = runs_store.get(con, from_run)
    if continue_adapter and not parent.adapter_path:
        raise ValueError(f"run {from_run} has no adapter to continue from (status {parent.status}); "
                         "retrain from the base model instead")
    sl, plan = errors_workflow.freeze_corrected_slice(
        project, parent.id, only_categories=list(only_categories) if only_categories else None, upweight=upweight,
        name=slice_name, author=author)
    cfg_file: Path | None = Path(parent.run_dir) / "config.toml"
    cfg_overrides = list(overrides)
    if cfg_file is None or not cfg_file.exists():
        cfg_file = None
        cfg_overrides = [f"{k}={json.dumps(v)}" for k, v in parent.config.items()] + cfg_overrides
    run_id = train(project, sl.id, base_model=parent.base_model, config_path=cfg_file, overrides=cfg_overrides,
                   parent_run_id=parent.id, init_adapter=parent.adapter_path if continue_adapter else None,
                   name=name, author=author, wait=wait, progress=progress)
    return Retrained(parent, sl, plan, run_id)
