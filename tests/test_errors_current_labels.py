"""One answer to "what is this prediction's current error label?".

``store.errors.current_labels`` (the CLI, analysis, reports) and the Errors page's reads
(``store.error_pages``, and the page itself) must agree after a reviewer rejects an automatic
label and after a reviewer changes a prediction's category, and across a category merge.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from store import error_pages
from store import errors as errors_store
from store import pairs as pairs_store
from store import runs as runs_store
from store.db import Project
from store.records import NewPair, PairContent

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
CATEGORIES = [("refusal", "Refusal", ""), ("incorrect", "Incorrect", ""), ("format", "Format", "")]


@pytest.fixture
def labelled(project: Project) -> dict:
    """Four predictions; automatic proposals on three of them, two detectors on the first."""
    with project.connect() as con:
        ids = pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=f"Question {i}?",
                                                                      response=f"Answer {i}."))
                                          for i in range(4)])
        heads = {p.id: p.head_revision_id for p in pairs_store.query(con)}
        run = runs_store.create(con, base_model="tiny", config={}, run_dir=str(project.runs_dir / "r"), name="r",
                                status="succeeded")
        psid = runs_store.add_predictions(con, run_id=run.id, model="tiny", generation_config={}, rows=[
            {"pair_id": pid, "revision_id": heads[pid], "prompt": f"Question {i}?", "output": "I can't help.",
             "reference": f"Answer {i}."} for i, pid in enumerate(ids)])
        preds = dict(zip(runs_store.predictions_frame(con, psid)["pair_id"],
                         runs_store.predictions_frame(con, psid)["prediction_id"]))
        p0, p1, p2, p3 = (preds[i] for i in ids)
        errors_store.ensure_categories(con, CATEGORIES)
        errors_store.add_auto_labels(con, pl.DataFrame({
            "prediction_id": [p0, p0, p0, p1, p2],
            "category_id": ["refusal", "incorrect", "incorrect", "refusal", "incorrect"],
            "detector": ["refusal@1", "metric@1", "judge@1", "refusal@1", "metric@1"],
            "confidence": [0.9, 0.4, 0.6, 0.8, 0.7],
            "evidence": ["refusal phrase", "no match", "judge says wrong", "refusal phrase", "no match"],
        }))
    return {"project": project, "psid": psid, "run": run.id, "p": [p0, p1, p2, p3]}


def _current(con, psid: str) -> dict[tuple[str, str], str]:
    cur = errors_store.current_labels(con, psid, include_rejected=True)
    return {(r["prediction_id"], r["category_id"]): r["state"] for r in cur.iter_rows(named=True)}


def assert_pages_agree(con, psid: str) -> None:
    """Every number and list the Errors page reads equals what ``current_labels`` says."""
    cur = errors_store.current_labels(con, psid, include_rejected=True)
    states = _current(con, psid)

    counts = error_pages.error_counts(con, psid)
    by_state = Counter((c, s) for (_, c), s in states.items())
    for r in counts.iter_rows(named=True):
        c = r["category_id"]
        assert (r["confirmed"], r["proposed"], r["rejected"]) == (
            by_state[(c, "confirmed")], by_state[(c, "proposed")], by_state[(c, "rejected")]), c
        assert r["errors"] == by_state[(c, "confirmed")] + by_state[(c, "proposed")]
    assert set(counts["category_id"]) == {c for _, c in states}

    overview, n_preds, n_err = error_pages.error_overview(con, psid)
    assert overview.equals(counts)
    open_preds = {p for (p, _), s in states.items() if s != "rejected"}
    assert (n_preds, n_err) == (4, len(open_preds))
    assert error_pages.error_funnel(con)["with errors"] == len(open_preds)

    for state in (None, "proposed", "confirmed", "rejected"):
        want = {p for (p, _), s in states.items() if (s != "rejected" if state is None else s == state)}
        page = error_pages.error_examples(con, psid, state=state, limit=50)
        assert set(page["prediction_id"]) == want, state
        assert error_pages.error_example_count(con, psid, state=state) == len(want)

    for pred in {p for p, _ in states}:
        mine = cur.filter(pl.col("prediction_id") == pred)
        shown = error_pages.prediction_labels(con, pred)
        assert dict(zip(shown["category_id"], shown["state"])) == dict(zip(mine["category_id"], mine["state"]))
        assert dict(zip(shown["category_id"], shown["confidence"])) == dict(
            zip(mine["category_id"], mine["auto_confidence"]))
        assert dict(zip(shown["category_id"], shown["evidence"])) == dict(
            zip(mine["category_id"], mine["auto_evidence"]))


def test_a_reviewer_rejects_an_automatic_label(labelled):
    p0, p1, p2, p3 = labelled["p"]
    with labelled["project"].connect() as con:
        assert_pages_agree(con, labelled["psid"])
        errors_store.review(con, p0, "refusal", "rejected", author="rev")
        states = _current(con, labelled["psid"])
        assert states[(p0, "refusal")] == "rejected"
        assert states[(p0, "incorrect")] == "proposed"  # the other category of p0 stays open
        cur = errors_store.current_labels(con, labelled["psid"], include_rejected=True)
        row = cur.filter((pl.col("prediction_id") == p0) & (pl.col("category_id") == "incorrect")).row(0, named=True)
        assert (row["auto_detector"], row["auto_confidence"]) == ("judge@1", 0.6)  # the strongest proposal
        assert_pages_agree(con, labelled["psid"])
        # rejecting p2's only label takes p2 out of the errors
        errors_store.review(con, p2, "incorrect", "rejected", author="rev")
        assert_pages_agree(con, labelled["psid"])
        assert error_pages.error_overview(con, labelled["psid"])[2] == 2


def test_a_reviewer_changes_the_category(labelled):
    p0, p1, p2, p3 = labelled["p"]
    with labelled["project"].connect() as con:
        errors_store.change_category(con, p1, "refusal", "format", author="rev")
        states = _current(con, labelled["psid"])
        assert states[(p1, "refusal")] == "rejected" and states[(p1, "format")] == "confirmed"
        assert_pages_agree(con, labelled["psid"])
        # a later decision wins over an earlier one: the reviewer confirms refusal after all
        errors_store.review(con, p1, "refusal", "confirmed", author="rev2")
        assert _current(con, labelled["psid"])[(p1, "refusal")] == "confirmed"
        assert_pages_agree(con, labelled["psid"])


def test_labels_follow_a_merge_on_both_paths(labelled):
    p0, p1, p2, p3 = labelled["p"]
    with labelled["project"].connect() as con:
        errors_store.change_category(con, p1, "refusal", "format", author="rev")
        errors_store.merge_categories(con, ["format"], "incorrect", author="rev")
        states = _current(con, labelled["psid"])
        assert (p1, "format") not in states and states[(p1, "incorrect")] == "confirmed"
        assert_pages_agree(con, labelled["psid"])


def test_the_errors_page_shows_what_current_labels_says(labelled, monkeypatch):
    p0, p1, p2, p3 = labelled["p"]
    project: Project = labelled["project"]
    with project.connect() as con:
        errors_store.review(con, p0, "refusal", "rejected", author="rev")
        errors_store.review(con, p2, "incorrect", "rejected", author="rev")
        errors_store.change_category(con, p1, "refusal", "format", author="rev")
        cur = errors_store.current_labels(con, labelled["psid"])  # open labels only
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/errors.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["With an error"] == str(cur["prediction_id"].n_unique())  # p0 (incorrect) and p1 (format)
    assert metrics["Confirmed by reviewers"] == str(cur.filter(pl.col("state") == "confirmed").height)
    shown = at.dataframe[0].value
    assert set(shown["prediction_id"]) == set(cur["prediction_id"]) == {p0, p1}
