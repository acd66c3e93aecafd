"""Blind A/B by people (issue 18 point 3): the real page through AppTest on a real DuckDB project.

Two runs answer the same 20 eval prompts (their predictions stored directly: no model). A reviewer
chooses the runs, votes on every prompt through the buttons with a reason; the test reads which
run's answer the page showed as "Answer 1" from the answer texts themselves, so it can check that
the stored vote is in the runs' terms, that the order was recorded, and that the names never showed.
"""

from __future__ import annotations

import io
import json
import math
import re

import polars as pl
import pyarrow as pa
import pytest

from analysis import ab as ab_mod
from analysis.errors.taxonomy import DEFAULT_CATEGORIES
from store import ab as ab_store
from store import errors as errors_store
from store import runs as runs_store
from store.db import Project
from tests.test_app_pages import app
from tests.training_fixtures import make_slice
from training.config import TrainConfig
from training.runner import preference_rows
from workflows import ab as workflow

N = 20
NORTH, SOUTH = "run-north", "run-south"
Z = 1.959964


def wilson_by_hand(k: float, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def wanted(i: int) -> str:
    """What the reviewer prefers on prompt i: the north run's answer, the south run's, tie, or both bad."""
    return ("north", "north", "south", "tie", "both_bad")[i % 5]


@pytest.fixture
def two_runs(project: Project, monkeypatch) -> dict:
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    sl = make_slice(project, "ab-slice", [("train q", "train a")],
                    eval_pairs=[(f"Question {i}?", f"Reference {i}.") for i in range(N)])
    out: dict = {"project": project}
    with project.connect() as con:
        errors_store.ensure_categories(con, DEFAULT_CATEGORIES)
        from store import slices as slices_store

        ex = slices_store.examples(con, sl.id, "eval")
        for key, run_name, style in (("north", NORTH, "crisp"), ("south", SOUTH, "wordy")):
            run = runs_store.create(con, base_model="tiny", config={}, run_dir=str(project.runs_dir / key),
                                    slice_id=sl.id, slice_hash=sl.content_hash, name=run_name, status="succeeded")
            rows = [{"pair_id": r["pair_id"], "revision_id": r["revision_id"], "prompt": r["instruction"],
                     "output": f"{style} reply to {r['instruction']}", "reference": r["response"]}
                    for r in ex.iter_rows(named=True)]
            psid = runs_store.add_predictions(con, run_id=run.id, model="tiny", generation_config={}, rows=rows,
                                              slice_id=sl.id, split="eval")
            preds = runs_store.predictions_frame(con, psid)
            out[key] = run.id
            out[f"{key}_preds"] = {int(re.findall(r"\d+", p)[0]): (pid, o) for pid, p, o in
                                   preds.select("prediction_id", "prompt", "output").iter_rows()}
        # error labels: north's answers to 0 and 2 refuse; south's answers to 0 and 3 are incorrect
        labels = [(out["north_preds"][0][0], "refusal"), (out["north_preds"][2][0], "refusal"),
                  (out["south_preds"][0][0], "incorrect"), (out["south_preds"][3][0], "incorrect")]
        errors_store.add_auto_labels(con, pl.DataFrame({
            "prediction_id": [p for p, _ in labels], "category_id": [c for _, c in labels],
            "detector": ["test@1"] * 4, "confidence": [0.9] * 4, "evidence": ["test"] * 4}))
    out["canonical"] = tuple(sorted((out["north"], out["south"])))
    return out


def page_texts(at) -> list[str]:
    """Every text the page shows (bodies, labels, options, metrics), sidebar included."""
    texts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "code", "text", "info", "success",
                 "warning", "error", "exception"):
        texts += [str(e.value) for e in getattr(at, kind)]
    texts += [str(m.label) + " " + str(m.value) for m in at.metric]
    for kind in ("button", "toggle", "text_input", "checkbox"):
        texts += [str(w.label) for w in getattr(at, kind)]
    for sb in at.selectbox:
        texts += [str(sb.label), *map(str, sb.options)]
    texts += [str(d.value) for d in at.dataframe]
    return texts


