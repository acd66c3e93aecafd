"""What users expect of jobs, ingest, clusters and tables (issue 13):

- a page redraws by itself when its background job ends (once), with no "reload in a moment";
- an ingest job shows its batch and its first file at once, before the parser has loaded;
- the Ingest page's generator choice (and options) is remembered for the project;
- error clusters are about content, not the chat template's system prompt and special tokens;
- result tables wrap long texts instead of cutting them at one line.
"""

from __future__ import annotations

import json
import re
import time

import polars as pl
import pytest

from analysis.errors.discovery import discover
from analysis.errors.text import template_content
from app import components as ui
from app import jobs
from ingest.filetypes import IngestError
from ingest.partition import Parsed
from ingest.workers import LOADED, READY, STARTED, ParseOptions, Task, _Worker
from models.lm import special_tokens
from store import errors as errors_store
from store import runs as runs_store
from store import settings as settings_store
from store.db import Project
from tests.test_app_pages import app, seed
from tests.test_workflows import predicted  # noqa: F401  (fixture: run A, its predictions not categorised)
from workflows import errors as errors_workflow

HANDBOOK = """# Larkspur Labs field handbook

## Calibrating the Cobalt sensor

Calibrate the Cobalt sensor every six months, and always after a firmware update.

## Returning hardware

Hardware can be returned within 30 days of delivery. Print the return label from the portal.
"""


def _wait(job: jobs.Job, limit_s: float = 300) -> jobs.Job:
    deadline = time.monotonic() + limit_s  # a ceiling against hangs, not a speed requirement
    while job.running and time.monotonic() < deadline:
        time.sleep(0.2)
    return job


# ---------------------------------------------------------------- jobs redraw the page themselves


# A job module that runs until the test lets it end: it waits for ROOT/go.
GATED = "import pathlib, sys, time\nwhile not (pathlib.Path(sys.argv[1]) / 'go').exists(): time.sleep(0.05)\n"


def test_a_page_redraws_once_when_its_job_ends_and_not_while_it_runs(project, monkeypatch, tmp_path):
    (tmp_path / "gated_job.py").write_text(GATED)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the job finds the module after the repository
    job = jobs.start(project, "gated", [str(project.root)], title="gated", author="tester", module="gated_job")
    assert job.status == "running"
    assert not jobs.page_needs_redraw(job, None)  # still running: the fragment only polls
    (project.root / "go").touch()
    job = _wait(job)
    assert job.status != "running"
    assert jobs.page_needs_redraw(job, None)  # ended, not yet redrawn: rerun the page
    assert jobs.page_needs_redraw(job, "another-job")
    assert not jobs.page_needs_redraw(job, job.id)  # redrawn once already: no second rerun


@pytest.mark.usefixtures("predicted")
def test_errors_page_categorises_in_a_job_and_redraws_with_the_categories(project):
    at = app("errors")
    assert not at.metric and not any("reload" in (m.value or "").lower() for m in at.success)
    button = next(b for b in at.button if "Categorise errors now" in b.label)
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = _wait(jobs.recent(project, kind="categorise")[0])
    assert job.status == "succeeded", job.log()
    at.run()  # the whole page, as the job panel's fragment reruns it when it sees the job ended
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label for m in at.metric} >= {"Predictions", "With an error"}
    with project.connect() as con:
        psid = runs_store.runs_with_predictions(con)[0][3]
        assert errors_store.labelled_sets(con, psid) > 0


@pytest.mark.usefixtures("predicted")
def test_a_job_panel_reruns_the_page_once_to_show_the_result(project):
    """The panel of the clustering job stays on the page: when it sees the job ended it reruns the
    page once (marking the job redrawn), and the result is drawn; the next run does not rerun."""
    errors_workflow.auto(project, "A")
    at = app("errors")
    at.button(key="er_discover").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = _wait(jobs.recent(project, kind="discover")[0])
    assert job.status == "succeeded", job.log()
    assert "er_discover_status_redrawn" not in at.session_state
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["er_discover_status_redrawn"] == job.id
    assert any("uncategorised" in m.value for m in at.markdown)  # the clusters the job wrote
    at.run()  # redrawn once: a later run draws the same page without another rerun
    assert not at.exception and at.session_state["er_discover_status_redrawn"] == job.id


