"""The app's bar charts: one helper (``app.components.bar_spec``/``bar_chart``) for every horizontal bar.

Stacked bars once collapsed (every name drawn at one spot, no bars) because the pages passed a total
height that the legend and the axis already filled; an all-zero chart showed a ``0.000000`` axis.
Here: the Vega-Lite spec the helper builds, the pages that draw it (through AppTest, reading the spec
Streamlit sends to the browser), and one page in a real browser.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from app.components import BAR_PX, PICK, bar_spec, picked
from store import errors as errors_store
from store import pairs as pairs_store
from store import runs as runs_store
from store import slices as slices_store
from store.db import Project
from store.records import NewPair, PairContent, SliceFilter, Status
from tests import test_app_pages as pages
from tests.test_app_pages import app, seed

seeded = pages.seeded  # the pages' seeded project (a fixture), shared rather than rebuilt


def spec(frame: pl.DataFrame, **kw) -> dict:
    chart = bar_spec(frame, **kw)
    assert chart is not None
    return chart.to_dict()


COUNTS = pl.DataFrame({"status": ["pending", "accepted", "rejected"], "pairs": [12, 3, 0]})
STACKED = pl.DataFrame({"slice": ["b@1", "a@2"] * 2, "split": ["train", "train", "eval", "eval"],
                        "pairs": [7, 7, 8, 2]})


def test_counts_are_bars_on_a_named_axis_with_integer_ticks():
    s = spec(COUNTS, category="status", value="pairs")
    y, x = s["encoding"]["y"], s["encoding"]["x"]
    assert (y["field"], y["type"], y["sort"]) == ("status", "nominal", ["pending", "accepted", "rejected"])
    assert y["axis"]["labelOverlap"] is False and y["axis"]["labelLimit"] > 0
    assert (x["field"], x["type"]) == ("pairs", "quantitative")
    assert x["axis"]["format"] == "d" and x["axis"]["tickMinStep"] == 1
    assert s["mark"]["type"] == "bar" and "color" not in s["encoding"]
    # the plot area is sized by the data; axes and legend are added around it
    assert s["autosize"]["type"] == "fit-x"


def test_a_pickable_chart_selects_a_whole_category_and_the_click_reads_back():
    frame = pl.DataFrame({"category": ["wrong unit", "refusal"], "label": ["confirmed", "proposed"], "n": [3, 1]})
    spec = bar_spec(frame, category="category", value="n", color="label", pickable=True).to_dict()
    (param,) = spec["params"]
    assert param["name"] == PICK and param["select"] == {"type": "point", "fields": ["category"]}
    assert "params" not in bar_spec(frame, category="category", value="n").to_dict()
    assert picked({"selection": {PICK: [{"category": "refusal", "label": "proposed"}]}}, "category") == "refusal"
    assert picked({"selection": {PICK: []}}, "category") is None  # a click beside the bars
    assert picked({"selection": {"other": [{"category": "x"}]}}, "category") is None
    assert picked(None, "category") is None


@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_the_height_grows_with_the_number_of_categories(n):
    frame = pl.DataFrame({"c": [f"name {i}" for i in range(n)] * 2, "part": ["x"] * n + ["y"] * n,
                          "v": [1] * (2 * n)})
    assert spec(frame, category="c", value="v", color="part")["height"] == BAR_PX * n


def test_a_stack_has_a_legend_and_keeps_the_frames_order():
    s = spec(STACKED, category="slice", value="pairs", color="split")
    assert s["encoding"]["y"]["sort"] == ["b@1", "a@2"]
    color = s["encoding"]["color"]
    assert (color["field"], color["type"], color["scale"]["domain"]) == ("split", "nominal", ["train", "eval"])
    assert color["legend"]["title"] == "split"
    assert s["encoding"]["x"]["stack"] == "zero"
    assert [t["field"] for t in s["encoding"]["tooltip"]] == ["slice", "split", "pairs"]


@pytest.mark.parametrize("frame", [
    pl.DataFrame({"c": [], "v": []}, schema={"c": pl.String, "v": pl.Int64}),
    pl.DataFrame({"c": ["a", "b"], "v": [0, 0]}),
    pl.DataFrame({"c": ["a", "b"], "v": [None, 0]}, schema={"c": pl.String, "v": pl.Int64}),
], ids=["no rows", "all zero", "null and zero"])
def test_nothing_to_draw_is_no_chart(frame):
    assert bar_spec(frame, category="c", value="v") is None


def test_names_that_are_not_text_still_sort():
    s = spec(pl.DataFrame({"run": [3, 1], "v": [1, 2]}), category="run", value="v")
    assert s["encoding"]["y"]["sort"] == ["3", "1"]


# --- the pages ---------------------------------------------------------------------------------


def charts(at: AppTest) -> list[dict]:
    """The Vega-Lite specs of the page's charts, as Streamlit sends them to the browser."""
    return [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]


