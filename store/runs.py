"""Runs, their metrics, and prediction sets.

- A run row holds the current state (status, adapter path, summary); every status change is
  also appended to ``run_events`` in the same transaction.
- Training processes never open the database: they write their run folder, and whoever
  syncs it (CLI, app) calls ``set_status``/``add_metrics`` here.
- Run names are unique (an empty name aside): ``create`` refuses a name another run has, and
  ``free_name`` gives a generated default name a " (2)", " (3)"... suffix instead, so a name
  picks one run (``get`` by name) and two runs never look alike in a list.
- Predictions are immutable: a prediction pass is a new ``prediction_sets`` row with its
  rows written once in one transaction; nothing updates or deletes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import duckdb
import orjson
import polars as pl
import pyarrow as pa

from store.db import atomic, frame, one
from store.ids import content_id, event_id
from store.pairs import now
from store.records import Run, RunStatus
from store.refs import by_prefix

TERMINAL = {RunStatus.succeeded.value, RunStatus.failed.value, RunStatus.cancelled.value}
# Kinds of run that train in a run folder: supervised (train) or on preference pairs (dpo, orpo).
TRAINED_KINDS = frozenset({"train", "dpo", "orpo"})

_RUN_COLS = """id, name, kind, base_model, slice_id, slice_hash, parent_run_id, config, status, run_dir,
    adapter_path, error, summary, author, created_at, started_at, finished_at"""


def _to_run(r: tuple) -> Run:
    return Run(
        id=r[0], name=r[1], kind=r[2], base_model=r[3], slice_id=r[4], slice_hash=r[5], parent_run_id=r[6],
        config=orjson.loads(r[7]) if r[7] else {}, status=r[8], run_dir=r[9], adapter_path=r[10], error=r[11],
        summary=orjson.loads(r[12]) if r[12] else {}, author=r[13], created_at=r[14], started_at=r[15],
        finished_at=r[16],
    )


def new_run_id() -> str:
    return event_id("run_")


def free_name(con: duckdb.DuckDBPyConnection, name: str, *, default: str = "") -> str:
    """The name for a new run: ``name`` when given, and no run has it (else ValueError); when
    ``name`` is empty, ``default`` or, when taken, ``default (2)``, ``default (3)``...; '' stays ''."""
    name = name.strip()
    if name:
        _refuse_taken(con, name)
        return name
    if not default:
        return ""
    taken = {r[0] for r in con.execute("SELECT name FROM runs WHERE name = ? OR starts_with(name, ?)",
                                       [default, default + " ("]).fetchall()}
    n = 1
    while (candidate := default if n == 1 else f"{default} ({n})") in taken:
        n += 1
    return candidate


def _refuse_taken(con: duckdb.DuckDBPyConnection, name: str) -> None:
    row = one(con, "SELECT id FROM runs WHERE name = ? LIMIT 1", [name])
    if row is not None:
        raise ValueError(f"a run named {name!r} already exists ({row[0]}); pick another name")


def create(
    con: duckdb.DuckDBPyConnection,
    *,
    base_model: str,
    config: dict[str, Any],
    run_dir: str,
    kind: str = "train",
    run_id: str | None = None,
    slice_id: str | None = None,
    slice_hash: str | None = None,
    parent_run_id: str | None = None,
    name: str = "",
    author: str = "",
    status: RunStatus | str = RunStatus.queued,
) -> Run:
    """Record a new run. ``name`` must be free (ValueError otherwise; see ``free_name``)."""
    rid = run_id or new_run_id()
    ts = now()
    with atomic(con):
        if name:
            _refuse_taken(con, name)
        con.execute(
            f"INSERT INTO runs ({_RUN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?::JSON, ?, ?, NULL, NULL, NULL, ?, ?, NULL, NULL)",
            [rid, name, kind, base_model, slice_id, slice_hash, parent_run_id, orjson.dumps(config).decode(),
             str(status), run_dir, author, ts],
        )
        con.execute("INSERT INTO run_events VALUES (?, ?, ?, ?)", [rid, str(status), "created", ts])
    return get(con, rid)


def get(con: duckdb.DuckDBPyConnection, ref: str) -> Run:
    """A run by id, by name (the newest run of that name), or by an unambiguous id prefix."""
    row = one(
        con,
        f"SELECT {_RUN_COLS} FROM runs WHERE id = ? OR name = ? ORDER BY (id = ?) DESC, created_at DESC LIMIT 1",
        [ref, ref, ref],
    )
    if row is None:
        rid = by_prefix(con, "run", ref, "`tuneloop runs list` shows the runs")
        row = one(con, f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", [rid])
    assert row is not None
    return _to_run(row)


def list_runs(con: duckdb.DuckDBPyConnection, limit: int = 200, status: str | None = None) -> list[Run]:
    sql = f"SELECT {_RUN_COLS} FROM runs"
    params: list[Any] = []
    if status:
        sql += " WHERE status = ?"
        params.append(status)
    rows = con.execute(sql + " ORDER BY created_at DESC LIMIT ?", [*params, int(limit)]).fetchall()
    return [_to_run(r) for r in rows]


def set_status(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    status: RunStatus | str,
    *,
    message: str = "",
    error: str | None = None,
    adapter_path: str | None = None,
    summary: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Move a run to ``status`` (a terminal status is final) and log the event.

    ``at``: when the change happened (a run folder's event replayed later); default now.
    """
    status = str(RunStatus(status))
    ts = at or now()
    with atomic(con):
        cur = one(con, "SELECT status FROM runs WHERE id = ?", [run_id])
        if cur is None:
            raise KeyError(f"no run {run_id!r}")
        if cur[0] in TERMINAL and cur[0] != status:
            return  # nothing written: a terminal status is final
        con.execute(
            """UPDATE runs SET status = ?,
                   error = coalesce(?, error),
                   adapter_path = coalesce(?, adapter_path),
                   summary = coalesce(?::JSON, summary),
                   started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END,
                   finished_at = CASE WHEN ? IN ('succeeded', 'failed', 'cancelled') THEN ? ELSE finished_at END
               WHERE id = ?""",
            [status, error, adapter_path, orjson.dumps(summary).decode() if summary is not None else None,
             status, ts, status, ts, run_id],
        )
        if cur[0] != status or message:
            con.execute("INSERT INTO run_events VALUES (?, ?, ?, ?)", [run_id, status, message or (error or ""), ts])


