"""Taxonomy history, automatic categories on a crafted run, reviews, corrections, bad data."""

from __future__ import annotations

import polars as pl
import pytest

from analysis.errors.taxonomy import DEFAULT_IDS
from store import errors as errors_store
from store import pairs as pairs_store
from store.db import ConflictError
from store.pairs import add_pairs
from store.records import NewPair, PairContent, Provenance, Status
from tests.errors_fixtures import INTENTS, add_intent_pairs, make_run, make_slice, store_predictions
from workflows import errors as workflow


@pytest.fixture
def crafted(project):
    """8 intent pairs (4 eval), a run whose eval predictions hold known errors."""
    with project.connect() as con:
        ids = add_intent_pairs(con)
        sl = make_slice(con, ids, eval_ids=ids[::2])
    run_id = make_run(project, sl.id)
    q = {pid: lab for pid, (_, lab) in zip(ids, INTENTS)}
    e0, e1, e2, e3 = ids[::2]
    outputs = {
        e0: q[e0],                       # right
        e1: "card_arrival",              # wrong label (ref duplicate_charge)
        e2: "I think you should call the bank about it",  # outside the label set
        e3: "",                          # empty
    }
    psid = store_predictions(project, run_id, outputs, slice_id=sl.id)
    return {"project": project, "ids": ids, "eval": [e0, e1, e2, e3], "run": run_id, "psid": psid, "slice": sl}


def cats_by_pair(project, psid) -> dict[str, set[str]]:
    with project.connect() as con:
        lab = errors_store.current_labels(con, psid)
    out: dict[str, set[str]] = {}
    for r in lab.iter_rows(named=True):
        out.setdefault(r["pair_id"], set()).add(r["category_id"])
    return out


def test_auto_categorises_a_crafted_run(crafted):
    p = crafted["project"]
    res = workflow.auto(p, "A")
    assert res["task"] == "label" and res["predictions"] == 4
    e0, e1, e2, e3 = crafted["eval"]
    got = cats_by_pair(p, crafted["psid"])
    assert e0 not in got
    assert got[e1] == {"wrong_label"}
    assert got[e2] == {"format_violation"}
    assert got[e3] == {"incomplete", "format_violation"}  # empty: several categories per prediction
    with p.connect() as con:
        lab = errors_store.current_labels(con, crafted["psid"])
    row = lab.filter(pl.col("pair_id") == e1).row(0, named=True)
    assert row["detector"] == "metric@2" and row["source"] == "auto" and row["state"] == "proposed"
    assert "card arrival" in row["evidence"] and row["confidence"] == 1.0
    assert workflow.auto(p, "A")["labels_added"] == 0  # re-running the same detectors adds nothing


def test_human_label_wins_and_both_are_kept(crafted):
    p = crafted["project"]
    workflow.auto(p, "A")
    e1 = crafted["eval"][1]
    with p.connect() as con:
        pred = errors_store.current_labels(con, crafted["psid"]).filter(pl.col("pair_id") == e1)["prediction_id"][0]
        errors_store.review(con, pred, "wrong_label", "rejected", author="ann", comment="reference is wrong")
        assert errors_store.current_labels(con, crafted["psid"]).filter(pl.col("pair_id") == e1).height == 0
        full = errors_store.current_labels(con, crafted["psid"], include_rejected=True).filter(pl.col("pair_id") == e1)
        assert full.row(0, named=True)["state"] == "rejected"
        assert full.row(0, named=True)["auto_detector"] == "metric@2"  # the automatic label is still there
        errors_store.change_category(con, pred, "wrong_label", "off_topic", author="bob")
        cur = errors_store.current_labels(con, crafted["psid"]).filter(pl.col("pair_id") == e1)
        assert cur["category_id"].to_list() == ["off_topic"] and cur["reviewer"][0] == "bob"
        hist = errors_store.label_history(con, pred)
        assert [(h.source, h.decision) for h in hist] == [("auto", "proposed"), ("human", "rejected"),
                                                          ("human", "rejected"), ("human", "confirmed")]
        with pytest.raises(ValueError, match="decision must be"):
            errors_store.review(con, pred, "verbose", "maybe", author="x")
        with pytest.raises(KeyError, match="no prediction"):
            errors_store.review(con, "pr_nope", "verbose", "confirmed", author="x")