@pytest.mark.usefixtures("predicted")
def test_pages_redraw_in_a_real_browser_when_their_job_ends(project, tmp_path):
    """Errors: categorise, then the categories appear; Ingest: the document's pairs appear. No reload."""
    from tests.test_browser import ARGS, CHROMIUM, needs_a_browser, running_app

    needs_a_browser()
    from playwright.sync_api import expect, sync_playwright

    doc = tmp_path / "field-handbook.md"
    doc.write_text(HANDBOOK, encoding="utf-8")
    with running_app(project, tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url + "/errors")
        expect(page.get_by_text("have not been categorised yet")).to_be_visible()
        page.get_by_role("button", name="Categorise errors now").click()
        expect(page.get_by_text("With an error")).to_be_visible(timeout=240_000)

        page.goto(url + "/ingest")
        expect(page.get_by_role("heading", name="Ingest")).to_be_visible()
        page.locator("input[type=file][accept*='.pdf']").set_input_files(str(doc))
        expect(page.get_by_text("field-handbook.md").first).to_be_visible()
        page.get_by_role("button", name="Ingest", exact=True).click()
        expect(page.get_by_text("Done in")).to_be_visible(timeout=240_000)
        expect(page.get_by_role("button", name="Review the pending pairs of this document")).to_be_visible()
        browser.close()
    assert jobs.recent(project, kind="categorise")[0].status == "succeeded"
    assert [e["event"] for e in jobs.recent(project, kind="ingest")[0].events()][:2] == ["start", "parsing"]


# ---------------------------------------------------------------- ingest starts its first file at once


def test_a_cold_worker_reports_the_file_before_its_parser_has_loaded(tmp_path):
    """The order a page sees: the file is started (the parser still loading), then the parser is
    loaded, then the file's result. A warm worker reports the start without loading."""
    doc = tmp_path / "handbook.md"
    doc.write_text(HANDBOOK, encoding="utf-8")
    w = _Worker(ParseOptions(), cold=True)
    try:
        w.send(Task(0, str(doc), doc.name))
        w.send(Task(1, str(doc), "again.md"))
        got = []
        while len([m for m in got if m[1] in ("ok", "err")]) < 2:
            assert w.conn.poll(300), f"no answer from the parser process; got {got}"
            got.append(w.conn.recv())
    finally:
        w.stop()
    steps = [(key, status, payload if status in (STARTED, LOADED, "ready") else None) for key, status, payload in got]
    assert steps == [(READY, "ready", None), (0, STARTED, True), (0, LOADED, None), (0, "ok", None),
                     (1, STARTED, False), (1, "ok", None)]  # the Markdown parser loads once
    parsed = got[3][2]
    assert isinstance(parsed, Parsed) and not isinstance(parsed, IngestError)
    assert any("Calibrate the Cobalt sensor" in e["text"] for e in parsed.elements)


def test_the_ingest_job_reports_the_batch_then_the_file_started_then_done(project):
    doc = project.uploads_dir / "handbook.md"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(HANDBOOK, encoding="utf-8")
    spec = {"generators": ["qa", "sections"], "options": {"qa": {"definitions": "false"}}, "chunk_max": 1500}
    job = jobs.start(project, "ingest", [json.dumps(spec), str(doc)], title="ingest 1 file", author="tester",
                     module="app.ingest_job")
    job = _wait(job)
    assert job.status == "succeeded", job.log()
    ev = job.events()
    assert [e["event"] for e in ev] == ["start", "parsing", "file", "end"]
    assert ev[0]["engine"] == "local"  # the page shows which engine parses
    assert ev[0]["files"] == 1 and ev[1]["uri"] == "handbook.md" and isinstance(ev[1]["loading"], bool)
    assert ev[0]["t"] <= ev[1]["t"] <= ev[2]["t"]
    assert ev[2]["status"] == "new" and ev[2]["pairs_new"] >= 2


# ---------------------------------------------------------------- the generator choice persists


