"""The memory plan of a run, made before anything is loaded: does it fit, and if not, what to change.

``plan`` counts the model's parameters exactly by building it on PyTorch's ``meta`` device from
its config (no weights are read or allocated: what accelerate's ``init_empty_weights`` does), and
estimates, for one micro-batch of ``batch_tokens`` tokens:

- **weights**: the frozen base in its training dtype (bf16 on CUDA for LoRA, fp32 on CPU and for
  full fine-tuning), or 4-bit NF4 / 8-bit for the decoder layers' linear weights under
  ``quantization`` (embeddings, norms and the output head stay bf16, as bitsandbytes leaves them);
- **trainable state**: every trainable parameter in fp32 with its gradient and AdamW's two
  moments (16 bytes each); LoRA parameters are counted from the target modules' shapes;
- **activations** saved for the backward pass, per token and layer, after Korthikanti et al.
  (2022, "Reducing activation recomputation"), for a gated MLP and fused attention (no [T x T]
  scores): ``17 h + 6 i`` bytes in 16-bit (h hidden, i intermediate size), twice that in fp32;
  with gradient checkpointing only each layer's input (``2 h``) plus one layer recomputed;
- **logits**: ``tokens x vocab`` in fp32, twice (values and gradient): an upper bound, as the
  trainer keeps the logits of the response tokens only (``logits_to_keep``, training/data.py);
- **overhead**: on CUDA the context and allocator slack (0.75 GiB + 10 %).

An estimate, not a measurement: it errs on the high side so a refused run would not have fit. The
GPU benchmark (tests/bench/bench_gpu.py) compares it with the measured peak. ``check`` compares the
plan with the free memory of the device and, when it does not fit, says which change would make
it fit (gradient checkpointing, 4-bit, a smaller ``batch_tokens``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from training.config import TrainConfig

GiB = 1 << 30
CHECKPOINTING_ABOVE = 1_000_000_000  # gradient checkpointing is on by default from this many parameters
_LAYER = re.compile(r"\.(\d+)\.")


class DoesNotFit(RuntimeError):
    """The run would not fit in the device's memory; the message says what to change."""


@dataclass(frozen=True)
class Shape:
    """What the plan needs of a model: parameter counts and sizes, from its config."""

    n_params: int
    n_embedding: int  # input embeddings and output head (never quantized)
    n_layer_linear: int  # weights of the decoder layers' linear modules (what 4/8-bit quantizes)
    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    lora_linear: tuple[tuple[str, int, int, int], ...]  # (module name, layer index, in, out) of linear layers
    layer_params: tuple[int, ...]  # parameters per decoder layer


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    n_params: int
    n_trainable: int
    weights: int
    trainable_state: int
    activations: int
    logits: int
    overhead: int
    gradient_checkpointing: bool
    quantization: str
    batch_tokens: int

    @property
    def total(self) -> int:
        return self.weights + self.trainable_state + self.activations + self.logits + self.overhead

    def parts(self) -> list[tuple[str, int]]:
        return [("weights", self.weights), ("trainable state", self.trainable_state),
                ("activations", self.activations), ("logits", self.logits), ("overhead", self.overhead)]

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "total_bytes": self.total, **{k.replace(" ", "_"): v for k, v in self.parts()},
                "n_params": self.n_params, "n_trainable": self.n_trainable,
                "gradient_checkpointing": self.gradient_checkpointing, "quantization": self.quantization,
                "batch_tokens": self.batch_tokens}

    def describe(self) -> str:
        return (f"~{gib(self.total)} ({', '.join(f'{k} {gib(v)}' for k, v in self.parts() if v)}) for "
                f"{self.n_params / 1e6:,.0f}M parameters, {self.n_trainable / 1e6:,.2f}M trainable, "
                f"{self.batch_tokens} tokens per micro-batch, checkpointing {'on' if self.gradient_checkpointing else 'off'}"
                + (f", {self.quantization} base" if self.quantization != "none" else ""))


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def shape_of(model_config: Any) -> Shape:
    """Parameter counts of a causal LM built from ``model_config`` on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    n_params = sum(p.numel() for p in model.parameters())
    emb = {id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    n_embedding = sum(p.numel() for p in model.parameters() if id(p) in emb)
    linear: list[tuple[str, int, int, int]] = []
    per_layer: dict[int, int] = {}
    for name, module in model.named_modules():
        m = _LAYER.search(name + ".")
        if m is None:
            continue
        layer = int(m.group(1))
        if isinstance(module, torch.nn.Linear):
            linear.append((name.rsplit(".", 1)[-1], layer, module.in_features, module.out_features))
    for name, p in model.named_parameters():
        m = _LAYER.search(name)
        if m is not None:
            per_layer[int(m.group(1))] = per_layer.get(int(m.group(1)), 0) + p.numel()
    cfg = model.config
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0))
    return Shape(
        n_params=n_params, n_embedding=n_embedding,
        n_layer_linear=sum(i * o for _, _, i, o in linear), n_layers=len(per_layer), hidden=hidden,
        intermediate=int(getattr(cfg, "intermediate_size", 0) or 4 * hidden),
        vocab=int(getattr(cfg, "vocab_size", 0)), lora_linear=tuple(linear),
        layer_params=tuple(per_layer[k] for k in sorted(per_layer)))


def n_trainable(shape: Shape, cfg: TrainConfig) -> int:
    if cfg.method == "full":
        return shape.n_params
    if cfg.method == "top_k":
        return sum(shape.layer_params[-cfg.top_k_layers:]) + shape.hidden  # + the final norm
    first = shape.n_layers - cfg.lora_top_layers if cfg.lora_top_layers else 0
    targets = set(cfg.target_modules)
    return sum(cfg.lora_r * (i + o) for name, layer, i, o in shape.lora_linear if name in targets and layer >= first)


def checkpointing(cfg: TrainConfig, n_params: int) -> bool:
    """Gradient checkpointing as the run will use it: the config's choice, or on from 1B parameters."""
    return cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else n_params >= CHECKPOINTING_ABOVE