def test_taxonomy_defaults_add_rename_and_history(project):
    cats = workflow.ensure_taxonomy(project)
    assert [c.id for c in cats] == DEFAULT_IDS
    assert workflow.ensure_taxonomy(project) == cats  # idempotent
    with project.connect() as con:
        c = errors_store.add_category(con, "tone", "Tone", description="rude or curt", author="ann")
        errors_store.rename_category(con, "tone", "tone of voice", author="bob")
        assert errors_store.get_category(con, "tone").name == "tone of voice"
        with pytest.raises(ValueError, match="already named"):
            errors_store.add_category(con, "tone2", "Tone of Voice", author="ann")
        hist = errors_store.taxonomy_history(con)
    assert c.id == "tone"
    assert hist["kind"].to_list()[-2:] == ["add", "rename"]
    assert '"from":"Tone"' in hist["payload"][-1] and hist["author"][-1] == "bob"


def test_merge_keeps_counts_and_history(crafted):
    p = crafted["project"]
    workflow.auto(p, "A")
    before = workflow.run_metrics(p, "A").overall
    k = {r["category_id"]: r["k"] for r in before.iter_rows(named=True)}
    assert k["wrong_label"] == 1 and k["format_violation"] == 2
    with p.connect() as con:
        errors_store.merge_categories(con, ["wrong_label"], "format_violation", author="ann")
        assert not errors_store.get_category(con, "wrong_label").active
    after = {r["category_id"]: r["k"] for r in workflow.run_metrics(p, "A").overall.iter_rows(named=True)}
    assert "wrong_label" not in after and after["format_violation"] == 3 and after["any error"] == 3
    with p.connect() as con:
        ev = errors_store.taxonomy_history(con).filter(pl.col("kind") == "merge").row(0, named=True)
        # label rows are untouched: they still name the category they were written with
        assert errors_store.label_history(con, errors_store.current_labels(con, crafted["psid"])
                                          .filter(pl.col("pair_id") == crafted["eval"][1])["prediction_id"][0]
                                          )[0].category_id == "wrong_label"
        with pytest.raises(ValueError, match="already merged"):
            errors_store.merge_categories(con, ["wrong_label"], "verbose", author="ann")
    assert '"label_rows":{"wrong_label":1}' in ev["payload"]


def test_split_moves_labels_to_children(crafted):
    p = crafted["project"]
    workflow.auto(p, "A")
    e2, e3 = crafted["eval"][2], crafted["eval"][3]
    e1 = crafted["eval"][1]
    with p.connect() as con:
        lab = errors_store.current_labels(con, crafted["psid"])
        pred_e3 = lab.filter(pl.col("pair_id") == e3)["prediction_id"][0]
        errors_store.merge_categories(con, ["wrong_label"], "format_violation", author="ann")
        errors_store.split_category(con, "format_violation",
                                    [("free_text", "free text", ""), ("bad_json", "bad json", "")],
                                    assign={pred_e3: "bad_json"}, author="ann")
    got = cats_by_pair(p, crafted["psid"])
    assert got[e2] == {"free_text"} and got[e3] == {"incomplete", "bad_json"}
    assert got[e1] == {"free_text"}  # merged into the parent before the split: follows it
    with p.connect() as con, pytest.raises(ValueError, match="not among the new categories"):
        errors_store.split_category(con, "incomplete", [("a", "a", ""), ("b", "b", "")], assign={"x": "c"},
                                    author="ann")


