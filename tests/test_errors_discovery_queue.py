"""Error discovery clusters, the review priority, and the report renderers on crafted frames."""

from __future__ import annotations

import polars as pl
import pytest

from analysis.errors.discovery import discover
from analysis.errors.queue import priority


def test_discovery_separates_two_kinds_of_failure():
    refund = [f"where is my refund for order {i}\nI cannot help with refunds, sorry" for i in range(6)]
    pin = [f"how do I change my card pin number {i}\nYour pin pin pin pin is blocked" for i in range(6)]
    texts = refund + pin
    failing = pl.DataFrame({
        "prediction_id": [f"pr_{i}" for i in range(12)], "pair_id": [f"p_{i}" for i in range(12)],
        "prompt": [t.split("\n")[0] for t in texts], "output": [t.split("\n")[1] for t in texts],
        "categories": ["refusal"] * 6 + [""] * 6,
    })
    clusters, members = discover(failing, k=2, seed=0)
    assert clusters["size"].to_list() == [6, 6]
    by_cluster = members.group_by("cluster").agg(pl.col("prediction_id").sort())
    groups = sorted(sorted(x) for x in by_cluster["prediction_id"].to_list())
    assert groups == [sorted(f"pr_{i}" for i in range(6)), sorted(f"pr_{i}" for i in range(6, 12))]
    pin_cluster = clusters.filter(pl.col("uncategorised") == 6).row(0, named=True)
    assert "pin" in " ".join(pin_cluster["keywords"]) and pin_cluster["categories"] == "(none) 6"
    assert len(pin_cluster["examples"]) == 3
    with pytest.raises(ValueError, match="at least 2 failing"):
        discover(failing.head(1))


def test_priority_orders_by_weakness_and_puts_reviewed_last():
    preds = pl.DataFrame({"prediction_id": ["a", "b", "c", "d", "e"], "pair_id": ["pa", "pb", "pc", "pd", "pe"],
                          "output": ["x"] * 5, "reference": ["y"] * 5})
    labels = pl.DataFrame({
        "prediction_id": ["a", "b", "b", "c", "d"],
        "category_id": ["verbose", "wrong_label", "format_violation", "verbose", "wrong_label"],
        "category": ["verbose", "wrong label", "format violation", "verbose", "wrong label"],
        "state": ["proposed", "proposed", "proposed", "proposed", "confirmed"],
        "source": ["auto", "auto", "auto", "auto", "human"],
        "confidence": [0.9, 1.0, 1.0, 0.5, 1.0],
    })
    scored = pl.DataFrame({"prediction_id": ["a", "b", "c", "d", "e"], "f1": [0.2, 0.0, 0.9, 0.0, 1.0],
                           "correct": [False, False, True, False, True]})
    q = priority(preds, labels, scored)
    assert q["prediction_id"].to_list() == ["b", "a", "c", "d"]  # e has no error; d already reviewed
    only = priority(preds, labels, scored, category="verbose")
    assert only["prediction_id"].to_list() == ["a", "c"]
