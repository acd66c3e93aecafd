"""Ratings: a reviewer's 1-5 score of a pair revision, beside the accept/reject decision.

- ``ratings`` is a log: rows are inserted, never updated or deleted. A reviewer's rating of a
  revision is their latest row for it; a row without a value withdraws it.
- A rating belongs to the revision it was given on, the text its reviewer read: an edit makes a
  new revision that starts unrated, so a score never describes text its reviewer did not see, and
  a frozen slice exports the scores of exactly the revisions it holds.
- A revision's score is the mean of its reviewers' current ratings and how many there are
  (``scores``): one reviewer rating twice counts once.
- A rating is not a decision: it moves neither the pair's status nor its version, and progress
  and agreement (store/users.py) never read it.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import polars as pl
import pyarrow as pa

from store.db import atomic, one
from store.ids import event_id
from store.pairs import now
from store.records import Rating

MIN_RATING, MAX_RATING = 1, 5

# Each reviewer's latest row per revision, withdrawn ones included (callers drop NULL values);
# ``{where}`` narrows the rows read before ranking.
_CURRENT = """SELECT id, pair_id, revision_id, value, author, created_at FROM (
                  SELECT *, row_number() OVER (PARTITION BY revision_id, author
                                               ORDER BY created_at DESC, id DESC) AS _rn
                  FROM ratings {where})
              WHERE _rn = 1"""


def rate(con: duckdb.DuckDBPyConnection, pair_id: str, value: int | None, *, author: str,
         revision_id: str | None = None) -> Rating:
    """Record ``author``'s rating of a revision of ``pair_id`` (default: its head, the text shown now);
    ``value`` None withdraws their rating. Own transaction (joins a caller's)."""
    if value is not None and not (type(value) is int and MIN_RATING <= value <= MAX_RATING):  # not a bool
        raise ValueError(f"a rating is a whole number from {MIN_RATING} to {MAX_RATING}, not {value!r}")
    if not author:
        raise ValueError("a rating names its reviewer")
    with atomic(con):
        if revision_id is None:
            row = one(con, "SELECT head_revision_id FROM pairs WHERE id = ?", [pair_id])
            if row is None:
                raise KeyError(f"no pair with id {pair_id!r}")
            revision_id = str(row[0])
        elif one(con, "SELECT 1 FROM pair_revisions WHERE id = ? AND pair_id = ?", [revision_id, pair_id]) is None:
            raise KeyError(f"{revision_id} is not a revision of pair {pair_id}")
        rating = Rating(id=event_id("rt_"), pair_id=pair_id, revision_id=revision_id, value=value, author=author,
                        created_at=now())
        con.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?)",
                    [rating.id, rating.pair_id, rating.revision_id, rating.value, rating.author, rating.created_at])
    return rating


def current(con: duckdb.DuckDBPyConnection, revision_id: str) -> list[Rating]:
    """Every reviewer's current rating of one revision (withdrawn ones left out), by reviewer."""
    rows = con.execute(_CURRENT.format(where="WHERE revision_id = ?") + " AND value IS NOT NULL ORDER BY author",
                       [revision_id]).fetchall()
    return [Rating(id=r[0], pair_id=r[1], revision_id=r[2], value=r[3], author=r[4], created_at=r[5]) for r in rows]


def scores(con: duckdb.DuckDBPyConnection, revision_ids: Sequence[str]) -> pl.DataFrame:
    """(revision_id, rating, n_ratings) for the given revisions that have a current rating: the mean of
    their reviewers' latest ratings (2 decimals) and how many reviewers rated. Revisions nobody rated
    have no row."""
    con.register("_rated", pa.table({"rid": pa.array(list(revision_ids), pa.string())}))
    try:
        return con.sql(
            f"""SELECT revision_id, round(avg(value), 2)::DOUBLE AS rating, count(*)::INTEGER AS n_ratings
                FROM ({_CURRENT.format(where="WHERE revision_id IN (SELECT rid FROM _rated)")})
                WHERE value IS NOT NULL GROUP BY revision_id ORDER BY revision_id"""
        ).pl()
    finally:
        con.unregister("_rated")
