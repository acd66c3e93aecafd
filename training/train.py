"""The training loop: ``python -m training.train RUN_DIR`` (also under torchrun / accelerate launch).

Reads a run folder (see training/runfolder.py), trains, and writes status, per-step metrics,
checkpoints and the result back into it. It never opens the project database.

- Methods: LoRA via peft (rank, alpha, dropout, target modules), full fine-tuning, or only the
  top-k decoder layers. The base weights are never changed by LoRA.
- Batches are packed rows without padding (training/data.py); the loss is the weighted mean
  cross-entropy over response tokens of the whole optimizer step (all its micro-batches), and
  the LM head runs only on positions that have a target.
- Warmup then cosine/linear decay, AdamW (weight decay on matrices only), grad accumulation,
  clipping, max steps or epochs, seeded. Val loss every ``eval_every`` steps, early stopping
  with patience, the best weights kept; the result is the best (lowest val loss) state.
- Precision: fp32 master weights with bf16 autocast on CUDA and on CPUs with native bf16.
- Resume: ``checkpoints/last`` holds trainable weights, optimizer, scheduler, step and RNG
  state; a restarted process continues from it with the same data order. ``train_seconds`` in
  status.json (rewritten every step) is the training time of every segment so far, so a
  resumed run's summary counts all of them (``segments``: how many processes trained it).
- CPU threads: unless ``threads`` is set, the count is re-chosen for the machine's load when a
  segment starts and every ``THREAD_CHECK_STEPS`` steps (at most once a ``THREAD_CHECK_MIN_S``,
  the load average's own time scale), because other work on the box comes and goes.
- Training dynamics (``record_dynamics``): the per-token loss each step computes anyway is
  reduced per example (``training.data.example_losses``) to its mean loss and its confidence
  exp(-mean loss), and written per step to dynamics.jsonl keyed by pair id and epoch (the epoch the
  micro-batch belongs to). It is measured during training, under dropout, before the step's
  update, as cheap cartography does; under DDP only rank 0's share of the examples is recorded.
- Several processes: when launched with WORLD_SIZE > 1 (accelerate launch, as
  training/runner.py does with training/launch/*.yaml, or torchrun), each rank takes its share
  of each step's micro-batches; rank 0 alone writes files; cancel is all-reduced. Config
  ``distributed`` (or accelerate's FSDP config) picks DDP or FSDP2 full shard (``fully_shard``
  per decoder layer, then the root; full weights and optimizer state gathered to rank 0 for
  checkpoints and the result). DeepSpeed is refused. An accelerate launch asked for N processes
  that started one fails saying so; a CANCEL flag left from the run's earlier end is removed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from training.attention import (
    choose,
    frozen_linears_in,
    packed_attention,
    supports_packed_attention,
    use_attention,
)
from training.config import TrainConfig
from training.data import collate, example_losses, loss_sum, plan_batches, token_losses, weighted_sum
from training.distributed import (
    Dist,
    _all_reduce,
    _full,
    _is_dtensor,
    distributed_mode,
    full_model_state,
    full_trainable_state,
    setup_dist,
)
from training.formatting import Tokenized, tokenize_rows
from training.kernels import use_liger
from training.runfolder import RunFolder
from training.unfreeze import GradualUnfreezing

THREAD_CHECK_STEPS = 20
THREAD_CHECK_MIN_S = 60.0


def lr_lambda(step: int, *, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    span = max(1, total - warmup)
    frac = min(1.0, (step - warmup) / span)
    if kind == "linear":
        return max(0.0, 1.0 - frac)
    return 0.5 * (1.0 + math.cos(math.pi * frac))


def _autocast(cfg: TrainConfig, device: str):
    import torch

    from models.lm import autocast, autocast_dtype

    if cfg.precision == "fp32" or device == "mps":
        return contextlib.nullcontext()
    if cfg.precision == "bf16":
        return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return autocast(device) if autocast_dtype(device) is not None else contextlib.nullcontext()


def _amp_dtype(cfg: TrainConfig, device: str):
    """The dtype matmuls run in under ``_autocast`` (None: fp32)."""
    import torch

    from models.lm import autocast_dtype

    if cfg.precision == "fp32" or device == "mps":
        return None
    if cfg.precision == "bf16":
        return torch.bfloat16
    return autocast_dtype(device)


def decoder_layers(model):
    """The ModuleList of transformer blocks (for top-k training)."""
    import torch.nn as nn

    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best = None
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and (n is None or len(mod) == n):
            best = mod
            break
    if best is None:
        raise ValueError("cannot find the decoder layers of this model for method=top_k")
    return best


def prepare_model(base, cfg: TrainConfig, init_adapter: str | None = None):
    """Apply the training method: returns the model to train (base weights frozen for LoRA)."""
    if cfg.method == "lora":
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

        if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
            # QLoRA as peft documents it: norms in fp32, input grads on, checkpointing as configured
            base = prepare_model_for_kbit_training(
                base, use_gradient_checkpointing=bool(cfg.gradient_checkpointing),
                gradient_checkpointing_kwargs={"use_reentrant": False})

        if init_adapter:
            model = PeftModel.from_pretrained(base, init_adapter, is_trainable=True)
        else:
            extra: dict[str, Any] = {}
            if cfg.lora_top_layers:
                # Adapters only in the last k blocks: backward stops there, the blocks below run
                # forward only (no autograd graph), which cuts the step time.
                n = len(decoder_layers(base))
                extra["layers_to_transform"] = list(range(max(0, n - cfg.lora_top_layers), n))
            lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=list(cfg.target_modules), task_type="CAUSAL_LM", bias="none", **extra)
            model = get_peft_model(base, lcfg)
    elif cfg.method == "full":
        model = base
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        model = base
        for p in model.parameters():
            p.requires_grad_(False)
        layers = decoder_layers(model)
        for layer in list(layers)[-cfg.top_k_layers:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        norm = getattr(getattr(model, "model", None), "norm", None)
        if norm is not None:
            for p in norm.parameters():
                p.requires_grad_(True)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return model


def trainable_state(model) -> dict[str, Any]:
    return {n: p.detach().to("cpu").clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, Any]) -> None:
    """Copy full tensors into the model's parameters (FSDP2 shards: each rank keeps its slice;
    every rank must hold ``state``)."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            p = params[n]
            if _is_dtensor(p):
                from torch.distributed.tensor import distribute_tensor

                t = distribute_tensor(t.to(p.device, p.dtype), p.device_mesh, p.placements, src_data_rank=None)
                p.copy_(t)
            else:
                p.copy_(t.to(p.device))


