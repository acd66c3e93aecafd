"""The errors CLI on stored runs: auto, list, label, correct, taxonomy, queue, discover, compare, report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.errors_fixtures import INTENTS, add_intent_pairs, make_run, make_slice, store_predictions
from tuneloop.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def cli(project, *args, ok=True):
    res = runner.invoke(app, [*args, "--project", str(project.root)], catch_exceptions=not ok, env={"COLUMNS": "250"})
    if ok:
        assert res.exit_code == 0, res.output
    return res


@pytest.fixture
def runs(project):
    with project.connect() as con:
        ids = add_intent_pairs(con)
        sl = make_slice(con, ids, eval_ids=ids[::2])
    lab = {pid: label for pid, (_, label) in zip(ids, INTENTS)}
    e0, e1, e2, e3 = ids[::2]
    a = make_run(project, sl.id, "A")
    store_predictions(project, a, {e0: lab[e0], e1: "card_arrival", e2: "I cannot help with that request, sorry",
                                   e3: "declined payment " * 8},
                      finish={e3: "length"})
    b = make_run(project, sl.id, "B", parent=a)
    store_predictions(project, b, {e0: lab[e0], e1: lab[e1], e2: "top_up_transfer", e3: "card_arrival"})
    return {"ids": ids, "eval": [e0, e1, e2, e3]}


def test_errors_auto_list_label_correct(project, runs):
    res = cli(project, "errors", "auto", "--run", "A", "verbose_ratio=2", "nonsense=1", ok=False)
    assert "Unknown config key(s): nonsense" in str(res.exception)
    out = cli(project, "errors", "auto", "--run", "A", "repetition_ratio=0.3").output
    assert "4 predictions (label task)" in out and "wrong label" in out and "truncated" in out
    listed = [json.loads(x) for x in cli(project, "errors", "list", "--run", "A", "--json").output.splitlines()]
    cats = {(r["pair_id"], r["category_id"]) for r in listed}
    e0, e1, e2, e3 = runs["eval"]
    assert (e1, "wrong_label") in cats and (e2, "refusal") in cats and (e2, "format_violation") in cats
    assert (e3, "truncated") in cats and (e3, "repetitive") in cats
    pred_e1 = next(r["prediction_id"] for r in listed if r["pair_id"] == e1)
    only = cli(project, "errors", "list", "--run", "A", "--category", "wrong label", "--json").output.splitlines()
    assert len(only) == 1
    cli(project, "errors", "label", pred_e1, "wrong label", "--change-to", "off-topic", "--author", "ann")
    listed = [json.loads(x) for x in cli(project, "errors", "list", "--run", "A", "--json").output.splitlines()]
    assert {r["category_id"] for r in listed if r["pair_id"] == e1} == {"off_topic"}
    hist = cli(project, "errors", "show", pred_e1).output
    assert "auto" in hist and "rejected" in hist and "confirmed" in hist
    out = cli(project, "errors", "correct", pred_e1, "--response", "card_arrival", "--category", "wrong_label").output
    assert "preference pair" in out
    res = cli(project, "errors", "correct", pred_e1, ok=False)
    assert res.exit_code == 2 and "exactly one of" in res.output
    # through the real entry point: one clear line, no traceback
    proc = subprocess.run([sys.executable, "-m", "tuneloop.cli", "errors", "label", pred_e1, "no such thing",
                           "--project", str(project.root)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no error category 'no such thing'; the categories are: incorrect" in proc.stderr


def test_taxonomy_commands(project):
    cli(project, "taxonomy", "add", "wrong tone", "--description", "rude")
    cli(project, "taxonomy", "rename", "wrong tone", "tone")
    cli(project, "taxonomy", "merge", "verbose", "repetitive", "--into", "tone")
    cli(project, "taxonomy", "split", "tone", "--into", "too long", "--into", "too rude")
    out = cli(project, "taxonomy", "list", "--history").output
    assert re.search(r"verbose\s+.*no\s+.*wrong_tone", out)
    for kind in ("add", "rename", "merge", "split"):
        assert f" {kind} " in out
    res = cli(project, "taxonomy", "rename", "too long", "too rude", ok=False)
    assert isinstance(res.exception, ValueError) and "already named 'too rude'" in str(res.exception)


def test_queue_discover_compare_and_report(project, runs, tmp_path):
    cli(project, "errors", "auto", "--run", "A")
    q = cli(project, "queue", "--run", "A").output
    assert "truncated" in q and q.index("repetitive") < q.index("wrong label")  # most categories first
    assert "refusal" in cli(project, "queue", "--run", "A", "--category", "refusal").output
    d = cli(project, "errors", "discover", "--run", "A", "--tfidf", "--k", "2").output
    assert d.count("cluster ") == 2
    c = cli(project, "compare", "A", "B", "--json").output
    data = json.loads(c)
    assert sorted(data["fixed"]) == sorted(runs["eval"][1:3]) and data["broken"] == []
    assert data["accuracy_a"]["k"] == 1 and data["accuracy_b"]["k"] == 3
    anyrow = data["table"][0]
    assert (anyrow["category_id"], anyrow["k_a"], anyrow["k_b"], anyrow["delta"]) == ("any error", 3, 1, -0.5)
    md = tmp_path / "r.md"
    cli(project, "report", "--run", "A", "--vs", "B", "--out", str(md))
    text = md.read_text()
    assert "Per category: A vs B" in text and "![per-category deltas](r_deltas.png)" in text
    assert (tmp_path / "r_deltas.png").read_bytes()[:4] == b"\x89PNG"
    html = tmp_path / "r.html"
    cli(project, "report", "--run", "A", "--vs", "B", "--out", str(html))
    h = html.read_text()
    assert h.count("data:image/png;base64,") == 2 and "<table>" in h and "http" not in h.replace("http-equiv", "")
    res = cli(project, "report", "--run", "A", "--out", str(tmp_path / "r.pdf"), ok=False)
    assert res.exit_code == 2 and ".md or .html" in res.output
