"""A tiny real model trains LoRA steps on CPU, through the same process protocol the CLI uses."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC

import pytest

from store import runs as runs_store
from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from training.runfolder import RunFolder
from training.runner import cancel_run, resume_run, start_run, sync_run, wait_run

EVAL = [("What colour is the sea?", "blue"), ("What colour is milk?", "white")]
FAST = ["learning_rate=1e-2", "warmup_steps=0", "lr_scheduler=constant", "threads=1"]


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(tiny_model_dir())


def _tok(tiny):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tiny)
    t.padding_side = "right"
    return t


def _rows(pairs):
    return [{"instruction": q, "response": a} for q, a in pairs]


# ------------------------------------------------------------------ in-process trainer


def test_lora_changes_only_the_adapter_and_loss_falls(tiny):
    import torch

    from models.lm import load_base
    from training.config import TrainConfig
    from training.formatting import tokenize_rows
    from training.train import Trainer, prepare_model

    base, tok = load_base(tiny)
    tok.padding_side = "right"
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    cfg = TrainConfig(max_steps=20, learning_rate=1e-2, warmup_steps=0, lr_scheduler="constant")
    model = prepare_model(base, cfg)
    ex, _ = tokenize_rows(tok, _rows(MEMO_PAIRS), max_length=128)
    ev, _ = tokenize_rows(tok, _rows(EVAL), max_length=128)
    tr = Trainer(model, tok, cfg, ex, ev, None, "cpu")
    tr.train()
    losses = [h["loss"] for h in tr.history if "loss" in h]
    assert len(losses) == 20 and all(map(lambda x: x == x and abs(x) < 1e9, losses))
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
    after = dict(model.named_parameters())
    lora = {n: p for n, p in after.items() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert any(float(p.detach().abs().sum()) > 0 for n, p in lora.items() if "lora_B" in n)  # B starts at zero
    for n, p in after.items():
        if "lora_" in n:
            continue
        orig = n.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p.detach(), before[orig]), n
    assert any("val_loss" in h for h in tr.history)


@pytest.mark.parametrize("method", ["full", "top_k"])
def test_full_and_top_k_methods_train_the_right_parameters(tiny, method):
    import torch

    from models.lm import load_base
    from training.config import TrainConfig
    from training.formatting import tokenize_rows
    from training.train import Trainer, prepare_model

    base, tok = load_base(tiny)
    tok.padding_side = "right"
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    cfg = TrainConfig(method=method, top_k_layers=1, max_steps=3, learning_rate=1e-3, warmup_steps=0)
    model = prepare_model(base, cfg)
    ex, _ = tokenize_rows(tok, _rows(MEMO_PAIRS), max_length=128)
    Trainer(model, tok, cfg, ex, [], None, "cpu").train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    if method == "full":
        assert "model.embed_tokens.weight" in changed and any("layers.0." in n for n in changed)
    else:
        assert changed and all(n.startswith("model.layers.1.") or n.startswith("model.norm") for n in changed)


def test_resume_from_checkpoint_reproduces_an_uninterrupted_run(tiny, tmp_path):
    """Stop after 3 of 6 steps, resume in a fresh model: same weights as training 6 straight."""
    import torch

    from models.lm import load_base
    from training.config import TrainConfig
    from training.formatting import tokenize_rows
    from training.train import Trainer, prepare_model

    cfg = TrainConfig(max_steps=6, learning_rate=5e-3, warmup_steps=2, grad_accum=2, batch_tokens=128,
                      max_length=64, save_every=1)

    def fresh(folder):
        base, tok = load_base(tiny)
        tok.padding_side = "right"
        torch.manual_seed(0)
        model = prepare_model(base, cfg)
        ex, _ = tokenize_rows(tok, _rows(MEMO_PAIRS), max_length=64)
        return Trainer(model, tok, cfg, ex, [], folder, "cpu")

    straight = fresh(None)
    straight.train()
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    first = fresh(folder)

    def stop_at_3(step, total, row):
        if step == 3:
            folder.cancel_file.touch()

    assert first.train(progress=stop_at_3) == "cancelled" and first.step == 3
    folder.cancel_file.unlink()
    second = fresh(folder)
    assert second.resume() and second.step == 3
    assert second.train() == "succeeded" and second.step == 6
    a = dict(straight.module.named_parameters())
    for n, p in second.module.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, a[n], rtol=1e-4, atol=1e-6)


def test_early_stopping_keeps_the_best_checkpoint(tiny, tmp_path):
    from models.lm import load_base
    from training.config import TrainConfig
    from training.formatting import tokenize_rows
    from training.train import Trainer, prepare_model

    base, tok = load_base(tiny)
    tok.padding_side = "right"
    # A huge learning rate makes val loss get worse after the first evals.
    cfg = TrainConfig(max_steps=40, learning_rate=0.5, warmup_steps=0, lr_scheduler="constant", eval_every=1,
                      early_stopping_patience=2)
    model = prepare_model(base, cfg)
    ex, _ = tokenize_rows(tok, _rows(MEMO_PAIRS), max_length=128)
    ev, _ = tokenize_rows(tok, _rows(EVAL), max_length=128)
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    tr = Trainer(model, tok, cfg, ex, ev, folder, "cpu")
    tr.train()
    vals = [h["val_loss"] for h in tr.history if "val_loss" in h]
    assert tr.step < 40 and any("early_stopped" in h for h in tr.history)
    assert tr.best_val == min(vals) and tr.bad_evals == 2
    tr.load_best()
    assert tr.evaluate() == pytest.approx(min(vals), rel=1e-4)


# ------------------------------------------------------------------ through the run process


def test_every_status_change_between_two_syncs_reaches_the_store(project):
    """A run that goes queued -> running -> succeeded between two looks records all three, each
    at the time the trainer made it, whatever the machine's speed or the sync interval."""
    with project.connect() as con:
        run = runs_store.create(con, base_model="tiny", config={}, run_dir=str(project.runs_dir / "r1"))
    folder = RunFolder(run.run_dir)
    folder.path.mkdir(parents=True)
    folder.update_status(status="queued", step=0, pid=os.getpid())
    assert sync_run(project, run.id).status == "queued"
    folder.update_status(status="running", started_at=time.time())
    ran_at = folder.status()["updated_at"]
    folder.update_status(step=3)  # progress alone is not an event
    folder.update_status(status="succeeded", finished_at=time.time(), summary={"steps": 3}, adapter_path="adapter")
    run = sync_run(project, run.id)
    run = sync_run(project, run.id)  # syncing again adds nothing
    with project.connect() as con:
        events = runs_store.events(con, run.id)
    assert [e[0] for e in events] == ["queued", "running", "succeeded"]
    assert run.status == "succeeded" and run.adapter_path == "adapter" and run.summary["steps"] == 3
    assert abs(run.started_at.replace(tzinfo=UTC).timestamp() - ran_at) < 1e-3
    assert [e["status"] for e in folder.events()] == ["queued", "running", "succeeded"]


