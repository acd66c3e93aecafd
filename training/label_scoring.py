"""Label tasks answered within the label set: score every label, pick the likeliest (issue 18.4).

Free generation on a label task can answer with something that is not a label at all (on the
official Banking77 test split a LoRA run answered 2.2 % of prompts with invented labels such as
``lost_or_stolen_cash`` or with a label cut by the token limit). ``predict --decode labels``
instead scores each label of the slice as the model's whole reply: the sum of the log-probabilities
of the label's tokens *and* of the end-of-turn token after it, as the chat template renders an
assistant turn holding only the label. Counting the end of turn matters: without it a label that is
a prefix of another (``card_arrival`` / ``card_arrival_delay``) would always score at least as
high as the longer one. The answer is the label with the highest score (ties: the first in sorted
order), so every answer is a label; the score of each answer and the gap to the runner-up are kept
on the prediction row (``label_logprob``, ``label_margin``).

This is the log-likelihood ranking that lm-evaluation-harness uses for multiple-choice tasks
(``acc``, unnormalised); it costs one forward pass of the prompt plus one of every label's few
tokens on the prompt's cached keys and values (labels in chunks, so the vocabulary-sized
log-probabilities stay small), not a generation.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LABEL_CHUNK = 32  # labels scored per forward pass on one prompt's cache


@dataclass(frozen=True)
class LabelChoice:
    label: str
    logprob: float  # the chosen label's summed log-probability, end of turn included
    margin: float  # its lead over the runner-up (inf with one label)
    n_tokens: int  # the label's tokens, end of turn included
    latency_ms: float


def label_continuations(cm, labels: Sequence[str]) -> list[list[int]]:
    """Each label's token ids as the model's reply: what the chat template puts after the
    generation prompt for an assistant turn holding only the label, up to and including the first
    end-of-turn token. Falls back to the label's own tokens plus the end-of-sequence token when the
    template does not render the reply as a continuation of the generation prompt."""
    probe = [{"role": "user", "content": "?"}]
    prompt = cm.prompt_ids(probe)
    stops = cm.stop_ids()
    tok = cm.tokenizer
    out: list[list[int]] = []
    for lab in labels:
        full = tok.apply_chat_template(probe + [{"role": "assistant", "content": lab}], tokenize=True)
        if isinstance(full, dict) or hasattr(full, "keys"):
            full = full["input_ids"]
        full = list(full)
        cont = full[len(prompt):] if full[:len(prompt)] == prompt else []
        end = next((i for i, t in enumerate(cont) if t in stops), None)
        if not cont or end is None:
            eos = tok.eos_token_id
            cont = list(tok.encode(lab, add_special_tokens=False)) + ([int(eos)] if eos is not None else [])
        else:
            cont = cont[:end + 1]
        if not cont:
            raise ValueError(f"label {lab!r} has no tokens under this tokenizer")
        out.append(cont)
    return out


def choose_labels(cm, prompts: Sequence[Sequence[int]], labels: Sequence[str], *, precision: str | None = None,
                  progress: Callable[[int], None] | None = None, chunk: int = LABEL_CHUNK) -> list[LabelChoice]:
    """For each prompt (token ids ready for the reply), the label of ``labels`` the model finds
    likeliest as its whole reply (module docstring). ``progress(1)`` after each prompt; ``chunk``
    labels share one forward pass."""
    import torch

    from models.lm import precision_autocast

    if not labels:
        raise ValueError("no labels to choose from")
    order = sorted(range(len(labels)), key=lambda i: labels[i])  # ties go to the first in sorted order
    labels = [labels[i] for i in order]
    conts = label_continuations(cm, labels)
    width = max(len(c) for c in conts)
    pad = cm.tokenizer.pad_token_id if cm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(conts), width), pad, dtype=torch.long)
    valid = torch.zeros((len(conts), width), dtype=torch.bool)
    for i, c in enumerate(conts):
        ids[i, :len(c)] = torch.tensor(c)
        valid[i, :len(c)] = True
    ids, valid = ids.to(cm.device), valid.to(cm.device)
    out: list[LabelChoice] = []
    with cm.lock, torch.inference_mode(), precision_autocast(cm.device, precision):
        for p in prompts:
            t0 = time.perf_counter()
            first = cm.model(input_ids=torch.tensor([list(p)], device=cm.device), use_cache=True)
            head = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
            scores = head[ids[:, 0]].clone()  # (L,): the label's first token
            if width > 1:
                for a in range(0, len(conts), chunk):
                    b = min(a + chunk, len(conts))
                    cache = copy.deepcopy(first.past_key_values)
                    cache.batch_repeat_interleave(b - a)
                    step = cm.model(input_ids=ids[a:b, :-1], past_key_values=cache, use_cache=False)
                    lp = torch.log_softmax(step.logits.float(), dim=-1)
                    tok_lp = lp.gather(-1, ids[a:b, 1:, None]).squeeze(-1)  # (chunk, width-1)
                    scores[a:b] += (tok_lp * valid[a:b, 1:]).sum(dim=1)  # a pad after a label's end adds 0
            s = scores.double().cpu()
            best = int(torch.argmax(s))  # the first of equal maxima
            runner = float(torch.topk(s, 2).values[1]) if len(s) > 1 else float("-inf")
            out.append(LabelChoice(label=labels[best], logprob=float(s[best]), margin=float(s[best]) - runner,
                                   n_tokens=len(conts[best]), latency_ms=(time.perf_counter() - t0) * 1000))
            if progress:
                progress(1)
    return out


__all__ = ["LABEL_CHUNK", "LabelChoice", "choose_labels", "label_continuations"]