def test_blind_votes_in_the_page(two_runs):
    p: Project = two_runs["project"]
    north, south = two_runs["north"], two_runs["south"]
    ca, cb = two_runs["canonical"]
    side_of = {north: "a" if north == ca else "b", south: "a" if south == ca else "b"}
    at = app("ab")
    assert at.title[0].value == "Blind A/B"
    at.selectbox(key="ab_run_a").set_value(north)
    at.selectbox(key="ab_run_b").set_value(south)
    at.run()
    at.button(key="ab_start").click().run()
    assert not at.exception, [e.value for e in at.exception]

    shown_left: dict[int, str] = {}
    for step in range(N):
        texts = page_texts(at)
        assert not any(NORTH in t or SOUTH in t for t in texts), "a run name shows while voting"
        (bar,) = at.get("progress")
        assert bar.proto.text == f"{step} voted of {N}"
        prompt, answer_1, answer_2 = (c.value for c in at.code[:3])
        i = int(re.findall(r"\d+", prompt)[0])
        assert {answer_1, answer_2} == {two_runs["north_preds"][i][1], two_runs["south_preds"][i][1]}
        left_run = north if answer_1 == two_runs["north_preds"][i][1] else south
        shown_left[i] = side_of[left_run]
        want = wanted(i)
        if want in ("north", "south"):
            target = north if want == "north" else south
            screen = "1" if target == left_run else "2"
        else:
            screen = want
        next(t for t in at.text_input if t.label == "Reason").set_value(f"because {i}")
        at.button(key=f"ab_{screen}").click().run()
        assert not at.exception, [e.value for e in at.exception]
    assert any("voted on every prompt" in s.value for s in at.success)
    assert set(shown_left) == set(range(N))
    assert set(shown_left.values()) == {"a", "b"}, "the answers were never shown in both orders"

    with p.connect() as con:
        votes = ab_store.votes(con, south, north)  # either order reads the same canonical votes
        prefs = errors_store.preference_pairs(con)
    assert len(votes) == N and all(v.author == "tester" for v in votes)
    assert (votes[0].run_a, votes[0].run_b) == (ca, cb)
    by_pair = {}
    for v in votes:
        i = next(k for k, (pid, _) in two_runs["north_preds"].items()
                 if pid in (v.prediction_a, v.prediction_b))
        by_pair[i] = v
        assert v.left == shown_left[i], "the stored order is not the order shown"
        assert v.reason == f"because {i}"
        want = wanted(i)
        assert v.choice == (side_of[north] if want == "north" else side_of[south] if want == "south" else want)
        assert {v.prediction_a, v.prediction_b} == {two_runs["north_preds"][i][0], two_runs["south_preds"][i][0]}
        assert v.prediction_a == two_runs[f"{'north' if side_of[north] == 'a' else 'south'}_preds"][i][0]

    # every vote with a winner is one preference pair: chosen = winner's answer, rejected = loser's
    assert len(prefs) == 12
    for i, v in by_pair.items():
        want = wanted(i)
        if want not in ("north", "south"):
            assert v.preference_pair_id is None
            continue
        loser = "south" if want == "north" else "north"
        pp = next(x for x in prefs if x.id == v.preference_pair_id)
        assert pp.chosen == two_runs[f"{want}_preds"][i][1]
        assert pp.rejected == two_runs[f"{loser}_preds"][i][1]
        assert pp.prediction_id == two_runs[f"{loser}_preds"][i][0]
        assert pp.prompt == f"Question {i}?" and pp.author == "tester" and pp.category_id is None

    # results in the page: revealed only on request, then with the names
    at.toggle(key="ab_show_results").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(NORTH in t for t in page_texts(at))
    (chart,) = at.get("vega_lite_chart")
    assert json.loads(chart.proto.spec)["layer"][0]["encoding"]["y"]["field"] == "category"
    plotted = [row for d in chart.proto.datasets for row in pa.ipc.open_stream(io.BytesIO(d.data.data)).read_all()
               .to_pylist() if "category" in row]
    assert {r["category"]: r["win_rate"] for r in plotted} == pytest.approx(
        {"all items": 10 / 16, "no error": 8.5 / 13, "refusal": 0.5, "incorrect": 0.75})