def test_a_crashed_run_is_failed_once_with_its_reason(project):
    with project.connect() as con:
        run = runs_store.create(con, base_model="tiny", config={}, run_dir=str(project.runs_dir / "r2"))
    folder = RunFolder(run.run_dir)
    folder.path.mkdir(parents=True)
    folder.update_status(status="queued", pid=os.getpid())
    folder.update_status(status="running")
    folder.update_status(status="failed", error="ValueError: no usable train examples", finished_at=time.time())
    for _ in range(2):
        run = sync_run(project, run.id)
    with project.connect() as con:
        events = runs_store.events(con, run.id)
    assert [(e[0], e[1]) for e in events] == [("queued", "created"), ("running", ""),
                                              ("failed", "ValueError: no usable train examples")]
    assert run.error == "ValueError: no usable train examples"


def test_run_end_to_end_tracked_predictions_and_adapter_reload(project, tiny):
    import torch

    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    rid = start_run(project, "memo", base_model=tiny, overrides=[*FAST, "max_steps=20", "eval_every=10"],
                    name="tiny-lora", author="tester", wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
        m = runs_store.metrics_frame(con, rid)
        events = [e[0] for e in runs_store.events(con, rid)]
    assert run.status == "succeeded", run.error
    assert run.slice_hash and run.config["max_steps"] == 20 and run.base_model == tiny
    assert events == ["queued", "running", "succeeded"]
    assert run.summary["n_trainable"] < run.summary["n_params"] and run.summary["dtype"] == "float32"
    loss = m.filter(m["name"] == "loss")["value"].to_list()
    assert len(loss) == 20 and loss[-1] < loss[0]
    assert {"lr", "grad_norm", "tokens_per_s", "val_loss"} <= set(m["name"].to_list())
    folder = RunFolder(run.run_dir)
    assert (folder.path / "config.toml").exists() and (folder.path / "config.json").exists()

    # The adapter loads with plain peft (AutoPeftModel finds its base) and matches the run's model.
    from peft import AutoPeftModelForCausalLM

    from training.predict import load_run_model, predict_run

    peft_model = AutoPeftModelForCausalLM.from_pretrained(run.adapter_path).eval()
    cm = load_run_model(run)
    ids = torch.tensor([cm.prompt_ids([{"role": "user", "content": "What colour is snow?"}])])
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, cm.model(ids).logits, rtol=1e-3, atol=1e-3)

    psid = predict_run(project, rid, split="eval", max_new_tokens=4)
    with project.connect() as con:
        preds = runs_store.predictions_frame(con, psid)
        mets = {(s, n): v for s, n, v in runs_store.metrics_of(con, psid).iter_rows()}
        ps = runs_store.prediction_set(con, psid)
    assert preds.height == len(EVAL) and set(preds["reference"]) == {"blue", "white"}
    assert set(preds["finish_reason"]) <= {"stop", "length"} and (preds["n_output_tokens"] > 0).all()
    assert (preds["latency_ms"] > 0).all() and (preds["n_prompt_tokens"] > 5).all()
    assert ps["split"] == "eval" and '"max_new_tokens": 4' in ps["generation_config"].replace(":4", ": 4")
    for k in ("exact_match", "normalized_exact_match", "token_f1", "rouge_l", "bleu", "perplexity", "accuracy"):
        assert ("overall", k) in mets
    # the task kind is the slice's (8 different colours in 10 answers: free text), not the eval split's
    assert mets[("overall", "label_like")] == 0.0 and not any(s.startswith("label:") for s, _ in mets)

    # A second pass is a new, separate prediction set.
    psid2 = predict_run(project, rid, split="train", max_new_tokens=4)
    with project.connect() as con:
        assert runs_store.prediction_sets(con, rid).height == 2 and psid2 != psid
        assert runs_store.predictions_frame(con, psid2).height == len(MEMO_PAIRS)