def test_the_generator_choice_and_its_options_persist_across_pages_and_sessions(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    at = app("ingest")
    assert at.multiselect(key="ing_gens").value == ["auto"]  # nothing chosen before: the default
    at.multiselect(key="ing_gens").set_value(["qa"]).run()
    at.text_area(key="ing_opt_qa").set_value("definitions = false\nmax_question_chars=200").run()
    at.number_input(key="ing_chunk").set_value(2000).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("views/overview.py")
    at.run()
    at.switch_page("views/ingest.py")
    at.run()
    assert at.multiselect(key="ing_gens").value == ["qa"]
    assert at.text_area(key="ing_opt_qa").value == "definitions=false\nmax_question_chars=200"
    fresh = app("ingest")  # another session (a new browser tab, another day)
    assert fresh.multiselect(key="ing_gens").value == ["qa"]
    assert fresh.number_input(key="ing_chunk").value == 2000
    with project.connect() as con:
        assert settings_store.get(con, "ingest.generators") == {
            "generators": ["qa"], "options": {"qa": {"definitions": "false", "max_question_chars": "200"}},
            "chunk_max": 2000}


def test_options_that_do_not_parse_are_shown_and_not_remembered(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    at = app("ingest")
    at.multiselect(key="ing_gens").set_value(["sections"]).run()
    at.text_area(key="ing_opt_sections").set_value("min_chars=lots").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("expected a whole number" in e.value for e in at.error)
    with project.connect() as con:
        assert settings_store.get(con, "ingest.generators")["options"] == {}


def test_a_saved_choice_naming_a_generator_that_is_gone_falls_back(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    with project.connect() as con:
        settings_store.put(con, "ingest.generators", {"generators": ["gone", "qa"], "chunk_max": "x"}, author="old")
    at = app("ingest")
    assert at.multiselect(key="ing_gens").value == ["qa"]
    assert at.number_input(key="ing_chunk").value == 1500


def test_settings_are_a_log_whose_latest_value_wins(project: Project):
    with project.connect() as con:
        assert settings_store.get(con, "x", "default") == "default"
        assert settings_store.put(con, "x", {"a": 1}, author="ann")
        assert not settings_store.put(con, "x", {"a": 1}, author="bob")  # the same value adds nothing
        assert settings_store.put(con, "x", {"a": 2}, author="bob")
        assert settings_store.get(con, "x") == {"a": 2}
        rows = con.execute("SELECT version, author FROM settings WHERE name = 'x' ORDER BY version").fetchall()
    assert rows == [(1, "ann"), (2, "bob")]


# ---------------------------------------------------------------- clusters ignore the chat template

SYSTEM = ("You are a helpful AI assistant named Quokka, trained by Larkspur Labs. Always answer politely, "
          "concisely and truthfully, following the company policy handbook carefully.")


def chatml(user: str, system: str = SYSTEM) -> str:
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


@pytest.mark.parametrize("rendered, content", [
    (chatml("Where is my refund?"), "Where is my refund?"),
    ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "Hi there"),
    ("<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nTell me a joke [/INST]", "Tell me a joke"),
    ("<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n", "Hello"),
    ("<|system|>\nBe nice</s>\n<|user|>\nWhy is the sky blue?</s>\n<|assistant|>\n", "Why is the sky blue?"),
    (chatml("First question") + "First answer<|im_end|>\n<|im_start|>user\nSecond<|im_end|>\n",
     "First question\nFirst answer\nSecond"),
    ("Plain text keeps its [brackets] and <b>tags</b>.", "Plain text keeps its [brackets] and <b>tags</b>."),
])
def test_template_content_keeps_what_the_conversation_says(rendered, content):
    assert template_content(rendered) == content


def test_the_tokenizers_own_special_tokens_are_removed_too(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<BOT>", "eos_token": {"content": "<EOT>"}, "additional_special_tokens": ["[[sep]]"]}))
    (tmp_path / "tokenizer.json").write_text(json.dumps(
        {"added_tokens": [{"content": "<<turn>>", "special": True}, {"content": "plainword", "special": False}]}))
    tokens = special_tokens(tmp_path)
    assert sorted(tokens) == sorted(["<<turn>>", "<BOT>", "<EOT>", "[[sep]]"])
    assert template_content("<BOT><<turn>>Where is [[sep]] my refund?<EOT>", tokens) == "Where is my refund?"


def test_error_clusters_are_about_content_not_the_chat_template():
    refund = [f"Where is the refund for my returned order number {i}?" for i in range(8)]
    sensor = [f"How often should I calibrate the cobalt sensor after firmware update {i}?" for i in range(8)]
    prompts = [chatml(q) for q in refund + sensor]
    outputs = ["I cannot help with refunds.<|im_end|>"] * 8 + ["Calibrate it yearly.<|im_end|>"] * 8
    failing = pl.DataFrame({"prediction_id": [f"pr_{i}" for i in range(16)], "pair_id": [f"p_{i}" for i in range(16)],
                            "prompt": prompts, "output": outputs, "categories": [""] * 16})
    clusters, members = discover(failing, k=2, seed=0)
    template_words = {w.lower().strip(".,") for w in SYSTEM.split()} | {"im_start", "im_end", "im", "start", "end",
                                                                         "system", "user", "assistant"}
    for kws in clusters["keywords"].to_list():
        assert kws and not {w for kw in kws for w in kw.split()} & template_words, kws
    groups = sorted(sorted(g) for g in members.group_by("cluster").agg("prediction_id")["prediction_id"].to_list())
    assert groups == sorted([sorted(f"pr_{i}" for i in range(8)), sorted(f"pr_{i}" for i in range(8, 16))])
    examples = " ".join(e for ex in clusters["examples"].to_list() for e in ex)
    assert "im_start" not in examples and "Quokka" not in examples


# ---------------------------------------------------------------- tables wrap long text


def test_long_text_columns_are_the_text_columns_with_a_long_value():
    frame = pl.DataFrame({"id": ["p_1", "p_2"], "instruction": ["short", "x" * 61], "response": ["a", "b"],
                          "n": [1, 2]})
    assert ui.long_text_columns(frame) == ["instruction"]
    assert ui.long_text_columns(frame.head(0)) == []


def test_explore_wraps_long_pairs_and_keeps_short_ones_on_one_line(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    seed(project)
    at = app("explore")
    table = at.dataframe[0].proto
    assert table.row_height == 0  # the seeded pairs are short: one line per row
    long = "Calibrate the Cobalt sensor every six months and after each firmware update; " * 4
    from store import pairs as pairs_store
    from store.records import NewPair, PairContent, Provenance

    with project.transaction() as con:
        pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction="How often to calibrate?", response=long),
                                            provenance=Provenance(generator="qa", source_uri="kb.md"),
                                            author="import")])
    at = app("explore")
    table = at.dataframe[0].proto
    assert table.row_height == ui.WRAP_ROW_PX  # rows tall enough that Streamlit wraps their text
    assert '"response"' in table.columns and '"width": "large"' in table.columns.replace(": ", ": ")


