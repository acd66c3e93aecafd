"""Slice rows -> chat conversations -> token ids with a loss mask. Pure: no files, no model.

Invariants (and why):

- A pair becomes one conversation: an optional system turn (the pair's own, else the run's
  ``system_prompt``), the user turn (instruction, plus a blank line and the input when there
  is one), the assistant turn (response). A multi-turn pair (``messages``) is the whole
  conversation.
- The text is rendered with the tokenizer's own chat template, so training sees exactly the
  format that prediction (``add_generation_prompt=True``) and any downstream server use.
- The loss mask covers exactly the assistant content and the end-of-turn token that closes it
  (the model must learn to stop), in every assistant turn, and nothing else: not the system
  prompt, not the user turn, not the role header ``<|im_start|>assistant\\n``, not the newline
  after the end-of-turn token. It is computed from character offsets of the rendered text, so
  it is correct whatever the tokenizer merges.
- Examples longer than ``max_length`` are cut at ``max_length`` and counted as truncated; an
  example whose cut leaves no response token is dropped and counted.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where the token is a response token the model is trained to predict
    weight: float = 1.0
    truncated: bool = False
    row: int = -1  # index of the row it came from in ``tokenize_rows``'s input (-1: not from rows)

    @property
    def n_loss_tokens(self) -> int:
        return sum(self.loss_mask)


@dataclass
class FormatStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    max_tokens: int = 0
    dropped_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "truncated": self.truncated, "dropped": self.dropped,
                "tokens": self.tokens, "loss_tokens": self.loss_tokens, "max_tokens": self.max_tokens}


def user_text(instruction: str, input: str = "") -> str:
    instruction = (instruction or "").strip()
    input = (input or "").strip()
    return f"{instruction}\n\n{input}" if input else instruction


def _parse_messages(raw: Any) -> list[dict[str, str]]:
    if raw is None or raw == "":
        return []
    msgs = json.loads(raw) if isinstance(raw, str) else raw
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in (msgs or [])]


def conversation(row: dict[str, Any], system_prompt: str = "") -> list[dict[str, str]]:
    """The full conversation of a slice row (system, user, assistant ...)."""
    system = (row.get("system") or "").strip() or (system_prompt or "").strip()
    msgs = _parse_messages(row.get("messages"))
    if msgs and msgs[0]["role"] == "system":
        system = system or msgs[0]["content"]
        msgs = msgs[1:]
    if not msgs:
        msgs = [{"role": "user", "content": user_text(row.get("instruction") or "", row.get("input") or "")},
                {"role": "assistant", "content": row.get("response") or ""}]
    return ([{"role": "system", "content": system}] if system else []) + msgs


def prompt_and_reference(row: dict[str, Any], system_prompt: str = "") -> tuple[list[dict[str, str]], str]:
    """The conversation up to the last assistant turn, and that turn's text (the reference)."""
    conv = conversation(row, system_prompt)
    last = max((i for i, m in enumerate(conv) if m["role"] == "assistant"), default=None)
    if last is None:
        return conv, ""
    return conv[:last], conv[last]["content"]


def _render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def response_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans the loss covers (assistant content + end token)."""
    text = _render(tokenizer, messages, False)
    eos = tokenizer.eos_token or ""
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True)
        upto = _render(tokenizer, messages[: i + 1], False)
        if not text.startswith(upto) or not upto.startswith(before):
            raise ValueError("the chat template does not render conversations prefix-consistently; "
                             "cannot place the loss mask")
        start, end = len(before), len(upto)
        seg = upto[start:end]
        # Keep the content and the end-of-turn token; drop whatever trails it (a newline).
        k = seg.rfind(eos) if eos else -1
        end = start + (k + len(eos) if k >= 0 else len(seg.rstrip()))
        spans.append((start, end))
    return text, spans


def tokenize_conversation(tokenizer, messages: list[dict[str, str]], max_length: int, weight: float = 1.0
                          ) -> Tokenized:
    text, spans = response_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    mask = []
    for a, b in offsets:
        inside = b > a and any(s <= a and b <= e for s, e in spans)
        mask.append(1 if inside else 0)
    truncated = len(ids) > max_length
    if truncated:
        ids, mask = ids[:max_length], mask[:max_length]
    return Tokenized(ids, mask, float(weight), truncated)


def tokenize_rows(tokenizer, rows: list[dict[str, Any]], *, max_length: int, system_prompt: str = ""
                  ) -> tuple[list[Tokenized], FormatStats]:
    """Tokenise slice rows; returns the kept examples and counts of truncated/dropped ones."""
    out: list[Tokenized] = []
    st = FormatStats()
    for i, row in enumerate(rows):
        conv = conversation(row, system_prompt)
        w = row.get("weight")
        t = tokenize_conversation(tokenizer, conv, max_length, 1.0 if w is None else float(w))
        st.truncated += int(t.truncated)
        if t.n_loss_tokens == 0:
            st.dropped += 1
            reason = "truncated away" if t.truncated else "empty response"
            st.dropped_reasons[reason] = st.dropped_reasons.get(reason, 0) + 1
            continue
        out.append(dataclasses.replace(t, row=i))
        st.examples += 1
        st.tokens += len(t.input_ids)
        st.loss_tokens += t.n_loss_tokens
        st.max_tokens = max(st.max_tokens, len(t.input_ids))
    return out, st
