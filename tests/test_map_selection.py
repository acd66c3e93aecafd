"""Map to filter: a box dragged on the Explore map becomes the Explore filter and the Review queue."""

from __future__ import annotations

import polars as pl

from app.components import points_in_box
from store.db import Project
from store.records import SliceFilter, Status
from tests.test_app_pages import app, seed


def test_points_in_the_box_are_selected() -> None:
    pts = pl.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0.0, 1.0, 2.0, 3.0], "pair_id": ["a", "b", "c", "d"]})
    assert points_in_box(pts, {"selection": {"brush": {"x": [2.5, 0.5], "y": [0.5, 2.5]}}}) == ["b", "c"]
    assert points_in_box(pts, {"selection": {"brush": {}}}) == []
    assert points_in_box(pts, None) == []


def test_review_and_explore_follow_the_map_selection(project: Project, monkeypatch) -> None:
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    info = seed(project)
    from store import pair_pages

    with project.connect() as con:
        pending = pair_pages.page_ids(con, SliceFilter(status=[Status.pending]), limit=30)
    picked = pending[5:8]
    at = app("review")
    at.session_state["rv_selection"] = picked
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("3 pairs selected on the Explore map" in c.value for c in at.caption)
    assert any(picked[0] in m.value or picked[1] in m.value or picked[2] in m.value for m in at.markdown)
    assert not any(pending[0] in m.value for m in at.markdown)  # the queue's usual first pair is not shown

    at = app("explore")
    at.session_state["ex_map_ids"] = info["pair_ids"][:4]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Matching pairs"] == "4"
    at.button(key="ex_map_clear").click().run()
    assert {m.label: m.value for m in at.metric}["Matching pairs"] == "30"
