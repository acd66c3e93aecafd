"""The whole loop on CPU with the tiny model: import -> accept -> slice -> train -> predict ->
categorise -> correct -> retrain -> compare (and a report), through the same functions and
commands a user runs."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from store import errors as errors_store
from store import pairs as pairs_store
from store import runs as runs_store
from store import slices as slices_store
from store.records import SliceFilter, Status
from tests.training_fixtures import MEMO_PAIRS, tiny_model_dir
from tuneloop.cli import app
from workflows import errors as workflow

runner = CliRunner()


def cli(project, *args):
    res = runner.invoke(app, [*args, "--project", str(project.root)], catch_exceptions=False, env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    return res.output


def test_the_loop_end_to_end(project, tmp_path):
    from training.predict import predict_run
    from training.runner import start_run

    tiny = str(tiny_model_dir())
    # import: 8 memorisable pairs for training and the same 8 questions (reworded) for eval
    src = tmp_path / "colours.jsonl"
    rows = [{"instruction": q, "output": a} for q, a in MEMO_PAIRS]
    rows += [{"instruction": q.replace("What colour is", "Which colour has"), "output": a} for q, a in MEMO_PAIRS]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cli(project, "import", str(src))
    with project.connect() as con:
        ids = [p.id for p in pairs_store.query(con, limit=100, order="source")]
        pairs_store.set_status_many(con, ids, Status.accepted, author="ann")  # accept
        by_q = {pairs_store.get(con, i).instruction: i for i in ids}
        train_ids = [by_q[q] for q, _ in MEMO_PAIRS]
        items = [slices_store.Item(i, pairs_store.get(con, i).head_revision_id, "train" if i in train_ids else "eval")
                 for i in ids]
        sl = slices_store.freeze(con, "colours", items, filter=SliceFilter(status=["accepted"]).model_dump(),
                                 split_by="existing")
    cfg = ["max_steps=4", "learning_rate=3e-3", "lora_r=8", "save_every=0", "device=cpu"]
    run_a = start_run(project, sl.id, base_model=tiny, overrides=cfg, name="A", wait=True)
    predict_run(project, run_a, split="eval", max_new_tokens=6, perplexity=False)

    out = cli(project, "errors", "auto", "--run", "A")
    assert "8 predictions (label task)" in out
    rp = workflow.load(project, "A")
    lab = workflow.labels(project, rp)
    assert lab.height > 0 and set(lab["category_id"]) <= {"wrong_label", "format_violation", "incomplete", "truncated",
                                                          "repetitive"}
    wrong = lab["prediction_id"].unique().sort().to_list()
    acc_a = workflow.accuracy_of(project, "A")

    # correct: the first erroneous eval pair gets a reworded reference; one training pair is rejected
    first = rp.predictions.filter(pl.col("prediction_id") == wrong[0]).row(0, named=True)
    cli(project, "errors", "correct", first["prediction_id"], "--response", first["reference"].upper(),
        "--category", "wrong_label", "--reason", "canonical label spelling")
    with project.connect() as con:
        pairs_store.set_status(con, train_ids[-1], "rejected", author="ann", comment="bad pair")
        prefs = errors_store.preference_pairs(con, [first["pair_id"]])
    assert len(prefs) == 1 and prefs[0].rejected == first["output"] and prefs[0].category_id == "wrong_label"

    # retrain in one action: corrected slice (parent link, corrected in, rejected out) + a run on it
    out = cli(project, "retrain", "--from-run", "A", "--name", "B", "--wait")
    assert "1 corrected, 1 dropped" in out
    with project.connect() as con:
        run_b = runs_store.get(con, "B")
        sl_b = slices_store.get(con, run_b.slice_id)
        items_b = {i.pair_id: i for i in slices_store.items(con, sl_b.id)}
        head = pairs_store.get(con, first["pair_id"]).head_revision_id
    assert run_b.status == "succeeded" and run_b.parent_run_id == run_a and run_b.config["max_steps"] == 4
    assert sl_b.parent_id == sl.id and train_ids[-1] not in items_b and items_b[first["pair_id"]].revision_id == head
    assert len(items_b) == 15

    predict_run(project, run_b.id, split="eval", max_new_tokens=6, perplexity=False)
    data = json.loads(cli(project, "compare", "A", "B", "--json"))
    assert data["table"][0]["category_id"] == "any error" and data["table"][0]["n"] == 8
    assert data["accuracy_a"]["k"] == acc_a["k"]
    # fixed / broken are exactly the pairs whose error state flipped
    c = workflow.compare_runs(project, "A", "B")
    a_err = set(lab["pair_id"])
    b_err = set(workflow.labels(project, workflow.load(project, "B"))["pair_id"])
    assert set(c.fixed["pair_id"]) == a_err - b_err and set(c.broken["pair_id"]) == b_err - a_err
    report = tmp_path / "loop.html"
    cli(project, "report", "--run", "A", "--vs", "B", "--out", str(report))
    assert "Per category: A vs B" in report.read_text()


@pytest.mark.parametrize("flag", ["--continue-adapter"])
def test_retrain_refuses_to_continue_without_an_adapter(project, flag):
    from tests.errors_fixtures import add_intent_pairs, make_run, make_slice

    with project.connect() as con:
        ids = add_intent_pairs(con)
        sl = make_slice(con, ids, eval_ids=ids[::2])
    make_run(project, sl.id, "A")
    res = runner.invoke(app, ["retrain", "--from-run", "A", flag, "--project", str(project.root)])
    assert res.exit_code == 2 and "no adapter to continue from" in res.output
