"""`tuneloop train / runs / predict / metrics / export-model` end to end with the tiny model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from tuneloop.cli import app

runner = CliRunner()
EVAL = [("What colour is the sea?", "blue"), ("What colour is milk?", "white")]


def test_bad_config_key_is_one_clear_line(project):
    make_slice(project, "memo", MEMO_PAIRS)
    res = runner.invoke(app, ["train", "--slice", "memo", "--project", str(project.root), "lerning_rate=1"])
    assert res.exit_code == 2
    assert "lerning_rate" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["predict", "--project", str(project.root)])
    assert res.exit_code == 2 and "--run" in res.output


def test_train_predict_metrics_export_from_the_cli(project, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    tiny = str(tiny_model_dir())
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    P = ["--project", str(project.root)]
    res = runner.invoke(app, ["train", "--slice", "memo", "--base", tiny, "--name", "cli-run", *P,
                              "max_steps=6", "learning_rate=1e-2", "threads=1"])
    assert res.exit_code == 0, res.output
    assert "succeeded" in res.output
    res = runner.invoke(app, ["runs", "list", "--json", *P])
    runs = json.loads(res.output)
    assert [r["name"] for r in runs] == ["cli-run"] and runs[0]["status"] == "succeeded"
    rid = runs[0]["id"]
    res = runner.invoke(app, ["runs", "show", "cli-run", *P])
    assert res.exit_code == 0 and "loss" in res.output and "tokens_per_s" in res.output

    res = runner.invoke(app, ["predict", "--run", "cli-run", "--max-new-tokens", "4", *P])
    assert res.exit_code == 0, res.output
    assert "exact_match" in res.output and "rouge_l" in res.output
    res = runner.invoke(app, ["metrics", "--run", rid, "--json", *P])
    names = {m["name"] for m in json.loads(res.output)}
    assert {"exact_match", "token_f1", "bleu", "perplexity"} <= names

    res = runner.invoke(app, ["predict", "--base", tiny, "--slice", "memo", "--max-new-tokens", "2", *P])
    assert res.exit_code == 0, res.output

    out = tmp_path / "merged"
    res = runner.invoke(app, ["export-model", "--run", rid, "--merged", "--out", str(out), *P])
    assert res.exit_code == 0, res.output
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    from store import runs as runs_store
    from training.predict import load_run_model

    with project.connect() as con:
        cm = load_run_model(runs_store.get(con, rid))
    ids = torch.tensor([cm.prompt_ids([{"role": "user", "content": "What colour is coal?"}])])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, cm.model(ids).logits, rtol=1e-4, atol=1e-4)
    res = runner.invoke(app, ["export-model", "--run", rid, "--out", str(tmp_path / "adapter"), *P])
    assert res.exit_code == 0 and (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    res = runner.invoke(app, ["export-model", "--run", rid, "--out", str(tmp_path / "adapter"), *P])
    assert res.exit_code == 2 and "not empty" in res.output


def test_train_wait_ends_with_the_runs_true_status_and_exit_code(project, tmp_path):
    """`train --wait` (the README's loop) blocks until the run ends: exit 0 and "succeeded" only
    for a run that succeeded; a run that fails says failed, with its reason, and exits 1."""
    from store import runs as runs_store
    from training.runner import wait_run

    tiny = str(tiny_model_dir())
    make_slice(project, "memo", MEMO_PAIRS)
    P = ["--project", str(project.root)]
    res = runner.invoke(app, ["train", "--slice", "memo", "--base", tiny, "--wait", *P, "max_steps=2", "threads=1"])
    assert res.exit_code == 0, res.output
    assert "succeeded" in res.output and "failed" not in res.output

    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    res = runner.invoke(app, ["train", "--slice", "memo", "--base", str(not_a_model), "--wait", *P, "threads=1"])
    assert res.exit_code == 1, res.output
    assert "failed" in res.output and "succeeded" not in res.output

    res = runner.invoke(app, ["train", "--slice", "memo", "--base", tiny, "--detach", *P, "max_steps=1", "threads=1"])
    assert res.exit_code == 0 and "started run" in res.output
    with project.connect() as con:
        newest = runs_store.list_runs(con, limit=1)[0]
    assert wait_run(project, newest.id).status == "succeeded"  # --detach returned before the end


@pytest.mark.slow
def test_bundled_smollm2_trains_20_steps_then_predicts(project):
    from store import runs as runs_store
    from training.predict import predict_run
    from training.runner import start_run

    pairs = [(f"Which intent is this: 'my card number {i} has not arrived'?", "card_arrival") for i in range(12)] + \
            [(f"Which intent is this: 'refund {i} is not showing'?", "refund_not_showing_up") for i in range(12)]
    make_slice(project, "small", pairs, eval_pairs=[("Which intent is this: 'where is my new card?'", "card_arrival"),
                                                    ("Which intent is this: 'I still have no refund'", "refund_not_showing_up")])
    rid = start_run(project, "small", overrides=["max_steps=20", "learning_rate=1e-3", "batch_tokens=256",
                                                 "max_length=128", "eval_every=10"], wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
        loss = runs_store.metrics_frame(con, rid).filter(name="loss")["value"].to_list()
    assert run.status == "succeeded", run.error
    assert run.summary["n_params"] > 100_000_000 and len(loss) == 20 and loss[-1] < loss[0]
    psid = predict_run(project, rid, max_new_tokens=12)
    with project.connect() as con:
        preds = runs_store.predictions_frame(con, psid)
    assert preds.height == 2 and (preds["n_output_tokens"] > 0).all()