def test_explore_shows_the_selected_pair_whole_below_the_table(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    seed(project)
    at = app("explore")
    table = next(d for d in at.dataframe if d.key and d.key.startswith("ex_table"))
    first = table.value["pair_id"].iloc[1]
    assert not any(m.value.startswith("Answer") for m in at.markdown)  # nothing selected: no pair below
    at.session_state[table.key] = {"selection": {"rows": [1], "columns": [], "cells": []}}  # a click on row 2
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(m.value for m in at.markdown)
    from store import pairs as pairs_store

    with project.connect() as con:
        pair = pairs_store.get(con, first)
    assert ui.esc(pair.response) in shown


# ---------------------------------------------------------------- files that failed before can be retried


def test_the_ingest_page_lists_files_that_failed_before_and_offers_a_retry(project, monkeypatch, tmp_path):
    from ingest.documents import FAILED_SETTING, IngestConfig, ingest
    from tests.test_ingest_batches import NO_TEXT_HTML

    doc = tmp_path / "scan *bold* <b>x<i>.html"  # a name with Markdown and HTML in it is shown as written
    doc.write_text(NO_TEXT_HTML)
    first = ingest(project, [doc], IngestConfig(workers=0))  # parses to no text: remembered by its content
    assert first.files[0].error_kind == "no_text"
    with project.connect() as con:
        [entry] = settings_store.get(con, FAILED_SETTING).values()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", entry["at"])  # when it failed, as stored
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    at = app("ingest")
    assert [e.label for e in at.expander if "failed before" in e.label] == [
        "Files that failed before (1): skipped unless retried"]
    [table] = [d.value for d in at.dataframe if "reason" in d.value.columns and "when" in d.value.columns]
    assert table.to_dict("records") == [{"file": doc.name, "error": "no_text", "reason": entry["error"],
                                         "when": entry["at"]}]
    assert at.checkbox(key="ing_retry").label == "Retry files that failed before"
    assert at.checkbox(key="ing_retry").value is False

    # the ingest job (started by the page's form) skips the content, or parses it again when told to
    upload = jobs.save_upload(project, doc.name, doc.read_bytes(), max_bytes=1 << 20)
    for retry, kind in ((False, "failed_before"), (True, "no_text")):
        spec = {"generators": ["qa"], "options": {}, "chunk_max": 1500, "retry_failed": retry}
        job = _wait(jobs.start(project, "ingest", [json.dumps(spec), str(upload)], title="ingest 1 file",
                               author="tester", module="app.ingest_job"))
        [done] = [e for e in job.events() if e["event"] == "file"]
        assert done["error_kind"] == kind, (retry, done, job.log())