def make_optimizer(model, cfg: TrainConfig):
    import torch

    decay: list[Any] = []
    no_decay: list[Any] = []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate,
                             betas=(cfg.adam_beta1, cfg.adam_beta2))


class Trainer:
    """One training run over tokenised examples; files go to ``folder`` (rank 0)."""

    def __init__(self, model, tokenizer, cfg: TrainConfig, train: list[Tokenized], evals: list[Tokenized],
                 folder: RunFolder | None, device: str, dist_info: Dist | None = None):
        import torch

        self.cfg, self.tok, self.device = cfg, tokenizer, device
        self.d = dist_info or Dist()
        self.folder = folder
        self.train_ex, self.eval_ex = train, evals[: cfg.eval_max_examples] if cfg.eval_max_examples else []
        self.module = model
        self.mode = distributed_mode(cfg, self.d.world)
        self.model: Any  # what the loop calls: DDP's wrapper, or the (FSDP2-sharded) module itself
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(model, device_ids=[self.d.local_rank] if device.startswith("cuda") else None)
        elif self.mode == "fsdp":
            # FSDP2 full shard: each decoder layer is a unit (all-gathered for its forward and
            # backward, resharded after), then the root holds the rest (embeddings, norm, head).
            # The module keeps its class and parameter names; parameters become DTensor shards.
            from torch.distributed.fsdp import fully_shard

            for layer in decoder_layers(model):
                fully_shard(layer)
            fully_shard(model)
            self.model = model
        else:
            self.model = model
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        lengths = [len(e.input_ids) for e in train]
        self.lengths = lengths
        self._plans: dict[int, list[list[int]]] = {}
        self._sizes: dict[int, int] = {}  # micro-batches per epoch (``_locate``)
        self.n_batches = len(self._plan(0))
        per_step = cfg.grad_accum * self.d.world
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.n_batches / per_step))
        warm = cfg.warmup_steps if cfg.warmup_steps >= 0 else int(round(cfg.warmup_ratio * self.total_steps))
        self.warmup = warm
        self.opt = make_optimizer(model, cfg)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_lambda(s, total=self.total_steps, warmup=warm, kind=cfg.lr_scheduler))
        self.step = 0
        self.best_val: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.history: list[dict[str, Any]] = []
        # tuneloop's packed kernel, or transformers' own attention told the bounds by position_ids
        self.attention = choose(cfg.attention, device)
        use_attention(model, self.attention)
        self.segment_attention = (cfg.packing and self.attention == "packed"
                                  and supports_packed_attention(model, cfg.max_length))
        self.unfreezing = GradualUnfreezing(model, cfg.unfreeze_every) if cfg.unfreeze_every else None
        # time: earlier segments (from status.json) + this one; threads re-chosen when auto
        self.seconds_before = 0.0
        self._segment_start: float | None = None
        self.auto_threads = not cfg.threads and device == "cpu"
        self._threads_checked = -math.inf
        # training dynamics: {"pair_id", "revision_id"} per train example (set by ``run``), and
        # the rows not yet written (all of them when there is no folder)
        self.example_keys: list[dict[str, Any]] | None = None
        self.dynamics: list[dict[str, Any]] = []

    def elapsed(self) -> float:
        """Training seconds of every segment so far, this one included."""
        now = time.perf_counter()
        return self.seconds_before + (now - self._segment_start if self._segment_start is not None else 0.0)

    def _check_threads(self, at_start: bool = False) -> None:
        """Re-choose the CPU thread count for the load now (see the module docstring)."""
        if not self.auto_threads:
            return
        now = time.monotonic()
        if not at_start and (self.step % THREAD_CHECK_STEPS or now - self._threads_checked < THREAD_CHECK_MIN_S):
            return
        from models.lm import retune_threads

        self._threads_checked = now
        # at the start this process has not loaded the machine yet: all of the load is others'
        n = retune_threads(own=0 if at_start else None)
        if n is not None:
            self._log({"step": self.step, "threads": float(n)})
            self._status(threads=n)
            if self.d.main:
                print(f"[train] step {self.step}: {n} CPU thread(s) for the current load", flush=True)

    def _fast_paths(self) -> contextlib.ExitStack:
        """Per-example attention for packed rows; frozen LoRA base weights kept in the autocast dtype."""
        stack = contextlib.ExitStack()
        if self.segment_attention:
            stack.enter_context(packed_attention(self.module))
        amp = _amp_dtype(self.cfg, self.device)
        if amp is not None and self.cfg.method == "lora":
            from peft.helpers import disable_input_dtype_casting

            later = frozenset(id(p) for g in self.unfreezing.groups for p in g) if self.unfreezing else frozenset()
            stack.enter_context(frozen_linears_in(self.module, amp, keep=later))
            # autocast already feeds the adapters in the autocast dtype; peft's own cast of
            # every adapter input to fp32 would only add a copy each way
            stack.enter_context(disable_input_dtype_casting(self.module))
        return stack

    # ------------------------------------------------------------ data order
    def _plan(self, epoch: int) -> list[list[int]]:
        if epoch not in self._plans:
            self._plans[epoch] = plan_batches(
                self.lengths, batch_tokens=self.cfg.batch_tokens, max_examples=self.cfg.max_examples_per_batch,
                seed=self.cfg.seed, epoch=epoch, padded=not self.cfg.packing)
            self._plans.pop(epoch - 2, None)
        return self._plans[epoch]

    def _batch_number(self, step: int, j: int) -> int:
        """Micro-batch ``j`` of optimizer step ``step`` counted over all epochs (divmod by
        ``n_batches``: its epoch and its index in that epoch's plan)."""
        a = self.cfg.grad_accum
        return step * a * self.d.world + self.d.rank * a + j

    def locate(self, b: int) -> tuple[int, int]:
        """(epoch, index in that epoch's plan) of micro-batch ``b`` counted over all epochs. Epochs
        differ in how many micro-batches they have (each packs its own shuffled order greedily), so
        they are counted, not divided by epoch 0's count (which ran past a shorter epoch's end)."""
        epoch = 0
        while True:
            if epoch not in self._sizes:
                self._sizes[epoch] = len(self._plan(epoch))
            if b < self._sizes[epoch]:
                return epoch, b
            b -= self._sizes[epoch]
            epoch += 1

    def micro_batches(self, step: int) -> list[list[int]]:
        out = []
        for j in range(self.cfg.grad_accum):
            epoch, k = self.locate(self._batch_number(step, j))
            out.append(self._plan(epoch)[k])
        return out

    # ------------------------------------------------------------ eval
    def evaluate(self) -> float | None:
        import torch

        if not self.eval_ex:
            return None
        plan = plan_batches([len(e.input_ids) for e in self.eval_ex], batch_tokens=self.cfg.batch_tokens,
                            max_examples=self.cfg.max_examples_per_batch, seed=0, shuffle=False)
        total = weight = 0.0
        self.module.eval()
        mine = plan[self.d.rank::self.d.world]
        # FSDP: every rank runs as many forwards (each all-gathers the layers); a rank short of
        # batches runs its first one again and does not count it
        rounds = math.ceil(len(plan) / self.d.world) if self.mode == "fsdp" else len(mine)
        with torch.no_grad(), _autocast(self.cfg, self.device), self._fast_paths():
            for r in range(rounds):
                idx = mine[r] if r < len(mine) else plan[0]
                mb = collate([self.eval_ex[i] for i in idx], pad_id=self.pad_id, packed=self.cfg.packing,
                             share_prefix=self.segment_attention)
                loss = float(loss_sum(self.module, mb, self.device, self.segment_attention))
                if r < len(mine):
                    total += loss
                    weight += mb.loss_weight
        self.module.train()
        total, weight = _all_reduce([total, weight], self.d)
        return total / weight if weight else None

    # ------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        return {"step": self.step, "best_val": self.best_val, "best_step": self.best_step,
                "bad_evals": self.bad_evals, "history": self.history,
                "optimizer": self._optimizer_state(), "scheduler": self.sched.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}}

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state (FSDP: gathered full, keyed by parameter name; every rank calls it)."""
        if self.mode != "fsdp":
            return self.opt.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.module, self.opt,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _load_optimizer_state(self, state: dict[str, Any]) -> None:
        if self.mode != "fsdp":
            self.opt.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.module, self.opt, optim_state_dict=state,
                                 options=StateDictOptions(full_state_dict=True))

    def _weights(self) -> dict[str, Any]:
        """The trainable weights, full (FSDP: gathered; every rank calls it, rank 0 gets them)."""
        if self.mode == "fsdp":
            return full_trainable_state(self.module, self.d.main)
        return trainable_state(self.module) if self.d.main else {}

    def save_checkpoint(self) -> None:
        import torch

        if not self.folder or not (self.d.main or self.mode == "fsdp"):
            return
        weights, state = self._weights(), self.state()  # collective under FSDP
        if not self.d.main:
            return
        ck = self.folder.checkpoints
        tmp = ck / ".last.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(weights, tmp / "weights.pt")
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": self.step, "saved_at": time.time()}))
        last = ck / "last"
        old = ck / ".last.old"
        shutil.rmtree(old, ignore_errors=True)
        if last.exists():
            os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)

    def save_best(self) -> None:
        import torch

        if not self.folder or not (self.d.main or self.mode == "fsdp"):
            return
        weights = self._weights()  # collective under FSDP
        if not self.d.main:
            return
        best = self.folder.checkpoints / "best"
        best.mkdir(parents=True, exist_ok=True)
        torch.save(weights, best / ".weights.pt.tmp")
        os.replace(best / ".weights.pt.tmp", best / "weights.pt")

    def resume(self) -> bool:
        import random

        import numpy as np
        import torch

        if not self.folder:
            return False
        last = self.folder.checkpoints / "last"
        if not (last / "state.pt").exists():
            return False
        load_trainable_state(self.module, torch.load(last / "weights.pt", weights_only=True))
        st = torch.load(last / "state.pt", weights_only=False)
        self._load_optimizer_state(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.step, self.best_val, self.best_step = st["step"], st["best_val"], st["best_step"]
        self.bad_evals, self.history = st["bad_evals"], st.get("history", [])
        torch.set_rng_state(st["rng"]["torch"])
        random.setstate(st["rng"]["python"])
        np.random.set_state(st["rng"]["numpy"])
        return True

    # ------------------------------------------------------------ loop
    def _cancelled(self) -> bool:
        flag = 1.0 if (self.folder and self.d.main and self.folder.cancel_requested()) else 0.0
        return _all_reduce([flag], self.d, op="max")[0] > 0

    def _record(self, ce, mb, idx: list[int], epoch: int) -> None:
        """Keep each example's loss and confidence of this micro-batch (see the module docstring)."""
        losses, confs = example_losses(ce, mb, len(idx))
        for i, loss, conf in zip(idx, losses, confs, strict=True):
            keys = self.example_keys[i] if self.example_keys else {"example": i}
            self.dynamics.append({"epoch": epoch, "step": self.step + 1, **keys, "loss": loss, "confidence": conf})

    def _no_sync(self, skip: bool):
        """Leave the gradients of this micro-batch local (a step's last one reduces them all):
        DDP's no_sync, FSDP2's set_requires_gradient_sync(False)."""
        if not skip:
            if self.mode == "fsdp":
                self.model.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if self.mode == "fsdp":
            self.model.set_requires_gradient_sync(False)
            return contextlib.nullcontext()
        return self.model.no_sync() if hasattr(self.model, "no_sync") else contextlib.nullcontext()

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.folder and self.d.main:
            self.folder.append_metrics(row)

    def _unfreeze(self) -> None:
        """Gradual unfreezing: set the layers that train at this step (``training.unfreeze``)."""
        assert self.unfreezing is not None
        before = self.unfreezing.unfrozen
        k = self.unfreezing.apply(self.step)
        if k != before:
            self._log({"step": self.step, "unfrozen_layers": float(k)})
            if self.d.main:
                print(f"[train] step {self.step}: training the top {k} of {self.unfreezing.layers} layers", flush=True)

    def _status(self, **kw: Any) -> None:
        if self.folder and self.d.main:
            self.folder.update_status(**kw)

    def run_eval(self) -> bool:
        """Evaluate, track the best, and return True when early stopping says stop."""
        val = self.evaluate()
        if val is None:
            return False
        self._log({"step": self.step, "val_loss": val})
        if self.best_val is None or val < self.best_val - 1e-6:
            self.best_val, self.best_step, self.bad_evals = val, self.step, 0
            self.save_best()
        else:
            self.bad_evals += 1
        p = self.cfg.early_stopping_patience
        return bool(p and self.bad_evals >= p)

    def train(self, progress=None) -> str:
        """Train to the end (or until cancelled/early-stopped); returns the final status word."""
        with self._fast_paths():
            return self._train(progress)

    def _train(self, progress) -> str:
        import torch

        cfg = self.cfg
        self.module.train()
        params = [p for p in self.module.parameters() if p.requires_grad]
        outcome = "succeeded"
        last_eval_step = -1
        self._segment_start = time.perf_counter()
        self._check_threads(at_start=True)
        while self.step < self.total_steps:
            if self._cancelled():
                self.save_checkpoint()
                return "cancelled"
            t0 = time.perf_counter()
            if self.unfreezing is not None:
                self._unfreeze()
            plan = self.micro_batches(self.step)
            batches = [collate([self.train_ex[i] for i in idx], pad_id=self.pad_id, packed=cfg.packing,
                               share_prefix=self.segment_attention)
                       for idx in plan]
            record = cfg.record_dynamics and self.d.main
            denom = sum(mb.loss_weight for mb in batches)
            if self.d.world > 1:
                # The step's loss is the mean over every rank's targets (as one process with
                # grad_accum x world micro-batches has it): DDP and FSDP average the ranks' gradients,
                # so each rank divides its sum by all ranks' target weight / world.
                denom = _all_reduce([denom], self.d)[0] / self.d.world
            denom = denom or 1.0
            total = 0.0
            for j, mb in enumerate(batches):
                sync = j == len(batches) - 1 or self.d.world == 1
                with self._no_sync(not sync):
                    with _autocast(cfg, self.device):
                        ce = token_losses(self.model, mb, self.device, self.segment_attention)
                        loss = weighted_sum(ce, mb) / denom
                    loss.backward()
                if record:
                    self._record(ce, mb, plan[j], self.locate(self._batch_number(self.step, j))[0])
                total += float(loss.detach())
            if cfg.max_grad_norm > 0 or self.mode == "fsdp":
                # FSDP: the norm over every rank's gradient shards (a DTensor; inf = measure only)
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
                gn = float(_full(norm))
            else:
                gn = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
            lr = self.sched.get_last_lr()[0]
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            if self.folder and self.d.main and self.dynamics:
                self.folder.append_dynamics(self.dynamics)
                self.dynamics = []
            dt = time.perf_counter() - t0
            loss_v, ntok = _all_reduce([total, float(sum(mb.n_tokens for mb in batches))], self.d)
            loss_v /= self.d.world
            row = {"step": self.step, "loss": loss_v, "lr": lr, "grad_norm": gn, "tokens_per_s": ntok / dt,
                   "tokens": ntok, "step_time_s": dt,
                   "epoch": self.step * cfg.grad_accum * self.d.world / max(1, self.n_batches)}
            if not math.isfinite(loss_v):
                raise FloatingPointError(f"loss is {loss_v} at step {self.step}; lower learning_rate")
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                self._log(row)
            self._status(step=self.step, total_steps=self.total_steps, loss=loss_v, train_seconds=self.elapsed())
            self._check_threads()
            if progress:
                progress(self.step, self.total_steps, row)
            stop = False
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                stop = self.run_eval()
                last_eval_step = self.step
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total_steps:
                self.save_checkpoint()
            if stop:
                outcome = "succeeded"
                self._log({"step": self.step, "early_stopped": 1.0})
                break
        if last_eval_step != self.step:
            self.run_eval()
        return outcome

    def result_state(self) -> dict[str, Any] | None:
        """FSDP: the weights ``save_result`` writes, gathered full on rank 0 (LoRA: the trainable
        adapter weights; full / top_k: the whole model); every rank calls it. None elsewhere."""
        if self.cfg.method == "lora":
            state: dict[str, Any] | None = full_trainable_state(self.module, self.d.main)
        else:
            state = full_model_state(self.module, self.d.main)
        return state if self.d.main else None

    def load_best(self) -> None:
        """Put the best (lowest val loss) weights into the model, if an eval ever ran."""
        import torch

        if self.best_step is None or not self.folder:
            return
        f = self.folder.checkpoints / "best" / "weights.pt"
        if self.d.world > 1:
            import torch.distributed as dist

            dist.barrier()
        if f.exists():
            load_trainable_state(self.module, torch.load(f, weights_only=True))


