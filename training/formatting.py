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
- Tool calling (issue 17): the pair's ``tools`` and the turns' ``tool_calls``/tool results are
  rendered by the chat template (``apply_chat_template(..., tools=...)``) when it handles them
  (its source mentions ``tool_calls``). A template without tool support (the bundled SmolLM2
  one) would silently drop them, so they are rendered in the Hermes/Qwen2.5 convention instead
  (``render_tools``): the tool list appended to the system turn inside ``<tools></tools>``, each
  call as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` after the assistant's
  text, and consecutive tool results as one user turn of ``<tool_response>...</tool_response>``.
  Every assistant turn is a target, tool-calling ones included; tool results are not.
- Per-turn weights: an assistant turn's ``weight`` (OpenAI's per-message weight; None = 1)
  scales its targets (``Tokenized.token_weights``, multiplied by the example's weight in
  ``training.data``); a weight-0 turn has no targets at all.
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
    # Per-token factor on ``weight`` (aligned with input_ids; the turn weight of a response
    # token). None when every turn has weight 1.
    token_weights: list[float] | None = None
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


TURN_KEYS = ("tool_calls", "tool_call_id", "name", "weight")


def _parse_messages(raw: Any) -> list[dict[str, Any]]:
    if raw is None or raw == "":
        return []
    msgs = json.loads(raw) if isinstance(raw, str) else raw
    return [{"role": str(m["role"]), "content": str(m.get("content") or ""),
             **{k: m[k] for k in TURN_KEYS if m.get(k) is not None}} for m in (msgs or [])]


def row_tools(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The function definitions a slice row offers (its ``tools`` column, JSON text)."""
    raw = row.get("tools")
    if not raw:
        return []
    return list(json.loads(raw) if isinstance(raw, str) else raw)


def conversation(row: dict[str, Any], system_prompt: str = "") -> list[dict[str, Any]]:
    """The full conversation of a slice row (system, user, assistant ...); tool-calling turns keep
    ``tool_calls``/``tool_call_id``/``name`` and turns their ``weight``."""
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


def supports_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders tool calls itself."""
    tpl = getattr(tokenizer, "chat_template", None)
    return isinstance(tpl, str) and "tool_calls" in tpl


def _arguments(raw: Any) -> Any:
    """A call's arguments as an object, as chat templates expect (stored as OpenAI's JSON text)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _call_json(call: dict[str, Any]) -> str:
    fn = call.get("function", call)
    return json.dumps({"name": fn.get("name", ""), "arguments": _arguments(fn.get("arguments", {}))},
                      ensure_ascii=False)


TOOLS_PREAMBLE = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                  "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n"
                  "</tools>\n\nFor each function call, return a json object with function name and arguments "
                  "within <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, "
                  "\"arguments\": <args-json-object>}}\n</tool_call>")


def render_tools(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
                 ) -> list[dict[str, str]]:
    """The conversation in plain {role, content} turns for a template without tool support (see
    the module docstring): tool list into the system turn, calls into the assistant text, tool
    results as user turns. Assistant turns stay one-to-one with the input's."""
    out: list[dict[str, str]] = []
    if tools:
        listing = TOOLS_PREAMBLE.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if messages and messages[0]["role"] == "system":
            out.append({"role": "system", "content": f"{messages[0]['content']}\n\n{listing}"})
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": listing})
    for m in messages:
        if m["role"] == "tool":
            block = f"<tool_response>\n{m['content']}\n</tool_response>"
            if out and out[-1].get("_tool"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool": "1"})
            continue
        content = m["content"]
        if m.get("tool_calls"):
            calls = "\n".join(f"<tool_call>\n{_call_json(c)}\n</tool_call>" for c in m["tool_calls"])
            content = f"{content}\n{calls}" if content else calls
        out.append({"role": m["role"], "content": content})
    return [{"role": m["role"], "content": m["content"]} for m in out]


def template_messages(tokenizer, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """What to hand ``apply_chat_template``: (messages, tools). Native when the template handles
    tool calls (arguments as objects, our ``weight`` left out), else ``render_tools``."""
    if not tools and not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return [{"role": m["role"], "content": m["content"]} for m in messages], None
    if not supports_tools(tokenizer):
        return render_tools(messages, tools), None
    out = []
    for m in messages:
        t: dict[str, Any] = {k: v for k, v in m.items() if k != "weight"}
        if m.get("tool_calls"):
            t["tool_calls"] = [{**c, "function": {**c.get("function", {}),
                                                  "arguments": _arguments(c.get("function", {}).get("arguments"))}}
                               for c in m["tool_calls"]]
        out.append(t)
    return out, (tools or None)


def _render(tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool,
            tools: list[dict[str, Any]] | None = None) -> str:
    if tools:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def response_spans(tokenizer, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
                   ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans the loss covers (assistant content + end token),
    one per assistant turn in order (tool-calling turns included)."""
    messages, tools = template_messages(tokenizer, messages, tools)
    text = _render(tokenizer, messages, False, tools)
    eos = tokenizer.eos_token or ""
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True, tools)
        upto = _render(tokenizer, messages[: i + 1], False, tools)
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


def tokenize_conversation(tokenizer, messages: list[dict[str, Any]], max_length: int, weight: float = 1.0,
                          tools: list[dict[str, Any]] | None = None) -> Tokenized:
    text, spans = response_spans(tokenizer, messages, tools)
    turn_w = [float(m["weight"]) if m.get("weight") is not None else 1.0
              for m in messages if m["role"] == "assistant"]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    mask: list[int] = []
    tw: list[float] = []
    for a, b in offsets:
        w = next((turn_w[j] for j, (s, e) in enumerate(spans) if b > a and s <= a and b <= e), 0.0)
        mask.append(1 if w > 0 else 0)
        tw.append(w)
    truncated = len(ids) > max_length
    if truncated:
        ids, mask, tw = ids[:max_length], mask[:max_length], tw[:max_length]
    plain = all(w == 1.0 for w in turn_w)
    return Tokenized(ids, mask, float(weight), truncated, token_weights=None if plain else tw)


def tokenize_rows(tokenizer, rows: list[dict[str, Any]], *, max_length: int, system_prompt: str = ""
                  ) -> tuple[list[Tokenized], FormatStats]:
    """Tokenise slice rows; returns the kept examples and counts of truncated/dropped ones."""
    out: list[Tokenized] = []
    st = FormatStats()
    for i, row in enumerate(rows):
        conv = conversation(row, system_prompt)
        w = row.get("weight")
        t = tokenize_conversation(tokenizer, conv, max_length, 1.0 if w is None else float(w), row_tools(row))
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
