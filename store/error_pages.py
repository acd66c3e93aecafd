"""Paged and aggregated reads of current error labels, for the Errors, Review and Overview pages.

Invariants:
- Every read here selects from ``store.errors.current_labels_sql`` (the one definition of a
  prediction's current label: the newest human decision, else the strongest automatic
  proposal, categories resolved through merges), so the pages, ``current_labels`` and the
  CLI give one answer.
- Nothing returns a whole prediction set: lists take ``limit``/``offset`` and are
  aggregated, ordered and paged inside DuckDB, so the Errors page stays fast on large runs.
- A suggestion's score is the token F1 of the output against the reference it was predicted
  for, from ``scoring`` (the one implementation): predictions store no per-row score.
- Error labels and taxonomy events are append-only and predictions immutable, so
  ``labels_version`` (their row counts) identifies the state an aggregate was computed from;
  the app keys its caches on it (app/state.py), this module keeps none.
"""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl

from scoring import token_f1
from store.db import frame, one, scalar
from store.errors import current_labels_sql, get_prediction, latest_prediction_id


def labels_version(con: duckdb.DuckDBPyConnection) -> tuple:
    """Row counts of the append-only label and taxonomy tables: equal counts, equal aggregates."""
    row = one(con, """SELECT (SELECT count(*) FROM error_labels), (SELECT count(*) FROM taxonomy_events),
                             (SELECT count(*) FROM error_categories), (SELECT count(*) FROM prediction_sets),
                             (SELECT count(*) FROM judge_scores)""")
    return () if row is None else tuple(row)


