"""Forms keyed to the record they edit (issue 13): the Errors page's correction form, its selection,
bulk acceptance of the model's answers, and the Review page's model suggestion.

A real project (DuckDB in tmp_path) with pending intent pairs, a run whose predictions get some
labels wrong, and their automatic error labels; the pages run through the real router in AppTest.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from analysis.errors.taxonomy import DEFAULT_CATEGORIES
from store import errors as errors_store
from store import pairs as pairs_store
from store.db import Project
from store.pairs import add_pairs
from store.records import NewPair, Pair, PairContent, Provenance, SliceFilter, Status
from tests.errors_fixtures import INTENTS, make_run, make_slice, store_predictions

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
ANSWER = "The right answer (becomes a new revision of the pair and a preference pair)"
# Wrong outputs, most confident first: (index into INTENTS, output, detector confidence).
WRONG = [(0, "duplicate_charge", 0.95), (2, "card_arrival", 0.9), (4, "top_up_by_transfer", 0.85),
         (6, "declined_card_payment", 0.8)]


@pytest.fixture
def loop(project: Project, monkeypatch) -> dict:
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    with project.connect() as con:
        ids = add_pairs(con, [
            NewPair(content=PairContent(instruction=q, response=lab), status=Status.pending, tags=["intent"],
                    provenance=Provenance(source_uri="intents.csv", source_line=i + 2))
            for i, (q, lab) in enumerate(INTENTS)])
        sl = make_slice(con, ids, eval_ids=ids)
    run = make_run(project, sl.id)
    outputs = {pid: lab for pid, (_, lab) in zip(ids, INTENTS)}
    outputs.update({ids[i]: out for i, out, _ in WRONG})
    psid = store_predictions(project, run, outputs, slice_id=sl.id)
    with project.connect() as con:
        errors_store.ensure_categories(con, DEFAULT_CATEGORIES)
        preds = {r["pair_id"]: r["prediction_id"]
                 for r in errors_store.predictions_with_source(con, psid).iter_rows(named=True)}
        wrong = [preds[ids[i]] for i, _, _ in WRONG]
        errors_store.add_auto_labels(con, pl.DataFrame({
            "prediction_id": wrong, "category_id": ["wrong_label"] * len(wrong),
            "detector": ["label@1"] * len(wrong), "confidence": [c for _, _, c in WRONG],
            "evidence": ["not the reference label"] * len(wrong)}))
    return {"project": project, "pairs": ids, "wrong": wrong, "wrong_pairs": [ids[i] for i, _, _ in WRONG],
            "prediction_set": psid}


def app(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def tick_row(at: AppTest, row: int) -> AppTest:
    """Tick a row of the Errors page's table, as a click in the browser does."""
    key = next(d.key for d in at.dataframe if d.key and d.key.startswith("er_table"))
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    return ok(at.run())


def answer_box(at: AppTest):
    boxes = [t for t in at.text_area if t.label == ANSWER]
    assert len(boxes) == 1
    return boxes[0]