def test_win_rates_hand_computed_per_category_and_latest_vote(two_runs):
    p: Project = two_runs["project"]
    north, south = two_runs["north"], two_runs["south"]
    ca, cb = two_runs["canonical"]
    side = {"north": "a" if north == ca else "b", "south": "a" if south == ca else "b"}
    pred = {(k, i): two_runs[f"{k}_preds"][i][0] for k in ("north", "south") for i in range(N)}

    def put(i: int, want: str, author: str = "tester") -> None:
        choice = side.get(want, want)
        pa, pb = (pred["north", i], pred["south", i]) if side["north"] == "a" else (pred["south", i], pred["north", i])
        with p.connect() as con:
            ab_store.add_vote(con, run_a=ca, run_b=cb, prediction_a=pa, prediction_b=pb, left="a", choice=choice,
                              author=author, reason="r")

    for i in range(N):
        put(i, wanted(i))
    table = workflow.win_rates(p, NORTH, SOUTH)  # by name, north first
    rows = {r["category"]: r for r in table.iter_rows(named=True)}
    # all: north 8, south 4, tie 4, both bad 4 -> (8 + 4/2) / 16
    assert (rows["all items"]["a"], rows["all items"]["b"], rows["all items"]["tie"], rows["all items"]["both_bad"],
            rows["all items"]["n"]) == (8, 4, 4, 4, 16)
    assert rows["all items"]["win_rate"] == pytest.approx(10 / 16)
    lo, hi = wilson_by_hand(10, 16)
    assert (rows["all items"]["lo"], rows["all items"]["hi"]) == (pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6))
    assert lo == pytest.approx(0.3864, abs=1e-3) and hi == pytest.approx(0.8152, abs=1e-3)
    # refusal: prompts 0 (north won) and 2 (south won); incorrect: 0 (north) and 3 (tie)
    assert (rows["refusal"]["a"], rows["refusal"]["b"], rows["refusal"]["win_rate"]) == (1, 1, 0.5)
    assert (rows["incorrect"]["a"], rows["incorrect"]["tie"], rows["incorrect"]["win_rate"]) == (1, 1, 0.75)
    # no error: the 17 other prompts: north 7 (5,10,15 and 1,6,11,16), south 3, tie 3, both bad 4
    ne = rows["no error"]
    assert (ne["a"], ne["b"], ne["tie"], ne["both_bad"]) == (7, 3, 3, 4)
    assert ne["win_rate"] == pytest.approx(8.5 / 13)
    # the other order is the mirror image
    rev = {r["category"]: r for r in workflow.win_rates(p, south, north).iter_rows(named=True)}
    assert (rev["all items"]["a"], rev["all items"]["b"]) == (4, 8)
    assert rev["all items"]["win_rate"] == pytest.approx(6 / 16)
    assert rev["all items"]["lo"] == pytest.approx(1 - hi, abs=1e-6)

    # a second vote by the same person on prompt 1 (north won) for south replaces the first; another
    # person's vote on the same prompt counts beside it
    with p.connect() as con:
        first = next(v for v in ab_store.votes(con, ca, cb) if pred["north", 1] in (v.prediction_a, v.prediction_b))
    put(1, "south")
    put(1, "north", author="someone-else")
    rows = {r["category"]: r for r in workflow.win_rates(p, north, south).iter_rows(named=True)}
    assert (rows["all items"]["a"], rows["all items"]["b"]) == (8, 5)
    with p.connect() as con:
        assert len(ab_store.votes(con, ca, cb)) == N + 1
        assert len(ab_store.votes(con, ca, cb, current=False)) == N + 2
        prefs = errors_store.preference_pairs(con)
    assert first.preference_pair_id not in {x.id for x in prefs}, "a replaced vote's preference pair still counts"
    on_1 = [x for x in prefs if x.prompt == "Question 1?"]
    assert sorted(x.chosen for x in on_1) == sorted([two_runs["south_preds"][1][1], two_runs["north_preds"][1][1]])
    assert len(prefs) == 8 + 4 - 1 + 2

    # DPO gathers them through the same path as corrections
    cfg = TrainConfig.model_construct(objective="dpo", preference_pairs="all", system_prompt="")
    gathered = preference_rows(p, cfg, [], [])
    assert {r["id"] for r in gathered} == {x.id for x in prefs}


