"""Micro-batches without padding: packing plans (pure) and their tensors.

- ``plan_batches`` is a seeded shuffle of the examples, then a greedy fill of rows up to
  ``batch_tokens`` tokens. Same (lengths, seed, epoch) -> same plan, on every DDP rank.
- A packed micro-batch is ONE row holding several examples back to back, with
  ``position_ids`` restarting at 0 for each example and no attention mask. transformers then
  builds a block-diagonal causal mask from the position ids (``find_packed_sequence_indices``),
  so examples never attend to each other and no compute is spent on padding tokens.
- Targets are next-token ids within an example; a target is set only where the *next* token is
  a response token, so the last token of one example never predicts the first of the next.
- ``keep`` lists the positions that have a target: the LM head runs only there
  (``logits_to_keep``), which saves the [tokens x vocab] logits of every prompt token.
- ``example_of`` names, for every target slot, the example (index in the micro-batch) it
  belongs to (-1: no target), so ``example_losses`` reduces the per-token loss the step
  already computed to a loss and a confidence per example (training dynamics) for the price
  of one ``index_add`` over K numbers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from training.formatting import Tokenized

IGNORE = -100


def plan_batches(lengths: Sequence[int], *, batch_tokens: int, max_examples: int, seed: int, epoch: int = 0,
                 shuffle: bool = True, padded: bool = False) -> list[list[int]]:
    """Group example indices into micro-batches of at most ``batch_tokens`` tokens.

    Packed rows count real tokens; ``padded=True`` counts rows x longest (what padding costs).
    """
    order = list(range(len(lengths)))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    batches: list[list[int]] = []
    cur: list[int] = []
    used = longest = 0
    for i in order:
        n = lengths[i]
        if padded:
            cost = max(longest, n) * (len(cur) + 1)
        else:
            cost = used + n
        if cur and (cost > batch_tokens or len(cur) >= max_examples):
            batches.append(cur)
            cur, used, longest = [], 0, 0
        cur.append(i)
        used += n
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    return batches


@dataclass
class MicroBatch:
    input_ids: Any  # LongTensor [rows, T]
    position_ids: Any  # LongTensor [rows, T]
    attention_mask: Any | None  # None for packed rows; [rows, T] for padded rows
    targets: Any  # LongTensor [rows, K] (targets at the kept positions)
    weights: Any  # FloatTensor [rows, K]; 0 where there is no target
    keep: Any  # LongTensor [K] positions (sequence dim) the LM head runs on
    n_tokens: int  # real (non-padding) tokens of the examples (a shared prefix counts once per example)
    n_loss_tokens: int
    loss_weight: float  # sum of the weights of the targets
    seq_lens: list[int] | None = None  # packed: the length of each example in the row (after the prefix)
    prefix_len: int = 0  # packed with a shared prefix: tokens at the head of the row all examples share
    example_of: Any | None = None  # LongTensor [rows * K]: the example of each target slot, -1 where none


def _targets(ex: Tokenized) -> list[int]:
    ids, m = ex.input_ids, ex.loss_mask
    return [ids[t + 1] if m[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]


def _target_weights(ex: Tokenized, t: list[int]) -> list[float]:
    """The weight of each target of ``_targets(ex)``: the example's weight times the turn weight
    of the token it predicts (``Tokenized.token_weights``); 0 where there is no target."""
    tw = ex.token_weights
    return [ex.weight * (tw[i + 1] if tw else 1.0) if x != IGNORE else 0.0 for i, x in enumerate(t)]


MIN_SHARED_PREFIX = 4


def shared_prefix_len(examples: Sequence[Tokenized]) -> int:
    """Leading tokens every example has in common and that precede every target.

    Capped so each example keeps at least one token of its own, and so the prefix never holds
    a position that predicts a response token (its targets stay empty). 0 below
    ``MIN_SHARED_PREFIX`` tokens or with fewer than two examples.
    """
    if len(examples) < 2:
        return 0
    first = examples[0].input_ids
    p = min(len(e.input_ids) for e in examples) - 1
    for ex in examples:
        resp = next((i for i, m in enumerate(ex.loss_mask) if m), len(ex.input_ids))
        p = min(p, resp - 1)
        k = 0
        while k < p and ex.input_ids[k] == first[k]:
            k += 1
        p = k
    return p if p >= MIN_SHARED_PREFIX else 0


def collate(examples: Sequence[Tokenized], *, pad_id: int, packed: bool = True,
            share_prefix: bool = False) -> MicroBatch:
    """Tensors for one micro-batch.

    ``share_prefix`` (packed rows under ``training.attention.packed_attention`` only): the
    examples' common leading tokens are put once at the head of the row and every example
    continues from there (positions and attention as if alone), so they are computed once.
    """
    import torch

    if packed:
        p = shared_prefix_len(examples) if share_prefix else 0
        ids: list[int] = list(examples[0].input_ids[:p])
        pos: list[int] = list(range(p))
        tgt: list[int] = [IGNORE] * p
        wts: list[float] = [0.0] * p
        for ex in examples:
            ids += ex.input_ids[p:]
            pos += list(range(p, len(ex.input_ids)))
            full = _targets(ex)
            t = full[p:]
            tgt += t
            wts += _target_weights(ex, full)[p:]
        keep = [i for i, x in enumerate(tgt) if x != IGNORE]
        owner = [j for j, ex in enumerate(examples) for _ in range(len(ex.input_ids) - p)]
        return MicroBatch(
            input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]), attention_mask=None,
            targets=torch.tensor([[tgt[i] for i in keep]]), weights=torch.tensor([[wts[i] for i in keep]]),
            keep=torch.tensor(keep, dtype=torch.long), n_tokens=sum(len(e.input_ids) for e in examples),
            n_loss_tokens=len(keep), loss_weight=float(sum(wts)),
            seq_lens=[len(ex.input_ids) - p for ex in examples], prefix_len=p,
            example_of=torch.tensor([owner[i - p] for i in keep], dtype=torch.long),
        )
    width = max(len(ex.input_ids) for ex in examples)
    rows_ids, rows_pos, rows_mask, rows_t, rows_w = [], [], [], [], []
    for ex in examples:
        pad = width - len(ex.input_ids)
        t = _targets(ex)
        rows_ids.append(ex.input_ids + [pad_id] * pad)
        rows_pos.append(list(range(len(ex.input_ids))) + [0] * pad)
        rows_mask.append([1] * len(ex.input_ids) + [0] * pad)
        rows_t.append(t + [IGNORE] * pad)
        rows_w.append(_target_weights(ex, t) + [0.0] * pad)
    keep = sorted({i for row in rows_t for i, x in enumerate(row) if x != IGNORE})
    return MicroBatch(
        input_ids=torch.tensor(rows_ids), position_ids=torch.tensor(rows_pos),
        attention_mask=torch.tensor(rows_mask),
        targets=torch.tensor([[row[i] for i in keep] for row in rows_t]),
        weights=torch.tensor([[row[i] for i in keep] for row in rows_w]),
        keep=torch.tensor(keep, dtype=torch.long), n_tokens=sum(len(e.input_ids) for e in examples),
        n_loss_tokens=sum(1 for row in rows_t for x in row if x != IGNORE),
        loss_weight=float(sum(sum(r) for r in rows_w)),
        example_of=torch.tensor([r if row[i] != IGNORE else -1 for r, row in enumerate(rows_t) for i in keep],
                                dtype=torch.long),
    )


def loss_sum(model, mb: MicroBatch, device: str, segment_attention: bool = False):
    """Sum over targets of weight x cross-entropy, computed only at the kept positions."""
    return weighted_sum(token_losses(model, mb, device, segment_attention), mb)


def weighted_sum(ce, mb: MicroBatch):
    """``loss_sum`` from the per-slot cross-entropy of ``token_losses``."""
    import torch

    return (ce * mb.weights.to(ce.device).reshape(-1)).sum() if ce.numel() else torch.zeros((), device=ce.device)


def example_losses(ce, mb: MicroBatch, n_examples: int) -> tuple[list[float], list[float]]:
    """Per example of the micro-batch: the mean cross-entropy of its target tokens, and its
    confidence ``exp(-mean loss)`` (the geometric mean probability of its target tokens: unlike
    the arithmetic mean, one unlikely token, a wrong label's first token, is not drowned by the
    easy ones after it), from the per-slot ``ce`` of ``token_losses``.
    Unweighted: an example's ``weight`` scales its gradient, not how well the model knows it."""
    import torch

    ce = ce.detach().float()
    if mb.example_of is None:
        raise ValueError("this micro-batch does not say which example owns each target")
    own = mb.example_of.to(ce.device)
    if mb.attention_mask is not None:  # padded rows have slots without a target (-1)
        ok = own >= 0
        own, ce = own[ok], ce[ok]
    # one index_add of (loss, 1) per slot; one transfer to the host
    out = torch.zeros(2, n_examples, dtype=torch.float32, device=ce.device)
    out.index_add_(1, own, torch.stack([ce, torch.ones_like(ce)]))
    s, n = out.cpu().tolist()
    losses = [a / c if c else math.nan for a, c in zip(s, n, strict=True)]
    return losses, [math.exp(-x) for x in losses]


