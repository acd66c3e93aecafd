"""A run's training dynamics -> dataset cartography -> quality signals (the step across stages).

``map_run`` loads the run folder's dynamics.jsonl into the store if that has not happened yet
(``training.runner.sync_dynamics``, the same load ``sync_run`` does for an ended run), maps the
run's train pairs (analysis/dynamics.py ``cartography``) and stores the flags as the quality
signals ``hard_to_learn`` and ``ambiguous`` (store/curation.py ``save_signals``, the path
``label_noise`` takes): they replace the previous flags of those revisions, so mapping a run
twice stores the same signals once. The step after training (workflows/train.py), the CLI
(``tuneloop dynamics RUN``) and the Explore page's "Data map" tab call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from analysis import dynamics as dyn
from store import curation as cur
from store import dynamics as dynamics_store
from store import runs as runs_store
from store.db import Project


@dataclass
class DataMap:
    run_id: str
    pairs: pl.DataFrame  # analysis.dynamics.cartography rows (+ instruction, response with text=True)
    counts: dict[str, int] = field(default_factory=dict)
    flagged: int = 0


def map_run(project: Project, run_ref: str, cfg: dyn.CartographyConfig | None = None, *, flag: bool = True,
            text: bool = False) -> DataMap:
    """The data map of one run; ``flag`` stores its flags as quality signals; ``text`` adds each pair's
    instruction and response (the trained revision's). Raises ValueError when the run has none."""
    from training.runfolder import RunFolder
    from training.runner import sync_dynamics

    with project.connect() as con:
        run = runs_store.get(con, run_ref)
    if run.run_dir and RunFolder(run.run_dir).dynamics_file.exists():
        sync_dynamics(project, run.id, RunFolder(run.run_dir))
    with project.connect() as con:
        rows = dynamics_store.frame_of(con, run.id)
    if rows.is_empty():
        raise ValueError(f"run {run.id} has no training dynamics (trained before they were recorded, or with "
                         "record_dynamics = false)")
    carto = dyn.cartography(rows, cfg)
    flagged = 0
    if flag:
        sig = dyn.signals(carto, run.id)
        with project.connect() as con:
            cur.save_signals(con, sig, carto["revision_id"].to_list(), list(dyn.NAMES))
        flagged = int(sig["flagged"].sum())
    if text:
        with project.connect() as con:
            words = dynamics_store.instructions(con, carto["revision_id"].to_list())
        carto = carto.join(words, on="revision_id", how="left", maintain_order="left")
    return DataMap(run.id, carto, dyn.region_counts(carto), flagged)