def test_progress_and_order_are_stable(two_runs):
    p: Project = two_runs["project"]
    first = workflow.next_item(p, NORTH, SOUTH, "tester")
    again = workflow.next_item(p, SOUTH, NORTH, "tester")  # the same item, shown the same way, either order
    assert first is not None and first == again
    other = workflow.next_item(p, NORTH, SOUTH, "another-reviewer")
    assert other is not None
    workflow.vote(p, first, "1", author="tester", reason="")
    assert workflow.progress(p, NORTH, SOUTH, "tester") == (1, N)
    assert workflow.progress(p, NORTH, SOUTH, "another-reviewer") == (0, N)
    nxt = workflow.next_item(p, NORTH, SOUTH, "tester")
    assert nxt is not None and nxt.key != first.key and nxt.n_voted == 1


@pytest.mark.parametrize(("screen", "left", "choice"), [
    ("1", "a", "a"), ("1", "b", "b"), ("2", "a", "b"), ("2", "b", "a"),
    ("tie", "a", "tie"), ("tie", "b", "tie"), ("both_bad", "b", "both_bad"),
])
def test_screen_choice_in_terms_of_runs(screen, left, choice):
    assert ab_mod.canonical_choice(screen, left) == choice


def test_bad_votes_are_refused(two_runs):
    p: Project = two_runs["project"]
    ca, cb = two_runs["canonical"]
    n0, s0 = two_runs["north_preds"][0][0], two_runs["south_preds"][0][0]
    s1 = two_runs["south_preds"][1][0]
    pa, pb = (n0, s0) if two_runs["north"] == ca else (s0, n0)
    with p.connect() as con:
        with pytest.raises(ValueError, match="canonical order"):
            ab_store.add_vote(con, run_a=cb, run_b=ca, prediction_a=pb, prediction_b=pa, left="a", choice="a",
                              author="t")
        with pytest.raises(ValueError, match="choice must be one of"):
            ab_store.add_vote(con, run_a=ca, run_b=cb, prediction_a=pa, prediction_b=pb, left="a", choice="1",
                              author="t")
        with pytest.raises(ValueError, match="belongs to run"):
            ab_store.add_vote(con, run_a=ca, run_b=cb, prediction_a=pb, prediction_b=pa, left="a", choice="a",
                              author="t")
        other = s1 if two_runs["south"] == cb else two_runs["north_preds"][1][0]
        with pytest.raises(ValueError, match="different pairs"):
            ab_store.add_vote(con, run_a=ca, run_b=cb, prediction_a=pa, prediction_b=other, left="a", choice="a",
                              author="t")
        assert ab_store.votes(con, ca, cb, current=False) == []
    with pytest.raises(ValueError, match="two different runs"):
        workflow.win_rates(p, NORTH, NORTH)


def test_no_votes_give_no_rate():
    table = ab_mod.win_rates(pl.DataFrame(schema={"item": pl.String, "choice": pl.String}))
    assert table.height == 1 and table["win_rate"][0] is None and (table["lo"][0], table["hi"][0]) == (0.0, 1.0)
