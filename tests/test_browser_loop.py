"""The whole loop in a real browser: `tuneloop ui` on the sample project, driven by Debian's chromium.

What a user has before opening the app is made outside it: the sample project
(``tuneloop sample``) and a tiny base model folder (``tiny_model_dir()``, so training is offline
and takes seconds). Everything else is clicks and keys in the browser, in order:

1. Ingest a Markdown handbook and wait for its background job.
2. Review: accept one of its pairs, edit the next one's response (a new revision) and accept it.
3. Duplicates: resolve a cluster with "Keep this one" (confirming if the page asks).
4. Explore: filter the accepted pairs and save them as slice ``e2e``.
5. Train: a 4-step run of the tiny model on ``e2e``; wait until it succeeded and its automatic
   predictions are stored and categorised (the Runs tab follows the run by itself).
6. Errors: select a prediction whose reference is free text and confirm one of its error categories.
7. Errors: write the right answer and save the correction.
8. Compare: "Retrain on the corrected slice", continuing from the run's adapter, then wait on the
   Train page for the new run and its predictions.
9. Compare the two runs and read the per-category delta.

A screenshot is taken after each step (``01-ingest.png`` … ``09-compare.png``) into tmp_path, or
into the folder named by ``TUNELOOP_SCREENSHOTS`` (set it to docs/screenshots to refresh the
README's pictures; the suite never writes there by itself). The store is read only at the end, to
check that what the pages said happened did happen. Waits are bounded and poll the page: a
ceiling against hangs, never a speed requirement. Skipped (cleanly) without chromium or Playwright.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.components import TABLE_HEADER_PX, WRAP_ROW_PX
from store import curation
from store import errors as errors_store
from store import pairs as pairs_store
from store import runs as runs_store
from store import slices as slices_store
from store.db import Project
from store.records import Status
from tests.test_browser import ARGS, CHROMIUM, HANDBOOK, REPO, needs_a_browser, running_app
from tests.training_fixtures import tiny_model_dir

# Two training runs with their predictions, on a busy 2-core box: a higher ceiling than the suite's 900 s.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(1800)]

WAIT_MS = 60_000  # one page action on a loaded 2-core box
LONG_MS = 600_000  # a job, or a training run with its predictions: a ceiling against hangs
SHOT_MAX_HEIGHT = 2400  # pixels: long pages are cut there (the pictures stay small)


@pytest.fixture
def sample_project(tmp_path) -> Project:
    needs_a_browser()
    root = tmp_path / "sample"
    res = subprocess.run([sys.executable, "-m", "tuneloop.cli", "sample", "--project", str(root)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return Project(root)


def test_the_whole_loop_in_a_real_browser(sample_project, tmp_path):
    from playwright.sync_api import Page, expect, sync_playwright

    shots = Path(os.environ.get("TUNELOOP_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    doc = tmp_path / "field-handbook.md"
    doc.write_text(HANDBOOK, encoding="utf-8")
    tiny = str(tiny_model_dir())
    p = sample_project

    def shot(page: Page, name: str, folder: Path = shots, at=None) -> None:
        """The whole page: Streamlit scrolls inside its own container, so the window grows to fit it
        (up to SHOT_MAX_HEIGHT). ``at``: only the window's worth of page around that locator."""
        page.wait_for_timeout(1500)  # let charts and toasts draw
        if at is not None:
            at.scroll_into_view_if_needed()
            page.screenshot(path=str(folder / name))
            return
        tall = page.evaluate("() => Math.max(document.body.scrollHeight, ...Array.from("
                             "document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]'),"
                             " e => e.scrollHeight))")
        page.set_viewport_size({"width": 1280, "height": min(max(800, int(tall)), SHOT_MAX_HEIGHT)})
        page.evaluate("() => document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]')"
                      ".forEach(e => e.scrollTo(0, 0))")
        page.wait_for_timeout(500)
        page.screenshot(path=str(folder / name), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 800})

    def key(page: Page, widget_key: str):
        """The container Streamlit gives a keyed widget (class ``st-key-<key>``)."""
        return page.locator(f".st-key-{widget_key}")

    def choose(page: Page, widget_key: str, option: str | re.Pattern) -> None:
        """Pick ``option`` in the selectbox or multiselect keyed ``widget_key``."""
        key(page, widget_key).get_by_role("combobox").click()
        page.get_by_role("option", name=option).first.click()

    with running_app(p, tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)

        try:
            # 1. Ingest a handbook; the job runs in the background with live progress
            page.goto(url + "/ingest")
            expect(page.get_by_role("heading", name="Ingest")).to_be_visible()
            page.locator("input[type=file][accept*='.pdf']").set_input_files(str(doc))
            expect(page.get_by_text("field-handbook.md").first).to_be_visible()
            page.get_by_role("button", name="Ingest").click()
            expect(page.get_by_text("Done in")).to_be_visible(timeout=LONG_MS)
            # the document list shows the document just ingested
            expect(key(page, "ing_doc").get_by_role("combobox")).to_have_value(re.compile(r"field-handbook\.md"))
            shot(page, "01-ingest.png")

            # 2. Review its pairs: accept one, edit the next one's response, accept that too
            page.get_by_role("button", name="Review the pending pairs of this document").click()
            expect(page.get_by_role("heading", name="Review")).to_be_visible()
            expect(page.get_by_text("Only pairs of document")).to_be_visible()
            pair_id = re.compile(r"^p_[0-9a-f]{8,}$")
            first = page.locator("code").filter(has_text=pair_id).first.inner_text()
            key(page, "rv_accept").get_by_role("button").click()
            expect(page.locator("code").filter(has_text=pair_id).first).not_to_have_text(first)
            edited = page.locator("code").filter(has_text=pair_id).first.inner_text()
            key(page, "rv_edit").get_by_role("button").click()
            response = page.get_by_role("textbox", name="Response", exact=True)
            expect(response).to_be_visible()
            original = response.input_value()
            new_response = original.split(". ")[0].rstrip(".") + "."  # the first sentence answers it
            assert new_response != original
            response.fill(new_response)
            page.get_by_role("button", name="Save revision").click()
            expect(page.get_by_role("button", name="Save revision")).to_have_count(0)
            expect(page.get_by_text(re.compile(r"· v2 · by tester"))).to_be_visible()
            shot(page, "02-review.png")
            key(page, "rv_accept").get_by_role("button").click()
            expect(page.locator("code").filter(has_text=edited)).to_have_count(0)

            # 3. Duplicates: in the first cluster listed, keep another member than the one kept automatically
            page.goto(url + "/duplicates")
            expect(page.get_by_role("heading", name="Duplicates")).to_be_visible()
            cluster_id = page.locator("code").filter(has_text=re.compile(r"^dc_")).first.inner_text()
            # a member's button is keyed du_keep_<cluster>_<pair>; the kept member's is the primary one
            keep = page.locator(f"[class*='st-key-du_keep_{cluster_id}_']").filter(
                has=page.get_by_test_id("stBaseButton-secondary")).first
            kept = re.search(rf"st-key-du_keep_{cluster_id}_(p_[0-9a-f]+)", keep.get_attribute("class") or "")
            assert kept, keep.get_attribute("class")
            keep.get_by_role("button", name="Keep this one").click()
            ask = page.get_by_text("Yes, change these pairs")
            done = page.get_by_text(f"kept {kept[1]}")
            expect(ask.or_(done).first).to_be_visible()
            if ask.is_visible():
                ask.click()
                page.get_by_role("button", name="Confirm").first.click()
            expect(done.first).to_be_visible()
            key(page, "du_resolution").get_by_role("radio", name="confirmed", exact=True).click()
            expect(page.get_by_text(re.compile(r"verdict: confirmed")).filter(has_text=cluster_id)).to_be_visible()
            shot(page, "03-duplicates.png")

            # 4. Explore: the accepted pairs, saved as slice e2e
            page.goto(url + "/explore")
            expect(page.get_by_role("heading", name="Explore")).to_be_visible()
            choose(page, "ex_status", "accepted")
            page.keyboard.press("Escape")
            expect(page.get_by_role("tab", name="Save as slice")).to_be_visible()
            page.get_by_role("tab", name="Save as slice").click()
            page.get_by_role("textbox", name="Slice name", exact=True).fill("e2e")
            page.get_by_role("spinbutton", name="Eval fraction", exact=True).fill("0.5")
            choose(page, "ex_slice_split", "pair")
            page.get_by_role("button", name=re.compile(r"^Freeze \d+ pairs as a slice$")).click()
            expect(page.get_by_text(re.compile(r"Slice e2e v1: \d+ train / \d+ eval"))).to_be_visible()
            shot(page, "04-slice.png")

            # 5. Train: a tiny run on e2e; wait for it and its automatic predictions
            page.goto(url + "/train")
            expect(page.get_by_role("heading", name="Train")).to_be_visible()
            choose(page, "tr_slice", re.compile(r"^e2e@1"))
            base = page.get_by_role("textbox", name="Base model", exact=True)
            base.fill(tiny)
            base.press("Enter")
            page.get_by_role("textbox", name="Run name", exact=True).fill("before")
            page.get_by_role("textbox", name="Run name", exact=True).press("Enter")
            toml = page.get_by_role("textbox", name=re.compile(r"^Config \(TOML"))
            text = toml.input_value()
            assert "max_steps = 0" in text
            toml.fill(text.replace("max_steps = 0", "max_steps = 4").replace("learning_rate = 0.0002",
                                                                               "learning_rate = 0.01"))
            toml.press("Control+Enter")
            page.wait_for_timeout(1000)
            page.get_by_role("button", name="Start training").click()
            expect(page.get_by_text(re.compile(r"run \S+ started in its own process"))).to_be_visible()
            page.get_by_role("tab", name="Runs").click()
            expect(page.get_by_text("errors categorised")).to_be_visible(timeout=LONG_MS)
            expect(page.get_by_test_id("stMetric").filter(has_text="Status")).to_contain_text("succeeded")
            shot(page, "05-train.png")

            # 6. Errors of that run: pick a prediction with a free-text reference, confirm a proposed category
            page.goto(url + "/errors")
            expect(page.get_by_role("heading", name="Errors")).to_be_visible()
            expect(page.get_by_text("With an error")).to_be_visible()
            grid = page.get_by_test_id("stDataFrame").first
            expect(grid.locator("[role=gridcell]").first).to_be_attached()
            header = grid.locator("[role=columnheader]").all_inner_texts()
            listed = [cells for row in grid.locator("[role=row]").all()[1:]
                      if len(cells := row.locator("[role=gridcell]").all_inner_texts()) == len(header)]
            free = [i for i, cells in enumerate(listed) if " " in cells[header.index("reference")].strip()]
            pick = free[0] if free else 0
            instruction = listed[pick][header.index("instruction")]
            if pick:  # tick the row's box: the table is drawn on a canvas, rows below a fixed-height header
                grid.scroll_into_view_if_needed()
                box = grid.bounding_box()
                assert box is not None
                page.mouse.click(box["x"] + 18, box["y"] + TABLE_HEADER_PX + WRAP_ROW_PX * (pick + 0.5))
            expect(page.get_by_role("heading", name=instruction[:100])).to_be_visible()
            page.get_by_role("button", name="Confirm", disabled=False).first.click()
            expect(page.get_by_text(re.compile(r": confirmed$")).first).to_be_visible()
            expect(page.get_by_test_id("stMetric").filter(has_text="Confirmed by reviewers")).to_contain_text("1")
            shot(page, "06-errors.png")

            # 7. The right answer, saved as a correction (a new revision and a preference pair)
            right = page.get_by_role("textbox", name=re.compile("^The right answer"))
            right_answer = right.input_value().strip().rstrip(".") + ", as the Larkspur Labs handbook says."
            right.fill(right_answer)
            page.get_by_role("button", name="Save correction").click()
            saved = page.get_by_text(re.compile(r"^Saved: revision"))
            expect(saved).to_be_visible()
            shot(page, "07-correction.png", at=saved)

            # 8. Retrain on the corrected slice (Compare page), then follow the new run on the Train page
            page.goto(url + "/compare")
            expect(page.get_by_role("heading", name="Retrain on the corrected slice")).to_be_visible()
            key(page, "rt_cont").get_by_text("Continue from the run's adapter").click()  # 4 more steps on top
            expect(page.get_by_role("switch", name="Continue from the run's adapter")).to_be_checked()
            page.get_by_role("button", name="Retrain on corrected slice").click()
            expect(page.get_by_text("The corrected slice is frozen and the new run started")).to_be_visible(
                timeout=LONG_MS)
            page.goto(url + "/train")
            expect(page.get_by_role("heading", name="Train")).to_be_visible()
            page.get_by_role("tab", name="Runs").click()
            watched = key(page, "tr_watch")
            expect(watched).to_be_visible()
            expect(watched).not_to_contain_text("before")  # the newest run is the one shown
            expect(page.get_by_text("errors categorised")).to_be_visible(timeout=LONG_MS)
            shot(page, "08-retrain.png")

            # 9. Compare the two runs: the per-category change in error rate
            page.goto(url + "/compare")
            expect(page.get_by_role("heading", name="Compare")).to_be_visible()
            choose(page, "cmp_a", re.compile(r"^before"))
            expect(key(page, "cmp_b")).not_to_contain_text("before")
            expect(page.get_by_role("heading", name="Per-category error rate, A → B")).to_be_visible()
            expect(page.get_by_role("img").filter(has_text="change in error rate")).to_be_visible()  # the chart
            page.get_by_role("tab", name="Table").click()
            table = page.get_by_role("tabpanel", name="Table")
            expect(table.locator("[role=gridcell]").first).to_be_attached()
            header = table.locator("[role=columnheader]").all_inner_texts()
            assert "category" in header and "delta" in header, header
            deltas = {}
            for row in table.locator("[role=row]").all()[1:]:
                cells = row.locator("[role=gridcell]").all_inner_texts()
                if len(cells) == len(header):
                    deltas[cells[header.index("category")]] = float(cells[header.index("delta")])
            page.get_by_role("tab", name=re.compile(r"^Fixed")).click()
            shot(page, "09-compare.png")
        except Exception:  # what the page showed when a step failed, for whoever reads the failure
            with contextlib.suppress(Exception):
                shot(page, "failure.png", tmp_path)
            raise
        browser.close()

    # What the pages said happened is in the store
    with p.connect(timeout=60) as con:
        accepted = pairs_store.get(con, first)
        changed = pairs_store.get(con, edited)
        verdicts = curation.clusters_page(con, kind=None, resolution="confirmed", limit=50, offset=0)
        sl = next(s for s in slices_store.list_slices(con) if s.name == "e2e" and s.version == 1)
        runs = runs_store.list_runs(con)
        before = next(r for r in runs if r.name == "before")
        after = next(r for r in runs if r.parent_run_id == before.id)
        psets = {r.id: runs_store.prediction_sets(con, r.id) for r in (before, after)}
        labels = errors_store.current_labels(con, psets[before.id]["id"][0])
        prefs = errors_store.preference_pairs(con)
    assert accepted.status == Status.accepted and changed.status == Status.accepted
    assert changed.response == new_response and changed.version >= 2
    assert dict(zip(verdicts["id"], verdicts["kept_pair_id"])).get(cluster_id) == kept[1]
    assert sl.n_items >= 2 and before.slice_id == sl.id
    assert before.status == after.status == "succeeded"
    assert all(not s.is_empty() for s in psets.values())
    assert "confirmed" in labels["state"].to_list()
    assert [(x.chosen, x.author) for x in prefs] == [(right_answer, "tester")]
    per_category = {c: d for c, d in deltas.items() if c != "any error"}
    assert per_category, f"no per-category row in the Compare table: {deltas}"
    assert all(-1.0 <= d <= 1.0 for d in per_category.values()), per_category
