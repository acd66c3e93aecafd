"""Standard-benchmark results (lm-evaluation-harness) per run: append-only rows.

- One evaluation pass of one benchmark on one run is a set of rows (one per metric) written in one
  transaction; a later pass adds rows, nothing is updated. Readers take the newest pass per
  (run, benchmark, limit).
- The base model's scores live on a ``kind="baseline"`` run of that base, so a run's "general
  ability" delta is a comparison of two runs' rows (see ``analysis/benchmarks.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from store.db import atomic
from store.ids import event_id
from store.pairs import now
from store.records import BenchmarkResult

_COLS = """id, run_id, benchmark, task, metric, value, stderr, n, "limit", num_fewshot, harness_version,
    seconds, created_at"""


def _to_result(r: tuple) -> BenchmarkResult:
    return BenchmarkResult(id=r[0], run_id=r[1], benchmark=r[2], task=r[3], metric=r[4], value=r[5], stderr=r[6],
                           n=r[7], limit=r[8], num_fewshot=r[9], harness_version=r[10], seconds=r[11],
                           created_at=r[12])


def add_results(con: duckdb.DuckDBPyConnection, rows: Iterable[BenchmarkResult]) -> list[BenchmarkResult]:
    """Store one evaluation pass (ids and times are given here); returns the stored records."""
    ts = now()
    out = [r.model_copy(update={"id": event_id("bres_"), "created_at": ts}) for r in rows]
    with atomic(con):
        for r in out:
            con.execute(f"INSERT INTO benchmark_results ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [r.id, r.run_id, r.benchmark, r.task, r.metric, r.value, r.stderr, r.n, r.limit,
                         r.num_fewshot, r.harness_version, r.seconds, r.created_at])
    return out


def results(con: duckdb.DuckDBPyConnection, run_id: str, *, limit: int | None = None,
            any_limit: bool = True) -> list[BenchmarkResult]:
    """The newest pass of each benchmark and metric on ``run_id``: every limit when ``any_limit``,
    else only passes run with this ``limit`` (None: the whole set)."""
    sql = f"""SELECT {_COLS} FROM benchmark_results WHERE run_id = ?"""
    params: list = [run_id]
    if not any_limit:
        sql += ' AND "limit" IS NOT DISTINCT FROM ?'
        params.append(limit)
    sql += """ QUALIFY row_number() OVER (PARTITION BY benchmark, metric, "limit" ORDER BY created_at DESC, id DESC) = 1
               ORDER BY benchmark, metric, "limit" NULLS FIRST"""
    return [_to_result(r) for r in con.execute(sql, params).fetchall()]


def baseline_with(con: duckdb.DuckDBPyConnection, base_model: str, benchmark: str, limit: int | None) -> str | None:
    """The newest baseline run of ``base_model`` that has ``benchmark`` scored with ``limit``, or None."""
    row = con.execute(
        """SELECT b.run_id FROM benchmark_results b JOIN runs r ON r.id = b.run_id
           WHERE r.kind = 'baseline' AND r.base_model = ? AND b.benchmark = ? AND b."limit" IS NOT DISTINCT FROM ?
           ORDER BY b.created_at DESC LIMIT 1""", [base_model, benchmark, limit]).fetchone()
    return row[0] if row else None


def baselines_of(con: duckdb.DuckDBPyConnection, base_model: str) -> list[str]:
    """Baseline runs of ``base_model`` with benchmark results, newest first."""
    rows = con.execute(
        """SELECT b.run_id, max(b.created_at) AS t FROM benchmark_results b JOIN runs r ON r.id = b.run_id
           WHERE r.kind = 'baseline' AND r.base_model = ? GROUP BY b.run_id ORDER BY t DESC""",
        [base_model]).fetchall()
    return [r[0] for r in rows]
