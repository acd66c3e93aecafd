"""Preference training on corrections: ``objective = dpo | orpo`` in a run folder, with TRL.

Every correction stores a preference pair (prompt, chosen = the corrected answer, rejected = the
model's output; store/errors.py). A run with ``objective=dpo`` or ``orpo`` trains a LoRA adapter
on those pairs with TRL's ``DPOTrainer`` or ``ORPOTrainer`` (TRL 1.16: ORPO lives in
``trl.experimental.orpo``); ``training.train.run`` hands such a run to ``run`` here. The rest is
the SFT run's machinery, unchanged: the same run folder, status.json and events, metrics.jsonl
(TRL's logs: ``loss``, ``lr``, ``grad_norm``, ``rewards_margins``, ``rewards_accuracies``...),
the CANCEL flag, ``tuneloop runs resume``, and the adapter saved as ``adapter/`` where an SFT run
saves its own, so ``predict``, ``compare`` and ``export-model`` treat the run like any other.

- Data: ``data/preference.jsonl``, frozen by ``training.runner.preference_rows`` when the run is
  created. A pair's prompt is its slice conversation up to the answer, rendered with the model's
  chat template exactly as prediction renders it (``add_generation_prompt``); a pair outside the
  slice keeps the prompt text its prediction was made with. The chosen and rejected answers are
  completions of that prompt, closed by the end-of-turn token (TRL adds the tokenizer's eos, which
  is the end-of-turn token of chat models), the same tokens the SFT loss mask covers.
- Start: the adapter of ``from_run`` (job.json ``init_adapter``), trainable. For DPO it is also
  the reference policy: TRL copies it into a frozen ``ref`` adapter of the same model (no second
  model in memory); that copy is dropped before the adapter is saved. ORPO needs no reference;
  without ``from_run`` it trains a new LoRA adapter on the base.
- The base weights never change (LoRA only: the config refuses other methods).
- Checkpoints: TRL's (transformers ``Trainer``) under ``checkpoints/trl/checkpoint-N`` every
  ``save_every`` steps and when cancelled; a restarted process resumes from the newest one
  (adapter, optimizer, scheduler, data order, RNG).
- The summary carries ``margin_before`` / ``margin_after``: the mean over the training pairs (at
  most ``eval_max_examples``) of log p(chosen | prompt) - log p(rejected | prompt), summed over
  the completion tokens, under the starting adapter and under the trained one.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.runfolder import RunFolder

PREFERENCE_SPLIT = "preference"


def prompt_text(tokenizer, row: dict[str, Any]) -> str:
    """The prompt of a frozen preference row, as the text the model continues."""
    msgs = row.get("prompt_messages")
    if msgs:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return str(row.get("prompt") or "")


def examples(tokenizer, rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """TRL's standard (not conversational) preference format: prompt, chosen, rejected text."""
    return [{"prompt": prompt_text(tokenizer, r), "chosen": str(r["chosen"]), "rejected": str(r["rejected"])}
            for r in rows]


def _completion_logp(model, tokenizer, prompt: str, completion: str, device: str, max_length: int) -> float:
    """Sum of log p(completion tokens | prompt); the completion is closed by eos as TRL closes it."""
    import torch

    eos = tokenizer.eos_token or ""
    if eos and not completion.endswith(eos):
        completion += eos
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"][:max_length]
    start = 0
    while start < min(len(p_ids), len(ids)) and p_ids[start] == ids[start]:
        start += 1
    start = max(start, 1)
    if start >= len(ids):
        return 0.0
    x = torch.tensor([ids], device=device)
    logits = model(input_ids=x).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(1, x[0, 1:, None])[:, 0]
    return float(logp[start - 1:].sum())


