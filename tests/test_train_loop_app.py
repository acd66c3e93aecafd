"""Train, then predict, from the library, the CLI and the app (issue 13: 1, 7, 8).

A run started through ``workflows.train`` predicts its slice's eval split in its own processes
when it succeeds (stored, scored, categorised); ``predict_after = false`` turns that off; a slice
without an eval split still succeeds and says why there are no predictions; "Predict on" in the
app predicts a finished run on the split the user picks. The Train page draws val_loss, follows
the run folders (no stale "queued"), cancels the run it shows, and run names are unique.
Real tiny models, real processes, real DuckDB; every wait is bounded and polls (no timing asserts).
"""

from __future__ import annotations

import io
import json
import time

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from app import jobs
from store import errors as errors_store
from store import runs as runs_store
from tests.test_app_pages import app
from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from training.runfolder import RunFolder
from training.runner import after_of, cancel_run, start_run, wait_run
from tuneloop.cli import app as cli_app
from workflows import errors as errors_workflow
from workflows.retrain import retrain
from workflows.train import train

EVAL = [("What colour is the sea?", "blue"), ("What colour is milk?", "white")]
FAST = ["learning_rate=1e-2", "warmup_steps=0", "lr_scheduler=constant", "threads=1"]
LIMIT_S = 600.0  # a ceiling against hangs, never a speed requirement


def _tiny() -> str:
    return str(tiny_model_dir())


def _wait_job(job: jobs.Job) -> jobs.Job:
    deadline = time.monotonic() + LIMIT_S
    while job.running and time.monotonic() < deadline:
        time.sleep(0.2)
    return job


def _run_dir(project, run_id: str) -> str:
    with project.connect() as con:
        return runs_store.get(con, run_id).run_dir


def _messages(project, run_id: str) -> list[str]:
    with project.connect() as con:
        return [m for _, m, _ in runs_store.events(con, run_id)]


def test_a_run_started_through_the_library_predicts_its_eval_split_when_it_ends(project):
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    rid = train(project, "memo", base_model=_tiny(), overrides=["max_steps=3", *FAST])
    seen: list[str] = []
    run = wait_run(project, rid, timeout_s=LIMIT_S,
                   progress=lambda st: seen.append(str((st.get("after") or {}).get("state"))))
    assert run.status == "succeeded", run.error
    after = after_of(run.run_dir)
    assert after is not None and after["state"] == "done", after
    with project.connect() as con:
        sets = runs_store.prediction_sets(con, rid)
        assert sets["split"].to_list() == ["eval"] and sets["n"].to_list() == [len(EVAL)]
        psid = sets["id"][0]
        assert runs_store.metrics_of(con, psid).height  # scored, as `tuneloop predict` does
    assert after["prediction_set_id"] == psid and after["done"] == after["total"] == len(EVAL)
    # categorised already: running the categoriser again finds nothing new
    assert errors_workflow.auto(project, rid, prediction_set=psid)["labels_added"] == 0
    assert "categorised" in after["message"]
    msgs = _messages(project, rid)
    assert any("predicting the eval split" in m for m in msgs) and any(psid in m for m in msgs)
    assert "done" in seen  # wait_run waited for the predictions, not only for the training

    # the run Retrain makes predicts too
    with project.connect() as con:
        pred = runs_store.predictions_frame(con, psid).row(0, named=True)
        errors_store.correct(con, pred["prediction_id"], "deep blue", author="tester", reason="fix")
    again = retrain(project, rid, overrides=["max_steps=1"], author="tester", wait=True)
    with project.connect() as con:
        assert runs_store.get(con, again.run_id).status == "succeeded"
        assert runs_store.prediction_sets(con, again.run_id)["split"].to_list() == ["eval"]


