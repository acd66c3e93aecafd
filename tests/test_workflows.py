"""The loop's cross-stage steps are library functions (workflows/) that the CLI and the app share;
the app runs them in a child process (workflows.job), never the CLI through argv."""

from __future__ import annotations

import json
import time

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from app import jobs
from store import errors as errors_store
from store import runs as runs_store
from tests.errors_fixtures import add_intent_pairs, make_run, make_slice, store_predictions
from tests.test_app_pages import APP
from workflows import errors as errors_workflow
from workflows.retrain import retrain


def _wait(job, limit_s: float = 300) -> jobs.Job:
    deadline = time.monotonic() + limit_s  # a ceiling against hangs, not a speed requirement
    while job.running and time.monotonic() < deadline:
        time.sleep(0.2)
    return job


@pytest.fixture
def predicted(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    with project.connect() as con:
        ids = add_intent_pairs(con)
        sl = make_slice(con, ids, eval_ids=ids[::2])
    e0, e1, e2, e3 = ids[::2]
    run = make_run(project, sl.id, "A")
    psid = store_predictions(project, run, {e0: "card_arrival", e1: "card_arrival", e2: "", e3: "declined payment"},
                             slice_id=sl.id)
    return {"run": run, "psid": psid, "slice": sl}


def test_categorise_job_runs_the_workflow_function_in_a_child_process(project, predicted):
    job = jobs.start_workflow(project, "categorise", {"run_ref": "A"}, title="categorise A", author="tester")
    meta = json.loads((job.folder / "job.json").read_text())
    assert meta["module"] == "workflows.job" and meta["args"] == ["categorise", '{"run_ref": "A"}']
    job = _wait(job)
    assert job.status == "succeeded", job.log()
    with project.connect() as con:
        got = errors_store.current_labels(con, predicted["psid"])
    assert set(got["category_id"]) >= {"wrong_label", "incomplete"}
    # the same function, called in-process, finds nothing new to add
    assert errors_workflow.auto(project, "A")["labels_added"] == 0


def test_a_job_on_the_projects_engine_says_which_in_its_log(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    with project.connect() as con:
        add_intent_pairs(con)
    job = _wait(jobs.start_workflow(project, "dedupe", {"near": False}, title="dedupe", author="tester"))
    assert job.status == "succeeded", job.log()
    assert "dedupe: started (engine: local)" in job.log()
    from store import settings as settings_store

    with project.transaction() as con:  # a setting the engine cannot use: one line, the job fails
        settings_store.put(con, "engine", {"kind": "spark"}, author="t")
    job = _wait(jobs.start_workflow(project, "embed", {}, title="embed", author="tester"))
    assert job.status == "failed"
    assert "error: engine 'spark' is not known: choose one of local, ray" in job.log()
    assert "Traceback" not in job.log()


def test_app_retrain_button_runs_the_retrain_workflow(project, predicted):
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/compare.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key="rt_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = _wait(jobs.recent(project, kind="retrain")[0])
    # nothing was corrected yet: the workflow's own error, one line, no traceback
    assert job.status == "failed"
    log = job.log()
    assert "nothing to retrain on" in log and "Traceback" not in log
    with pytest.raises(ValueError, match="nothing to retrain on"):
        retrain(project, "A")


def test_retrain_workflow_freezes_the_corrected_slice_and_starts_a_run(project, predicted):
    """Correct one pair, retrain through the library: slice v2 (parent = v1) and a run whose parent is A."""
    with project.connect() as con:  # a run with a real training config (make_run's is a placeholder)
        run = runs_store.create(con, base_model="tiny", config={"learning_rate": 1e-3}, slice_id=predicted["slice"].id,
                                run_dir=str(project.runs_dir / "A2"), name="A2", status="succeeded")
        preds = runs_store.predictions_frame(con, predicted["psid"])
        wrong = preds.filter(pl.col("output") == "").row(0, named=True)
        errors_store.correct(con, wrong["prediction_id"], "top_up_by_transfer", author="tester", reason="fix")
    r = retrain(project, run.id, overrides=["max_steps=1"], author="tester", name="B")
    assert r.slice.parent_id == predicted["slice"].id and r.plan.replaced == [wrong["pair_id"]]
    with project.connect() as con:
        run_b = runs_store.get(con, r.run_id)
    assert run_b.parent_run_id == run.id and run_b.slice_id == r.slice.id and run_b.name == "B"
    from training.runner import cancel_run

    cancel_run(project, r.run_id)  # the base model "tiny" of the fixture run is not a real model


def test_error_clusters_run_as_a_job_and_the_page_shows_them(project, predicted):
    """Clustering the failing predictions is long work: the Errors page starts a job and shows its result."""
    errors_workflow.auto(project, "A")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/errors.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key="er_discover").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = _wait(jobs.recent(project, kind="discover")[0])
    assert job.status == "succeeded", job.log()
    clusters = job.result()
    assert isinstance(clusters, list) and sum(c["size"] for c in clusters) == 2  # 2 of 4 predictions fail
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("uncategorised" in m.value for m in at.markdown)
