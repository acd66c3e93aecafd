"""Attention for packed rows without a [T x T] mask, and frozen weights stored in bf16.

A packed micro-batch is one row holding several examples back to back. transformers' own
route for that is a block-diagonal mask built from ``position_ids``; on CPU the SDPA kernel
then does the whole [T x T] product with the mask applied (no block skipping), and its
backward dominated the step (measured: 33 ms per layer at T=700, 8x the matmuls around it).

``packed_attention(model)`` switches a model, for the forward passes inside the ``with``,
to an attention function registered with transformers' ``AttentionInterface`` that gathers
the row's examples (``cu_seq_lens_q`` marks the bounds) into [examples x longest] and attends
there, optionally behind a prefix all examples share (``shared_prefix_len``): the same result,
and compute proportional to n x longest^2 instead of T^2. It switches the model's attention
implementation while inside: hold the model's lock (``ChatModel.lock``) if others share it.
Models that do not dispatch through the interface keep the mask route
(``supports_packed_attention``).

``frozen_linears_in(model, dtype)``: under bf16 autocast every matmul casts its fp32 weight
to bf16 on each call, and autocast caches only weights that require grad, so the frozen base
of a LoRA model is re-cast forward and backward on every micro-batch. Storing the frozen
``nn.Linear`` weights in bf16 gives the same matmul inputs without the copies; embeddings,
norms and every trainable weight stay fp32 (a tied LM head gets its own bf16 copy).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

NAME = "tuneloop_packed"
_registered = False


_layout_cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _layout(bounds: tuple[int, ...], prefix: int, device: Any) -> tuple[Any, ...]:
    """Gather indices and mask for the segments of a packed row.

    The row is [shared prefix (``prefix`` tokens, may be 0)] + examples at ``bounds``. Each
    example's queries see the prefix and their own earlier tokens; the prefix's queries see
    the prefix. Returns (q_index [n, Lq], q_valid, k_index [n, Lk], additive mask [n, 1, Lq, Lk]).
    """
    import torch

    key = (bounds, prefix, str(device))
    hit = _layout_cache.get(key)
    if hit is not None:
        return hit
    segs = ([(0, prefix, 0)] if prefix else []) + [(a, b, prefix) for a, b in zip(bounds[:-1], bounds[1:])]
    lq = max(b - a for a, b, _ in segs)
    lk = max(b - a + o for a, b, o in segs)
    q_index = torch.zeros((len(segs), lq), dtype=torch.long)
    q_valid = torch.zeros((len(segs), lq), dtype=torch.bool)
    k_index = torch.zeros((len(segs), lk), dtype=torch.long)
    allowed = torch.zeros((len(segs), lq, lk), dtype=torch.bool)
    qpos, kpos = torch.arange(lq)[:, None], torch.arange(lk)[None, :]
    for n, (a, b, o) in enumerate(segs):
        q_index[n, :b - a] = torch.arange(a, b)
        q_valid[n, :b - a] = True
        k_index[n, :o] = torch.arange(o)
        k_index[n, o:o + b - a] = torch.arange(a, b)
        allowed[n] = (kpos <= qpos + o) & (kpos < o + b - a)
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, float("-inf"))[:, None]
    out = tuple(t.to(device) for t in (q_index, q_valid, k_index, mask))
    _layout_cache.clear()  # one micro-batch at a time; every layer reuses it
    _layout_cache[key] = out
    return out


def _packed_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                 scaling: float | None = None, cu_seq_lens_q: Any = None, shared_prefix_len: int = 0,
                 **kwargs: Any) -> tuple[Any, None]:
    """Causal attention within each example of a packed row, batched over the examples.

    The row's [heads, T, dim] tensors are gathered into [examples, heads, longest, dim] and
    attend with plain matmuls and a small mask; this beats both the block-diagonal [T x T]
    route and a loop of tiny SDPA calls (whose CPU backward has a fixed cost of ~1 ms each).
    With ``shared_prefix_len`` = P, the row starts with P tokens every example shares (say the
    system prompt and chat header), computed once; each example's keys are that prefix plus
    its own tokens, which is exactly what it would see on its own.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None:  # not a packed row: ordinary SDPA
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    bounds = tuple(int(x) for x in (cu_seq_lens_q.tolist() if hasattr(cu_seq_lens_q, "tolist") else cu_seq_lens_q))
    q_index, q_valid, k_index, mask = _layout(bounds, int(shared_prefix_len), query.device)
    groups = query.shape[1] // key.shape[1]
    q = query[0][:, q_index].transpose(0, 1)  # [n, heads, Lq, dim]
    k = key[0][:, k_index].transpose(0, 1)  # [n, kv_heads, Lk, dim]
    v = value[0][:, k_index].transpose(0, 1)
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale + mask
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    if dropout and module.training:
        probs = torch.nn.functional.dropout(probs, p=dropout)
    out = torch.matmul(probs, v)  # [n, heads, Lq, dim]
    return out.transpose(1, 2)[q_valid][None], None  # [1, T, heads, dim], in row order