def test_cli_train_wait_ends_with_categorised_predictions_and_refuses_a_taken_name(project):
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    cli = CliRunner()
    P = ["--project", str(project.root)]
    res = cli.invoke(cli_app, ["train", "--slice", "memo", "--base", _tiny(), "--name", "loop", "--wait", *P,
                               "max_steps=2", *FAST])
    assert res.exit_code == 0, res.output
    assert "succeeded" in res.output and f"{len(EVAL)} predictions on the eval split" in res.output
    with project.connect() as con:
        run = runs_store.get(con, "loop")
        sets = runs_store.prediction_sets(con, run.id)
    assert sets["split"].to_list() == ["eval"]
    assert errors_workflow.auto(project, run.id, prediction_set=sets["id"][0])["labels_added"] == 0

    res = cli.invoke(cli_app, ["train", "--slice", "memo", "--base", _tiny(), "--name", "loop", *P, "max_steps=1"])
    assert res.exit_code == 2 and "already exists" in res.output, res.output
    with project.connect() as con:
        assert [r.name for r in runs_store.list_runs(con)] == ["loop"]
    assert [d.name for d in project.runs_dir.iterdir()] == [run.id]  # the refused run left nothing behind


def test_a_slice_without_an_eval_split_succeeds_and_says_why_there_are_no_predictions(project):
    make_slice(project, "memo", MEMO_PAIRS)
    rid = train(project, "memo", base_model=_tiny(), overrides=["max_steps=2", *FAST], wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
        assert runs_store.prediction_sets(con, rid).is_empty()
    assert run.status == "succeeded", run.error
    after = after_of(run.run_dir)
    assert after is not None and after["state"] == "skipped"
    assert "no eval split" in after["message"] and "--split train" in after["message"]
    assert any("no eval split" in m for m in _messages(project, rid))


def test_predict_after_off_leaves_no_predictions_and_predict_on_in_the_app_makes_them(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    rid = train(project, "memo", base_model=_tiny(), overrides=["max_steps=2", "predict_after=false", *FAST],
                wait=True)
    with project.connect() as con:
        assert runs_store.get(con, rid).status == "succeeded"
        assert runs_store.prediction_sets(con, rid).is_empty()
    after = after_of(_run_dir(project, rid))
    assert after is not None and after["state"] == "skipped" and "predict_after = false" in after["message"]

    at = app("train")
    at.segmented_control(key=f"tr_predict_{rid}_where").set_value("train split").run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key=f"tr_predict_{rid}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = _wait_job(jobs.recent(project, kind="predict")[0])
    assert job.status == "succeeded", job.log()
    with project.connect() as con:
        sets = runs_store.prediction_sets(con, rid)
        assert sets["split"].to_list() == ["train"] and sets["n"].to_list() == [len(MEMO_PAIRS)]
    assert errors_workflow.auto(project, rid, prediction_set=sets["id"][0])["labels_added"] == 0


def _chart_rows(at) -> list[dict]:
    """The rows of every Vega-Lite chart's datasets on the page (Arrow IPC, as the browser gets them)."""
    out: list[dict] = []
    for el in at.get("vega_lite_chart"):
        for d in el.proto.datasets:
            out += pa.ipc.open_stream(io.BytesIO(d.data.data)).read_all().to_pylist()
    return out


def test_train_chart_draws_val_loss_as_its_own_series(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    sl = make_slice(project, "memo", MEMO_PAIRS)
    with project.connect() as con:
        run = runs_store.create(con, base_model="tiny", config={}, run_dir=str(project.runs_dir / "charted"),
                                slice_id=sl.id, name="charted", status="succeeded")
        # val_loss every 5 steps, loss every step: a wide table would hold nulls at 8 of 10 steps
        runs_store.add_metrics(con, run.id, [(s, "loss", 3.0 / s) for s in range(1, 11)]
                               + [(5, "val_loss", 1.5), (10, "val_loss", 1.2)])
    folder = RunFolder(run.run_dir)
    folder.path.mkdir(parents=True)
    folder.update_status(status="succeeded")
    at = app("train")
    rows = _chart_rows(at)
    val = sorted((r["step"], r["value"]) for r in rows if r.get("name") == "val_loss")
    assert val == [(5, 1.5), (10, 1.2)]
    assert len([r for r in rows if r.get("name") == "loss"]) == 10
    assert all(r["value"] is not None for r in rows)
    # val_loss's values are drawn as points too: one value alone (the default eval at the end) makes no line
    specs = [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]
    layers = next(s for s in specs if "layer" in s)["layer"]  # the loss chart (the New run tab draws a memory plan)
    assert any(x["mark"]["type"] == "point" and "val_loss" in json.dumps(x.get("transform")) for x in layers)


def test_runs_tab_follows_the_run_folder_instead_of_showing_queued(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    sl = make_slice(project, "memo", MEMO_PAIRS)
    with project.connect() as con:
        run = runs_store.create(con, base_model="tiny", config={}, run_dir=str(project.runs_dir / "r"),
                                slice_id=sl.id, name="followed")
    folder = RunFolder(run.run_dir)
    folder.path.mkdir(parents=True)
    folder.update_status(status="queued")
    folder.update_status(status="running", step=1, total_steps=2)

    def shown(at) -> str:
        table = at.dataframe[0].value
        return str(table.loc[table["id"] == run.id, "status"].iloc[0])

    at = app("train")
    assert shown(at) == "running"
    folder.update_status(status="succeeded", step=2, adapter_path=str(folder.adapter_dir))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert shown(at) == "succeeded"
    assert at.selectbox(key="tr_watch").format_func(run.id).endswith("succeeded")
    with project.connect() as con:
        assert runs_store.get(con, run.id).status == "succeeded"


def test_cancel_cancels_the_run_it_shows_with_two_runs_going(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    tiny = _tiny()
    # Runs long enough to be going whatever the machine; both are cancelled below.
    older = train(project, "memo", base_model=tiny, overrides=["max_steps=1000000", "save_every=0", *FAST],
                  name="older")
    newer = None
    try:
        at = app("train")
        toml = at.text_area(key="tr_toml").value
        for old, new in (("max_steps = 0", "max_steps = 1000000"), ("save_every = 50", "save_every = 0"),
                         ("threads = 0", "threads = 1")):
            assert old in toml
            toml = toml.replace(old, new)
        at.text_area(key="tr_toml").set_value(toml)
        at.text_input(key="tr_base").set_value(tiny)
        at.text_input(key="tr_name").set_value("newer")
        at.button(key="tr_start").click().run()
        assert not at.exception, [e.value for e in at.exception]
        with project.connect() as con:
            newer = runs_store.get(con, "newer").id
        assert at.selectbox(key="tr_watch").value == newer  # the page shows the run just started
        at.button(key=f"tr_cancel_{newer}").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert wait_run(project, newer, timeout_s=LIMIT_S).status == "cancelled"
        with project.connect() as con:
            assert runs_store.get(con, older).status in ("queued", "running")
        assert not RunFolder(_run_dir(project, older)).cancel_requested()
    finally:
        for rid in (older, newer):
            if rid:
                cancel_run(project, rid)
                wait_run(project, rid, timeout_s=LIMIT_S)
    with project.connect() as con:
        assert runs_store.get(con, older).status == "cancelled"


def test_errors_and_compare_offer_predict_on_instead_of_a_terminal_command(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    sl = make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    with project.connect() as con:
        run = runs_store.create(con, base_model="tiny", config={}, run_dir="", slice_id=sl.id, name="unpredicted",
                                status="succeeded")
    for page, key in (("errors", f"er_predict_{run.id}"), ("compare", f"cmp_predict_{run.id}")):
        at = app(page)
        assert at.button(key=key).label.startswith("Predict unpredicted on its eval split")
        texts = [x.value for x in (*at.info, *at.caption, *at.markdown)]
        assert not any("tuneloop predict" in t for t in texts), texts


def test_default_run_names_are_unique_and_a_taken_name_is_refused(project, tmp_path):
    sl = make_slice(project, "memo", MEMO_PAIRS)
    not_a_model = str(tmp_path / "not-a-model")  # the runs fail in their own processes at once
    first = start_run(project, "memo", base_model=not_a_model, overrides=["threads=1"])
    second = train(project, "memo", base_model=not_a_model, overrides=["threads=1"])
    with project.connect() as con:
        names = [runs_store.get(con, r).name for r in (first, second)]
    assert names == [f"memo@{sl.version}", f"memo@{sl.version} (2)"]
    with pytest.raises(ValueError, match="already exists"):
        train(project, "memo", base_model=not_a_model, name=f"memo@{sl.version}")
    with project.connect() as con, pytest.raises(ValueError, match="already exists"):
        runs_store.create(con, base_model="x", config={}, run_dir="", name=f"memo@{sl.version} (2)")
    for rid in (first, second):
        assert wait_run(project, rid, timeout_s=LIMIT_S).status == "failed"
