"""Content words, the unit the grounding and off-topic checks compare.

Scores (exact match, token F1, ROUGE-L, labels) live in ``scoring``; the language guess in
``analysis.language``. A content word is a token of ``scoring.tokens`` that is not an English
stop word and has more than two characters (numbers always count).
"""

from __future__ import annotations

from scoring import tokens

_EN = (
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those i you he she we they me my your our their not no do does did have has had can could will would "
    "should may might what which who whom how when where why there here than then so such very"
)
STOPWORDS_EN = frozenset(_EN.split())


def content_words(s: str) -> list[str]:
    return [t for t in tokens(s) if t not in STOPWORDS_EN and (len(t) > 2 or t.isdigit())]
