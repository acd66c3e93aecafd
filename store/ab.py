"""Blind A/B votes: people compare two runs' answers to one prompt without knowing which is which.

Invariants and reasons:
- A run pair is stored in one canonical order, ``run_a < run_b`` (by id), whichever order a
  person picked the runs in, so the votes of (X, Y) and (Y, X) are one set. ``choice`` (a, b,
  tie, both_bad) and ``left`` (whose answer was shown as "Answer 1") are in those canonical
  terms, never the screen's: a vote for "Answer 1" when run_b's answer was shown first is a
  vote for b. Recording ``left`` keeps the randomisation auditable.
- An *item* is the two answers judged: (prediction_a, prediction_b) of one pair.
- ``ab_votes`` is append-only. Voting again on an item adds a row; the newest (highest ``seq``)
  per (author, item) is the *current* vote, and only current votes count (``LATEST_VOTES_SQL``,
  the one definition every read uses).
- A vote with a winner writes a preference pair in the same transaction, through the one insert
  path ``store.errors.add_preference_pair``: prompt (the winner's prediction prompt), chosen =
  the winner's answer, rejected = the loser's, ``prediction_id`` = the loser's prediction (the
  answer DPO moves away from), no error category (a vote confirms none). Identical answers write
  none (they teach nothing). The preference pair of a superseded vote stays stored and stops
  counting (``SUPERSEDED_PREFERENCES_SQL``, applied by ``store.errors.preference_pairs``). Two
  people preferring the same answer give two preference pairs: agreement weighs more.
- An LLM judge's pairwise verdicts are votes too, by an author ``judge:<model>`` (``JUDGE_PREFIX``;
  ``workflows.judge.judge_pairwise``): they write no preference pair (``preference=False``), and
  ``votes`` keeps people's and judges' votes apart (``judges``), so a win rate is never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import polars as pl

from store.db import atomic, frame, one, scalar
from store.errors import add_preference_pair, current_labels_sql
from store.ids import event_id
from store.pairs import now
from store.records import AbVote

CHOICES = ("a", "b", "tie", "both_bad")
JUDGE_PREFIX = "judge:"  # the author of an LLM judge's votes: judge:<model>
SIDES = ("a", "b")

_COLS = ("id, seq, run_a, run_b, pair_id, prediction_a, prediction_b, \"left\", choice, reason, preference_pair_id, "
         "author, created_at")

# The current vote per (author, item) of one canonical run pair (binds run_a, run_b).
LATEST_VOTES_SQL = f"""
    SELECT {_COLS} FROM ab_votes WHERE run_a = ? AND run_b = ?
    QUALIFY row_number() OVER (PARTITION BY author, prediction_a, prediction_b ORDER BY seq DESC) = 1"""

# Ids of the preference pairs written by votes a later vote of the same author on the same item replaced.
SUPERSEDED_PREFERENCES_SQL = """
    SELECT preference_pair_id FROM (
        SELECT preference_pair_id,
               row_number() OVER (PARTITION BY run_a, run_b, author, prediction_a, prediction_b ORDER BY seq DESC) AS k
        FROM ab_votes) WHERE k > 1 AND preference_pair_id IS NOT NULL"""


def canonical(run_x: str, run_y: str) -> tuple[str, str]:
    """The stored order of a run pair: (smaller id, larger id). Raises on one run twice."""
    if run_x == run_y:
        raise ValueError(f"an A/B comparison needs two different runs, got {run_x!r} twice; pick another run")
    return (run_x, run_y) if run_x < run_y else (run_y, run_x)


def _to_vote(r: tuple) -> AbVote:
    return AbVote(id=r[0], seq=r[1], run_a=r[2], run_b=r[3], pair_id=r[4], prediction_a=r[5], prediction_b=r[6],
                  left=r[7], choice=r[8], reason=r[9], preference_pair_id=r[10], author=r[11], created_at=r[12])


def newest_eval_set(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    """The run's newest prediction set of the eval split, else its newest of any split; None without one."""
    row = one(con, """SELECT id FROM prediction_sets WHERE run_id = ?
                      ORDER BY (split = 'eval') DESC NULLS LAST, created_at DESC, id DESC LIMIT 1""", [run_id])
    return None if row is None else str(row[0])


def common_items(con: duckdb.DuckDBPyConnection, set_a: str, set_b: str) -> pl.DataFrame:
    """The pairs both prediction sets answered, one row each (ordered by pair): pair_id, prediction_a,
    prediction_b, prompt (set_a's), output_a, output_b, reference (set_a's)."""
    return frame(
        con,
        """WITH a AS (SELECT pair_id, arg_min(id, id) AS pid FROM predictions WHERE prediction_set_id = ? GROUP BY pair_id),
                b AS (SELECT pair_id, arg_min(id, id) AS pid FROM predictions WHERE prediction_set_id = ? GROUP BY pair_id)
           SELECT a.pair_id, xa.id AS prediction_a, xb.id AS prediction_b, xa.prompt, xa.output AS output_a,
                  xb.output AS output_b, xa.reference
           FROM a JOIN b ON b.pair_id = a.pair_id
                JOIN predictions xa ON xa.id = a.pid JOIN predictions xb ON xb.id = b.pid
           ORDER BY a.pair_id""",
        [set_a, set_b],
    )


