"""Next steps: from a real project's state to what to do next, on Overview and in `tuneloop stats`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from analysis.errors.taxonomy import DEFAULT_CATEGORIES
from store import errors as errors_store
from store import pairs as pairs_store
from store.db import Project
from store.records import Status
from store.stats import loop_facts
from tests.errors_fixtures import add_intent_pairs, make_run, make_slice, store_predictions
from tuneloop.cli import app as cli
from workflows.next_steps import next_steps

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")


def titles(project: Project) -> list[str]:
    with project.connect() as con:
        return [s.title for s in next_steps(loop_facts(con), limit=10)]


def test_the_steps_follow_the_loop(project: Project) -> None:
    assert titles(project) == ["Import a dataset or ingest documents"]
    with project.connect() as con:
        ids = add_intent_pairs(con)
        pairs_store.set_status_many(con, ids[:2], Status.pending, author="t")
    assert titles(project)[:2] == ["Find duplicates", "Review 2 pending pairs"]
    assert "Make a slice of the 6 accepted pairs" in titles(project)
    with project.connect() as con:
        sl = make_slice(con, ids[2:], ids[6:])
    assert "Train on slice s1@1" in titles(project)
    run_a = make_run(project, sl.id, name="A")
    assert titles(project)[0] == "Predict with run A"
    store_predictions(project, run_a, {pid: "card_arrival" for pid in ids[6:]}, slice_id=sl.id)
    with project.connect() as con:
        errors_store.ensure_categories(con, DEFAULT_CATEGORIES)
        pred = con.execute("SELECT id FROM predictions ORDER BY id LIMIT 1").fetchone()[0]
        errors_store.add_auto_labels(con, pl.DataFrame({
            "prediction_id": [pred], "category_id": ["wrong_label"], "detector": ["metric@2"], "confidence": [0.9],
            "evidence": ["differs"]}))
    assert titles(project)[0] == "Review 1 errors of run A"
    assert "Train on slice s1@1" not in titles(project)
    with project.connect() as con:
        errors_store.correct(con, pred, "top_up_transfer", author="t")
    assert "Retrain from run A" in titles(project)
    make_run(project, sl.id, name="B", parent=run_a)
    assert "Compare run A with its retrain" in titles(project)
    assert "Retrain from run A" not in titles(project)


def test_overview_links_each_step_to_its_page(project: Project, monkeypatch) -> None:
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    with project.connect() as con:
        add_intent_pairs(con)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Next steps" in [h.value for h in at.subheader]
    links = at.get("page_link")
    assert links and any("duplicates" in str(link.proto.page) for link in links), [str(x.proto) for x in links]
    # the terminal command is a code block, copied exactly as typed (no Markdown escapes in it)
    commands = [c.value for c in at.code]
    assert any(c.startswith("tuneloop dedupe") for c in commands), commands
    assert not any("\u2060" in c or "\\" in c for c in commands), commands


def test_stats_prints_the_next_step_with_its_command(project: Project) -> None:
    res = CliRunner().invoke(cli, ["stats", "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    assert "next: Import a dataset or ingest documents" in res.output and "tuneloop import" in res.output
    res = CliRunner().invoke(cli, ["stats", "--json", "--project", str(project.root)])
    assert json.loads(res.output)["next_steps"][0]["page"] == "ingest"
