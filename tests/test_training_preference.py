"""Preference training (objective dpo / orpo, TRL) on the preference pairs corrections store.

A real tiny model and a real project: an SFT run, its predictions corrected through the store's
own ``correct`` (which records the preference pairs), then DPO from the SFT run's adapter.
"""

from __future__ import annotations

import json

import pytest

from store import errors as errors_store
from store import runs as runs_store
from store.config import ConfigError
from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from training.runfolder import RunFolder
from training.runner import start_run

EVAL = [("What colour is the sea?", "blue"), ("What colour is milk?", "white")]
FAST = ["learning_rate=1e-2", "warmup_steps=0", "lr_scheduler=constant", "threads=1"]
ANSWERS = [a for _, a in MEMO_PAIRS]


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(tiny_model_dir())


def _pref_rows() -> list[dict]:
    """Chosen = the right colour, rejected = the next one's colour, as corrections would store them."""
    return [{"prompt_messages": [{"role": "user", "content": q}], "chosen": a,
             "rejected": ANSWERS[(i + 1) % len(ANSWERS)]} for i, (q, a) in enumerate(MEMO_PAIRS)]


def _sft_adapter(tiny, tmp_path):
    """A LoRA adapter trained a few SFT steps (in process), saved as an SFT run saves it."""
    from models.lm import load_base
    from training.config import TrainConfig
    from training.formatting import tokenize_rows
    from training.train import Trainer, prepare_model

    base, tok = load_base(tiny)
    tok.padding_side = "right"
    cfg = TrainConfig(max_steps=5, learning_rate=1e-2, warmup_steps=0, lr_scheduler="constant", threads=1)
    model = prepare_model(base, cfg)
    ex, _ = tokenize_rows(tok, [{"instruction": q, "response": a} for q, a in MEMO_PAIRS], max_length=128)
    Trainer(model, tok, cfg, ex, [], None, "cpu").train()
    out = tmp_path / "sft-adapter"
    model.save_pretrained(out)
    return out


# ------------------------------------------------------------------ in-process: TRL's trainers


def test_dpo_from_an_sft_adapter_trains_only_the_adapter_and_widens_the_margin(tiny, tmp_path):
    import torch

    from models.lm import load_base
    from training import preference
    from training.config import TrainConfig
    from training.train import prepare_model

    adapter = _sft_adapter(tiny, tmp_path)
    base, tok = load_base(tiny, dtype="float32")
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    cfg = TrainConfig(objective="dpo", from_run="sft", max_steps=12, beta=0.5, pairs_per_batch=4, save_every=0,
                      learning_rate=1e-2, warmup_steps=0, lr_scheduler="constant", threads=1)
    model = prepare_model(base, cfg, str(adapter))
    start = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    rows = preference.examples(tok, _pref_rows())
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n") and "What colour is the sky?" in rows[0]["prompt"]
    m0 = preference.margins(model, tok, rows)
    cb = preference._callback(RunFolder(tmp_path / "run"), 0.0)
    (tmp_path / "run").mkdir()
    trainer = preference.make_trainer(model, tok, cfg, rows, RunFolder(tmp_path / "run"), "cpu", callbacks=[cb])
    trainer.train()
    policy = trainer.accelerator.unwrap_model(trainer.model)
    # TRL kept the SFT adapter as the frozen reference ("ref"), unchanged
    ref = {n: p for n, p in policy.named_parameters() if ".ref." in n}
    assert ref and all(torch.equal(p.detach(), start[n.replace(".ref.", ".default.")]) for n, p in ref.items())
    preference._drop_reference_adapter(policy)
    m1 = preference.margins(policy, tok, rows)

    losses = [h["loss"] for h in cb.history if "loss" in h]
    assert len(losses) == 12 and abs(losses[0] - 0.6931) < 1e-3  # policy == reference at step 1: log 2
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0]
    assert sum(m1) / len(m1) > sum(m0) / len(m0) + 1.0
    assert sum(x > 0 for x in m1) > sum(x > 0 for x in m0)
    after = dict(policy.named_parameters())
    assert all(".ref." not in n for n in after)
    changed = [n for n, p in after.items() if "lora_" in n and not torch.equal(p.detach(), start[n])]
    assert changed and all(after[n].requires_grad for n in changed)
    for n, p in after.items():
        if "lora_" in n:
            continue
        orig = n.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p.detach(), before[orig]), n
    assert {"rewards_margins", "rewards_accuracies", "lr", "grad_norm"} <= set(cb.history[-1])


