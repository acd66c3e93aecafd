"""Grounding: how much of a prediction the pair's source span supports.

The score is the share of the prediction's content words (not stop words; numbers always
count) that occur in the source text, after light stemming (plural/verb suffixes), so
"refunds" is supported by "refund". Numbers weigh double: a wrong figure is the most
common hallucination in document-grounded answers. It is a lexical proxy, cheap enough to
run on every prediction; the evidence lists the unsupported words so a reviewer can judge.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.errors.text import content_words


def _stem(w: str) -> str:
    for suf in ("ing", "edly", "ed", "es", "s", "ly"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


@dataclass(frozen=True)
class Grounding:
    score: float  # 1.0 = every content word is in the source
    n_words: int
    unsupported: list[str]


def score(prediction: str, source: str) -> Grounding:
    words = content_words(prediction)
    if not words:
        return Grounding(1.0, 0, [])
    src = {_stem(w) for w in content_words(source)} | set(content_words(source))
    total = supported = 0.0
    missing: list[str] = []
    for w in words:
        weight = 2.0 if w.isdigit() else 1.0
        total += weight
        if w in src or _stem(w) in src:
            supported += weight
        elif w not in missing:
            missing.append(w)
    return Grounding(round(supported / total, 4), len(words), missing)
