"""Every page of the app through streamlit's AppTest on a seeded project (a real DuckDB file).

Each test renders a page through the real router and checks that one user action changes
the store as the user expects.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from analysis.errors.taxonomy import DEFAULT_CATEGORIES
from app import jobs
from store import curation, error_pages, pair_pages
from store import errors as errors_store
from store import pairs as pairs_store
from store import runs as runs_store
from store import slices as slices_store
from store import users as users_store
from store.db import Project
from store.records import NewPair, PairContent, Provenance, SliceFilter, Status

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")


def seed(project: Project, n: int = 30) -> dict:
    """Pairs (some accepted), a slice, a finished run with predictions."""
    new = []
    for i in range(n):
        new.append(NewPair(
            content=PairContent(instruction=f"Question number {i} about the Cobalt sensor?",
                                response=f"Answer {i}: calibrate every {i % 7 + 1} months."),
            provenance=Provenance(generator="sections" if i % 2 else "qa", source_uri="kb.md", source_line=i + 1),
            tags=["kb"] if i % 3 == 0 else [],
            status=Status.accepted if i < 10 else Status.pending, author="import"))
    with project.transaction() as con:
        ids = pairs_store.add_pairs(con, new)
    with project.connect() as con:
        sl = slices_store.create(con, "kb-accepted", SliceFilter(status=[Status.accepted]), eval_fraction=0.3,
                                 split_by="pair", author="tester")
        run = runs_store.create(con, base_model="tiny", config={"max_steps": 2}, run_dir=str(project.runs_dir / "r1"),
                                slice_id=sl.id, slice_hash=sl.content_hash, name="run-a", author="tester",
                                status="succeeded")
        runs_store.add_metrics(con, run.id, [(s, "loss", 2.0 / (s + 1)) for s in range(5)]
                               + [(s, "val_loss", 2.5 / (s + 1)) for s in range(0, 5, 2)])
        ex = slices_store.examples(con, sl.id, "eval")
        rows = [{"pair_id": r["pair_id"], "revision_id": r["revision_id"], "prompt": r["instruction"],
                 "output": "I don't know." if k % 2 else r["response"], "reference": r["response"]}
                for k, r in enumerate(ex.iter_rows(named=True))]
        psid = runs_store.add_predictions(con, run_id=run.id, model="tiny", generation_config={}, rows=rows,
                                          slice_id=sl.id, split="eval")
        errors_store.ensure_categories(con, DEFAULT_CATEGORIES)
        preds = runs_store.predictions_frame(con, psid)
        wrong = preds.filter(pl.col("output") == "I don't know.")
        errors_store.add_auto_labels(con, pl.DataFrame({
            "prediction_id": wrong["prediction_id"], "category_id": ["refusal"] * wrong.height,
            "detector": ["refusal@1"] * wrong.height, "confidence": [0.9] * wrong.height,
            "evidence": ["refusal phrase"] * wrong.height}))
    return {"pair_ids": ids, "slice": sl, "run": run, "prediction_set": psid, "wrong": wrong}


@pytest.fixture
def seeded(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    info = seed(project)
    info["project"] = project
    return info


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_renders(seeded):
    at = app()
    assert at.title[0].value == "Overview"
    labels = {m.label: m.value for m in at.metric}
    assert labels["Pairs"] == "30"
    assert labels["Accepted"] == "10"


def test_review_accept_pair(seeded):
    p: Project = seeded["project"]
    at = app("review")
    assert at.title[0].value == "Review"
    with p.connect() as con:
        first_pending, second = pair_pages.page_ids(con, SliceFilter(status=[Status.pending]), limit=2)
    assert any(first_pending in m.value for m in at.markdown)
    at.button(key="rv_accept").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with p.connect() as con:
        pair = pairs_store.get(con, first_pending)
        revs = pairs_store.reviews(con, first_pending)
    assert pair.status == "accepted"
    assert revs[-1].author == "tester"
    # the next item is shown at once, and reject / edit work on it
    assert any(second in m.value for m in at.markdown)
    at.button(key="rv_edit").click().run()
    # the edit form's widgets are keyed by the pair and revision it was opened for: found by label
    next(t for t in at.text_area if t.label == "Response").set_value("A corrected answer.")
    next(t for t in at.text_input if t.label == "Reason").set_value("typo")
    at.button(key="rv_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with p.connect() as con:
        pair = pairs_store.get(con, second)
        hist = pairs_store.history(con, second)
    assert pair.response == "A corrected answer."
    assert hist[-1].author == "tester" and hist[-1].reason == "typo"


def test_explore_filter_and_save_slice(seeded):
    p: Project = seeded["project"]
    at = app("explore")
    at.multiselect(key="ex_status").set_value(["pending"]).run()
    at.text_input(key="ex_text").set_value("number 1").run()
    assert not at.exception, [e.value for e in at.exception]
    # "number 1", "number 1x" among the pending ones (10..29): 10-19 -> 10 pairs
    assert {m.label: m.value for m in at.metric}["Matching pairs"] == "10"
    at.text_input(key="ex_slice_name").set_value("pending-ones")
    at.number_input(key="ex_slice_eval").set_value(0.2)
    at.selectbox(key="ex_slice_split").set_value("pair")
    at.button(key="ex_slice_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with p.connect() as con:
        sl = slices_store.get(con, "pending-ones")
    assert sl.n_items == 10 and sl.n_eval == 2 and sl.author == "tester"
    assert sl.filter["text"] == "number 1"


def test_explore_bulk_action_needs_confirmation(seeded):
    p: Project = seeded["project"]
    at = app("explore")
    at.multiselect(key="ex_tags").set_value(["kb"]).run()
    at.selectbox(key="ex_bulk_status").set_value("rejected").run()
    assert at.button(key="ex_bulk_apply").disabled
    next(c for c in at.checkbox if c.label.startswith("Yes, set")).check().run()
    at.button(key="ex_bulk_apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with p.connect() as con:
        assert pair_pages.count(con, SliceFilter(tags_any=["kb"], status=[Status.rejected])) == 10


def test_slices_page_shows_items_and_exports(seeded):
    p: Project = seeded["project"]
    at = app("slices")
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Pairs"] == "10"
    at.button(key="sl_export").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(p.exports_dir.glob("kb-accepted-v1.*"))


def test_slice_export_stays_in_the_exports_folder_whatever_the_name(seeded):
    p: Project = seeded["project"]
    with p.connect() as con:
        slices_store.create(con, "../../escaped", SliceFilter(status=[Status.accepted]), eval_fraction=0.3,
                            split_by="pair", author="tester")
    at = app("slices")
    at.button(key="sl_export").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not list(p.root.parent.glob("escaped*")) and not list(p.root.glob("escaped*"))
    assert [f.name for f in p.exports_dir.glob("escaped-v1.*")]


def test_errors_page_relabel_and_correct(seeded):
    p: Project = seeded["project"]
    psid = seeded["prediction_set"]
    at = app("errors")
    labels = {m.label: m.value for m in at.metric}
    assert labels["With an error"] == str(seeded["wrong"].height)
    chosen = at.session_state["er_pred"]
    assert chosen in seeded["wrong"]["prediction_id"].to_list()
    # relabel: refusal -> incorrect
    at.selectbox(key=f"er_change_{chosen}_refusal").set_value("incorrect").run()
    assert not at.exception, [e.value for e in at.exception]
    with p.connect() as con:
        cur = errors_store.current_labels(con, psid, include_rejected=True)
    mine = {r["category_id"]: r["state"] for r in cur.filter(pl.col("prediction_id") == chosen).iter_rows(named=True)}
    assert mine == {"refusal": "rejected", "incorrect": "confirmed"}
    with p.connect() as con:
        counts = error_pages.error_counts(con, psid)
    assert dict(zip(counts["category_id"], counts["errors"]))["incorrect"] == 1
    # correct the answer: a new revision and a preference pair
    next(t for t in at.text_area if t.label.startswith("The right answer")).set_value("Calibrate it every three months.")
    next(b for b in at.button if b.label == "Save correction").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with p.connect() as con:
        pid = error_pages.prediction_detail(con, chosen)["pair_id"]
        assert pairs_store.get(con, pid).response == "Calibrate it every three months."
        prefs = errors_store.preference_pairs(con, [pid])
    assert prefs and prefs[0].rejected == "I don't know." and prefs[0].author == "tester"


def test_duplicates_keep_one(seeded):
    p: Project = seeded["project"]
    a, b, c = seeded["pair_ids"][20:23]
    with p.connect() as con:
        revs = {x.id: x.head_revision_id for x in pair_pages.pairs_by_ids(con, [a, b, c])}
        curation.save_duplicate_clusters(con, pl.DataFrame({
            "cluster_id": ["dc1"] * 3, "kind": ["near_lexical"] * 3, "pair_id": [a, b, c],
            "revision_id": [revs[a], revs[b], revs[c]], "kept_pair_id": [a] * 3, "is_kept": [True, False, False],
            "similarity": [1.0, 0.93, 0.9]}), ["near_lexical"], {"threshold": 0.8})
    at = app("duplicates")
    at.button(key=f"du_keep_dc1_{b}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with p.connect() as con:
        got = {x.id: (x.status, x.duplicate_of) for x in pair_pages.pairs_by_ids(con, [a, b, c])}
        assert curation.clusters(con)[0].id == "dc1"
    assert got[b] == ("pending", None)
    assert got[a] == ("duplicate", b) and got[c] == ("duplicate", b)


def test_train_page_starts_a_run(seeded):
    p: Project = seeded["project"]
    at = app("train")
    assert not at.exception, [e.value for e in at.exception]
    toml = at.text_area(key="tr_toml").value
    at.text_area(key="tr_toml").set_value(toml.replace("max_steps = 0", "max_steps = 1"))
    at.text_input(key="tr_base").set_value(str(p.root / "no-such-model"))
    at.text_input(key="tr_name").set_value("from-the-app")
    at.button(key="tr_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with p.connect() as con:
        run = runs_store.get(con, "from-the-app")
    assert run.author == "tester" and run.config["max_steps"] == 1 and run.slice_id == seeded["slice"].id
    from training import runner

    runner.wait_run(p, run.id, timeout_s=120)  # the bogus model fails in its own process, never in the app


def test_compare_page_and_retrain_button(seeded):
    p: Project = seeded["project"]
    with p.connect() as con:
        run_b = runs_store.create(con, base_model="tiny", config={}, run_dir=str(p.runs_dir / "r2"),
                                  slice_id=seeded["slice"].id, name="run-b", status="succeeded",
                                  parent_run_id=seeded["run"].id)
        ex = slices_store.examples(con, seeded["slice"].id, "eval")
        runs_store.add_predictions(con, run_id=run_b.id, model="tiny", generation_config={}, rows=[
            {"pair_id": r["pair_id"], "revision_id": r["revision_id"], "prompt": r["instruction"],
             "output": r["response"], "reference": r["response"]} for r in ex.iter_rows(named=True)])
    at = app("compare")
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Common eval pairs"] == str(ex.height)
    assert metrics["Fixed / broken"].startswith(f"{seeded['wrong'].height} /")


def test_users_page_adds_account_and_then_requires_sign_in(seeded):
    p: Project = seeded["project"]
    at = app("users")
    at.text_input(key="us_name").set_value("alice")
    at.selectbox(key="us_role").set_value("admin")
    at.text_input(key="us_pw").set_value("correct horse")
    at.button(key="us_add_btn").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with p.connect() as con:
        assert users_store.authenticate(con, "alice", "correct horse").role == "admin"
    fresh = AppTest.from_file(APP, default_timeout=60).run()
    assert fresh.title[0].value == "Sign in to tuneloop"
    fresh.text_input[0].set_value("alice")
    fresh.text_input[1].set_value("wrong password")
    fresh.button[0].click().run()
    assert fresh.error and "wrong password" in fresh.error[0].value
    fresh.text_input[1].set_value("correct horse")
    fresh.button[0].click().run()
    assert not fresh.exception, [e.value for e in fresh.exception]
    assert fresh.title[0].value == "Overview"


def test_ingest_upload_runs_in_a_background_job(seeded):
    p: Project = seeded["project"]
    at = app("ingest")
    at.file_uploader(key="ing_files").set_value([
        ("../../escape attempt.md", b"# Handbook\n\n## Returns\n\nHardware can be returned within 30 days.\n",
         "text/markdown")])
    at.button(key="ing_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    saved = list(p.uploads_dir.rglob("*.md"))
    assert [f.name for f in saved] == ["escape attempt.md"]
    job = jobs.recent(p, kind="ingest")[0]
    assert job.author == "tester" and str(saved[0]) in job.args
    deadline = time.monotonic() + 240
    while job.running and time.monotonic() < deadline:
        time.sleep(0.5)
    events = [e for e in job.events() if e.get("event") == "file"]
    assert job.status == "succeeded", job.log()
    assert events and events[0]["status"] == "new" and events[0]["pairs_new"] >= 1
    with p.connect() as con:
        assert pair_pages.count(con, SliceFilter(document_ids=[events[0]["document_id"]])) == events[0]["pairs_new"]


def test_review_queue_by_model_weakness_shows_failing_pairs_first(seeded):
    at = app("review")
    at.selectbox(key="rv_queue").set_value("By model weakness").run()
    assert not at.exception, [e.value for e in at.exception]
    failing = set(seeded["wrong"]["pair_id"].to_list())
    shown = next(m.value for m in at.markdown if "`p_" in m.value)
    assert any(pid in shown for pid in failing)


def test_explore_semantic_search_embeds_a_small_backlog_inline(seeded):
    """30 pairs (under the inline limit): the search embeds them in the rerun and finds the query."""
    p: Project = seeded["project"]
    at = app("explore")
    at.text_input(key="ex_sem_q").set_value("Question number 7 about the Cobalt sensor?").run()
    at.button(key="ex_sem_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    hits = at.dataframe[-1].value
    assert hits["instruction"].iloc[0] == "Question number 7 about the Cobalt sensor?"
    with p.connect() as con:
        assert sum(curation.embedding_counts(con).values()) == 30


def test_without_a_project_the_app_says_how_to_make_one_and_creates_nothing(project, tmp_path, monkeypatch):
    """No TUNELOOP_PROJECT and nothing picked: the app explains instead of creating an empty
    project (which `tuneloop sample` used to leave empty), refuses a folder that is not a
    project, and opens a real one."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("TUNELOOP_PROJECT", raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Open a tuneloop project"
    shown = "\n".join(c.value for c in at.code)
    for command in ("tuneloop sample --project DIR", "tuneloop init DIR", "tuneloop ui --project DIR"):
        assert command in shown
    assert list(cwd.iterdir()) == []

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    at.text_input(key="op_folder").set_value(str(plain))
    at.button(key="op_open").click().run()
    assert at.error and "not a tuneloop project" in at.error[0].value
    assert [p.name for p in plain.iterdir()] == ["notes.txt"]

    at.text_input(key="op_folder").set_value(str(project.root))
    at.button(key="op_open").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Overview"
    assert list(cwd.iterdir()) == []