def test_orpo_runs_and_its_loss_falls(tiny, tmp_path):
    from models.lm import load_base
    from training import preference
    from training.config import TrainConfig
    from training.train import prepare_model

    base, tok = load_base(tiny, dtype="float32")
    cfg = TrainConfig(objective="orpo", max_steps=8, pairs_per_batch=4, save_every=0, learning_rate=1e-2,
                      warmup_steps=0, lr_scheduler="constant", threads=1)
    model = prepare_model(base, cfg)  # no from_run: a new LoRA adapter on the base (ORPO needs no reference)
    rows = preference.examples(tok, _pref_rows())
    (tmp_path / "run").mkdir()
    folder = RunFolder(tmp_path / "run")
    cb = preference._callback(folder, 0.0)
    preference.make_trainer(model, tok, cfg, rows, folder, "cpu", callbacks=[cb]).train()
    losses = [h["loss"] for h in cb.history if "loss" in h]
    assert len(losses) == 8 and losses[-1] < 0.7 * losses[0]
    assert "log_odds_ratio" in cb.history[-1] and [r["step"] for r in folder.metrics()] == list(range(1, 9))


# ------------------------------------------------------------------ through the run machinery


def test_config_refuses_what_preference_training_cannot_do():
    from training.config import load

    with pytest.raises(ConfigError, match="from_run"):
        load(None, ["objective=dpo"])
    with pytest.raises(ConfigError, match="method=lora"):
        load(None, ["objective=orpo", "method=full"])
    with pytest.raises(ConfigError, match="nproc=1"):
        load(None, ["objective=orpo", "nproc=2"])
    with pytest.raises(ConfigError, match="quantization=none"):
        load(None, ["objective=orpo", "quantization=4bit"])
    assert load(None, ["objective=orpo"]).from_run == ""


