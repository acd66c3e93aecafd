"""Which language a text is in: one small, deterministic guess for the quality signals and the
error detectors alike.

Keys: ISO 639-1 codes (``en``, ``fr``...) for the Latin-script languages told apart by stop
words, ISO 15924 script codes (``Cyrl``, ``Hani``, ``Jpan``...) for text mostly in another
script. The guess is ``None`` when the text does not say clearly: no letters, no script with
more than half of them, or Latin text whose best stop-word profile has fewer than
``MIN_HITS`` hits or leads the runner-up by fewer than ``MIN_LEAD``. Saying nothing is
better than a wrong flag: both users of the guess stay quiet on ``None``.

It runs on a Polars column (a million rows in native code: ``guess``, or ``guess_expr`` in an
expression); ``guess_language`` is the same on one string.
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


def guess(text: pl.Series) -> pl.Series:
    """The language key of each text (see the module docstring), null when unclear.

    Each measure is a column computed once (as expressions in an eager frame, every use of one
    re-ran its regex: the quality signals' language detector took 33 s per 200K pairs, most of
    it recomputing), and the other scripts are counted only in texts with letters outside Latin.
    """
    f = pl.DataFrame({"t": text.cast(pl.String).fill_null("")}).with_row_index("_i").with_columns(
        letters=pl.col("t").str.count_matches(r"\p{L}"), latin=pl.col("t").str.count_matches(r"\p{Latin}"),
        lower=pl.col("t").str.to_lowercase())
    other = f.filter(pl.col("letters") > pl.col("latin")).select(
        "_i", "letters", **{code: pl.col("t").str.count_matches(rx) for code, rx in SCRIPTS.items()})
    script = other.select("_i", script=pl.coalesce([
        pl.when(pl.col("Jpan") > KANA_SHARE * pl.col("letters")).then(pl.lit("Jpan")),
        *[pl.when(pl.col(code) > 0.5 * pl.col("letters")).then(pl.lit(code)) for code in SCRIPTS if code != "Jpan"],
    ]))
    f = f.join(script, on="_i", how="left", maintain_order="left").with_columns(
        **{f"h_{lang}": _hits(pl.col("lower"), sw) for lang, sw in STOPWORDS.items()})
    hits = [pl.col(f"h_{lang}") for lang in STOPWORDS]
    f = f.with_columns(best_n=pl.max_horizontal(hits),
                       second_n=pl.concat_list(hits).list.sort(descending=True).list.get(1))
    best = pl.coalesce([pl.when(pl.col(f"h_{lang}") == pl.col("best_n")).then(pl.lit(lang)) for lang in STOPWORDS])
    clear = (pl.col("best_n") >= MIN_HITS) & (pl.col("best_n") - pl.col("second_n") >= MIN_LEAD)
    return f.select(pl.when(pl.col("letters") == 0).then(None)
                    .when(pl.col("script").is_not_null()).then(pl.col("script"))
                    .when((pl.col("latin") > 0.5 * pl.col("letters")) & clear).then(best)
                    .otherwise(None).cast(pl.String)).to_series().alias(text.name)


def guess_expr(text: pl.Expr) -> pl.Expr:
    """``guess`` as an expression."""
    return text.map_batches(guess, return_dtype=pl.String)


def guess_language(text: str | None) -> str | None:
    """``guess`` on one string."""
    return guess(pl.Series([text or ""], dtype=pl.String)).item()


def is_target(lang: pl.Expr, target: str) -> pl.Expr:
    """True where a guessed key is the target language or the script it is written in."""
    return (lang == target) | (lang == SCRIPT_OF.get(target, target))


def describe(key: str | None) -> str:
    return SCRIPT_NAMES.get(key or "", key or "unknown")