def chart_of(at: AppTest, category: str) -> dict:
    found = [s for s in charts(at) if s["encoding"]["y"]["field"] == category]
    assert len(found) == 1, [s["encoding"]["y"] for s in charts(at)]
    s = found[0]
    assert s["encoding"]["y"]["type"] == "nominal" and s["encoding"]["x"]["axis"]["format"] == "d"
    assert s["height"] == BAR_PX * len(s["encoding"]["y"]["sort"])
    return s


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_overview_without_runs_says_nothing_yet_instead_of_an_empty_funnel(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    with project.transaction() as con:
        pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=f"Q{i}?", response=f"A{i}."))
                                    for i in range(3)])
    at = app()
    assert any(c.startswith("Nothing yet — train a run") for c in captions(at)), captions(at)
    assert not [s for s in charts(at) if s["encoding"]["y"]["field"] == "stage"]
    # what has data is still drawn
    assert chart_of(at, "status")["encoding"]["y"]["sort"]


def test_overview_review_progress_names_every_reviewer(seeded):
    p: Project = seeded["project"]
    with p.connect() as con:
        for i, pid in enumerate(seeded["pair_ids"][10:16]):
            pairs_store.set_status(con, pid, ["accepted", "rejected", "needs_fix"][i % 3],
                                   author="alice" if i < 3 else "bob")
    at = app()
    s = chart_of(at, "reviewer")
    assert {"alice", "bob"} <= set(s["encoding"]["y"]["sort"])
    assert s["encoding"]["color"]["scale"]["domain"] == ["accepted", "rejected", "needs fix"]
    funnel = chart_of(at, "stage")
    assert funnel["encoding"]["y"]["sort"] == ["predictions", "with errors", "reviewed", "corrected"]


def second_slice(project: Project) -> None:
    """Beside the seeded ``kb-accepted@1`` (7 train, 3 eval): ``kb-pending@1`` (10 and 10)."""
    with project.connect() as con:
        slices_store.create(con, "kb-pending", SliceFilter(status=[Status.pending]), eval_fraction=0.5,
                            split_by="pair", author="tester")


def test_slices_with_two_slices_draw_a_bar_per_slice(seeded):
    second_slice(seeded["project"])
    at = app("slices")
    s = chart_of(at, "slice")
    assert sorted(s["encoding"]["y"]["sort"]) == ["kb-accepted@1", "kb-pending@1"]
    assert s["encoding"]["color"]["field"] == "split" and s["height"] == 2 * BAR_PX


def test_errors_page_draws_every_category(seeded):
    p: Project = seeded["project"]
    psid = seeded["prediction_set"]
    with p.connect() as con:
        preds = runs_store.predictions_frame(con, psid).filter(pl.col("output") != "I don't know.")
        errors_store.add_auto_labels(con, pl.DataFrame({
            "prediction_id": preds["prediction_id"], "category_id": ["incorrect"] * preds.height,
            "detector": ["test@1"] * preds.height, "confidence": [0.5] * preds.height,
            "evidence": ["test"] * preds.height}))
        names = {c.id: c.name for c in errors_store.categories(con)}
    at = app("errors")
    s = chart_of(at, "category")
    assert sorted(s["encoding"]["y"]["sort"]) == sorted([names["incorrect"], names["refusal"]])
    assert s["encoding"]["color"]["field"] == "label"


@pytest.mark.browser
def test_slices_chart_in_a_real_browser_has_a_bar_per_slice(project, tmp_path):
    from tests.test_browser import ARGS, CHROMIUM, needs_a_browser, running_app

    needs_a_browser()
    from playwright.sync_api import expect, sync_playwright

    seed(project)
    second_slice(project)
    with running_app(project, tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(60_000)
        page.goto(url + "/slices")
        chart = page.locator("[data-testid='stVegaLiteChart'] svg").first
        expect(chart).to_be_visible(timeout=60_000)
        expect(chart.locator("text", has_text="kb-pending@1")).to_have_count(1)
        page.screenshot(path=str(tmp_path / "slices.png"), full_page=True)
        box = chart.bounding_box()
        labels = {name: chart.locator("text", has_text=name).bounding_box()
                  for name in ("kb-accepted@1", "kb-pending@1")}
        bars = chart.locator("path[aria-roledescription='bar']")
        n_bars = bars.count()
        bar_heights = [bars.nth(i).bounding_box()["height"] for i in range(n_bars)]
        browser.close()
    assert box and box["height"] > 60
    a, b = labels["kb-accepted@1"], labels["kb-pending@1"]
    assert a and b and abs(a["y"] - b["y"]) >= BAR_PX * 0.8  # one row each, not printed over each other
    assert n_bars == 4 and min(bar_heights) > 10  # train and eval of each slice, each a visible bar
