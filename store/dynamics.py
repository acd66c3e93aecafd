"""Training dynamics of runs: each train pair's loss and confidence per epoch.

- A row is (run, pair, epoch): the mean cross-entropy of the pair's target tokens and the
  confidence exp(-that loss), as the trainer measured them during that epoch (training/train.py
  writes them to the run folder's dynamics.jsonl; ``training.runner.sync_run`` loads them here).
- Immutable per run, like predictions: ``save`` adds only the (run, pair, epoch) rows the store
  does not have yet, so re-syncing a run is a no-op. Within one batch of rows the last row of a
  key wins (a resumed run repeats the steps after its checkpoint; the later pass is the one that
  counted).
- What the rows mean (cartography regions, flags) is analysis/dynamics.py; the flags are stored
  as ordinary quality signals (store/curation.py ``save_signals``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from store.db import atomic, frame, scalar

COLUMNS = ("run_id", "pair_id", "revision_id", "epoch", "step", "loss", "confidence")


def save(con: duckdb.DuckDBPyConnection, run_id: str, rows: Iterable[dict[str, Any]]) -> int:
    """Add the rows (dicts with pair_id, revision_id, epoch, step, loss, confidence) the store does
    not have yet for ``run_id``; rows without a pair id or with a non-finite value are skipped.
    Returns how many rows were added. Own transaction (joins a caller's)."""
    keep: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        try:
            loss, conf = float(r["loss"]), float(r["confidence"])
        except (KeyError, TypeError, ValueError):
            continue
        if not r.get("pair_id") or loss != loss or conf != conf:
            continue
        keep[(str(r["pair_id"]), int(r.get("epoch") or 0))] = {**r, "loss": loss, "confidence": conf}
    if not keep:
        return 0
    vals = list(keep.values())
    tbl = pa.table({
        "run_id": [run_id] * len(vals),
        "pair_id": [str(r["pair_id"]) for r in vals],
        "revision_id": [str(r.get("revision_id") or "") for r in vals],
        "epoch": pa.array([int(r.get("epoch") or 0) for r in vals], pa.int32()),
        "step": pa.array([int(r.get("step") or 0) for r in vals], pa.int32()),
        "loss": [r["loss"] for r in vals],
        "confidence": [r["confidence"] for r in vals],
    })
    with atomic(con):
        before = int(scalar(con, "SELECT count(*) FROM training_dynamics WHERE run_id = ?", [run_id]))
        con.register("_dyn", tbl)
        try:
            con.execute(f"INSERT INTO training_dynamics SELECT {', '.join(COLUMNS)} FROM _dyn "
                        "ON CONFLICT DO NOTHING")
        finally:
            con.unregister("_dyn")
        return int(scalar(con, "SELECT count(*) FROM training_dynamics WHERE run_id = ?", [run_id])) - before


def frame_of(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Every row of one run (pair_id, revision_id, epoch, step, loss, confidence), by pair then epoch."""
    return frame(con,
        """SELECT pair_id, revision_id, epoch, step, loss, confidence FROM training_dynamics
           WHERE run_id = ? ORDER BY pair_id, epoch""", [run_id])


def count(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    return int(scalar(con, "SELECT count(*) FROM training_dynamics WHERE run_id = ?", [run_id]))


def runs_with_dynamics(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int, int]]:
    """(run id, run name, pairs, epochs) of the runs that have training dynamics, newest first."""
    return [tuple(r) for r in con.execute(  # type: ignore[misc]
        """SELECT r.id, coalesce(r.name, ''), count(DISTINCT d.pair_id), max(d.epoch) + 1
           FROM runs r JOIN training_dynamics d ON d.run_id = r.id
           GROUP BY r.id, r.name, r.created_at ORDER BY r.created_at DESC"""
    ).fetchall()]


def instructions(con: duckdb.DuckDBPyConnection, revision_ids: list[str]) -> pl.DataFrame:
    """(revision_id, instruction, response) of the given revisions (the text a run trained on)."""
    con.register("_rids", pa.table({"rid": pa.array(list(revision_ids), pa.string())}))
    try:
        return frame(con, """SELECT r.id AS revision_id, r.instruction, r.response FROM pair_revisions r
                             WHERE r.id IN (SELECT rid FROM _rids)""")
    finally:
        con.unregister("_rids")