def add_vote(
    con: duckdb.DuckDBPyConnection,
    *,
    run_a: str,
    run_b: str,
    prediction_a: str,
    prediction_b: str,
    left: str,
    choice: str,
    author: str,
    reason: str = "",
    preference: bool = True,
) -> AbVote:
    """Append one vote, in canonical terms (``run_a < run_b``; ``choice`` a, b, tie or both_bad;
    ``left`` a or b), and, when it has a winner (and ``preference``), its preference pair: one
    transaction."""
    if (run_a, run_b) != canonical(run_a, run_b):
        raise ValueError(f"runs {run_a!r}, {run_b!r} are not in canonical order; pass store.ab.canonical(x, y)")
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, not {choice!r}")
    if left not in SIDES:
        raise ValueError(f"left must be 'a' or 'b' (whose answer was shown first), not {left!r}")
    if not author.strip():
        raise ValueError("a vote needs its author (the signed-in reviewer)")
    with atomic(con):
        rows = {r[0]: r for r in con.execute(
            "SELECT id, run_id, pair_id, prompt, output FROM predictions WHERE id = ? OR id = ?",
            [prediction_a, prediction_b]).fetchall()}
        for pid, run in ((prediction_a, run_a), (prediction_b, run_b)):
            if pid not in rows:
                raise KeyError(f"no prediction {pid!r}; `tuneloop runs show RUN` lists a run's prediction sets")
            if rows[pid][1] != run:
                raise ValueError(f"prediction {pid} belongs to run {rows[pid][1]}, not {run}")
        pa_, pb_ = rows[prediction_a], rows[prediction_b]
        if pa_[2] != pb_[2]:
            raise ValueError(f"predictions {prediction_a} and {prediction_b} answer different pairs "
                             f"({pa_[2]}, {pb_[2]}); an A/B item is two answers to one prompt")
        pref_id = None
        if choice in SIDES and preference:
            win, lose = (pa_, pb_) if choice == "a" else (pb_, pa_)
            if win[4].strip() != lose[4].strip():
                pref_id = add_preference_pair(con, pair_id=win[2], prediction_id=lose[0], prompt=win[3],
                                              chosen=win[4], rejected=lose[4], category_id=None, author=author)
        seq = int(scalar(con, "SELECT coalesce(max(seq), 0) + 1 FROM ab_votes"))
        vid = event_id("ab_")
        con.execute(f"INSERT INTO ab_votes ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [vid, seq, run_a, run_b, pa_[2], prediction_a, prediction_b, left, choice, reason.strip(),
                     pref_id, author, now()])
        row = one(con, f"SELECT {_COLS} FROM ab_votes WHERE id = ?", [vid])
    assert row is not None
    return _to_vote(row)


def votes(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, *, author: str | None = None,
          current: bool = True, judges: bool = False) -> list[AbVote]:
    """The votes of a run pair (either order; returned in canonical terms), oldest first: only the
    current one per (author, item) unless ``current`` is False; of one ``author`` when given, else
    people's (``judges`` False) or LLM judges' (``judges`` True)."""
    a, b = canonical(run_a, run_b)
    sql = LATEST_VOTES_SQL if current else f"SELECT {_COLS} FROM ab_votes WHERE run_a = ? AND run_b = ?"
    params: list[Any] = [a, b]
    outer = f"SELECT * FROM ({sql}) v"
    if author is not None:
        outer += " WHERE v.author = ?"
        params.append(author)
    else:
        outer += f" WHERE {'' if judges else 'NOT '}starts_with(v.author, ?)"
        params.append(JUDGE_PREFIX)
    return [_to_vote(r) for r in con.execute(outer + " ORDER BY seq", params).fetchall()]


def prediction_categories(con: duckdb.DuckDBPyConnection, prediction_ids: Sequence[str]) -> pl.DataFrame:
    """(prediction_id, category) for each current, not rejected, error label of these predictions
    (``store.errors.current_labels_sql``: the one definition of a current label)."""
    ids = sorted(set(prediction_ids))
    if not ids:
        return pl.DataFrame(schema={"prediction_id": pl.String, "category": pl.String})
    return frame(
        con,
        current_labels_sql("all") + """
        SELECT cur.prediction_id, c.name AS category FROM cur JOIN error_categories c ON c.id = cur.category_id
        WHERE cur.state <> 'rejected' AND list_contains(?, cur.prediction_id) ORDER BY 1, 2""",
        [ids],
    )
