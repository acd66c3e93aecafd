"""Intervals, compare on two stored runs, and the corrected slice a retrain freezes."""

from __future__ import annotations

import polars as pl
import pytest

import scoring
from analysis.errors.metrics import confusion, most_confused, newcombe, wilson
from store import errors as errors_store
from store import pairs as pairs_store
from store import slices as slices_store
from tests.errors_fixtures import INTENTS, add_intent_pairs, make_run, make_slice, store_predictions
from workflows import errors as workflow


def test_wilson_and_newcombe_match_published_values():
    # Newcombe (1998), Stat Med 17:857 and 17:873: 81/263 -> (0.2553, 0.3662); 56/70 vs 48/80 -> (0.0524, 0.3339)
    lo, hi = wilson(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    d, dlo, dhi = newcombe(48, 80, 56, 70)
    assert (round(d, 4), round(dlo, 4), round(dhi, 4)) == (0.2, 0.0524, 0.3339)
    assert wilson(0, 10)[0] == pytest.approx(0.0) and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(0, 0) == (0.0, 1.0)


def test_confusion_and_most_confused_pairs():
    refs = ["a", "a", "a", "b", "b", "c", "c"]
    outs = ["a", "b", "b", "a", "b", "c", "zzz"]
    conf = confusion(refs, outs, scoring.task_of(["a", "b", "c"], "label"))
    d = {(r["reference"], r["predicted"]): r["n"] for r in conf.iter_rows(named=True)}
    assert d == {("a", "a"): 1, ("a", "b"): 2, ("b", "a"): 1, ("b", "b"): 1, ("c", "c"): 1, ("c", "(other)"): 1}
    mc = most_confused(conf)
    assert mc.row(0, named=True) == {"a": "a", "b": "b", "a_as_b": 2, "b_as_a": 1, "n": 3}


@pytest.fixture
def two_runs(project):
    with project.connect() as con:
        ids = add_intent_pairs(con)
        sl = make_slice(con, ids, eval_ids=ids[::2])
    lab = {pid: label for pid, (_, label) in zip(ids, INTENTS)}
    e0, e1, e2, e3 = ids[::2]
    a = make_run(project, sl.id, "A")
    store_predictions(project, a, {e0: lab[e0], e1: "card_arrival", e2: "no idea, sorry", e3: lab[e3]})
    b = make_run(project, sl.id, "B", parent=a)
    store_predictions(project, b, {e0: lab[e0], e1: lab[e1], e2: "card_arrival", e3: ""})
    return {"ids": ids, "eval": [e0, e1, e2, e3], "slice": sl, "a": a, "b": b}


def test_compare_two_stored_runs(project, two_runs):
    e0, e1, e2, e3 = two_runs["eval"]
    # a later pass over the train split (looking for bad training labels) does not replace the eval set
    store_predictions(project, two_runs["a"], {pid: "card_arrival" for pid in two_runs["ids"][1::2]}, split="train")
    c = workflow.compare_runs(project, "A", "B")
    assert c.n_common == 4 and c.only_a == c.only_b == 0
    assert c.fixed["pair_id"].to_list() == [e1]
    assert c.broken["pair_id"].to_list() == [e3]
    row = {r["category_id"]: r for r in c.table.iter_rows(named=True)}
    assert (row["any error"]["k_a"], row["any error"]["k_b"], row["any error"]["delta"]) == (2, 2, 0.0)
    assert (row["wrong_label"]["k_a"], row["wrong_label"]["k_b"]) == (1, 1)
    assert (row["incomplete"]["k_a"], row["incomplete"]["k_b"], row["incomplete"]["delta"]) == (0, 1, 0.25)
    assert row["incomplete"]["delta_lo"] < 0.25 < row["incomplete"]["delta_hi"]
    assert c.table["category_id"][0] == "any error"
    assert c.fixed.row(0, named=True)["categories_a"] == "wrong_label"
    # a reviewer rejecting B's label on e3 turns the broken pair into a right one
    with project.connect() as con:
        labs = errors_store.current_labels(con, runs_latest(con, "B"))
        for pid in labs.filter(pl.col("pair_id") == e3)["prediction_id"].to_list():
            for cat in labs.filter(pl.col("prediction_id") == pid)["category_id"].to_list():
                errors_store.review(con, pid, cat, "rejected", author="ann")
    assert workflow.compare_runs(project, "A", "B").broken.height == 0


def runs_latest(con, name):
    from store import runs as runs_store

    return runs_store.latest_prediction_set(con, runs_store.get(con, name).id)


def test_retrain_freezes_the_corrected_slice(project, two_runs):
    ids, (_, e1, e2, _) = two_runs["ids"], two_runs["eval"]
    t0, t1, t2 = ids[1], ids[3], ids[5]
    workflow.auto(project, "A")
    with project.connect() as con:
        preds = errors_store.predictions_with_source(con, runs_latest(con, "A"))
        pred = dict(zip(preds["pair_id"].to_list(), preds["prediction_id"].to_list()))
        errors_store.correct(con, pred[e1], "card_arrival", author="ann", category_id="wrong_label")
        errors_store.mark_bad(con, pred[e2], "rejected", author="ann", comment="not a banking question")
        p = pairs_store.get(con, t0)
        pairs_store.revise(con, t0, expected_version=p.version, author="bob", response="card_delivery")
        pairs_store.set_status(con, t1, "needs_fix", author="bob")
        parent_items = slices_store.items(con, two_runs["slice"].id)
    with pytest.raises(KeyError, match="no error category"):
        workflow.freeze_corrected_slice(project, "A", only_categories=["nonsense"])
    sl, plan = workflow.freeze_corrected_slice(project, "A", upweight=2.0, author="ann")
    with project.connect() as con:
        items = {i.pair_id: i for i in slices_store.items(con, sl.id)}
        heads = {pid: pairs_store.get(con, pid).head_revision_id for pid in ids}
    old = {i.pair_id: i for i in parent_items}
    assert sl.parent_id == two_runs["slice"].id and sl.name == "s1" and sl.version == 2
    assert set(items) == set(ids) - {e2, t1}  # rejected and needs_fix drop out
    assert items[e1].revision_id == heads[e1] != old[e1].revision_id and items[e1].split == "eval"
    assert items[e1].weight == 2.0  # corrected under a category: upweighted
    assert items[t0].revision_id == heads[t0] and items[t0].weight == 1.0  # edited, no error category
    assert items[t2].revision_id == old[t2].revision_id
    assert sorted(plan.replaced) == sorted([e1, t0]) and sorted(plan.dropped) == sorted([e2, t1])
    sl2, plan2 = workflow.freeze_corrected_slice(project, "A", only_categories=["wrong label"])
    with project.connect() as con:
        items2 = {i.pair_id: i for i in slices_store.items(con, sl2.id)}
    assert items2[e1].revision_id == heads[e1] and items2[t0].revision_id == old[t0].revision_id
    assert plan2.replaced == [e1]


def test_retrain_with_nothing_corrected_says_so(project, two_runs):
    with pytest.raises(ValueError, match="nothing to retrain on"):
        workflow.freeze_corrected_slice(project, "A")