def register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, _packed_sdpa)
        _registered = True


def _hf_model(model: Any) -> Any:
    inner = model.module if hasattr(model, "no_sync") and hasattr(model, "module") else model  # DDP
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft


def supports_packed_attention(model: Any, max_length: int) -> bool:
    """True when the model dispatches attention through transformers' interface, without a
    sliding window shorter than an example and without attention-score tricks."""
    hf = _hf_model(model)
    cfg = getattr(hf, "config", None)
    if cfg is None or not getattr(hf, "_supports_attention_backend", False):
        return False
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager", NAME):
        return False
    window = getattr(cfg, "sliding_window", None)
    if window and getattr(cfg, "use_sliding_window", True) and window < max_length:
        return False
    return getattr(cfg, "attn_logit_softcapping", None) is None


@contextlib.contextmanager
def packed_attention(model: Any) -> Iterator[None]:
    """Inside: forward passes use per-example causal SDPA (pass ``cu_seq_lens_q``)."""
    register()
    cfg = _hf_model(model).config
    before = cfg._attn_implementation
    cfg._attn_implementation = NAME
    try:
        yield
    finally:
        cfg._attn_implementation = before


@contextlib.contextmanager
def frozen_linears_in(model: Any, dtype: Any, keep: frozenset[int] = frozenset()) -> Iterator[int]:
    """Inside: every frozen ``nn.Linear`` weight is a ``dtype`` copy; the original parameters
    come back on exit. A weight tied to the input embedding (the LM head) gets its own copy, so
    the embedding itself stays fp32. ``keep``: ids of weights frozen only for now (gradual
    unfreezing), left as they are. Yields how many layers were switched."""
    import torch

    saved: list[tuple[Any, Any, Any]] = []
    for mod in model.modules():
        if (type(mod) is not torch.nn.Linear or mod.weight.requires_grad or mod.weight.dtype == dtype
                or id(mod.weight) in keep):
            continue
        saved.append((mod, mod.weight, mod.bias))
        mod.weight = torch.nn.Parameter(mod.weight.detach().to(dtype), requires_grad=False)
        if mod.bias is not None and not mod.bias.requires_grad:
            mod.bias = torch.nn.Parameter(mod.bias.detach().to(dtype), requires_grad=False)
    try:
        yield len(saved)
    finally:
        for mod, w, b in saved:
            mod.weight = w
            mod.bias = b


def flash_attn_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def choose(requested: str, device: str) -> str:
    """The attention a run uses (config ``attention``): ``auto`` is tuneloop's packed kernel on the
    CPU (measured faster there: ``tests/bench/bench_train.py``) and transformers' varlen path on
    CUDA, ``flash_attention_2`` when flash-attn is installed, else ``sdpa``; both read the example
    bounds from the per-example ``position_ids`` of a packed row, so no row is padded."""
    if requested == "flash_attention_2" and not flash_attn_available():
        raise ValueError("attention=flash_attention_2 needs the flash-attn package (pip install flash-attn, on a "
                         "CUDA machine); or set attention=sdpa / auto")
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "flash_attention_2" if flash_attn_available() else "sdpa"
    return "packed"


def use_attention(model: Any, attention: str) -> None:
    """Switch the model to transformers' ``attention`` implementation (for every mode but
    ``packed``, which switches per forward pass inside ``packed_attention``)."""
    if attention == "packed":
        return
    hf = _hf_model(model)
    if getattr(hf.config, "_attn_implementation", None) != attention:
        hf.set_attn_implementation(attention)