def test_correction_makes_a_revision_and_a_preference_pair(crafted):
    p = crafted["project"]
    workflow.auto(p, "A")
    e1 = crafted["eval"][1]
    with p.connect() as con:
        pred = errors_store.current_labels(con, crafted["psid"]).filter(pl.col("pair_id") == e1)["prediction_id"][0]
        before = pairs_store.get(con, e1)
        c = errors_store.correct(con, pred, "card_arrival", author="ann", category_id="wrong_label",
                                 reason="the customer asks about arrival", expected_version=before.version)
        after = pairs_store.get(con, e1)
        hist = pairs_store.history(con, e1)
        prefs = errors_store.preference_pairs(con, [e1])
        labels = errors_store.label_history(con, pred)
    assert after.response == "card_arrival" and after.head_revision_id == c.revision_id != before.head_revision_id
    assert after.version == before.version + 1 and [h.response for h in hist] == ["duplicate_charge", "card_arrival"]
    assert hist[1].parent_id == before.head_revision_id and hist[1].author == "ann"
    (pp,) = prefs
    # the model said card_arrival too: the reference was wrong, so the old reference is the rejected side
    assert (pp.chosen, pp.rejected, pp.category_id, pp.prediction_id) == ("card_arrival", "duplicate_charge",
                                                                         "wrong_label", pred)
    assert pp.prompt == before.instruction
    assert labels[-1].source == "human" and labels[-1].decision == "confirmed"


def test_correction_against_a_stale_version_is_kept_beside(crafted):
    p = crafted["project"]
    e2 = crafted["eval"][2]
    with p.connect() as con:
        pred = errors_store.predictions_with_source(con, crafted["psid"]).filter(pl.col("pair_id") == e2)
        pred_id, v = pred["prediction_id"][0], int(pred["pair_version"][0])
        pairs_store.revise(con, e2, expected_version=v, author="bob", response="top_up_transfer ")
        with pytest.raises(ConflictError, match="kept as revision"):
            errors_store.correct(con, pred_id, "card_arrival", author="ann", expected_version=v)
        assert pairs_store.get(con, e2).response == "top_up_transfer "  # head not moved
        assert len(pairs_store.history(con, e2)) == 3 and len(errors_store.preference_pairs(con, [e2])) == 1
        with pytest.raises(ValueError, match="correction is empty"):
            errors_store.correct(con, pred_id, "  ", author="ann")


def test_marking_bad_data_moves_the_pair(crafted):
    p = crafted["project"]
    e3 = crafted["eval"][3]
    with p.connect() as con:
        pred_id = errors_store.predictions_with_source(con, crafted["psid"]).filter(
            pl.col("pair_id") == e3)["prediction_id"][0]
        errors_store.ensure_categories(con, [("wrong_label", "wrong label", "")])
        errors_store.mark_bad(con, pred_id, "needs_fix", author="ann", category_id="wrong_label")
        assert pairs_store.get(con, e3).status == Status.needs_fix
        assert pairs_store.reviews(con, e3)[-1].author == "ann"
        with pytest.raises(ValueError, match="needs_fix or rejected"):
            errors_store.mark_bad(con, pred_id, "accepted", author="ann")


def test_metrics_by_document_and_tag(project):
    with project.connect() as con:
        ids = add_pairs(con, [
            NewPair(content=PairContent(instruction=f"q{i}", response=f"answer number {i} is here"),
                    status=Status.accepted, tags=["faq", f"t{i % 2}"],
                    provenance=Provenance(source_uri=f"doc{i % 2}.md")) for i in range(6)])
        sl = make_slice(con, ids, eval_ids=ids)
    rid = make_run(project, sl.id)
    outs = {pid: (f"answer number {i} is here" if i < 3 else "banana bread recipe with walnuts")
            for i, pid in enumerate(ids)}
    with project.connect() as con:
        order = {pid: i for i, pid in enumerate(ids)}
    store_predictions(project, rid, outs, slice_id=sl.id)
    m = workflow.run_metrics(project, "A")
    assert m.task == "text" and m.accuracy["k"] == 3
    anyrow = m.by_document.filter(pl.col("category_id") == "any error")
    d = {r["group"]: (r["k"], r["n"]) for r in anyrow.iter_rows(named=True)}
    want: dict[str, list[int]] = {"doc0.md": [0, 0], "doc1.md": [0, 0]}
    for i in order.values():
        want[f"doc{i % 2}.md"][1] += 1
        want[f"doc{i % 2}.md"][0] += i >= 3
    assert d == {k: tuple(v) for k, v in want.items()}
    tags = {r["group"]: r["n"] for r in m.by_tag.filter(pl.col("category_id") == "any error").iter_rows(named=True)}
    assert tags == {"faq": 6, "t0": 3, "t1": 3}
    assert m.by_slice["group"].unique().to_list() == ["s1@1"]
    saved = workflow.save_category_metrics(project, m)
    assert saved >= 8
