"""Blind A/B comparison of two runs by people: the next item to vote on, a vote, win rates.
What the app's Blind A/B page (and the Compare page, for ``win_rates``) call.

Runs may be given in either order and by id or name; everything stored is in the canonical order of
``store.ab`` (run_a < run_b by id). Items are the pairs both runs' newest eval prediction sets
answered (``store.ab.newest_eval_set``); order and left/right are seeded (``analysis.ab``). Win rates
count every current vote of the run pair, also those on older prediction sets' answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from analysis import ab as ab_mod
from store import ab as ab_store
from store import runs as runs_store
from store.db import Project
from store.records import AbVote


@dataclass(frozen=True)
class AbItem:
    """One prompt and the two runs' answers as a person sees them: ``answer_1`` is shown first.
    ``left`` ('a' or 'b') says whose answer that is, in canonical terms (``run_a`` < ``run_b``)."""
    run_a: str
    run_b: str
    pair_id: str
    prediction_a: str
    prediction_b: str
    prompt: str
    reference: str
    answer_1: str
    answer_2: str
    left: str
    n_voted: int  # items of the current sets this author has voted on
    n_items: int  # items of the current sets

    @property
    def key(self) -> str:
        return item_key(self.prediction_a, self.prediction_b)


def item_key(prediction_a: str, prediction_b: str) -> str:
    return f"{prediction_a}|{prediction_b}"


def _run_ids(project: Project, run_x: str, run_y: str) -> tuple[str, str]:
    with project.connect() as con:
        return ab_store.canonical(runs_store.get(con, run_x).id, runs_store.get(con, run_y).id)


def _items(project: Project, run_a: str, run_b: str) -> pl.DataFrame:
    with project.connect() as con:
        sets = {r: ab_store.newest_eval_set(con, r) for r in (run_a, run_b)}
        missing = [r for r, s in sets.items() if s is None]
        if missing:
            raise ValueError(f"run {', '.join(missing)} has no predictions; predict first (`tuneloop predict --run "
                             "RUN`, or the Errors page) to compare it")
        return ab_store.common_items(con, str(sets[run_a]), str(sets[run_b]))


def progress(project: Project, run_x: str, run_y: str, author: str) -> tuple[int, int]:
    """(items this author has voted on, items) for the two runs' current prediction sets."""
    a, b = _run_ids(project, run_x, run_y)
    items = _items(project, a, b)
    with project.connect() as con:
        voted = {item_key(v.prediction_a, v.prediction_b) for v in ab_store.votes(con, a, b, author=author)}
    keys = [item_key(p, q) for p, q in zip(items["prediction_a"], items["prediction_b"], strict=True)]
    return sum(k in voted for k in keys), len(keys)


def next_item(project: Project, run_x: str, run_y: str, author: str) -> AbItem | None:
    """The next item ``author`` has not voted on (None when all are done), in this author's seeded
    order, with the answers in this author's seeded left/right order for the item."""
    if not author.strip():
        raise ValueError("voting needs a signed-in author")
    a, b = _run_ids(project, run_x, run_y)
    items = _items(project, a, b)
    with project.connect() as con:
        voted = {item_key(v.prediction_a, v.prediction_b) for v in ab_store.votes(con, a, b, author=author)}
    by_key = {item_key(r["prediction_a"], r["prediction_b"]): r for r in items.iter_rows(named=True)}
    todo = [k for k in ab_mod.item_order(by_key, run_a=a, run_b=b, author=author) if k not in voted]
    if not todo:
        return None
    r = by_key[todo[0]]
    left = ab_mod.left_side(todo[0], author=author)
    first, second = (r["output_a"], r["output_b"]) if left == "a" else (r["output_b"], r["output_a"])
    return AbItem(run_a=a, run_b=b, pair_id=r["pair_id"], prediction_a=r["prediction_a"],
                  prediction_b=r["prediction_b"], prompt=r["prompt"] or "", reference=r["reference"] or "",
                  answer_1=first or "", answer_2=second or "", left=left,
                  n_voted=len(by_key) - len(todo), n_items=len(by_key))


def vote(project: Project, item: AbItem, screen_choice: str, *, author: str, reason: str = "") -> AbVote:
    """Record ``author``'s choice as seen on screen ("1", "2", "tie", "both_bad") on ``item``,
    translated to the runs (``analysis.ab.canonical_choice``); a winner also becomes a preference pair."""
    choice = ab_mod.canonical_choice(screen_choice, item.left)
    with project.connect() as con:
        return ab_store.add_vote(con, run_a=item.run_a, run_b=item.run_b, prediction_a=item.prediction_a,
                                 prediction_b=item.prediction_b, left=item.left, choice=choice, author=author,
                                 reason=reason)


def common_answers(project: Project, run_x: str, run_y: str) -> tuple[str, str, pl.DataFrame]:
    """(run_a, run_b in canonical order, the pairs both runs' current prediction sets answered:
    ``store.ab.common_items`` columns in those terms)."""
    a, b = _run_ids(project, run_x, run_y)
    return a, b, _items(project, a, b)


def win_rates(project: Project, run_a: str, run_b: str, *, judges: bool = False) -> pl.DataFrame:
    """Win rate of ``run_a`` over ``run_b`` (id or name, in the caller's order) from people's
    current blind A/B votes: one row for all items ("all items") then one per error category of
    the answers ("no error" when neither answer has one); columns category, a (votes for run_a),
    b, tie, both_bad, n (= a + b + tie), win_rate (ties count half; None without votes), lo, hi
    (95 % Wilson interval). See ``analysis.ab`` for the definitions. ``judges``: the LLM judges'
    pairwise votes instead of people's (``workflows.judge.judge_pairwise``)."""
    with project.connect() as con:
        ida = runs_store.get(con, run_a).id
        ca, cb = ab_store.canonical(ida, runs_store.get(con, run_b).id)
        current = ab_store.votes(con, ca, cb, judges=judges)
        cats = ab_store.prediction_categories(con, [p for v in current for p in (v.prediction_a, v.prediction_b)])
    by_pred: dict[str, list[str]] = {}
    for pid, cat in cats.iter_rows():
        by_pred.setdefault(pid, []).append(cat)
    item_cats = {item_key(v.prediction_a, v.prediction_b): by_pred.get(v.prediction_a, []) + by_pred.get(v.prediction_b, [])
                 for v in current}
    choices = pl.DataFrame({"item": [item_key(v.prediction_a, v.prediction_b) for v in current],
                            "choice": [v.choice for v in current]}, schema={"item": pl.String, "choice": pl.String})
    table = ab_mod.win_rates(choices, item_cats)
    return table if ida == ca else ab_mod.flip(table)  # in the caller's order