def token_losses(model, mb: MicroBatch, device: str, segment_attention: bool = False):
    """Cross-entropy of every target slot ([rows * K], 0 where there is no target), computed
    only at the kept positions.

    ``segment_attention``: the model runs under ``training.attention.packed_attention``, so a
    packed row passes its example bounds (``cu_seq_lens_q``) instead of relying on a mask.
    """
    import torch
    import torch.nn.functional as F

    kwargs = {"input_ids": mb.input_ids.to(device), "position_ids": mb.position_ids.to(device),
              "use_cache": False, "logits_to_keep": mb.keep.to(device)}
    if segment_attention and mb.seq_lens is not None:
        bounds = [mb.prefix_len]
        for n in mb.seq_lens:
            bounds.append(bounds[-1] + n)
        kwargs["cu_seq_lens_q"] = torch.tensor(bounds, dtype=torch.int32)
        if mb.prefix_len:
            kwargs["shared_prefix_len"] = mb.prefix_len
    elif mb.prefix_len:
        raise ValueError("a micro-batch with a shared prefix needs segment_attention")
    if mb.attention_mask is not None:
        kwargs["attention_mask"] = mb.attention_mask.to(device)
    logits = model(**kwargs).logits  # [rows, K, V]
    tgt = mb.targets.to(device)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE,
                           reduction="none")
