"""The typed training config: defaults in code, a TOML file, then ``key=value`` overrides.

Unknown keys are rejected (``store.config.load_config``); the resolved config is saved with
the run as ``config.json`` and ``config.toml`` (the latter can be passed back to
``tuneloop train --config``), so a run is reproducible from its folder alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from store.config import ConfigError, load_config

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what is trained
    method: Literal["lora", "full", "top_k"] = Field("lora", description="lora, full fine-tuning, or top_k layers")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_LINEAR),
                                      description="LoRA target module names (default: all linear layers)")
    lora_top_layers: int = Field(0, ge=0, description="LoRA only in the last k decoder layers (0 = all layers)")
    top_k_layers: int = Field(2, ge=1, description="for method=top_k: train only the last k decoder layers")
    unfreeze_every: int = Field(0, ge=0, description="gradual unfreezing: train the top decoder layer first and one "
                                                     "more every N optimizer steps (0 = off); method=lora unfreezes "
                                                     "the adapters of those layers")

    # the objective: supervised fine-tuning, or preference optimisation on corrections (training/preference.py)
    objective: Literal["sft", "dpo", "orpo"] = Field(
        "sft", description="sft on the slice's responses, or dpo/orpo on the preference pairs of its corrections")
    from_run: str = Field("", description="dpo/orpo: the succeeded LoRA run whose adapter to start from "
                                          "(dpo: required, it is also the reference policy)")
    beta: float = Field(0.1, gt=0, description="dpo: strength of the pull to the reference; orpo: weight of the "
                                               "odds-ratio term")
    preference_pairs: Literal["slice", "all"] = Field(
        "slice", description="dpo/orpo: the preference pairs of the slice's train pairs, or every one in the project")
    pairs_per_batch: int = Field(4, ge=1, description="dpo/orpo: preference pairs per micro-batch (padded)")

    # optimisation
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    warmup_steps: int = Field(-1, description="overrides warmup_ratio when >= 0")
    weight_decay: float = Field(0.0, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = Field(1.0, ge=0, description="0 disables clipping")
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(0, ge=0, description="optimizer steps; 0 = use epochs")
    epochs: float = Field(1.0, gt=0)
    seed: int = 0

    # data
    max_length: int = Field(512, ge=8, description="tokens per example; longer ones are truncated (counted)")
    batch_tokens: int = Field(2048, ge=8, description="tokens per micro-batch (packed, no padding)")
    max_examples_per_batch: int = Field(64, ge=1)
    packing: bool = Field(True, description="pack examples into padding-free rows; false = one example per row, padded")
    attention: Literal["auto", "packed", "sdpa", "flash_attention_2", "flex_attention", "eager"] = Field(
        "auto", description="how packed rows attend: packed = tuneloop's per-example kernel (fastest on CPU); "
                            "sdpa / flash_attention_2 / flex_attention / eager = transformers' own, told the example "
                            "bounds by per-example position_ids; auto = packed on CPU, flash_attention_2 on CUDA "
                            "when flash-attn is installed, else sdpa (training.attention.choose)")
    system_prompt: str = Field("", description="system turn for examples without one ('' = the template's default)")

    # evaluation, early stopping, checkpoints
    eval_every: int = Field(0, ge=0, description="evaluate val loss every N steps (0 = at the end only)")
    eval_max_examples: int = Field(256, ge=0)
    early_stopping_patience: int = Field(0, ge=0, description="stop after N evals without improvement (0 = off)")
    save_every: int = Field(50, ge=0, description="checkpoint every N steps (for resume); 0 = only at the end")
    log_every: int = Field(1, ge=1)
    record_dynamics: bool = Field(True, description="record each train example's loss and confidence per epoch "
                                                    "(dynamics.jsonl; `tuneloop dynamics RUN` maps them)")

    # hardware
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto = bf16 autocast where it is native")
    gradient_checkpointing: bool | None = Field(
        None, description="recompute activations in the backward pass (less memory, ~30 % slower); "
                          "unset = on from 1B parameters (training.memory.CHECKPOINTING_ABOVE)")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="QLoRA: hold the frozen base in 4-bit NF4 (double quantization, bf16 compute) or "
                            "8-bit via bitsandbytes; CUDA only, method=lora only")
    liger_kernels: bool | None = Field(
        None, description="Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU) on CUDA; unset = when liger-kernel "
                          "is installed (pip install 'tuneloop[gpu]'), true = require it")
    memory_check: bool = Field(True, description="refuse a run whose memory plan does not fit the device "
                                                 "(training.memory); false = start anyway")
    threads: int = Field(0, ge=0, description="CPU threads for torch (0 = auto: 1 when the machine is overloaded)")
    nproc: int = Field(1, ge=1, description="processes to train with, one per GPU (`tuneloop train --gpus N`); "
                                            "1 = plain process")
    distributed: Literal["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"] = Field(
        "ddp", description="with nproc > 1: ddp (a full copy per process), fsdp (FSDP2 full shard: parameters, "
                           "gradients and optimizer state split across processes) or DeepSpeed ZeRO-2/3")

    # after training (run by the workflow that started the run: workflows.train)
    predict_after: bool = Field(True, description="predict the slice's predict_split when the run succeeds "
                                                  "(stored, scored and categorised, as `tuneloop predict`)")
    predict_split: Literal["eval", "train"] = Field("eval", description="the slice split predict_after predicts")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.quantization != "none" and self.method != "lora":
            raise ValueError(f"quantization={self.quantization} trains LoRA adapters on a frozen quantized base: "
                             f"use method=lora (or quantization=none for method={self.method})")
        if self.batch_tokens < self.max_length and self.packing:
            raise ValueError(f"batch_tokens ({self.batch_tokens}) must be >= max_length ({self.max_length})")
        if self.objective != "sft":
            if self.method != "lora":
                raise ValueError(f"objective={self.objective} trains a LoRA adapter: it needs method=lora")
            if self.nproc != 1:
                raise ValueError(f"objective={self.objective} runs in one process: it needs nproc=1")
            if self.quantization != "none":
                raise ValueError(f"objective={self.objective} trains on a full-precision base: "
                                 "it needs quantization=none")
            if self.unfreeze_every:
                raise ValueError(f"objective={self.objective} runs through TRL's trainer, which trains the whole "
                                 "adapter from the start: it needs unfreeze_every=0")
            if self.attention != "auto":
                raise ValueError(f"objective={self.objective} runs through TRL's trainer with the model's own "
                                 f"attention: it needs attention=auto (not {self.attention})")
        if self.unfreeze_every and self.nproc > 1:
            raise ValueError("unfreeze_every changes the trained parameters during the run: it needs nproc=1")
        if self.unfreeze_every and self.method == "top_k":
            raise ValueError("unfreeze_every grows the trained layers itself: use method=full or lora with it "
                             "(top_k fixes them)")
        if self.objective == "dpo" and not self.from_run:
            raise ValueError("objective=dpo needs from_run: the SFT run whose adapter it starts from "
                             "(and keeps as the reference policy)")
        return self


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults, then the TOML file, then ``key=value`` overrides; one clear error line if wrong."""
    return load_config(TrainConfig, path, list(overrides))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def to_toml(cfg: BaseModel) -> str:
    """A flat TOML rendering that ``load`` reads back to the same config."""
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in cfg.model_dump(mode="json").items() if v is not None)


__all__ = ["ALL_LINEAR", "ConfigError", "TrainConfig", "load", "to_toml"]