def test_baseline_predictions_of_an_untrained_base(project, tiny):
    from training.predict import predict_base

    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    rid, psid = predict_base(project, "memo", base_model=tiny, max_new_tokens=3)
    with project.connect() as con:
        run = runs_store.get(con, rid)
        preds = runs_store.predictions_frame(con, psid)
    assert run.kind == "baseline" and run.status == "succeeded"
    assert preds.height == len(EVAL) and (preds["finish_reason"] == "length").sum() >= 1


def test_kill_cancel_and_resume(project, tiny):
    """A killed run is marked failed and resumes; a cancelled one stops at a checkpoint and resumes."""
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    rid = start_run(project, "memo", base_model=tiny,
                    overrides=[*FAST, "max_steps=400", "save_every=1", "batch_tokens=64", "max_length=64"])
    with project.connect() as con:
        folder = RunFolder(runs_store.get(con, rid).run_dir)

    def wait_step(n, timeout=120):
        t = time.monotonic()
        while (folder.status().get("step") or 0) < n or folder.status().get("status") != "running":
            assert time.monotonic() - t < timeout, folder.status()
            time.sleep(0.05)

    def ckpt_step() -> int:
        meta = folder.read_json(folder.checkpoints / "last" / "meta.json", {}) or {}
        return int(meta.get("step", 0))

    wait_step(3)
    while ckpt_step() < 3:
        time.sleep(0.02)
    pid = folder.status()["pid"]
    os.killpg(pid, signal.SIGKILL)
    for _ in range(200):
        if sync_run(project, rid).status == "failed":
            break
        time.sleep(0.1)
    with project.connect() as con:
        run = runs_store.get(con, rid)
    assert run.status == "failed" and "resume" in run.error
    killed_at = ckpt_step()
    assert killed_at >= 3

    resume_run(project, rid)
    wait_step(killed_at + 2)
    assert folder.status()["resumed"] is True
    run = cancel_run(project, rid)
    run = wait_run(project, rid, timeout_s=120)
    assert run.status == "cancelled"
    stopped = folder.status()["step"]
    assert killed_at < stopped < 400
    steps = [r["step"] for r in folder.metrics() if "loss" in r]
    # After the kill, training went on from the checkpoint (not from step 0, not skipping steps).
    # (a step the killed process logged after its last checkpoint is logged again)
    assert sorted(set(steps)) == list(range(1, stopped + 1))
    assert steps.count(1) == 1 and all(steps.count(s) == 1 for s in range(1, killed_at + 1))
    with project.connect() as con:
        events = [(e[0], e[1]) for e in runs_store.events(con, rid)]
    assert ("queued", f"resumed from step {killed_at}") in events or any(m.startswith("resumed") for _, m in events)
    assert (folder.checkpoints / "last" / "state.pt").exists()  # resumable again