def plan(shape: Shape, cfg: TrainConfig, device: str) -> MemoryPlan:
    cuda = device.startswith("cuda")
    lora = cfg.method == "lora"
    half = cuda and cfg.precision != "fp32"
    sft = cfg.objective == "sft"
    base_bytes = 2 if (half and lora and sft) else 4  # dpo/orpo hold the base in fp32 (training/preference.py)
    if cfg.quantization == "4bit":
        # NF4: 4 bits per weight plus double-quantized absmax constants (~0.127 bits per weight)
        layers = math.ceil(shape.n_layer_linear * (4 + 0.127) / 8)
    elif cfg.quantization == "8bit":
        layers = shape.n_layer_linear + shape.n_layer_linear // 64 * 4
    else:
        layers = shape.n_layer_linear * base_bytes
    rest = (shape.n_params - shape.n_layer_linear) * (2 if cfg.quantization != "none" else base_bytes)
    trainable = n_trainable(shape, cfg)
    weights = layers + rest
    if cfg.method != "lora":  # the trained part is fp32 (counted in the trainable state), not in the base
        weights -= trainable * base_bytes
    ckpt = checkpointing(cfg, shape.n_params)
    act_unit = 1 if half else 2  # the 16-bit formula, doubled in fp32
    per_layer = (17 * shape.hidden + 6 * shape.intermediate) * act_unit
    # dpo/orpo: the chosen and the rejected answer of each pair, padded to at most max_length
    tokens = cfg.batch_tokens if sft else 2 * cfg.pairs_per_batch * cfg.max_length
    layers_through = shape.n_layers if cfg.method != "top_k" else min(cfg.top_k_layers, shape.n_layers)
    if lora and cfg.lora_top_layers:
        layers_through = min(cfg.lora_top_layers, shape.n_layers)
    if ckpt:
        activations = tokens * (2 * shape.hidden * act_unit * layers_through + per_layer)
    else:
        activations = tokens * per_layer * layers_through
    logits = tokens * shape.vocab * 4 * 2
    state = trainable * 16
    if cfg.nproc > 1 and cfg.distributed == "fsdp":  # FSDP2 full shard: each process holds 1/N of these
        weights, state = weights // cfg.nproc, state // cfg.nproc
    core = weights + state + activations + logits
    overhead = int(0.75 * GiB + 0.10 * core) if cuda else 0
    return MemoryPlan(device=device, n_params=shape.n_params, n_trainable=trainable, weights=int(weights),
                      trainable_state=int(state), activations=int(activations), logits=int(logits),
                      overhead=overhead, gradient_checkpointing=ckpt, quantization=cfg.quantization,
                      batch_tokens=tokens)


def cuda_devices() -> int:
    """How many CUDA devices torch sees here (0 without CUDA)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def free_memory(device: str) -> int:
    """Bytes the run may use on ``device``: free GPU memory, or available RAM on the CPU."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check(shape: Shape, cfg: TrainConfig, device: str, free: int) -> MemoryPlan:
    """The plan; raises ``DoesNotFit`` naming the changes that would make the run fit in ``free`` bytes."""
    p = plan(shape, cfg, device)
    if p.total <= free:
        return p
    fixes: list[str] = []
    if not p.gradient_checkpointing:
        q = plan(shape, cfg.model_copy(update={"gradient_checkpointing": True}), device)
        fixes.append(f"gradient_checkpointing=true (~{gib(q.total)})")
    if cfg.method == "lora" and cfg.quantization != "4bit" and device.startswith("cuda") and cfg.objective == "sft":
        q = plan(shape, cfg.model_copy(update={"quantization": "4bit", "gradient_checkpointing": True}), device)
        fixes.append(f"quantization=4bit with checkpointing (~{gib(q.total)})")
    if cfg.method != "lora":
        q = plan(shape, cfg.model_copy(update={"method": "lora", "gradient_checkpointing": True}), device)
        fixes.append(f"method=lora with checkpointing (~{gib(q.total)})")
    pairs = cfg.pairs_per_batch if cfg.objective != "sft" else 1
    while pairs > 1:  # dpo/orpo: fewer preference pairs per micro-batch
        pairs //= 2
        q = plan(shape, cfg.model_copy(update={"pairs_per_batch": pairs}), device)
        if q.total <= free:
            fixes.append(f"pairs_per_batch={pairs} (~{gib(q.total)}; raise grad_accum to keep the batch)")
            break
    tokens = cfg.batch_tokens if cfg.objective == "sft" else 0
    while tokens > cfg.max_length and tokens > 8:
        tokens = max(cfg.max_length, tokens // 2)
        q = plan(shape, cfg.model_copy(update={"batch_tokens": tokens}), device)
        if q.total <= free:
            fixes.append(f"batch_tokens={tokens} (~{gib(q.total)}; raise grad_accum to keep the batch)")
            break
    fitting = [f for f in fixes if _fits(f, free)]
    advice = "; ".join(fitting or fixes) or "a smaller model"
    raise DoesNotFit(f"this run needs {p.describe()}, but only {gib(free)} is free on {device}. "
                     f"Change: {advice}. (tuneloop's estimate, on the high side: see training/memory.py)")


def _fits(fix: str, free: int) -> bool:
    m = re.search(r"~([\d.]+) GiB", fix)
    return bool(m) and float(m.group(1)) * GiB <= free  # type: ignore[union-attr]
