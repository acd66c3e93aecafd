"""Text helpers of the error analysis: ``template_content`` is a prompt without its chat template
(system turn, role headers, special tokens). Content words (the unit the grounding and off-topic
checks compare) live in ``scoring.grounding`` beside the grounding score; they are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from scoring.grounding import STOPWORDS_EN, content_words

__all__ = ["STOPWORDS_EN", "content_words", "template_content"]

# ---------------------------------------------------------------- chat-template text
#
# A stored prediction's prompt is the chat template's rendering (training/predict.py decodes the
# prompt ids with their special tokens): role headers, a system prompt (the run's, or one the
# template adds by itself, e.g. SmolLM2's "You are a helpful AI assistant named SmolLM ...") and
# markers like <|im_end|>. Every failing prediction shares them, so a clustering of raw prompts
# groups by template and names clusters "im_start", "helpful assistant". ``template_content``
# keeps what the conversation says: the turns other than the system turn, without markers.

# The start of a turn and its role, in the templates of the common open models.
_TURN = re.compile(
    r"<\|im_start\|>[ \t]*(?P<chatml>\w+)[ \t]*\n?"                                  # ChatML (Qwen, SmolLM)
    r"|<\|start_header_id\|>[ \t]*(?P<llama3>\w+)[ \t]*<\|end_header_id\|>\s*"       # Llama 3
    r"|<start_of_turn>[ \t]*(?P<gemma>\w+)[ \t]*\n?"                                 # Gemma
    r"|<\|(?P<phi>system|user|assistant)\|>[ \t]*\n?",                               # Phi-3, Zephyr
    re.I)
_LLAMA2_SYSTEM = re.compile(r"<<SYS>>.*?<</SYS>>", re.S)  # Llama 2 / Mistral: [INST] <<SYS>> ... <</SYS>>
# Markers that are never content: <|anything|>, <s> </s>, [INST] [/INST], Gemma's turn and
# sequence tokens. Deliberately narrow (a bracketed word in a document stays).
_MARKER = re.compile(r"<\|[\w.:-]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>|<(?:bos|eos|pad|unk)>")


def template_content(text: str, special_tokens: Sequence[str] = ()) -> str:
    """``text`` without its chat template (pure): the system turn dropped, the other turns' content
    kept in order, and every special token removed: the tokenizer's ``special_tokens`` where the
    caller has them, and the common template markers (``_MARKER``) always. Plain text without a
    template comes back unchanged, apart from such markers."""
    text = _LLAMA2_SYSTEM.sub(" ", text or "")
    turns = list(_TURN.finditer(text))
    if turns:
        kept = [text[:turns[0].start()]]
        for i, m in enumerate(turns):
            role = next(r for r in m.groups() if r).lower()
            end = turns[i + 1].start() if i + 1 < len(turns) else len(text)
            if role != "system":
                kept.append(text[m.end():end])
        text = "\n".join(kept)
    for tok in sorted({t for t in special_tokens if t and t.strip()}, key=len, reverse=True):
        text = text.replace(tok, " ")
    text = _MARKER.sub(" ", text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