def test_a_configured_folder_that_is_not_a_project_is_not_created(tmp_path, monkeypatch):
    missing = tmp_path / "typo"
    monkeypatch.setenv("TUNELOOP_PROJECT", str(missing))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Open a tuneloop project"
    assert at.warning and str(missing) in "\n".join(c.value for c in at.code)
    assert not missing.exists()


def test_parser_workers_started_after_the_app_ran_do_not_run_the_app(project, tmp_path, monkeypatch):
    """Streamlit leaves the app as this process's ``__main__``, and a multiprocessing child (a
    parser worker) re-runs the parent's main file to prepare itself: the app must stay inert
    there. It used to open, and so create, an empty `.tuneloop/sample` in the current folder
    from inside every parser worker, which `make run` then showed as an empty sample."""
    from ingest.documents import IngestConfig, ingest

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("TUNELOOP_PROJECT", raising=False)
    AppTest.from_file(APP, default_timeout=60).run()
    doc = tmp_path / "kb.md"
    doc.write_text("# Handbook\n\n## Returns\n\nHardware can be returned within 30 days of delivery.\n")
    report = ingest(project, [doc], IngestConfig(workers=1))
    assert [(f.status, f.error) for f in report.files] == [("new", None)]
    assert list(cwd.iterdir()) == []