def test_ddp_two_cpu_processes(project, tiny):
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    rid = start_run(project, "memo", base_model=tiny, overrides=[*FAST, "max_steps=4", "nproc=2", "batch_tokens=128",
                                                                 "max_length=64"], wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
        m = runs_store.metrics_frame(con, rid)
    log = RunFolder(run.run_dir).log_file.read_text()
    assert run.status == "succeeded", f"{run.error}\n{log[-3000:]}"
    assert run.summary["world_size"] == 2 and "world 2" in log
    assert len(m.filter(m["name"] == "loss")) == 4
    assert os.path.exists(os.path.join(run.adapter_path, "adapter_model.safetensors"))
    # One process taking both ranks' micro-batches per step (grad_accum=2) trains the same model: the
    # step's loss is the mean over all targets, however unevenly the two ranks' batches hold them.
    one = start_run(project, "memo", base_model=tiny, overrides=[*FAST, "max_steps=4", "grad_accum=2",
                                                                 "batch_tokens=128", "max_length=64"], wait=True)
    with project.connect() as con:
        m1 = runs_store.metrics_frame(con, one)
        single = runs_store.get(con, one)
    losses = [m.filter(m["name"] == "loss")["value"].to_list(), m1.filter(m1["name"] == "loss")["value"].to_list()]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4), losses
    from safetensors.torch import load_file

    a = load_file(os.path.join(run.adapter_path, "adapter_model.safetensors"))
    b = load_file(os.path.join(single.adapter_path, "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(float((a[k] - b[k]).norm()) <= 1e-4 * (float(b[k].norm()) + 1e-6) for k in a)


def test_bad_config_and_unknown_slice_create_nothing(project, tiny):
    from store.config import ConfigError

    make_slice(project, "memo", MEMO_PAIRS)
    with pytest.raises(ConfigError, match="bogus_key"):
        start_run(project, "memo", base_model=tiny, overrides=["bogus_key=1"])
    with pytest.raises(KeyError):
        start_run(project, "no-such-slice", base_model=tiny)
    with project.connect() as con:
        assert runs_store.list_runs(con) == []


def test_epochs_with_fewer_micro_batches_than_the_first_train_to_the_end(tiny):
    """Each epoch packs its own shuffled order, so epochs can have different numbers of micro-batches
    (found on banking77: epoch 1 had fewer than epoch 0 and step 17 of 32 raised IndexError)."""
    from models.lm import load_base
    from training.config import TrainConfig
    from training.data import plan_batches
    from training.formatting import tokenize_rows
    from training.train import Trainer, prepare_model

    base, tok = load_base(tiny)
    tok.padding_side = "right"
    rows = _rows([(f"Question {i}: " + "word " * (i * 7 % 23), "answer " * (1 + i % 5)) for i in range(24)])
    ex, _ = tokenize_rows(tok, rows, max_length=128)
    lengths = [len(e.input_ids) for e in ex]

    def sizes(seed: int) -> list[int]:
        return [len(plan_batches(lengths, batch_tokens=96, max_examples=64, seed=seed, epoch=e)) for e in range(3)]

    seed = next(s for s in range(200) if min(sizes(s)[1:]) < sizes(s)[0])  # a later epoch is shorter than the first
    cfg = TrainConfig(epochs=3, batch_tokens=96, max_length=96, learning_rate=1e-3, warmup_steps=0, seed=seed)
    tr = Trainer(prepare_model(base, cfg), tok, cfg, ex, [], None, "cpu")
    seen: dict[int, list[int]] = {}
    for b in range(sum(sizes(seed))):
        epoch, k = tr.locate(b)
        seen.setdefault(epoch, []).extend(tr._plan(epoch)[k])
    assert sorted(seen) == [0, 1, 2] and all(sorted(v) == list(range(len(ex))) for v in seen.values())
    tr.train()  # to the last step without running past an epoch's end
    assert tr.step == tr.total_steps