def note(con: duckdb.DuckDBPyConnection, run_id: str, message: str) -> None:
    """Log ``message`` in the run's history under its current status, changing nothing else (e.g.
    what the step after training did: predicting, predictions stored, or why there are none)."""
    ts = now()
    with atomic(con):
        cur = one(con, "SELECT status FROM runs WHERE id = ?", [run_id])
        if cur is None:
            raise KeyError(f"no run {run_id!r}")
        con.execute("INSERT INTO run_events VALUES (?, ?, ?, ?)", [run_id, cur[0], message, ts])


def reopen(con: duckdb.DuckDBPyConnection, run_id: str, *, message: str = "resumed", at: datetime | None = None) -> None:
    """Put a failed or cancelled run back to queued to resume it (logged; a success stays final).
    ``at``: when it happened (a run folder's event replayed later); default now."""
    ts = at or now()
    with atomic(con):
        cur = one(con, "SELECT status FROM runs WHERE id = ?", [run_id])
        if cur is None:
            raise KeyError(f"no run {run_id!r}")
        if cur[0] == RunStatus.succeeded.value:
            raise ValueError(f"run {run_id} already succeeded; start a new run instead")
        con.execute("UPDATE runs SET status = ?, error = NULL, finished_at = NULL WHERE id = ?",
                    [RunStatus.queued.value, run_id])
        con.execute("INSERT INTO run_events VALUES (?, ?, ?, ?)", [run_id, RunStatus.queued.value, message, ts])


def events(con: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[str, str, Any]]:
    return [tuple(r) for r in con.execute(
        "SELECT status, message, created_at FROM run_events WHERE run_id = ? ORDER BY created_at", [run_id]
    ).fetchall()]


def add_metrics(con: duckdb.DuckDBPyConnection, run_id: str, rows: Iterable[tuple[int, str, float]]) -> int:
    """Record per-step metrics (loss, val_loss, lr, tokens_per_s, grad_norm, ...); re-sync safe."""
    rows = list(rows)
    if not rows:
        return 0
    tbl = pa.table({
        "run_id": [run_id] * len(rows),
        "step": [int(r[0]) for r in rows],
        "name": [str(r[1]) for r in rows],
        "value": [float(r[2]) for r in rows],
    })
    con.register("_m", tbl)
    try:
        con.execute(
            """INSERT OR REPLACE INTO run_metrics
               SELECT run_id, step, name, last(value), ? FROM _m GROUP BY run_id, step, name""",
            [now()],
        )
    finally:
        con.unregister("_m")
    return len(rows)


