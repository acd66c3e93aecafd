"""Which language a text is in: one small, deterministic guess for the quality signals and the
error detectors alike.

Keys: ISO 639-1 codes (``en``, ``fr``...) for the Latin-script languages told apart by stop
words, ISO 15924 script codes (``Cyrl``, ``Hani``, ``Jpan``...) for text mostly in another
script. The guess is ``None`` when the text does not say clearly: no letters, no script with
more than half of them, or Latin text whose best stop-word profile has fewer than
``MIN_HITS`` hits or leads the runner-up by fewer than ``MIN_LEAD``. Saying nothing is
better than a wrong flag: both users of the guess stay quiet on ``None``.

It is a Polars expression (a million rows in native code); ``guess_language`` is the same
expression on one string.
"""

from __future__ import annotations

import polars as pl

# stop words that are frequent in one language and rare in the others
STOPWORDS: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    "en": "the and is are was were of to in that it with for this you not have be on as at by from what how my "
          "can i your do does will would",
    "de": "der das und ist nicht ein eine mit für auf dem sich auch wie wir sie ich",
    "fr": "le la les et est des une un pas pour que qui dans sur avec ce vous nous je",
    "es": "el la los las es de que en un una por con para se su como pero",
    "it": "il lo la gli le di che un una per con non sono del della ma",
    "pt": "os de que em um uma para com não se da por mas você",
    "nl": "de het een en van dat niet op met voor zijn ik je ook maar wat",
}.items()}
# scripts other than Latin; Japanese is kana with or without Han, so it is tested first
SCRIPTS: dict[str, str] = {
    "Jpan": r"[\p{Hiragana}\p{Katakana}]", "Cyrl": r"\p{Cyrillic}", "Grek": r"\p{Greek}", "Arab": r"\p{Arabic}",
    "Hebr": r"\p{Hebrew}", "Hani": r"\p{Han}", "Hang": r"\p{Hangul}", "Deva": r"\p{Devanagari}", "Thai": r"\p{Thai}",
}
SCRIPT_NAMES = {"Jpan": "Japanese", "Cyrl": "Cyrillic", "Grek": "Greek", "Arab": "Arabic", "Hebr": "Hebrew",
                "Hani": "Chinese (Han)", "Hang": "Korean (Hangul)", "Deva": "Devanagari", "Thai": "Thai"}
# the script a target language is written in (a Russian project's Cyrillic text is not foreign)
SCRIPT_OF = {"ru": "Cyrl", "uk": "Cyrl", "bg": "Cyrl", "sr": "Cyrl", "el": "Grek", "ar": "Arab", "fa": "Arab",
             "he": "Hebr", "zh": "Hani", "ja": "Jpan", "ko": "Hang", "hi": "Deva", "mr": "Deva", "th": "Thai"}
MIN_HITS = 2
MIN_LEAD = 2
KANA_SHARE = 0.1  # Japanese: kana among the letters (the rest may be Han)


def _hits(lower: pl.Expr, words: frozenset[str]) -> pl.Expr:
    return lower.str.count_matches(r"\b(?:" + "|".join(sorted(words)) + r")\b")


def guess_expr(text: pl.Expr) -> pl.Expr:
    """The language key of each text (see the module docstring), null when unclear."""
    text = text.fill_null("")
    letters = text.str.count_matches(r"\p{L}")
    latin = text.str.count_matches(r"\p{Latin}")
    counts = {code: text.str.count_matches(rx) for code, rx in SCRIPTS.items()}
    script = pl.coalesce([
        pl.when(counts["Jpan"] > KANA_SHARE * letters).then(pl.lit("Jpan")),
        *[pl.when(c > 0.5 * letters).then(pl.lit(code)) for code, c in counts.items() if code != "Jpan"],
    ])
    lower = text.str.to_lowercase()
    hits = {lang: _hits(lower, sw) for lang, sw in STOPWORDS.items()}
    best_n = pl.max_horizontal(list(hits.values()))
    second_n = pl.concat_list(list(hits.values())).list.sort(descending=True).list.get(1)
    best = pl.coalesce([pl.when(h == best_n).then(pl.lit(lang)) for lang, h in hits.items()])
    clear = (best_n >= MIN_HITS) & (best_n - second_n >= MIN_LEAD)
    return (pl.when(letters == 0).then(None)
            .when(script.is_not_null()).then(script)
            .when((latin > 0.5 * letters) & clear).then(best)
            .otherwise(None))


def guess_language(text: str | None) -> str | None:
    """``guess_expr`` on one string."""
    return pl.select(guess_expr(pl.lit(text or "", dtype=pl.String))).item()


def is_target(lang: pl.Expr, target: str) -> pl.Expr:
    """True where a guessed key is the target language or the script it is written in."""
    return (lang == target) | (lang == SCRIPT_OF.get(target, target))


def describe(key: str | None) -> str:
    return SCRIPT_NAMES.get(key or "", key or "unknown")
