"""Grounding: how much of a prediction (or a model-written answer) its source text supports.

The score is the share of the prediction's content words (not stop words; numbers always
count) that occur in the source text, after light stemming (plural/verb suffixes), so
"refunds" is supported by "refund". Numbers weigh double: a wrong figure is the most
common hallucination in document-grounded answers. It is a lexical proxy, cheap enough to
run on every prediction; the evidence lists the unsupported words so a reviewer can judge.

Used by the error analysis (the hallucination detector) and by ingest (the ``model``
generator keeps a pair only above a threshold), so both say the same number. A content word
is a token of ``scoring.tokens`` that is not an English stop word and has more than two
characters (numbers always count).
"""

from __future__ import annotations

from dataclasses import dataclass

from scoring import tokens

_EN = (
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those i you he she we they me my your our their not no do does did have has had can could will would "
    "should may might what which who whom how when where why there here than then so such very"
)
STOPWORDS_EN = frozenset(_EN.split())


def content_words(s: str) -> list[str]:
    return [t for t in tokens(s) if t not in STOPWORDS_EN and (len(t) > 2 or t.isdigit())]


def stem(w: str) -> str:
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
    src = {stem(w) for w in content_words(source)} | set(content_words(source))
    total = supported = 0.0
    missing: list[str] = []
    for w in words:
        weight = 2.0 if w.isdigit() else 1.0
        total += weight
        if w in src or stem(w) in src:
            supported += weight
        elif w not in missing:
            missing.append(w)
    return Grounding(round(supported / total, 4), len(words), missing)