def metrics_frame(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Long frame (step, name, value) of a run's metrics, by step."""
    return frame(con, "SELECT step, name, value FROM run_metrics WHERE run_id = ? ORDER BY step, name", [run_id])


# ---------------------------------------------------------------- predictions

PREDICTION_COLUMNS = ["pair_id", "revision_id", "prompt", "output", "reference", "n_prompt_tokens",
                      "n_output_tokens", "finish_reason", "latency_ms", "label_logprob", "label_margin"]


def add_predictions(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    model: str,
    generation_config: dict[str, Any],
    rows: pl.DataFrame | Sequence[dict[str, Any]],
    slice_id: str | None = None,
    split: str | None = None,
) -> str:
    """Store one prediction pass (immutable) in one transaction; returns the prediction set id."""
    df = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(list(rows), infer_schema_length=None)
    missing = [c for c in ("pair_id", "revision_id", "prompt", "output") if c not in df.columns]
    if missing:
        raise ValueError(f"predictions need columns {missing}")
    defaults = {"reference": "", "n_prompt_tokens": 0, "n_output_tokens": 0, "finish_reason": "stop", "latency_ms": 0.0,
                "label_logprob": None, "label_margin": None}
    for col, val in defaults.items():
        if col not in df.columns:
            df = df.with_columns(pl.lit(val, dtype=pl.Float64 if val is None else None).alias(col))
    psid = event_id("ps_")
    ids = [content_id([psid, r], prefix="pr_") for r in df["revision_id"].to_list()]
    df = df.select(PREDICTION_COLUMNS).with_columns(
        pl.Series("id", ids), pl.lit(psid).alias("prediction_set_id"), pl.lit(run_id).alias("run_id"),
        pl.col("n_prompt_tokens").cast(pl.Int32), pl.col("n_output_tokens").cast(pl.Int32),
        pl.col("latency_ms").cast(pl.Float64), pl.col("label_logprob").cast(pl.Float64),
        pl.col("label_margin").cast(pl.Float64),
    )
    ts = now()
    with atomic(con):
        con.execute(
            "INSERT INTO prediction_sets VALUES (?, ?, ?, ?, ?, ?::JSON, ?, ?)",
            [psid, run_id, slice_id, split, model, orjson.dumps(generation_config).decode(), df.height, ts],
        )
        con.register("_preds", df.to_arrow())
        con.execute(
            """INSERT INTO predictions (id, prediction_set_id, run_id, pair_id, revision_id, prompt, output, reference,
                   n_prompt_tokens, n_output_tokens, finish_reason, latency_ms, label_logprob, label_margin,
                   created_at)
               SELECT id, prediction_set_id, run_id, pair_id, revision_id, prompt, output, reference,
                   n_prompt_tokens, n_output_tokens, finish_reason, latency_ms, label_logprob, label_margin, ?
               FROM _preds""",
            [ts],
        )
        con.unregister("_preds")
    return psid


def prediction_sets(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    return frame(
        con,
        """SELECT id, run_id, slice_id, split, model, generation_config::VARCHAR AS generation_config, n, created_at
           FROM prediction_sets WHERE run_id = ? ORDER BY created_at""",
        [run_id],
    )


def prediction_set(con: duckdb.DuckDBPyConnection, prediction_set_id: str) -> dict[str, Any] | None:
    """One prediction set's row (run, slice, split, model, generation_config JSON text, n) or None."""
    row = one(
        con,
        """SELECT id, run_id, slice_id, split, model, generation_config::VARCHAR, n, created_at
           FROM prediction_sets WHERE id = ?""",
        [prediction_set_id],
    )
    if row is None:
        return None
    keys = ("id", "run_id", "slice_id", "split", "model", "generation_config", "n", "created_at")
    return dict(zip(keys, row))


def resolve_prediction_set(con: duckdb.DuckDBPyConnection, ref: str) -> str:
    """The full id of the prediction set ``ref`` names: its id or an unambiguous prefix of it."""
    return by_prefix(con, "prediction set", ref, "`tuneloop runs show RUN` lists a run's prediction sets")


def task_references(con: duckdb.DuckDBPyConnection, prediction_set_id: str) -> list[str]:
    """The references that decide a prediction set's task kind (``scoring.task_of_predictions``): every
    response of the set's slice (train and eval), else of its run's slice; [] when neither has one."""
    row = one(con, """SELECT coalesce(s.slice_id, r.slice_id) FROM prediction_sets s JOIN runs r ON r.id = s.run_id
                      WHERE s.id = ?""", [prediction_set_id])
    if row is None or row[0] is None:
        return []
    from store.slices import references

    return references(con, row[0])


def latest_prediction_set(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    row = one(con, "SELECT id FROM prediction_sets WHERE run_id = ? ORDER BY created_at DESC LIMIT 1", [run_id])
    return row[0] if row else None


def predictions_frame(
    con: duckdb.DuckDBPyConnection, prediction_set_id: str, *, limit: int | None = None, offset: int = 0
) -> pl.DataFrame:
    """Predictions of one pass with the pair's provenance, ordered by pair id."""
    lim = "" if limit is None else f" LIMIT {int(limit)} OFFSET {int(offset)}"
    return frame(
        con,
        f"""SELECT x.id AS prediction_id, x.pair_id, x.revision_id, x.prompt, x.output, x.reference,
                   x.n_prompt_tokens, x.n_output_tokens, x.finish_reason, x.latency_ms, x.label_logprob,
                   x.label_margin, r.instruction, r.input, r.response, r.tags, p.document_id, p.char_start, p.char_end,
                   p.generator, p.source_uri
            FROM predictions x JOIN pair_revisions r ON r.id = x.revision_id JOIN pairs p ON p.id = x.pair_id
            WHERE x.prediction_set_id = ? ORDER BY x.pair_id{lim}""",
        [prediction_set_id],
    )


def save_metrics(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    prediction_set_id: str,
    rows: Iterable[tuple[str, str, float]],
    slice_id: str | None = None,
) -> int:
    """Store (scope, name, value) metrics of one prediction set; recomputing replaces them."""
    rows = [(str(s), str(n), float(v)) for s, n, v in rows]
    ts = now()
    with atomic(con):
        con.execute("DELETE FROM metrics WHERE prediction_set_id = ?", [prediction_set_id])
        if rows:
            con.executemany(
                "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)",
                [[run_id, prediction_set_id, slice_id, s, n, v, ts] for s, n, v in rows],
            )
    return len(rows)


def metrics_of(con: duckdb.DuckDBPyConnection, prediction_set_id: str) -> pl.DataFrame:
    return frame(
        con, "SELECT scope, name, value FROM metrics WHERE prediction_set_id = ? ORDER BY scope, name",
        [prediction_set_id],
    )


def overall_metric(con: duckdb.DuckDBPyConnection, prediction_set_id: str, name: str) -> float | None:
    """One stored ``overall`` metric of a prediction set (``None`` when it was never stored)."""
    row = one(con, "SELECT value FROM metrics WHERE prediction_set_id = ? AND scope = 'overall' AND name = ?",
              [prediction_set_id, name])
    return float(row[0]) if row else None


# ---------------------------------------------------------------- overviews for the app


def overview(con: duckdb.DuckDBPyConnection, limit: int = 100) -> pl.DataFrame:
    """Runs with their slice name and latest logged loss/val loss, newest first."""
    return frame(
        con,
        """SELECT r.id, r.name, r.kind, r.status, r.base_model, s.name AS slice, r.parent_run_id,
                  r.created_at, r.started_at, r.finished_at,
                  (SELECT arg_max(value, step) FROM run_metrics m WHERE m.run_id = r.id AND m.name = 'loss') AS loss,
                  (SELECT arg_max(value, step) FROM run_metrics m WHERE m.run_id = r.id AND m.name = 'val_loss')
                    AS val_loss,
                  (SELECT count(*) FROM predictions x WHERE x.run_id = r.id) AS predictions
           FROM runs r LEFT JOIN slices s ON s.id = r.slice_id ORDER BY r.created_at DESC LIMIT ?""",
        [int(limit)],
    )


def runs_of_slice(con: duckdb.DuckDBPyConnection, slice_id: str) -> list[tuple[str, str, str]]:
    """(id, name, status) of the runs trained on a slice, newest first."""
    return [(r[0], r[1], r[2]) for r in con.execute(
        "SELECT id, name, status FROM runs WHERE slice_id = ? ORDER BY created_at DESC", [slice_id]).fetchall()]


def runs_to_predict(con: duckdb.DuckDBPyConnection, limit: int = 100) -> list[Run]:
    """Succeeded runs without a prediction set yet, newest first (what "Predict on" offers)."""
    rows = con.execute(
        f"""SELECT {_RUN_COLS} FROM runs r WHERE status = ?
                AND NOT EXISTS (SELECT 1 FROM prediction_sets ps WHERE ps.run_id = r.id)
            ORDER BY created_at DESC LIMIT ?""", [RunStatus.succeeded.value, int(limit)]).fetchall()
    return [_to_run(r) for r in rows]


def runs_with_predictions(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, str, int]]:
    """(run id, run name, status, latest prediction set id, its size) of runs that have predictions."""
    return [tuple(r) for r in con.execute(  # type: ignore[misc]
        """SELECT r.id, r.name, r.status, arg_max(ps.id, ps.created_at), arg_max(ps.n, ps.created_at)
           FROM runs r JOIN prediction_sets ps ON ps.run_id = r.id
           GROUP BY r.id, r.name, r.status, r.created_at ORDER BY r.created_at DESC"""
    ).fetchall()]