def margins(model, tokenizer, rows: list[dict[str, str]], device: str = "cpu", max_length: int = 512) -> list[float]:
    """log p(chosen | prompt) - log p(rejected | prompt) of each example (``examples`` rows)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [_completion_logp(model, tokenizer, r["prompt"], r["chosen"], device, max_length)
                    - _completion_logp(model, tokenizer, r["prompt"], r["rejected"], device, max_length)
                    for r in rows]
    finally:
        model.train(was_training)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _trl_args(cfg: TrainConfig, folder: RunFolder, device: str, bf16: bool) -> dict[str, Any]:
    """transformers/TRL training arguments from the run's config (shared by DPO and ORPO)."""
    warmup: float = cfg.warmup_steps if cfg.warmup_steps >= 0 else cfg.warmup_ratio
    return dict(
        output_dir=str(folder.checkpoints / "trl"),
        per_device_train_batch_size=cfg.pairs_per_batch, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant_with_warmup" if cfg.lr_scheduler == "constant" else cfg.lr_scheduler,
        warmup_steps=warmup, weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm > 0 else 1e9,
        max_steps=cfg.max_steps or -1, num_train_epochs=cfg.epochs, seed=cfg.seed, data_seed=cfg.seed,
        logging_strategy="steps", logging_steps=cfg.log_every,
        save_strategy="steps" if cfg.save_every else "no", save_steps=cfg.save_every or 500, save_total_limit=1,
        eval_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        gradient_checkpointing=bool(cfg.gradient_checkpointing), bf16=bf16, fp16=False, use_cpu=device == "cpu",
        max_length=cfg.max_length, beta=cfg.beta,
    )


def make_trainer(model, tokenizer, cfg: TrainConfig, rows: list[dict[str, str]], folder: RunFolder, device: str,
                 bf16: bool = False, callbacks: list | None = None):
    """TRL's trainer for the run's objective, on ``rows`` (``examples`` output)."""
    from datasets import Dataset

    data = Dataset.from_list(rows)
    args = _trl_args(cfg, folder, device, bf16)
    if cfg.objective == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(model=model, args=DPOConfig(**args), train_dataset=data, processing_class=tokenizer,
                          callbacks=callbacks)
    if cfg.objective == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(model=model, args=ORPOConfig(**args), train_dataset=data, processing_class=tokenizer,
                           callbacks=callbacks)
    raise ValueError(f"objective {cfg.objective!r} is not preference training")


def _callback(folder: RunFolder, seconds_before: float):
    """A transformers callback that reports to the run folder and honours its CANCEL flag."""
    from transformers import TrainerCallback

    class RunFolderCallback(TrainerCallback):
        def __init__(self) -> None:
            self.cancelled = False
            self.history: list[dict[str, Any]] = []
            self.t0 = time.perf_counter()
            self.loss: float | None = None

        def elapsed(self) -> float:
            return seconds_before + time.perf_counter() - self.t0

        def on_train_begin(self, args, state, control, **kw) -> None:
            folder.update_status(total_steps=state.max_steps, step=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw) -> None:
            logs = logs or {}
            if "train_runtime" in logs:  # the trainer's closing summary, not a step
                return
            row: dict[str, Any] = {"step": state.global_step}
            for k, v in logs.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v)):
                    row[{"learning_rate": "lr"}.get(k, k.replace("/", "_"))] = float(v)
            if "loss" in row:
                self.loss = row["loss"]
            self.history.append(row)
            folder.append_metrics(row)

        def on_step_end(self, args, state, control, **kw) -> None:
            folder.update_status(step=state.global_step, total_steps=state.max_steps, loss=self.loss,
                                 train_seconds=self.elapsed())
            if folder.cancel_requested():
                self.cancelled = True
                control.should_save = True  # a checkpoint to resume from
                control.should_training_stop = True

    return RunFolderCallback()


def _drop_reference_adapter(model) -> None:
    if "ref" in getattr(model, "peft_config", {}):
        model.set_adapter("default")
        model.delete_adapter("ref")