def save_correction(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Save correction").click()
    return ok(at.run())


def heads(project: Project, pair_ids) -> dict[str, tuple[str, str]]:
    with project.connect() as con:
        return {pid: (p.head_revision_id, p.response) for pid in pair_ids for p in [pairs_store.get(con, pid)]}


# ---------------------------------------------------------------- the correction form


def test_switching_rows_gives_that_rows_form_and_saves_to_that_pair_only(loop):
    p = loop["project"]
    first, third = loop["wrong_pairs"][0], loop["wrong_pairs"][2]
    before = heads(p, loop["pairs"])
    at = tick_row(app("errors"), 0)
    assert at.session_state["er_pred"] == loop["wrong"][0]
    assert answer_box(at).value == "card_arrival"
    answer_box(at).set_value("typed for row one")
    at = tick_row(at, 2)
    assert at.session_state["er_pred"] == loop["wrong"][2]
    assert answer_box(at).value == before[third][1] == "top_up_transfer"  # row 3's text, not row 1's
    answer_box(at).set_value("top_up_via_bank_transfer")
    at = save_correction(at)
    assert any("Saved" in s.value for s in at.success)
    after = heads(p, loop["pairs"])
    assert after[third][1] == "top_up_via_bank_transfer"
    assert {pid: v for pid, v in after.items() if pid != third} == {pid: v for pid, v in before.items() if pid != third}
    with p.connect() as con:
        assert pairs_store.history(con, third)[-1].parent_id == before[third][0]
        assert [x.pair_id for x in errors_store.preference_pairs(con)] == [third]
    assert first != third


def test_a_form_opened_before_the_pair_changed_saves_as_a_conflict(loop):
    p = loop["project"]
    pid = loop["wrong_pairs"][0]
    shown = heads(p, [pid])[pid][0]
    at = tick_row(app("errors"), 0)
    with p.connect() as con:  # another reviewer saves the pair while this form is open
        other = pairs_store.revise(con, pid, base_revision_id=shown, author="other", response="their_label")
    answer_box(at).set_value("my_label")
    at = save_correction(at)
    assert any("changed since you opened it" in w.value for w in at.warning)
    with p.connect() as con:
        assert pairs_store.get(con, pid).head_revision_id == other.revision_id
        assert pairs_store.get(con, pid).response == "their_label"
        mine = next(h for h in pairs_store.history(con, pid) if h.response == "my_label")
    assert mine.conflict and mine.parent_id == shown and mine.author == "tester"


def test_save_refuses_when_the_selected_row_is_not_the_one_the_form_was_opened_for(loop):
    p = loop["project"]
    before = heads(p, loop["pairs"])
    at = tick_row(app("errors"), 0)
    answer_box(at).set_value("for row one")
    at.session_state["er_pred"] = loop["wrong"][1]  # the page now has another prediction selected
    at = save_correction(at)
    assert any("no longer the selected row" in e.value for e in at.error)
    assert heads(p, loop["pairs"]) == before


def test_an_empty_list_after_ticking_a_row_says_nothing_is_there(loop):
    at = tick_row(app("errors"), 2)
    at.segmented_control(key="er_state").set_value("confirmed")
    at = ok(at.run())
    assert any("Nothing here" in i.value for i in at.info)
    assert not [t for t in at.text_area if t.label == ANSWER]
    assert not [b for b in at.button if b.label == "Save correction"]


def test_a_list_emptied_by_another_reviewer_after_ticking_a_row_says_nothing_is_there(loop):
    at = tick_row(app("errors"), 3)
    assert at.session_state["er_pred"] == loop["wrong"][3]
    with loop["project"].connect() as con:  # meanwhile someone rejects every error label of the run
        for pred in loop["wrong"]:
            errors_store.review(con, pred, "wrong_label", "rejected", author="other")
    at = ok(at.run())
    assert any("Nothing here" in i.value for i in at.info)
    assert not [t for t in at.text_area if t.label == ANSWER]


# ---------------------------------------------------------------- accepting the model's answers


def accept_button(at: AppTest):
    return at.button(key="er_accept")


def test_bulk_accept_in_a_category_writes_one_revision_per_prediction_after_confirmation(loop):
    p = loop["project"]
    before = heads(p, loop["pairs"])
    at = app("errors")
    at.selectbox(key="er_cat").set_value("wrong_label")
    at = ok(at.run())
    assert accept_button(at).disabled  # not confirmed yet
    # score: token F1 of output vs reference: "top_up_by_transfer" vs "top_up_transfer" 0.86,
    # "declined_card_payment" vs "declined_payment" 0.8, the two swapped labels 0
    next(s for s in at.slider if s.label == "Score at least").set_value(0.5)
    at = ok(at.run())
    looked = next(c for c in at.checkbox if c.label.startswith("I have looked at these"))
    assert looked.label == "I have looked at these 2 predictions"
    looked.check()
    at = ok(at.run())
    accept_button(at).click()
    at = ok(at.run())
    after = heads(p, loop["pairs"])
    accepted = {loop["wrong_pairs"][2]: "top_up_by_transfer", loop["wrong_pairs"][3]: "declined_card_payment"}
    assert {pid: after[pid][1] for pid in accepted} == accepted
    assert {pid: v for pid, v in after.items() if pid not in accepted} == \
        {pid: v for pid, v in before.items() if pid not in accepted}
    with p.connect() as con:
        for pid in accepted:
            hist = pairs_store.history(con, pid)
            assert len(hist) == 2 and hist[-1].parent_id == before[pid][0] and hist[-1].author == "tester"
        prefs = errors_store.preference_pairs(con)
    assert sorted((x.pair_id, x.chosen, x.rejected) for x in prefs) == sorted(
        (pid, out, before[pid][1]) for pid, out in accepted.items())
    # done: the two are no longer offered, and a new tick would be needed for anything else
    looked = next(c for c in at.checkbox if c.label.startswith("I have looked at these"))
    assert looked.label == "I have looked at these 0 predictions" and not looked.value


def test_accept_outputs_keeps_a_pair_edited_since_the_prediction(loop):
    p = loop["project"]
    pid, pred = loop["wrong_pairs"][0], loop["wrong"][0]
    with p.connect() as con:
        head = pairs_store.get(con, pid).head_revision_id
        pairs_store.revise(con, pid, base_revision_id=head, author="other", response="fixed_by_hand")
        res = errors_store.accept_outputs(con, [pred], author="tester")
        assert not res.corrections and len(res.conflicts) == 1
        assert pairs_store.get(con, pid).response == "fixed_by_hand"
        kept = next(h for h in pairs_store.history(con, pid) if h.id == res.conflicts[0])
    assert kept.conflict and kept.response == "duplicate_charge" and kept.parent_id == head


# ---------------------------------------------------------------- the Review page's suggestion


def review_a_pair_the_model_got_wrong(loop) -> tuple[AppTest, Pair, str]:
    """The Review page (pending queue) skipped on to a pair whose prediction differs from its response."""
    outputs = dict(zip(loop["wrong_pairs"], [o for _, o, _ in WRONG]))
    at = app("review")
    for _ in range(len(loop["pairs"])):
        shown: Pair = at.session_state["rv_buf"][0]
        if shown.id in outputs:
            assert any(shown.id in m.value for m in at.markdown)
            return at, shown, outputs[shown.id]
        at.button(key="rv_skip").click()
        at = ok(at.run())
    raise AssertionError("no pair the model got wrong in the pending queue")


def test_review_shows_the_models_suggestion_and_use_suggestion_saves_it_on_the_revision_shown(loop):
    p = loop["project"]
    at, shown, out = review_a_pair_the_model_got_wrong(loop)
    assert [t.value for t in at.text] == [out]
    assert any("Model suggestion" in c.value and "run A" in c.value for c in at.caption)
    at.button(key=f"rv_use_{shown.id}").click()
    at = ok(at.run())
    response = next(t for t in at.text_area if t.label == "Response")
    assert response.value == out
    with p.connect() as con:  # another reviewer saves the pair while the suggestion is in the edit
        other = pairs_store.revise(con, shown.id, base_revision_id=shown.head_revision_id, author="other",
                                   response="their_label")
    at.button(key="rv_save").click()
    at = ok(at.run())
    with p.connect() as con:
        assert pairs_store.get(con, shown.id).head_revision_id == other.revision_id
        mine = next(h for h in pairs_store.history(con, shown.id) if h.response == out)
    assert mine.conflict and mine.parent_id == shown.head_revision_id and mine.author == "tester"


def test_use_suggestion_saves_a_new_revision_of_the_pair_shown(loop):
    p = loop["project"]
    at, shown, out = review_a_pair_the_model_got_wrong(loop)
    at.button(key=f"rv_use_{shown.id}").click()
    at = ok(at.run())
    at.button(key="rv_save").click()
    at = ok(at.run())
    with p.connect() as con:
        pair = pairs_store.get(con, shown.id)
        hist = pairs_store.history(con, shown.id)
    assert pair.response == out and pair.head_revision_id == hist[-1].id
    assert len(hist) == 2 and hist[-1].parent_id == shown.head_revision_id and not hist[-1].conflict


# ---------------------------------------------------------------- explore: the bulk confirmation


def test_explore_bulk_confirmation_does_not_carry_over_to_another_filter(loop):
    p = loop["project"]
    at = app("explore")
    at.selectbox(key="ex_bulk_status").set_value("rejected")
    at = ok(at.run())
    next(c for c in at.checkbox if c.label.startswith("Yes, set")).check()
    at = ok(at.run())
    assert not at.button(key="ex_bulk_apply").disabled
    at.text_input(key="ex_text").set_value("card")  # another set of pairs: the tick was for the first
    at = ok(at.run())
    box = next(c for c in at.checkbox if c.label.startswith("Yes, set"))
    assert not box.value and at.button(key="ex_bulk_apply").disabled
    with p.connect() as con:
        assert pairs_store.count(con, SliceFilter(status=[Status.rejected])) == 0