def error_funnel(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Predictions, predictions with a current error label, human-reviewed ones, corrections (preference pairs)."""
    return {
        "predictions": int(scalar(con, "SELECT count(*) FROM predictions")),
        "with errors": int(scalar(con, current_labels_sql("all")
                                  + " SELECT count(DISTINCT prediction_id) FROM cur WHERE state <> 'rejected'")),
        "reviewed": int(scalar(con, "SELECT count(DISTINCT prediction_id) FROM error_labels WHERE source = 'human'")),
        "corrected": int(scalar(con, "SELECT count(*) FROM preference_pairs")),
    }


_COUNTS = """
        SELECT cur.category_id, c.name AS category,
               count(*) FILTER (WHERE state <> 'rejected') AS errors,
               count(*) FILTER (WHERE state = 'confirmed') AS confirmed,
               count(*) FILTER (WHERE state = 'proposed') AS proposed,
               count(*) FILTER (WHERE state = 'rejected') AS rejected"""


def error_counts(con: duckdb.DuckDBPyConnection, prediction_set_id: str) -> pl.DataFrame:
    """Per category: predictions labelled with it (not rejected), of which confirmed by a reviewer."""
    return frame(
        con,
        current_labels_sql("set") + _COUNTS + """
        FROM cur JOIN error_categories c ON c.id = cur.category_id
        GROUP BY 1, 2 ORDER BY errors DESC, category_id""",
        [prediction_set_id],
    )


def error_overview(con: duckdb.DuckDBPyConnection, prediction_set_id: str) -> tuple[pl.DataFrame, int, int]:
    """(per-category counts as ``error_counts``, predictions in the set, predictions with an error), one pass."""
    counts = frame(
        con,
        current_labels_sql("set") + _COUNTS + """,
               (SELECT count(DISTINCT prediction_id) FROM cur WHERE state <> 'rejected') AS any_error,
               (SELECT n FROM prediction_sets WHERE id = ?) AS n
        FROM cur JOIN error_categories c ON c.id = cur.category_id
        GROUP BY 1, 2 ORDER BY errors DESC, category_id""",
        [prediction_set_id, prediction_set_id],
    )
    if counts.is_empty():
        n = int(scalar(con, "SELECT coalesce(max(n), 0) FROM prediction_sets WHERE id = ?", [prediction_set_id]))
        return counts.drop("any_error", "n"), n, 0
    return counts.drop("any_error", "n"), int(counts["n"][0]), int(counts["any_error"][0])


# A page of predictions ranks by the strongest automatic proposal (a label a reviewer added
# without one ranks as certain); ``state`` None means "not rejected".
_HIT = """(?::VARCHAR IS NULL OR category_id = ?)
          AND (CASE WHEN ?::VARCHAR IS NULL THEN state <> 'rejected' ELSE state = ? END)"""

# An LLM judge's latest readable score per (prediction, criterion), over every judge (store/judge.py).
_JUDGED = """SELECT target_id, criterion, arg_max(score, created_at) AS score FROM judge_scores
             WHERE target_kind = 'prediction' AND score IS NOT NULL GROUP BY target_id, criterion"""
# ... narrowed to predictions the judge scored at most ? on criterion ? (binds criterion twice, max once).
_JUDGED_LOW = f"""(?::VARCHAR IS NULL OR prediction_id IN (
                     SELECT target_id FROM ({_JUDGED}) WHERE criterion = ? AND score <= ?))"""


def _judge_params(judge_low: tuple[str, int] | None) -> list[Any]:
    return [None, None, None] if judge_low is None else [judge_low[0], judge_low[0], int(judge_low[1])]


def error_examples(
    con: duckdb.DuckDBPyConnection, prediction_set_id: str, *, category_id: str | None = None,
    state: str | None = None, limit: int = 25, offset: int = 0, judge_low: tuple[str, int] | None = None,
) -> pl.DataFrame:
    """A page of erroneous predictions (most confident first), optionally of one category / label state
    (``proposed``, ``confirmed``, ``rejected``; default: not rejected) and, with ``judge_low``
    (criterion, max), only those an LLM judge scored at most max on that criterion; ``judge`` lists
    the judge's latest scores ("correct 2, faithful 1")."""
    return frame(
        con,
        current_labels_sql("set") + f""",
        hit AS (
            SELECT prediction_id, max(coalesce(auto_confidence, 1.0)) AS conf FROM cur
            WHERE {_HIT} AND {_JUDGED_LOW}
            GROUP BY prediction_id ORDER BY conf DESC, prediction_id LIMIT ? OFFSET ?),
        judged AS (
            SELECT target_id, string_agg(criterion || ' ' || score, ', ' ORDER BY criterion) AS judge
            FROM ({_JUDGED}) WHERE target_id IN (SELECT prediction_id FROM hit) GROUP BY target_id),
        cats AS (
            SELECT cur.prediction_id, string_agg(c.name, ', ' ORDER BY c.name) AS categories
            FROM cur JOIN hit ON hit.prediction_id = cur.prediction_id
            JOIN error_categories c ON c.id = cur.category_id
            WHERE cur.state <> 'rejected' GROUP BY 1)
        SELECT x.id AS prediction_id, x.pair_id, left(r.instruction, 200) AS instruction, left(x.output, 300) AS output,
               left(x.reference, 300) AS reference, x.finish_reason, hit.conf AS confidence, cats.categories,
               judged.judge
        FROM hit JOIN predictions x ON x.id = hit.prediction_id JOIN pair_revisions r ON r.id = x.revision_id
        LEFT JOIN cats ON cats.prediction_id = hit.prediction_id LEFT JOIN judged ON judged.target_id = x.id
        ORDER BY hit.conf DESC, x.id""",
        [prediction_set_id, category_id, category_id, state, state, *_judge_params(judge_low), int(limit),
         int(offset)],
    )


def error_example_count(con: duckdb.DuckDBPyConnection, prediction_set_id: str, *, category_id: str | None = None,
                        state: str | None = None, judge_low: tuple[str, int] | None = None) -> int:
    return int(scalar(
        con,
        current_labels_sql("set") + f" SELECT count(DISTINCT prediction_id) FROM cur WHERE {_HIT} AND {_JUDGED_LOW}",
        [prediction_set_id, category_id, category_id, state, state, *_judge_params(judge_low)],
    ))


def prediction_labels(con: duckdb.DuckDBPyConnection, prediction_id: str) -> pl.DataFrame:
    """Current labels of one prediction: category, state, confidence, evidence of the auto proposal."""
    return frame(
        con,
        current_labels_sql("prediction") + """
        SELECT cur.category_id, c.name AS category, cur.state, cur.auto_confidence AS confidence,
               cur.auto_evidence AS evidence, cur.auto_detector AS detector
        FROM cur JOIN error_categories c ON c.id = cur.category_id
        ORDER BY cur.state, c.name""",
        [prediction_id],
    )


def prediction_detail(con: duckdb.DuckDBPyConnection, prediction_id: str) -> dict[str, Any] | None:
    """The fields of one prediction the Errors page shows, or None when there is no such prediction."""
    try:
        p = get_prediction(con, prediction_id)
    except KeyError:
        return None
    return {"prediction_id": p.id, "pair_id": p.pair_id, "prompt": p.prompt, "output": p.output,
            "reference": p.reference, "finish_reason": p.finish_reason, "n_output_tokens": p.n_output_tokens,
            "prediction_set_id": p.prediction_set_id, "run_id": p.run_id}


def pair_suggestion(con: duckdb.DuckDBPyConnection, pair_id: str) -> dict[str, Any] | None:
    """The pair's newest prediction as a suggestion for its reviewer, or None when no run predicted it:
    prediction id, run id and name, output, reference, the revision it was predicted on, ``token_f1``
    (output vs reference) and ``categories`` (names of its current, not rejected, error labels)."""
    prediction_id = latest_prediction_id(con, pair_id)
    if prediction_id is None:
        return None
    p = get_prediction(con, prediction_id)
    name = scalar(con, "SELECT coalesce(name, id) FROM runs WHERE id = ?", [p.run_id])
    labels = prediction_labels(con, prediction_id).filter(pl.col("state") != "rejected")
    return {"prediction_id": p.id, "run_id": p.run_id, "run_name": str(name or p.run_id), "output": p.output,
            "reference": p.reference, "revision_id": p.revision_id, "token_f1": token_f1(p.output, p.reference),
            "categories": labels["category"].to_list()}


ACCEPT_MAX = 5_000  # predictions one bulk "accept the model's answer" reads and writes at most


def outputs_to_accept(
    con: duckdb.DuckDBPyConnection, prediction_set_id: str, *, category_id: str, state: str | None = None,
    min_f1: float = 0.0, limit: int = ACCEPT_MAX,
) -> pl.DataFrame:
    """The predictions of one category (and label state, as ``error_examples``) whose non-empty output is
    not yet their pair's response and whose token F1 against the reference is at least ``min_f1``, most
    confident first: prediction_id, pair_id, output, reference, confidence, token_f1. At most ``limit``
    candidates are read (before the F1 filter)."""
    df = frame(
        con,
        current_labels_sql("set") + f""",
        hit AS (SELECT prediction_id, max(coalesce(auto_confidence, 1.0)) AS conf FROM cur WHERE {_HIT} GROUP BY 1)
        SELECT x.id AS prediction_id, x.pair_id, x.output, x.reference, hit.conf AS confidence
        FROM hit JOIN predictions x ON x.id = hit.prediction_id JOIN pairs p ON p.id = x.pair_id
        JOIN pair_revisions h ON h.id = p.head_revision_id
        WHERE trim(x.output) <> '' AND h.response IS DISTINCT FROM x.output
        ORDER BY hit.conf DESC, x.id LIMIT ?""",
        [prediction_set_id, category_id, category_id, state, state, int(limit)],
    )
    f1 = pl.Series("token_f1", [token_f1(o, r) for o, r in zip(df["output"], df["reference"])], dtype=pl.Float64)
    return df.with_columns(f1).filter(pl.col("token_f1") >= min_f1)
