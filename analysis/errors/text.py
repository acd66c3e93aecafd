"""Small text helpers the detectors share: tokens, label normalisation, EM/F1/ROUGE-L, language.

Tokens are lower-cased runs of letters/digits (Unicode-aware). Scores follow the SQuAD
conventions (normalised exact match, bag-of-tokens F1); ROUGE-L is the LCS F-measure over
the same tokens. The language guess is deliberately small and deterministic: the script
for non-Latin text, stop-word profiles for seven Latin-script languages, ``None`` when
unsure (short or mixed text), so the language detector stays quiet rather than guess.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from analysis.normalize import normalize_text

_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)


def tokens(s: str) -> list[str]:
    return _TOKEN_RE.findall(unicodedata.normalize("NFKC", s or "").lower())


def normalize_label(s: str) -> str:
    """A label's comparable form: the first line, normal-form text ("Card_Arrival." == "card arrival")."""
    first = (s or "").strip().splitlines()[0] if (s or "").strip() else ""
    return normalize_text(first.replace("_", " "))


_EN = (
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those i you he she we they me my your our their not no do does did have has had can could will would "
    "should may might what which who whom how when where why there here than then so such very"
)
STOPWORDS_EN = frozenset(_EN.split())


def content_words(s: str) -> list[str]:
    return [t for t in tokens(s) if t not in STOPWORDS_EN and (len(t) > 2 or t.isdigit())]


def token_f1(pred: str, ref: str) -> float:
    p, r = tokens(pred), tokens(ref)
    if not p and not r:
        return 1.0
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str, cap: int = 512) -> float:
    p, r = tokens(pred)[:cap], tokens(ref)[:cap]
    if not p and not r:
        return 1.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def scores(pred: str, ref: str) -> dict[str, float]:
    em = float(normalize_text(pred) == normalize_text(ref))
    return {"em": em, "f1": token_f1(pred, ref), "rouge_l": rouge_l(pred, ref)}


def strip_code_fence(s: str) -> str:
    m = re.match(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", s or "", re.DOTALL)
    return m.group(1) if m else (s or "").strip()


def looks_like_json(s: str) -> bool:
    t = strip_code_fence(s)
    return (t.startswith("{") and t.endswith("}")) or (t.startswith("[") and t.endswith("]"))


_STOP = {
    "english": "the and is are of to in that it you for with was this have not be on as what how can my do",
    "french": "le la les et est des une un que pour dans pas vous je il sur avec ce qui ne au du",
    "german": "der die das und ist nicht ich sie es ein eine zu mit den von auf für wie ist dem des",
    "spanish": "el la los las y es de que en un una por para con no se su al lo como más",
    "italian": "il la le di che e è un una per non con sono del della gli ho come nel",
    "portuguese": "o a os as e é de que um uma para com não se do da em no na mais",
    "dutch": "de het een en is van dat niet ik je op te met voor zijn er maar als",
}
_STOP_SETS = {k: frozenset(v.split()) for k, v in _STOP.items()}

_SCRIPTS = [
    ("cyrillic", "CYRILLIC"), ("greek", "GREEK"), ("arabic", "ARABIC"), ("hebrew", "HEBREW"),
    ("devanagari", "DEVANAGARI"), ("thai", "THAI"), ("korean", "HANGUL"), ("japanese", "HIRAGANA"),
    ("japanese", "KATAKANA"), ("chinese", "CJK"),
]


def _script(ch: str) -> str | None:
    name = unicodedata.name(ch, "")
    for lang, key in _SCRIPTS:
        if name.startswith(key) or (key == "CJK" and "CJK UNIFIED" in name):
            return lang
    return "latin" if "LATIN" in name else None


def guess_language(s: str) -> tuple[str | None, float]:
    """(language or script name, confidence); (None, 0) when the text does not say clearly."""
    letters = [c for c in s if c.isalpha()]
    if not letters:
        return None, 0.0
    scripts = Counter(_script(c) for c in letters)
    top, n = scripts.most_common(1)[0]
    share = n / len(letters)
    if top != "latin":
        if top is None or share < 0.6:
            return None, 0.0
        if top == "chinese" and (scripts.get("japanese", 0) / len(letters)) > 0.1:
            top = "japanese"
        return top, round(share, 3)
    toks = tokens(s)
    hits = {lang: sum(1 for t in toks if t in sw) for lang, sw in _STOP_SETS.items()}
    best = max(hits, key=lambda k: hits[k])
    total = sum(hits.values())
    ranked = sorted(hits.values(), reverse=True)
    if hits[best] < 2 or ranked[0] - ranked[1] < 2:
        return None, 0.0
    return best, round(hits[best] / max(total, 1), 3)
