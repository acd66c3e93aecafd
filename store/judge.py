"""An LLM judge's rubric scores of predictions and pair responses (``analysis/judge.py``).

``judge_scores`` is a log: a judging pass inserts rows, nothing is updated. The score that counts
for a (target, judge, rubric, criterion) is its latest row; a new rubric version or another judge
gives other rows beside it, never instead of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl
import pyarrow as pa

from store.db import atomic, frame
from store.ids import event_id
from store.pairs import now

TARGET_KINDS = ("prediction", "revision")


@dataclass(frozen=True)
class JudgeRow:
    target_kind: str
    target_id: str
    pair_id: str
    criterion: str
    score: int | None
    reason: str


def add(con: duckdb.DuckDBPyConnection, rows: Sequence[JudgeRow], *, judge: str, rubric: str, author: str = "") -> int:
    """Store one judging pass's rows in one transaction; returns how many."""
    bad = sorted({r.target_kind for r in rows} - set(TARGET_KINDS))
    if bad:
        raise ValueError(f"target_kind {bad[0]!r}: use {' or '.join(TARGET_KINDS)}")
    if not rows:
        return 0
    ts = now()
    table = pa.table({
        "id": [event_id("js_") for _ in rows], "target_kind": [r.target_kind for r in rows],
        "target_id": [r.target_id for r in rows], "pair_id": [r.pair_id for r in rows],
        "criterion": [r.criterion for r in rows], "score": pa.array([r.score for r in rows], pa.int32()),
        "reason": [r.reason for r in rows],
    })
    with atomic(con):
        con.register("_judged", table)
        con.execute("""INSERT INTO judge_scores (id, target_kind, target_id, pair_id, judge, rubric, criterion, score,
                                                 reason, created_at, author)
                       SELECT id, target_kind, target_id, pair_id, ?, ?, criterion, score, reason, ?, ? FROM _judged""",
                    [judge, rubric, ts, author])
        con.unregister("_judged")
    return len(rows)


_LATEST = """SELECT target_kind, target_id, pair_id, judge, rubric, criterion, score, reason, created_at FROM (
                 SELECT *, row_number() OVER (PARTITION BY target_id, judge, rubric, criterion
                                              ORDER BY created_at DESC, id DESC) AS _rn
                 FROM judge_scores {where})
             WHERE _rn = 1"""


def latest(con: duckdb.DuckDBPyConnection, target_ids: Sequence[str] | None = None, *, target_kind: str | None = None,
           judge: str | None = None) -> pl.DataFrame:
    """The scores that count (latest per target, judge, rubric and criterion), optionally only of
    ``target_ids``, one ``target_kind`` or one ``judge``; ordered by target and criterion."""
    conds, params = [], []
    if target_kind:
        conds.append("target_kind = ?")
        params.append(target_kind)
    if judge:
        conds.append("judge = ?")
        params.append(judge)
    if target_ids is not None:
        con.register("_targets", pa.table({"tid": pa.array(list(target_ids), pa.string())}))
        conds.append("target_id IN (SELECT tid FROM _targets)")
    where = ("WHERE " + " AND ".join(conds)) if conds else ""
    try:
        return frame(con, _LATEST.format(where=where) + " ORDER BY target_id, judge, rubric, criterion", params)
    finally:
        if target_ids is not None:
            con.unregister("_targets")


def responses(con: duckdb.DuckDBPyConnection, *, rated_only: bool = False) -> pl.DataFrame:
    """Pairs' current responses to judge: revision_id, pair_id, instruction, input, response and
    source_text (``store.errors.SOURCE_TEXT_SQL``); with ``rated_only`` only revisions a reviewer rated."""
    from store.errors import SOURCE_TEXT_SQL

    where = "WHERE r.id IN (SELECT revision_id FROM ratings WHERE value IS NOT NULL)" if rated_only else ""
    return frame(con, f"""SELECT r.id AS revision_id, p.id AS pair_id, r.instruction, r.input, r.response,
                                 {SOURCE_TEXT_SQL} AS source_text
                          FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
                               LEFT JOIN documents d ON d.id = p.document_id
                          {where} ORDER BY p.id""")


def prediction_ids(con: duckdb.DuckDBPyConnection, prediction_set_id: str) -> list[str]:
    """The ids of one prediction set's predictions."""
    return frame(con, "SELECT id FROM predictions WHERE prediction_set_id = ?", [prediction_set_id])["id"].to_list()


__all__ = ["TARGET_KINDS", "JudgeRow", "add", "latest", "prediction_ids", "responses"]