def run(folder: RunFolder) -> int:
    """Train the dpo/orpo run in ``folder`` (called by ``training.train.run``); the exit code."""
    from training.train import _amp_dtype, _memory_plan, prepare_model, save_result

    job = folder.job()
    cfg = TrainConfig(**(folder.read_json(folder.config_file, {}) or {}))
    cb = None
    try:
        import torch
        from transformers.trainer_utils import get_last_checkpoint

        from models.lm import configure_threads, describe, load_base, pick_device, resolve

        configure_threads(cfg.threads or None)
        device = pick_device(cfg.device)
        ck_dir = folder.checkpoints / "trl"
        last = get_last_checkpoint(str(ck_dir)) if ck_dir.is_dir() else None
        folder.update_status(status="running", pid=os.getpid(), started_at=time.time(), error=None,
                             world_size=1, device=device, resumed=bool(last))
        torch.manual_seed(cfg.seed)
        base_path = resolve(job.get("base_model"))
        cfg, mem = _memory_plan(cfg, base_path, device)  # refuses what cannot fit, saying what to change
        folder.update_status(memory_plan=mem.as_dict())
        print(f"[train] memory plan: {mem.describe()}", flush=True)
        base, tok = load_base(base_path, dtype="float32", device=device)
        n_base = describe(base)
        model = prepare_model(base, cfg, job.get("init_adapter"))
        info = describe(model)
        rows = examples(tok, folder.read_rows(PREFERENCE_SPLIT))
        if not rows:
            raise ValueError("the run has no preference pairs (data/preference.jsonl is empty)")
        probe = rows[: cfg.eval_max_examples] if cfg.eval_max_examples else []
        earlier = folder.status()
        margin_before = earlier.get("margin_before")
        if margin_before is None and probe:
            margin_before = _mean(margins(model, tok, probe, device, cfg.max_length))
        seconds_before = float(earlier.get("train_seconds") or 0.0)
        segments = int(earlier.get("segments") or 0) + 1
        cb = _callback(folder, seconds_before)
        trainer = make_trainer(model, tok, cfg, rows, folder, device, bf16=_amp_dtype(cfg, device) == torch.bfloat16,
                               callbacks=[cb])
        folder.update_status(
            status="running", resumed=bool(last), segments=segments, threads=torch.get_num_threads(),
            margin_before=margin_before,
            model={"base": base_path, "n_params": n_base["n_params"], "n_trainable": info["n_trainable"],
                   "dtype": info["dtype"], "device": device},
            data={"preference": {"pairs": len(rows), "from_run": cfg.from_run or None}})
        print(f"[train] {cfg.objective} on {base_path}: {len(rows)} preference pairs, {info['n_trainable'] / 1e6:.2f}M "
              f"trainable, {device}" + (f", from run {cfg.from_run}" if cfg.from_run else "")
              + (f", resuming {Path(last).name}" if last else ""), flush=True)
        out = trainer.train(resume_from_checkpoint=last)
        total_s = cb.elapsed()
        step = int(trainer.state.global_step)
        if cb.cancelled:
            folder.update_status(status="cancelled", finished_at=time.time(), step=step, train_seconds=total_s)
            return 0
        policy = trainer.accelerator.unwrap_model(trainer.model)
        _drop_reference_adapter(policy)
        margin_after = _mean(margins(policy, tok, probe, device, cfg.max_length)) if probe else None
        last_logs: dict[str, Any] = next((h for h in reversed(cb.history) if "loss" in h), {})
        summary = {"objective": cfg.objective, "beta": cfg.beta, "from_run": cfg.from_run or None,
                   "preference_pairs": len(rows), "steps": step, "total_steps": int(trainer.state.max_steps),
                   "train_seconds": total_s, "segments": segments, "segment_seconds": total_s - seconds_before,
                   "threads": torch.get_num_threads(), "final_loss": last_logs.get("loss"),
                   "train_loss": float(out.training_loss), "margin_before": margin_before, "margin_after": margin_after,
                   "rewards_accuracies": last_logs.get("rewards_accuracies"),
                   "method": cfg.method, "n_params": n_base["n_params"], "n_trainable": info["n_trainable"],
                   "dtype": info["dtype"], "device": device, "world_size": 1}
        res = save_result(policy, tok, cfg, folder, base_path)
        summary["artifact"] = str(res)
        summary["artifact_kind"] = "lora"
        folder.update_status(status="succeeded", finished_at=time.time(), summary=summary, adapter_path=str(res),
                             step=step, total_steps=int(trainer.state.max_steps), train_seconds=total_s)
        print(f"[train] done: {json.dumps(summary, default=str)}", flush=True)
        return 0
    except BaseException as exc:  # noqa: BLE001 - the run folder must say why it failed
        spent = {"train_seconds": cb.elapsed()} if cb is not None else {}
        folder.update_status(status="failed", finished_at=time.time(), **spent,
                             error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
        traceback.print_exc()
        return 1