def _clear_stale_cancel(folder: RunFolder) -> str:
    """Remove a CANCEL flag left from an earlier end of this run (the folder's status is already
    succeeded, failed or cancelled: e.g. a run cancelled, then launched again by hand with torchrun
    or accelerate launch); returns what was done ('' when nothing). A flag on a queued or running
    run is a cancel asked for since the launch, and stays."""
    if not folder.cancel_requested():
        return ""
    before = folder.status().get("status")
    if before not in ("succeeded", "failed", "cancelled"):
        return ""
    folder.cancel_file.unlink(missing_ok=True)
    return f"relaunched after it was {before}: removed the stale CANCEL flag of that earlier end"


def save_result(model, tokenizer, cfg: TrainConfig, folder: RunFolder, base_path: str,
                state_dict: dict[str, Any] | None = None) -> Path:
    """Write adapter/ (LoRA; loads with plain peft) or model/ (full, top_k). ``state_dict``: the
    full weights to write instead of the model's own (FSDP: gathered from the shards)."""
    from training.export import (
        adapter_base_name,
        compat_model_config,
        compat_tokenizer_config,
        hub_id,
        set_adapter_base,
    )

    extra: dict[str, Any] = {"state_dict": state_dict} if state_dict is not None else {}
    base_model = folder.job().get("base_model")
    if cfg.method == "lora":
        out = folder.adapter_dir
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out, **extra)
        # The base's hub id when it has one (the bundled default's too), else its local folder. tuneloop
        # loads the base from the run's own record, never from here; the local folder is in status.json.
        set_adapter_base(out, adapter_base_name(base_model, base_path))
    else:
        out = folder.model_dir
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out, **extra)
        compat_model_config(out)
    tokenizer.save_pretrained(out)
    compat_tokenizer_config(out)  # transformers 4.x / peft 0.17 / llama.cpp's converter read it too
    folder.update_status(base_path=base_path, base_hub_id=hub_id(base_model, base_path))
    return out