def test_dpo_run_from_corrections_tracked_predicts_and_loads(project, tiny):
    """SFT run -> predictions -> corrections (store.errors.correct) -> a dpo run from the SFT run."""
    from training.predict import load_run_model, predict_run

    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    # without preference pairs a dpo run is refused before anything is created
    sft = start_run(project, "memo", base_model=tiny, overrides=[*FAST, "max_steps=8"], name="sft", wait=True)
    with pytest.raises(ValueError, match="needs preference pairs"):
        start_run(project, None, overrides=[*FAST, "objective=dpo", f"from_run={sft}"])
    with project.connect() as con:
        assert [r.id for r in runs_store.list_runs(con)] == [sft]
        sft_run = runs_store.get(con, sft)
    assert sft_run.status == "succeeded", sft_run.error

    psid = predict_run(project, sft, split="train", max_new_tokens=3, perplexity=False)
    with project.connect() as con:
        preds = runs_store.predictions_frame(con, psid).to_dicts()
        for p in preds:  # the reviewer writes the answer in full: chosen = it, rejected = the model's output
            errors_store.correct(con, p["prediction_id"], f"The colour is {p['reference']}.", author="tester")
        pairs = errors_store.preference_pairs(con)
    assert len(pairs) == len(MEMO_PAIRS) and all(p.chosen.startswith("The colour is") for p in pairs)

    # as `tuneloop train --objective dpo --from-run sft` starts it: with the predictions after training
    from workflows.train import train as train_and_predict

    rid = train_and_predict(project, None, overrides=[*FAST, "objective=dpo", f"from_run={sft}", "max_steps=10",
                                                      "beta=0.5", "pairs_per_batch=4"], name="dpo", wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
        m = runs_store.metrics_frame(con, rid)
        events = [e[0] for e in runs_store.events(con, rid)]
    folder = RunFolder(run.run_dir)
    assert run.status == "succeeded", f"{run.error}\n{folder.log_file.read_text()[-3000:]}"
    assert run.kind == "dpo" and run.parent_run_id == sft and run.slice_id == sft_run.slice_id
    assert run.base_model == tiny and run.config["objective"] == "dpo" and run.config["from_run"] == sft
    assert list(dict.fromkeys(events)) == ["queued", "running", "succeeded"]  # + notes of the predictions after
    job = folder.job()
    assert job["init_adapter"] == sft_run.adapter_path
    frozen = folder.read_rows("preference")
    assert {r["id"] for r in frozen} == {p.id for p in pairs} and all(r["prompt_messages"] for r in frozen)
    loss = m.filter(m["name"] == "loss")["value"].to_list()
    assert len(loss) == 10 and sum(loss[-3:]) / 3 < loss[0]
    assert {"lr", "grad_norm", "rewards_margins", "rewards_accuracies"} <= set(m["name"].to_list())
    s = run.summary
    assert s["objective"] == "dpo" and s["preference_pairs"] == len(MEMO_PAIRS) and s["steps"] == 10
    assert s["margin_after"] > s["margin_before"]

    # the adapter sits where an SFT run's does, holds only LoRA weights (no reference copy), and predicts
    assert run.adapter_path == str(folder.adapter_dir)
    from safetensors import safe_open

    with safe_open(str(folder.adapter_dir / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    with safe_open(f"{sft_run.adapter_path}/adapter_model.safetensors", "pt") as f:
        assert keys == set(f.keys()) and all("lora_" in k for k in keys)
    assert not (folder.adapter_dir / "ref").exists()
    assert json.loads((folder.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny

    # the chosen-minus-rejected margin on the training pairs, measured outside the run: it grew
    from training import preference

    def mean_margin(r):
        cm = load_run_model(r)
        xs = preference.margins(cm.model, cm.tokenizer, preference.examples(cm.tokenizer, frozen))
        return sum(xs) / len(xs)

    assert mean_margin(run) > mean_margin(sft_run) + 0.5

    # predicted after training, like an SFT run; predicts again on demand; compares with the SFT run
    from training.runner import after_of
    from workflows.errors import compare_runs

    after = after_of(run.run_dir)
    assert after is not None and after["state"] == "done", after
    psid2 = predict_run(project, rid, split="train", max_new_tokens=4, perplexity=False)
    with project.connect() as con:
        assert runs_store.predictions_frame(con, after["prediction_set_id"]).height == len(EVAL)
        assert runs_store.predictions_frame(con, psid2).height == len(MEMO_PAIRS)
        assert runs_store.prediction_set(con, psid2)["run_id"] == rid
        notes = [e[1] for e in runs_store.events(con, rid)]
    assert not any("dynamics" in n for n in notes)
    predict_run(project, sft, split="eval", max_new_tokens=4, perplexity=False)
    assert compare_runs(project, sft, rid).n_common == len(EVAL)


def test_orpo_run_cancels_and_resumes_from_its_checkpoint(project, tiny):
    """ORPO from the base (no from_run), on corrections of a baseline's predictions: cancelled at a
    checkpoint, resumed, it ends with every step logged once and a predicting adapter."""
    import time

    from training.predict import predict_base, predict_run
    from training.runner import cancel_run, resume_run, wait_run

    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    _, psid = predict_base(project, "memo", base_model=tiny, split="train", max_new_tokens=3, perplexity=False)
    with project.connect() as con:
        for p in runs_store.predictions_frame(con, psid).to_dicts():
            errors_store.correct(con, p["prediction_id"], f"The colour is {p['reference']}.", author="tester")
    rid = start_run(project, "memo", base_model=tiny,
                    overrides=[*FAST, "objective=orpo", "max_steps=30", "save_every=2", "pairs_per_batch=2"])
    with project.connect() as con:
        folder = RunFolder(runs_store.get(con, rid).run_dir)
    t = time.monotonic()
    while (folder.status().get("step") or 0) < 3:
        assert time.monotonic() - t < 120 and folder.status().get("status") != "failed", folder.status()
        time.sleep(0.05)
    cancel_run(project, rid)
    run = wait_run(project, rid, timeout_s=120)
    stopped = folder.status()["step"]
    assert run.status == "cancelled" and 3 <= stopped < 30
    assert (folder.checkpoints / "trl" / f"checkpoint-{stopped}").is_dir()

    resume_run(project, rid, wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
    assert run.status == "succeeded", f"{run.error}\n{folder.log_file.read_text()[-3000:]}"
    assert run.kind == "orpo" and folder.status()["resumed"] is True and run.summary["segments"] == 2
    steps = [r["step"] for r in folder.metrics() if "loss" in r]
    assert sorted(set(steps)) == list(range(1, 31)) and all(steps.count(s) == 1 for s in range(1, stopped + 1))
    loss = [r["loss"] for r in folder.metrics() if "loss" in r]
    assert sum(loss[-3:]) / 3 < loss[0]
    psid2 = predict_run(project, rid, split="eval", max_new_tokens=3, perplexity=False)
    with project.connect() as con:
        assert runs_store.predictions_frame(con, psid2).height == len(EVAL)


def test_cli_objective_and_from_run_options_refuse_clearly(project):
    """`tuneloop train --objective ... --from-run ...`: bad uses are one line each, and create nothing."""
    from typer.testing import CliRunner

    from training.predict import create_baseline
    from tuneloop.cli import app

    runner = CliRunner()
    make_slice(project, "memo", MEMO_PAIRS)
    baseline = create_baseline(project, "memo", base_model="smollm2")  # succeeded, but no adapter
    P = ["--project", str(project.root)]
    for args, says in [(["--objective", "dpo"], "--slice"),
                       (["--objective", "dpo", "--slice", "memo"], "from_run"),
                       (["--objective", "ppo", "--slice", "memo"], "objective"),
                       (["--objective", "orpo", "--slice", "memo", "method=full"], "method=lora"),
                       (["--objective", "orpo", "--slice", "memo"], "needs preference pairs"),
                       (["--objective", "dpo", "--from-run", "no-such-run"], "no-such-run"),
                       (["--objective", "dpo", "--from-run", baseline], "no LoRA adapter")]:
        res = runner.invoke(app, ["train", *args, *P])
        assert res.exit_code != 0 and says in res.output and "Traceback" not in res.output, (args, res.output)
    with project.connect() as con:
        assert [r.id for r in runs_store.list_runs(con)] == [baseline]
