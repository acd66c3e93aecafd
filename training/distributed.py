"""Processes that train one run together: rank/world (``Dist``), the process group, how they
share the model (DDP or FSDP2, ``distributed_mode``), and gathering FSDP2 shards (DTensors) into
whole tensors for checkpoints and the saved result. Used by ``training.train``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_dist(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        asked = requested_processes()
        if asked > 1:
            raise RuntimeError(
                f"the launcher was asked for {asked} processes but started this one alone (WORLD_SIZE unset): "
                "`accelerate launch --num_processes N` without --multi_gpu or a config file runs one process "
                "on a machine without GPUs (and --cpu always does). Use `accelerate launch --multi_gpu "
                "--num_processes N -m training.train RUN_DIR`, or --config_file training/launch/ddp.yaml "
                "(docs/training.md, multi-GPU)")
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def requested_processes() -> int:
    """How many processes ``accelerate launch`` (this process's parent) was asked for with
    ``--num_processes``; 0 when not launched by it or not said (Linux: the parent's command line)."""
    if "ACCELERATE_USE_CPU" not in os.environ and "ACCELERATE_MIXED_PRECISION" not in os.environ:
        return 0
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return 0
    for i, a in enumerate(argv):
        for flag in ("--num_processes", "--num-processes"):
            value = a[len(flag) + 1:] if a.startswith(flag + "=") else (argv[i + 1] if a == flag and i + 1 < len(argv)
                                                                       else None)
            if value is not None and value.strip().isdigit():
                return int(value)
    return 0


def distributed_mode(cfg: TrainConfig, world: int) -> str:
    """How the processes share the model: "single" (one process), "ddp" or "fsdp". accelerate
    launch's config (ACCELERATE_USE_FSDP / _DEEPSPEED in the environment) wins over config
    ``distributed``, so a by-hand launch with training/launch/fsdp.yaml shards as it says."""
    if world <= 1:
        return "single"
    mode = cfg.distributed
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        mode = "fsdp"
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        mode = "deepspeed_zero3" if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" else "deepspeed_zero2"
    if mode.startswith("deepspeed"):
        raise RuntimeError(f"distributed={mode}: tuneloop's trainer does not run DeepSpeed (untested, not "
                           "implemented); use distributed=fsdp (FSDP2 full shard, like ZeRO-3) or ddp")
    return mode


def _is_dtensor(t) -> bool:
    return type(t).__name__ == "DTensor" or hasattr(t, "full_tensor")


def _full(t):
    """A DTensor (FSDP2 shard) gathered whole; any other tensor as it is."""
    return t.full_tensor() if _is_dtensor(t) else t


def full_trainable_state(model, main: bool = True) -> dict[str, Any]:
    """``trainable_state`` of a model whose parameters may be FSDP2 shards (DTensors): every rank
    must call it (each sharded tensor is all-gathered in turn); ``main``: this rank keeps the
    gathered CPU copies (others get an empty dict)."""
    out: dict[str, Any] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        t = _full(p.detach())
        if main:
            out[n] = t.to("cpu").clone()
    return out


def full_model_state(model, main: bool = True) -> dict[str, Any] | None:
    """The whole model's state dict (FSDP2: gathered to rank 0's CPU; every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if main else None


def _all_reduce(values: list[float], d: Dist, op: str = "sum") -> list[float]:
    if d.world <= 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.tolist()