def _memory_plan(cfg: TrainConfig, base_path: str, device: str):
    """(config with gradient checkpointing decided, memory plan); raises ``DoesNotFit`` when the plan
    exceeds the device's free memory (``memory_check``)."""
    from transformers import AutoConfig

    from training.memory import check, free_memory, plan, shape_of

    shape = shape_of(AutoConfig.from_pretrained(base_path))
    p = check(shape, cfg, device, free_memory(device)) if cfg.memory_check else plan(shape, cfg, device)
    return cfg.model_copy(update={"gradient_checkpointing": p.gradient_checkpointing}), p


def run(run_dir: str | Path) -> int:
    """Train the run in ``run_dir``; returns the process exit code."""
    folder = RunFolder(run_dir)
    job = folder.job()
    cfg = TrainConfig(**(folder.read_json(folder.config_file, {}) or {}))
    if cfg.objective != "sft":  # dpo/orpo on preference pairs: TRL's trainers (training/preference.py)
        from training.preference import run as run_preference

        return run_preference(folder)
    d = Dist()
    trainer: Trainer | None = None
    try:
        import torch

        from models.lm import configure_threads, describe, load_base, pick_device, resolve

        configure_threads(cfg.threads or None)
        device = pick_device(cfg.device)
        d = setup_dist(device)
        if device == "cuda":
            device = f"cuda:{d.local_rank}"
            torch.cuda.set_device(d.local_rank)
        resumed_from = (folder.checkpoints / "last" / "state.pt").exists()
        mode = distributed_mode(cfg, d.world)
        if d.main:
            note = _clear_stale_cancel(folder)
            folder.update_status(status="running", pid=os.getpid(), started_at=time.time(), error=None,
                                 world_size=d.world, device=device, resumed=resumed_from, distributed=mode,
                                 message=note)
            print(f"[train] {d.world} process(es), {mode}, {device}" + (f"; {note}" if note else ""), flush=True)
        torch.manual_seed(cfg.seed)
        base_path = resolve(job.get("base_model"))
        cfg, plan = _memory_plan(cfg, base_path, device)
        if d.main:
            folder.update_status(memory_plan=plan.as_dict())
            print(f"[train] memory plan: {plan.describe()}", flush=True)
        # LoRA on CUDA holds the frozen base in bf16 (adapters and optimizer state stay fp32: peft casts
        # them); on the CPU, and for full / top-k fine-tuning, fp32 weights under bf16 autocast.
        # (FSDP shards fp32 weights: one dtype per sharded unit, the memory saving is the sharding)
        half_base = (device.startswith("cuda") and cfg.method == "lora" and cfg.precision != "fp32"
                     and mode != "fsdp")
        base, tok = load_base(base_path, dtype="bfloat16" if half_base else "float32", device=device,
                              quantization=cfg.quantization)
        tok.padding_side = "right"
        n_base = describe(base)
        liger = use_liger(base, cfg.liger_kernels, device)
        model = prepare_model(base, cfg, job.get("init_adapter"))
        info = describe(model)
        train_rows = folder.read_rows("train")
        train_ex, st_train = tokenize_rows(tok, train_rows, max_length=cfg.max_length,
                                           system_prompt=cfg.system_prompt)
        eval_ex, st_eval = tokenize_rows(tok, folder.read_rows("eval"), max_length=cfg.max_length,
                                         system_prompt=cfg.system_prompt)
        if not train_ex:
            raise ValueError("the slice has no usable train examples (empty, or all truncated away)")
        trainer = Trainer(model, tok, cfg, train_ex, eval_ex, folder, device, d)
        trainer.example_keys = [{"pair_id": train_rows[e.row].get("pair_id"),
                                 "revision_id": train_rows[e.row].get("revision_id")} for e in train_ex]
        resumed = trainer.resume()
        earlier = folder.status()
        trainer.seconds_before = float(earlier.get("train_seconds") or 0.0)
        segments = int(earlier.get("segments") or 0) + 1
        if d.main:
            folder.update_status(
                status="running", total_steps=trainer.total_steps, step=trainer.step, resumed=resumed,
                segments=segments, threads=torch.get_num_threads(),
                model={"base": base_path, "n_params": n_base["n_params"], "n_trainable": info["n_trainable"],
                       "dtype": info["dtype"], "device": device, "attention": trainer.attention, "liger": liger},
                data={"train": st_train.as_dict(), "eval": st_eval.as_dict(), "batches_per_epoch": trainer.n_batches})
            print(f"[train] {base_path}: {n_base['n_params'] / 1e6:.1f}M params, {info['n_trainable'] / 1e6:.2f}M "
                  f"trainable ({cfg.method}), {device}, world {d.world}; {st_train.examples} train examples "
                  f"({st_train.truncated} truncated, {st_train.dropped} dropped), {trainer.total_steps} steps"
                  + (f", resumed at step {trainer.step}" if resumed else ""), flush=True)
        outcome = trainer.train()
        if outcome == "cancelled":
            if d.main:
                folder.update_status(status="cancelled", finished_at=time.time(), step=trainer.step,
                                     train_seconds=trainer.elapsed(),
                                     message=f"cancelled at step {trainer.step} (CANCEL flag); resumable")
                print(f"[train] cancelled at step {trainer.step}: the run folder has a CANCEL flag; "
                      "checkpoint saved, `tuneloop runs resume` continues it", flush=True)
            return 0
        trainer.load_best()
        total_s = trainer.elapsed()
        summary = {"steps": trainer.step, "total_steps": trainer.total_steps, "best_val_loss": trainer.best_val,
                   "best_step": trainer.best_step, "train_seconds": total_s, "segments": segments,
                   "segment_seconds": total_s - trainer.seconds_before, "threads": torch.get_num_threads(),
                   "final_loss": next((h["loss"] for h in reversed(trainer.history) if "loss" in h), None),
                   "method": cfg.method, "n_params": n_base["n_params"], "n_trainable": info["n_trainable"],
                   "dtype": info["dtype"], "device": device, "world_size": d.world, "distributed": mode,
                   "truncated": st_train.truncated + st_eval.truncated, "dropped": st_train.dropped + st_eval.dropped}
        # FSDP: the full weights, gathered from every rank's shards, for rank 0 to save
        full = trainer.result_state() if mode == "fsdp" else None
        if d.main:
            out = save_result(trainer.module, tok, cfg, folder, base_path, state_dict=full)
            summary["artifact"] = str(out)
            summary["artifact_kind"] = "lora" if cfg.method == "lora" else "model"
            folder.update_status(status="succeeded", finished_at=time.time(), summary=summary,
                                 adapter_path=str(out), step=trainer.step, train_seconds=total_s)
            print(f"[train] done: {json.dumps(summary, default=str)}", flush=True)
        return 0
    except BaseException as exc:  # noqa: BLE001 - the run folder must say why it failed
        if d.main:
            spent = {"train_seconds": trainer.elapsed()} if trainer is not None and trainer._segment_start else {}
            folder.update_status(status="failed", finished_at=time.time(), **spent,
                                 error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
        traceback.print_exc()
        return 1
    finally:
        if d.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m training.train RUN_DIR", file=sys.stderr)
        return 2
    return run(argv[0])


if __name__ == "__main__":
    sys.exit(main())
