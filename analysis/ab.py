"""Blind A/B comparison, the pure part: presentation order, screen-to-run translation, win rates.

- Order: items come in a seeded random order per (run pair, author), and each item's answers in a
  seeded random left/right order per (item, author): a hash, not a random generator, so a rerun (or
  a reload of the page) shows the same item the same way, and voting on one item never reshuffles
  the others. Different people see different orders, so order effects average out.
- Win rate of A over B: ``(a + tie / 2) / (a + b + tie)``: a tie counts half a win for each side;
  "both bad" says neither answer is usable, not that one beats the other, so it is counted and
  shown but left out of the rate. The 95 % interval is Wilson's score interval
  (``analysis.errors.metrics.wilson``) on that fractional count out of ``a + b + tie``: with ties
  the spread is smaller than a binomial one, so the interval is slightly conservative. Each current
  vote is one observation; several people voting on one item are not independent, which the
  interval ignores.
- Per error category: an item belongs to every category either answer has (its current error
  labels), and to ``NO_ERROR`` when neither has one; so the category rows overlap and need not add
  up to the ``ALL`` row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import polars as pl

from analysis.errors.metrics import wilson

ALL = "all items"
NO_ERROR = "no error"
SCREEN_CHOICES = ("1", "2", "tie", "both_bad")

WIN_SCHEMA = {"category": pl.String, "a": pl.Int64, "b": pl.Int64, "tie": pl.Int64, "both_bad": pl.Int64,
              "n": pl.Int64, "win_rate": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}


def _unit(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts`` (sha256): the seeded coin of this module."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def item_order(item_keys: Iterable[str], *, run_a: str, run_b: str, author: str) -> list[str]:
    """``item_keys`` in the seeded random order this author sees them in for this run pair."""
    return sorted(item_keys, key=lambda k: (_unit("order", run_a, run_b, author, k), k))


def left_side(item_key: str, *, author: str) -> str:
    """'a' or 'b': whose answer this author sees first ("Answer 1") on this item."""
    return "a" if _unit("left", item_key, author) < 0.5 else "b"


def canonical_choice(screen: str, left: str) -> str:
    """A screen choice ("1", "2", "tie", "both_bad") as a choice between the runs, given ``left``
    (whose answer was Answer 1): "1" picks ``left``, "2" the other run; tie and both_bad stay."""
    if screen not in SCREEN_CHOICES:
        raise ValueError(f"screen choice must be one of {SCREEN_CHOICES}, not {screen!r}")
    if left not in ("a", "b"):
        raise ValueError(f"left must be 'a' or 'b', not {left!r}")
    if screen == "1":
        return left
    if screen == "2":
        return "b" if left == "a" else "a"
    return screen


def rate(a: int, b: int, tie: int) -> tuple[float | None, float, float]:
    """(win rate of A, lo, hi) with ties as half a win; rate None (and (0, 1)) without a decided vote or tie."""
    n = a + b + tie
    if n == 0:
        return None, 0.0, 1.0
    k = a + tie / 2
    lo, hi = wilson(k, n)  # type: ignore[arg-type]  # a fractional count: see the module docstring
    return k / n, lo, hi


def win_rates(choices: pl.DataFrame, categories: Mapping[str, Iterable[str]] | None = None) -> pl.DataFrame:
    """Win rates of A over B from current votes.

    ``choices``: one row per vote with ``choice`` (a, b, tie, both_bad) and ``item`` (its key).
    ``categories``: item key -> the error categories of its answers (missing or empty: ``NO_ERROR``).
    One row for ``ALL`` then one per category (most votes first): counts, n = a + b + tie,
    win_rate, lo, hi (``WIN_SCHEMA``).
    """
    categories = categories or {}
    groups: dict[str, list[str]] = {ALL: []}
    per_cat: dict[str, list[str]] = {}
    for item, choice in zip(choices["item"].to_list(), choices["choice"].to_list(), strict=True):
        groups[ALL].append(choice)
        for c in sorted(set(categories.get(item) or ())) or [NO_ERROR]:
            per_cat.setdefault(c, []).append(choice)
    ordered = sorted(per_cat.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    rows = []
    for name, picks in [(ALL, groups[ALL]), *ordered]:
        a, b, tie, bad = (picks.count(x) for x in ("a", "b", "tie", "both_bad"))
        r, lo, hi = rate(a, b, tie)
        rows.append({"category": name, "a": a, "b": b, "tie": tie, "both_bad": bad, "n": a + b + tie,
                     "win_rate": r, "lo": lo, "hi": hi})
    return pl.DataFrame(rows, schema=WIN_SCHEMA)


def flip(table: pl.DataFrame) -> pl.DataFrame:
    """A win-rate table of A over B as one of B over A (a and b swapped, rate and interval mirrored)."""
    return table.with_columns(
        pl.col("b").alias("a"), pl.col("a").alias("b"), (1 - pl.col("win_rate")).alias("win_rate"),
        (1 - pl.col("hi")).alias("lo"), (1 - pl.col("lo")).alias("hi"),
    ).select(list(WIN_SCHEMA))
