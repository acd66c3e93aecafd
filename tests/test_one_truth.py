"""One prediction set, one accuracy: the metrics a run stores, the errors workflow, `compare`, the
report and the Errors page agree on randomly generated prediction sets (seeded), for label and
free-text tasks alike."""

from __future__ import annotations

import random
import re

import pytest
from streamlit.testing.v1 import AppTest

from analysis.errors import report
from store import runs as runs_store
from store.pairs import add_pairs
from store.records import NewPair, PairContent, Provenance, Status
from tests.errors_fixtures import INTENTS, add_intent_pairs, make_run, make_slice, store_predictions
from tests.test_app_pages import APP
from training.predict import compute_metrics
from workflows import errors as errors_workflow

ANSWERS = [
    ("How long do refunds take?", "Refunds reach your card within five working days."),
    ("When does the office open?", "The office opens at nine on weekdays."),
    ("Who approves large expenses?", "The department head and Finance approve expenses over 500 euros."),
    ("How often is the sensor calibrated?", "Calibrate the sensor every six months."),
    ("What does the amber light mean?", "An amber light means the battery is below 15 percent."),
    ("Where are the spare keys?", "The spare keys are in the reception safe."),
]


def _label_output(rng: random.Random, label: str, others: list[str]) -> tuple[str, bool]:
    """An output for a reference label and whether a person would call it right."""
    kind = rng.randrange(6)
    if kind == 0:
        return label, True
    if kind == 1:
        return label.replace("_", " "), True
    if kind == 2:
        return label.replace("_", " ").title() + ".", True
    if kind == 3:
        return rng.choice([o for o in others if o != label]), False
    if kind == 4:
        return "I am not sure what you mean", False
    return "", False


def _text_output(rng: random.Random, answer: str) -> str:
    kind = rng.randrange(4)
    words = answer.split()
    if kind == 0:
        return answer
    if kind == 1:
        return " ".join(words[: max(1, len(words) // 3)])
    if kind == 2:
        return "Please contact the helpdesk about that."
    return answer.lower().rstrip(".")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _agree(project, run_id: str, psid: str) -> float:
    compute_metrics(project, psid)  # what `tuneloop predict` stores for the set
    with project.connect() as con:
        stored = runs_store.overall_metric(con, psid, "accuracy")
    assert stored is not None
    m = errors_workflow.run_metrics(project, run_id)
    assert m.accuracy["accuracy"] == pytest.approx(stored)
    assert errors_workflow.accuracy_of(project, run_id)["accuracy"] == pytest.approx(stored)  # compare
    md = report.markdown(report.ReportInput(title="t", run_a=run_id, metrics_a=m))
    shown = re.search(r"accuracy ([0-9.]+) ?%", md)
    assert shown and float(shown.group(1)) == pytest.approx(float(_pct(stored)), abs=0.051)
    return stored


def test_label_task_accuracy_is_one_number_everywhere(project):
    with project.connect() as con:
        ids = add_intent_pairs(con, INTENTS * 1)
        sl = make_slice(con, ids, eval_ids=ids[::2])
    labels = sorted({lab for _, lab in INTENTS})
    ref = {pid: lab for pid, (_, lab) in zip(ids, INTENTS)}
    for seed in range(12):
        rng = random.Random(seed)
        outs, right = {}, 0
        for pid in ids[::2]:
            outs[pid], ok = _label_output(rng, ref[pid], labels)
            right += ok
        run = make_run(project, sl.id, f"L{seed}")
        psid = store_predictions(project, run, outs, slice_id=sl.id)
        assert _agree(project, run, psid) == pytest.approx(right / len(outs)), (seed, outs)


def test_free_text_accuracy_is_one_number_everywhere(project):
    with project.connect() as con:
        ids = add_pairs(con, [NewPair(content=PairContent(instruction=q, response=a), status=Status.accepted,
                                      provenance=Provenance(source_uri="faq.md", source_line=i + 1))
                              for i, (q, a) in enumerate(ANSWERS)])
        sl = make_slice(con, ids, eval_ids=ids)
    ans = dict(zip(ids, (a for _, a in ANSWERS)))
    for seed in range(8):
        rng = random.Random(100 + seed)
        run = make_run(project, sl.id, f"T{seed}")
        psid = store_predictions(project, run, {pid: _text_output(rng, ans[pid]) for pid in ids}, slice_id=sl.id)
        _agree(project, run, psid)


def test_errors_page_shows_the_stored_accuracy(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    with project.connect() as con:
        ids = add_intent_pairs(con)
        sl = make_slice(con, ids, eval_ids=ids[::2])
    e0, e1, e2, e3 = ids[::2]
    run = make_run(project, sl.id, "A")
    # two spellings of the right label, one wrong label, one junk: 50 %
    psid = store_predictions(project, run, {e0: "card arrival", e1: "duplicate_charge", e2: "Duplicate Charge",
                                            e3: "no idea"}, slice_id=sl.id)
    stored = _agree(project, run, psid)
    assert stored == pytest.approx(0.5)
    errors_workflow.auto(project, run)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/errors.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Accuracy"] == "50.0%"
