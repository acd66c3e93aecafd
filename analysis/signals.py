"""Quality signals: named, versioned detectors over a frame of pairs (pure).

Each detector takes a frame with ``instruction``, ``input`` and ``response`` (plus
``messages`` for multi-turn pairs) and returns, row-aligned, ``score`` (float, 0 = clean),
``flagged`` (bool), ``reason`` (one line a reviewer can act on, empty when clean) and
``details`` (JSON text or null). ``run`` stacks them into the long form stored in
``quality_signals``: one row per (revision, detector) with a non-zero score.

Invariants and reasons:
- A detector's ``version`` changes whenever its rule changes, so stored rows say which rule
  produced them; the name alone is what slice filters use (``clean=pii``).
- Everything is a Polars expression over whole columns; only candidate PII numbers (a
  handful of rows) are validated (Luhn, IBAN mod-97) in Python.
- Reasons never repeat the PII they found: they say what kind and how many.
- ``length`` is relative to the frame it runs on (robust z-score of log length within each pair
  kind), so run it over the whole project, not a hand-picked subset.
- Signals know the data: ``run`` tags each pair with its kind (``analysis.pair_kinds``: chat, tool,
  code, math, label, extraction) and a detector scores only the kinds it declares (``Detector.kinds``),
  so a URL passed to ``request()`` is not a placeholder, a sum is not a phone number, a terse label
  or math answer is not a length outlier and English arithmetic is not Italian. The validators
  (``analysis.validators``: tool calls, code blocks, arithmetic, answer format) are detectors too.
- A project can switch detectors off (setting ``signals`` = ``{"disabled": [...]}``, see
  ``toggled``/``disabled``); ``analysis.curate.run_signals`` skips them and clears their rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import polars as pl

from analysis import language, pair_kinds, validators
from analysis.normalize import normalize_expr
from analysis.pair_kinds import ALL_KINDS

OUT_SCHEMA = {"score": pl.Float64, "flagged": pl.Boolean, "reason": pl.String, "details": pl.String}
RUN_SCHEMA = {"revision_id": pl.String, "pair_id": pl.String, "name": pl.String, "version": pl.String, **OUT_SCHEMA}


@dataclass(frozen=True)
class SignalConfig:
    target_language: str = "en"
    max_response_words: int = 4000
    z_threshold: float = 3.5
    min_rows_for_outliers: int = 20
    repetition_threshold: float = 0.5
    # What the detectors compare a pair with, measured over the whole project when they run on one
    # part of it (``whole_project``); None: over the frame they run on. The recurring normal forms
    # of responses (``pair_kinds.key_counts``: the label kind) and, per kind, the response lengths.
    key_counts: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    length_stats: pl.DataFrame | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Detector:
    name: str
    version: str
    description: str
    fn: Callable[[pl.DataFrame, SignalConfig], pl.DataFrame] = field(repr=False)
    kinds: frozenset[str] = ALL_KINDS  # the pair kinds (analysis.pair_kinds) it applies to; others score 0


def _kind() -> pl.Expr:
    """The pair kind column that ``run`` and ``detect`` add before any detector runs."""
    return pl.col("kind").fill_null("chat")


def with_turns(df: pl.DataFrame) -> pl.DataFrame:
    """Fill empty instruction/response of multi-turn pairs from their messages (first user
    turn, last assistant turn), so every detector sees one prompt and one response."""
    out = df
    for col in ("instruction", "input", "response"):
        if col not in out.columns:
            out = out.with_columns(pl.lit("").alias(col))
    out = out.with_columns(pl.col("instruction", "input", "response").fill_null(""))
    if "messages" not in out.columns or out["messages"].null_count() == out.height:
        return out
    msgs = pl.col("messages").str.json_decode(pl.List(pl.Struct({"role": pl.String, "content": pl.String})))
    out = out.with_columns(_m=msgs)
    user = pl.col("_m").list.eval(pl.element().filter(pl.element().struct.field("role") == "user")
                                  .struct.field("content")).list.first()
    asst = pl.col("_m").list.eval(pl.element().filter(pl.element().struct.field("role") == "assistant")
                                  .struct.field("content")).list.last()
    return out.with_columns(
        instruction=pl.when(pl.col("instruction") == "").then(user.fill_null("")).otherwise("instruction"),
        response=pl.when(pl.col("response") == "").then(asst.fill_null("")).otherwise("response"),
    ).drop("_m")


def _result(score: pl.Expr, flagged: pl.Expr, reason: pl.Expr, details: pl.Expr | None = None) -> list[pl.Expr]:
    return [
        score.fill_null(0.0).cast(pl.Float64).alias("score"),
        flagged.fill_null(False).alias("flagged"),
        pl.when(flagged.fill_null(False)).then(reason).otherwise(pl.lit("")).alias("reason"),
        (details if details is not None else pl.lit(None, dtype=pl.String)).alias("details"),
    ]


# ---------------------------------------------------------------------------- detectors

_PLACEHOLDER = (
    r"(?i)^(?:n/?a|n\.a\.?|none|null|nil|nan|tbd|todo|[-—–_.?]+|…|"
    r"[<\[(]?\s*no[\s_-]*(?:output|response|answer|input)\s*[>\])]?|<\s*noinput\s*>|empty)$"
)


def _empty_response(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    r = pl.col("response").str.strip_chars()
    empty = r == ""
    placeholder = r.str.contains(_PLACEHOLDER)
    return df.select(*_result(
        pl.when(empty).then(1.0).when(placeholder).then(0.9).otherwise(0.0),
        empty | placeholder,
        pl.when(empty).then(pl.lit("response is empty")).otherwise(
            pl.format("response is only the placeholder {}", r.str.slice(0, 40).map_elements(json.dumps, return_dtype=pl.String))
        ),
    ))


_URL_ONLY = r"(?i)^<?(?:https?://|www\.)\S+>?$"
_ATTACH_ONLY = (
    r"(?i)^[\[<({]?\s*(?:image|img|photo|picture|pic|attachment|attached|file|audio|video|pdf|document|"
    r"screenshot|link|url|figure|chart|table)s?(?:\s*\d+)?\s*[\]>)}]?\.?$"
)
_FILENAME_ONLY = r"(?i)^\S+\.(?:png|jpe?g|gif|bmp|webp|svg|pdf|docx?|xlsx?|pptx?|csv|mp3|mp4|wav|mov|zip)$"
_SEE_ATTACHED = r"(?i)^\(?\s*(?:see|refer to|check)\s+(?:the\s+)?(?:attached|attachment|image|link|file|picture)\b.{0,40}$"
_MEDIA_REF = (
    r"(?i)\b(?:this|these|attached|following|given|provided|above|below|uploaded)\s+(?:image|picture|photo|"
    r"photograph|screenshot|video|audio|recording|attachment|chart|graph|diagram|link|url|file)s?\b"
    r"|\bthe\s+(?:image|picture|photo|screenshot|attachment|attached file)s?\b"
)


def _placeholder_input(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    inp = pl.col("input").str.strip_chars()
    instr = pl.col("instruction").str.strip_chars()
    target = pl.when(inp != "").then(inp).otherwise(instr)
    # a URL the response uses (passes to a tool, quotes, fetches) is an argument, not a placeholder
    url = target.str.contains(_URL_ONLY) & ~pl.col("response").str.contains(target.str.strip_chars("<>"), literal=True)
    attach = target.str.contains(_ATTACH_ONLY) | target.str.contains(_FILENAME_ONLY) | target.str.contains(_SEE_ATTACHED)
    # "Describe this image." with no input at all: the model can only invent the image.
    missing_media = (
        (inp == "") & instr.str.contains(_MEDIA_REF) & ~instr.str.contains(r"https?://|www\.")
        & (pl.col("instruction").str.count_matches(r"\S+") < 30)
    )
    where = pl.when(inp != "").then(pl.lit("input")).otherwise(pl.lit("instruction"))
    return df.select(*_result(
        pl.when(url | attach).then(1.0).when(missing_media).then(0.8).otherwise(0.0),
        url | attach | missing_media,
        pl.when(url).then(pl.format("{} is only a URL: the model cannot open it and would hallucinate", where))
        .when(attach).then(pl.format("{} is only an attachment placeholder: the attachment is not in the data", where))
        .otherwise(pl.lit("instruction refers to an image/link/attachment that is not in the pair")),
    ))


_MERGED = (
    r"(?im)(?:^|\n)\s*(?:#{1,4}\s*)?(?:\d+\s*[.)]\s*)?(?:instruction|new instruction|next instruction)\s*\d*\s*:"
    r"|(?:^|\n)\s*#{2,4}\s*(?:input|response|instruction)\b"
)


def _merged_instructions(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    n = pl.col("response").str.count_matches(_MERGED)
    return df.select(*_result(
        n.cast(pl.Float64), n > 0,
        pl.format("response contains {} embedded 'Instruction:' block(s): several examples were merged into one", n),
        pl.format('{{"count": {}}}', n),
    ))


def _echoes_instruction(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    ni = normalize_expr(pl.concat_str([pl.col("instruction"), pl.col("input")], separator=" "))
    nr = normalize_expr(pl.col("response"))
    tmp = df.select(ni=ni, nr=nr)
    li, lr = pl.col("ni").str.len_chars(), pl.col("nr").str.len_chars()
    # at least four words: a short intent ("Activate my card") may legitimately equal its label
    long_enough = pl.col("ni").str.count_matches(" ") >= 3
    contained = (lr > 0) & long_enough & pl.col("nr").str.contains(pl.col("ni"), literal=True)
    share = pl.when(contained).then(li / lr).otherwise(0.0)
    same = (pl.col("ni") == pl.col("nr")) & long_enough
    flagged = same | (share >= 0.6)
    return tmp.select(*_result(
        pl.when(same).then(1.0).otherwise(share), flagged,
        pl.when(same).then(pl.lit("response repeats the instruction verbatim"))
        .otherwise(pl.format("response is mostly the instruction repeated ({}% of it)", (share * 100).round(0).cast(pl.Int64))),
    ))


SHORT_OUTLIER_KINDS = ["chat", "code", "extraction"]
SHORT_MAX_WORDS = 3  # a complete prose answer of 7 words is terse, not broken; "Yes." to "Explain..." is
MIN_LOG_SCALE = 0.4  # z 3.5 then means at least exp(1.4) = 4x off the kind's median length


def _words() -> pl.Expr:
    return pl.col("response").str.count_matches(r"\S+")


def kind_and_words(base: pl.DataFrame) -> pl.DataFrame:
    """Each pair's kind and response length in words (``base``: ``prepare``'d): what
    ``length_stats`` summarises."""
    return base.select(kind=_kind(), w=_words())


def length_stats(kw: pl.DataFrame) -> pl.DataFrame:
    """Per pair kind, over the responses with words (``kw``: ``kind_and_words``): the median log
    length, its median and mean absolute deviations, and how many there are."""
    logw = kw.filter(pl.col("w") > 0).select("kind", logw=(pl.col("w") + 1).log())
    med = logw.group_by("kind").agg(med=pl.col("logw").median())
    return logw.join(med, on="kind").group_by("kind").agg(
        pl.col("med").first(), mad=(pl.col("logw") - pl.col("med")).abs().median(),
        mean_ad=(pl.col("logw") - pl.col("med")).abs().mean(), n=pl.len())


def _length(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    tmp = pl.concat([kind_and_words(df), df.select(
        pw=pl.concat_str([pl.col("instruction"), pl.col("input")], separator=" ").str.strip_chars().str.len_chars())],
        how="horizontal")
    # outliers are relative to pairs of the same kind: a tool call is not a short essay
    stats = cfg.length_stats if cfg.length_stats is not None else length_stats(tmp)
    tmp = tmp.join(stats, on="kind", how="left", maintain_order="left")
    logw = pl.when(pl.col("w") > 0).then((pl.col("w") + 1).log())
    med, mad, mean_ad = pl.col("med"), pl.col("mad"), pl.col("mean_ad")
    # MAD is 0 when most lengths are equal; fall back to the mean absolute deviation
    # and never below MIN_LOG_SCALE: in a kind whose lengths are all alike, 7 words against a median
    # of 9 is not unusual; an outlier must also be several times shorter or longer than the median
    scale = pl.max_horizontal(pl.when(mad > 0).then(1.4826 * mad).otherwise(1.2533 * mean_ad), pl.lit(MIN_LOG_SCALE))
    enough = pl.col("n").fill_null(0) >= cfg.min_rows_for_outliers
    z = pl.when((pl.col("w") > 0) & enough & (scale > 0)).then((logw - med) / scale).otherwise(0.0)
    tmp = tmp.with_columns(z=z.fill_null(0.0), med_words=(med.exp() - 1).round(0).cast(pl.Int64))
    too_long = pl.col("w") > cfg.max_response_words
    short_prompt = pl.col("pw") < 3
    # a terse answer is complete for math, labels and tool calls; only prose of a few words can be too short
    outlier = (pl.col("z") > cfg.z_threshold) | ((pl.col("z") < -cfg.z_threshold) & pl.col("kind").is_in(SHORT_OUTLIER_KINDS)
                                                 & (pl.col("w") <= SHORT_MAX_WORDS))
    flagged = too_long | short_prompt | outlier
    reason = (
        pl.when(too_long).then(pl.format("very long response: {} words (limit {})", pl.col("w"), pl.lit(cfg.max_response_words)))
        .when(short_prompt).then(pl.format("very short prompt: {} characters", pl.col("pw")))
        .when(pl.col("z") > 0).then(pl.format("unusually long response: {} words (median {}, robust z {})",
                                              pl.col("w"), pl.col("med_words"), pl.col("z").round(1)))
        .otherwise(pl.format("unusually short response: {} words (median {}, robust z {})",
                             pl.col("w"), pl.col("med_words"), pl.col("z").round(1)))
    )
    score = pl.max_horizontal(pl.col("z").abs() / cfg.z_threshold, too_long.cast(pl.Float64) * 2, short_prompt.cast(pl.Float64))
    return tmp.select(*_result(
        score, flagged, reason,
        pl.format('{{"words": {}, "median_words": {}, "z": {}}}', pl.col("w"), pl.col("med_words").fill_null(0), pl.col("z").round(2)),
    ))


def _repetition(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    w = pl.col("response").str.to_lowercase().str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    tri = w.list.eval(pl.concat_str([pl.element(), pl.element().shift(-1), pl.element().shift(-2)], separator=" ")).list.drop_nulls()
    # "aaaaaaaa…" or "hahahaha…": a 30+ character token made of at most three distinct characters
    runs = pl.col("response").str.extract_all(r"\S{30,}").list.eval(
        (pl.element().str.split("").list.n_unique() <= 3).cast(pl.Int64)
    ).list.sum()
    tmp = df.select(
        tri=tri,
        lines=pl.col("response").str.split("\n").list.eval(pl.element().str.strip_chars().filter(pl.element() != "")),
        runs=runs.fill_null(0),
    ).select(
        "runs",
        n=pl.col("tri").list.len(),
        u=pl.col("tri").list.n_unique(),
        nl=pl.col("lines").list.len(),
        ul=pl.col("lines").list.n_unique(),
    )
    ratio = pl.when(pl.col("n") >= 12).then(pl.col("u") / pl.col("n")).otherwise(1.0)
    line_ratio = pl.when(pl.col("nl") >= 4).then(pl.col("ul") / pl.col("nl")).otherwise(1.0)
    tmp = tmp.with_columns(worst=pl.min_horizontal(ratio, line_ratio, pl.when(pl.col("runs") > 0).then(0.0).otherwise(1.0)),
                           ratio=ratio, line_ratio=line_ratio)
    flagged = pl.col("worst") < cfg.repetition_threshold
    return tmp.select(*_result(
        (1.0 - pl.col("worst")), flagged,
        pl.when(pl.col("runs") > 0).then(pl.lit("heavy repetition: a long run of one repeated character group"))
        .when(pl.col("line_ratio") < pl.col("ratio"))
        .then(pl.format("heavy repetition: only {} of {} lines are distinct", pl.col("ul"), pl.col("nl")))
        .otherwise(pl.format("heavy repetition: only {}% of word trigrams are distinct", (pl.col("ratio") * 100).round(0).cast(pl.Int64))),
    ))


_CONNECTOR_END = r"(?i)(?:[,;:(\[{–—-]|\b(?:and|or|but|the|a|an|to|of|with|for|in|on|that|which|because|is|are|was|were|as|by|from))$"


_OPTION_END = r"(?i)\b(?:option|answer|choice|letter|is)\s*:?\s*\(?[a-e]$"


def _truncated(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    r = pl.col("response").str.strip_chars()
    words = r.str.count_matches(r"\S+")
    fences = r.str.count_matches("```")
    open_fence = (fences % 2) == 1
    last_line = r.str.split("\n").list.last().str.strip_chars()
    # code and tool calls end in brackets, commas and keywords; a math answer ends in its number
    prose = _kind().is_in(["chat", "extraction"]) | (_kind().is_in(["math"]) & ~last_line.str.contains(r"\d\W{0,3}$"))
    dangling = (words >= 8) & r.str.contains(_CONNECTOR_END) & ~r.str.contains(_OPTION_END) & prose
    is_item = last_line.str.contains(r"^(?:[-*•#|]|\d+[.)])")
    no_stop = (words >= 40) & ~r.str.contains(r"[.!?\"'’”)\]}*`>:;\d]$") & ~is_item & prose
    score = pl.when(open_fence).then(1.0).when(dangling).then(0.9).when(no_stop).then(0.4).otherwise(0.0)
    flagged = open_fence | dangling
    return df.select(*_result(
        score, flagged,
        pl.when(open_fence).then(pl.lit("response ends inside an unclosed ``` code block"))
        .otherwise(pl.format("response ends mid-sentence: …{}", r.str.slice(-30).map_elements(json.dumps, return_dtype=pl.String))),
    ))


LANGUAGE_MIN_WORDS = 8  # a Latin-script prompt or response shorter than this is never flagged


def _prose(text: pl.Expr) -> pl.Expr:
    """``text`` without fenced/inline code, URLs, calculator marks, numbers, operators and one-letter
    variables: what is left is the prose a language guess should read."""
    return (text.fill_null("").str.replace_all(r"```[\s\S]*?(?:```|$)|`[^`\n]*`|<<[^<>\n]*>>|https?://\S+|www\.\S+", " ")
            .str.replace_all(r"[\d$€£%=+*/×÷^<>#()\[\]{}.,:-]+", " "))


def _language(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    target = cfg.target_language
    prompt = pl.concat_str([pl.col("instruction"), pl.col("input")], separator=" ")
    translating = prompt.str.contains(r"(?i)translat|übersetz|tradu")
    # code, calls and worked arithmetic are not prose: a tool or code response is not judged at all
    response = pl.when(_kind().is_in(["code", "tool"])).then(pl.lit("")).otherwise(pl.col("response"))

    def no_unit_per(text: pl.Expr) -> pl.Expr:  # "per day" in a worked sum is English, not the Italian stop word
        return pl.when(_kind() == "math").then(text.str.replace_all(r"\bper\b", " ")).otherwise(text)

    # the cleaned texts and their guesses are columns first: in an eager frame each use of an
    # expression computes it again (the guess was computed six times per text)
    prose = df.select(p=no_unit_per(_prose(prompt)), r=no_unit_per(_prose(response)), tr=translating)
    prose = prose.with_columns(p_guess=language.guess(prose["p"]), r_guess=language.guess(prose["r"]))
    out = []
    for prefix in ("p", "r"):
        col = pl.col(prefix)
        guess = pl.col(f"{prefix}_guess")
        words = col.fill_null("").str.count_matches(r"\p{L}+")
        foreign = (guess.is_not_null() & ~language.is_target(guess, target)
                   & (guess.is_in(list(language.SCRIPTS)) | (words >= LANGUAGE_MIN_WORDS)))
        shown = pl.when(guess.is_in(list(language.SCRIPTS))).then(pl.format("{} script", guess.replace_strict(
            language.SCRIPT_NAMES, default=guess))).otherwise(guess)
        out.append(pl.when(foreign).then(shown).alias(f"{prefix}_lang"))
    tmp = prose.select(*out, "tr").with_columns(r_lang=pl.when(~pl.col("tr")).then(pl.col("r_lang")))
    flagged = pl.col("p_lang").is_not_null() | pl.col("r_lang").is_not_null()
    reason = pl.concat_str([
        pl.when(pl.col("p_lang").is_not_null()).then(pl.format("prompt looks like {}", pl.col("p_lang"))),
        pl.when(pl.col("r_lang").is_not_null()).then(pl.format("response looks like {}", pl.col("r_lang"))),
    ], separator="; ", ignore_nulls=True)
    return tmp.select(*_result(
        flagged.cast(pl.Float64), flagged,
        pl.format("{} (target language {})", reason, pl.lit(target)),
        pl.when(flagged).then(pl.format('{{"prompt": "{}", "response": "{}"}}', pl.col("p_lang").fill_null(""), pl.col("r_lang").fill_null(""))),
    ))


_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
# Addresses at the domains reserved for examples (RFC 2606/6761) belong to nobody: tool-use and
# tutorial data is full of them (john.doe@example.com). Counted apart and not flagged.
_EXAMPLE_EMAIL = (r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)*(?:example\.(?:com|org|net)|[A-Za-z0-9-]+\.(?:example|test|"
                  r"invalid|localhost))\b")
_PHONE = (
    r"(?:\+\d{1,3}[\s.-]?(?:\(?\d{1,4}\)?[\s.-]?){2,4}\d{2,4})"
    r"|(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b"
    r"|\b0\d{2,4}[\s-]\d{3,4}[\s-]\d{3,4}\b"
)
# grouped as cards are printed (4-4-4-4, 4-6-5 or one run), so "14000-3920-1000" in a sum is not one
_CARD = r"\b(?:(?:\d{4}[ -]?){3}\d{1,7}|\d{4}[ -]?\d{6}[ -]?\d{5})\b"
_IBAN = r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,4})?\b"
_SSN = r"\b(?:00[1-9]|0[1-9]\d|[1-578]\d{2}|6[0-57-9]\d|66[0-57-9])-(?:0[1-9]|[1-9]\d)-(?:000[1-9]|00[1-9]\d|0[1-9]\d{2}|[1-9]\d{3})\b"


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


def _valid_count(df: pl.DataFrame, text: pl.Expr, rx: str, check: Callable[[str], bool]) -> pl.Series:
    cands = df.select(_i=pl.int_range(0, df.height, dtype=pl.Int64), c=text.str.extract_all(rx)).explode("c").drop_nulls("c")
    if cands.height == 0:
        return pl.Series("n", [0] * df.height, dtype=pl.Int64)
    ok = cands.with_columns(ok=pl.col("c").map_elements(check, return_dtype=pl.Boolean)).filter("ok")
    counts = ok.group_by("_i").agg(n=pl.len())
    return pl.DataFrame({"_i": pl.int_range(0, df.height, dtype=pl.Int64, eager=True)}).join(
        counts, on="_i", how="left", maintain_order="left"
    )["n"].fill_null(0).cast(pl.Int64)


# a phone candidate with the characters around it: arithmetic or a calculator mark nearby means it is not one
_PHONE_IN_CONTEXT = r"[^\n]{0,40}(?:" + _PHONE + r")[^\n]{0,2}"
_PHONE_WORD = r"(?i)\b(?:call|phone|tel|telephone|mobile|cell|fax|contact|reach|text|whatsapp|dial|number)\b"
# national formats: "0..." (trunk prefix) is read in these regions; 3-3-4 without it is North American
_PHONE_REGIONS = ("GB", "DE", "FR", "IN", "AU", "ES", "IT", "NL")


def phone_ok(candidate: str, before: str, after: str, kind: str = "chat", *, validate: bool = True) -> bool:
    """A regex phone candidate is a phone number when it is not part of arithmetic (``=``, ``*``,
    ``<<``...), a maintained parser (``phonenumbers``) finds it valid (international as written,
    ``0...`` in a region with a trunk 0, ``415 555 0132`` as North American), and, inside math and tool pairs, a phone word comes just before it."""
    import phonenumbers

    if re.search(r"[=*/×÷<>^]|\d\s*[+x-]\s*$", before[-3:]) or re.search(r"^\s*[=*/×÷<>^%]", after):
        return False
    if kind in ("math", "tool") and not re.search(_PHONE_WORD, before):
        return False
    if not validate:  # the context rules alone (the benchmark measures what the library adds)
        return True
    c = candidate.strip()
    regions = (None,) if c.startswith("+") else _PHONE_REGIONS if c.startswith("0") else ("US",)
    for region in regions:
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(candidate, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def _phone_count(df: pl.DataFrame, text: pl.Expr) -> pl.Series:
    kind = _kind() if "kind" in df.columns else pl.lit("chat")
    cands = df.select(_i=pl.int_range(0, df.height, dtype=pl.Int64), kind=kind,
                      c=text.str.extract_all(_PHONE_IN_CONTEXT)).explode("c").drop_nulls("c")
    if cands.height == 0:
        return pl.Series("n", [0] * df.height, dtype=pl.Int64)
    rx = re.compile(r"([^\n]*?)(" + _PHONE + r")([^\n]{0,2})$")

    def ok(row: dict) -> bool:
        m = rx.search(row["c"])
        return m is not None and phone_ok(m.group(2), m.group(1), m.group(3), row["kind"])

    good = cands.with_columns(ok=pl.struct("c", "kind").map_elements(ok, return_dtype=pl.Boolean)).filter("ok")
    counts = good.group_by("_i").agg(n=pl.len())
    return pl.DataFrame({"_i": pl.int_range(0, df.height, dtype=pl.Int64, eager=True)}).join(
        counts, on="_i", how="left", maintain_order="left"
    )["n"].fill_null(0).cast(pl.Int64)


def _pii(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    text = pl.concat_str([pl.col("instruction"), pl.col("input"), pl.col("response")], separator="\n")
    tmp = df.select(
        email=text.str.count_matches(_EMAIL) - text.str.count_matches(_EXAMPLE_EMAIL),
        ssn=text.str.count_matches(_SSN),
    ).with_columns(
        # phone numbers: drop the card-like digit runs first so a card is not also a phone
        phone=_phone_count(df, text.str.replace_all(_CARD, " ").str.replace_all(_SSN, " ")),
        card=_valid_count(df, text, _CARD, luhn_ok),
        iban=_valid_count(df, text, _IBAN, iban_ok),
    )
    names = {"email": "e-mail address", "phone": "phone number", "card": "payment card number",
             "iban": "IBAN", "ssn": "US social security number"}
    total = pl.sum_horizontal(list(names))
    parts = [pl.when(pl.col(k) > 0).then(pl.format("{} x{}", pl.lit(v), pl.col(k))) for k, v in names.items()]
    return tmp.select(*_result(
        total.cast(pl.Float64), total > 0,
        pl.format("contains personal data: {}", pl.concat_str(parts, separator=", ", ignore_nulls=True)),
        pl.when(total > 0).then(pl.struct(list(names)).struct.json_encode()),
    ))


_MOJIBAKE = (
    "Ã[\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e"
    "\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]|Â[\u00a0-\u00bf]|â€|\ufffd|ï»¿|Ã¢â"
)


def _mojibake(df: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    text = pl.concat_str([pl.col("instruction"), pl.col("input"), pl.col("response")], separator="\n")
    n = text.str.count_matches(_MOJIBAKE)
    return df.select(*_result(
        n.cast(pl.Float64), n > 0,
        pl.format("{} mojibake sequence(s) such as 'Ã©' or 'â€™': text was decoded with the wrong encoding", n),
    ))


_NOT_TOOL = ALL_KINDS - {"tool"}
DETECTORS: dict[str, Detector] = {d.name: d for d in [
    Detector("empty_response", "1", "empty or placeholder response (N/A, <No Output>, <nooutput>)", _empty_response),
    Detector("placeholder_input", "2", "input that is only a URL the response does not use, or an attachment placeholder",
             _placeholder_input, _NOT_TOOL),
    Detector("merged_instructions", "1", "a second 'Instruction:' block inside the response", _merged_instructions),
    Detector("echoes_instruction", "1", "response that repeats the instruction", _echoes_instruction),
    Detector("length", "2", "very long responses; log-length outliers within a pair kind (short ones for prose only)",
             _length, frozenset({"chat", "code", "extraction", "math"})),
    Detector("repetition", "1", "heavily repeated trigrams or lines", _repetition),
    Detector("truncated", "2", "unclosed code block, or prose that stops mid-sentence", _truncated, ALL_KINDS - {"label"}),
    Detector("language", "2", "prompt or response prose (code, calls and arithmetic left out) not in the target language",
             _language),
    Detector("pii", "3", "e-mail (not at example domains), phone (not arithmetic; valid per phonenumbers), payment card (Luhn), IBAN (mod 97), US SSN",
             _pii),
    Detector("mojibake", "1", "text decoded with the wrong encoding", _mojibake),
    Detector("tool_call", "1", "tool call that does not parse, names an undeclared tool or argument, has stray "
             "characters after it, or is missing where the declared tools call for one", validators.tool_call,
             frozenset({"tool"})),
    Detector("code_syntax", "1", "fenced Python, JSON or SQL block that does not parse", validators.code_syntax),
    Detector("arithmetic", "1", "worked step 'a op b = c' whose c is wrong", validators.arithmetic, frozenset({"math"})),
    Detector("answer_format", "1", "worked answer without the final-answer line most of its kind end with",
             validators.answer_format, frozenset({"math", "chat", "extraction"})),
]}


def disabled(setting: object) -> list[str]:
    """The detectors the project setting ``signals`` switches off (``{"disabled": [...]}``);
    names that no longer exist and malformed values are ignored."""
    names = setting.get("disabled") if isinstance(setting, dict) else None
    return [n for n in names if n in DETECTORS] if isinstance(names, list) else []


def toggled(setting: object, *, disable: Sequence[str] = (), enable: Sequence[str] = ()) -> dict[str, list[str]]:
    """The ``signals`` setting with ``disable`` switched off and ``enable`` switched back on."""
    for n in [*disable, *enable]:
        if n not in DETECTORS:
            raise ValueError(f"unknown detector {n!r}; known: {', '.join(DETECTORS)}")
    now = [n for n in disabled(setting) if n not in enable]
    return {"disabled": sorted({*now, *disable})}


def detect(df: pl.DataFrame, name: str, cfg: SignalConfig | None = None) -> pl.DataFrame:
    """One detector's row-aligned output (score, flagged, reason, details) for ``df``; pair kinds
    are read from ``df`` itself (a ``kind`` column, when given, is used as is)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    cfg = cfg or SignalConfig()
    return _apply(DETECTORS[name], prepare(df, cfg), cfg)


def _apply(d: Detector, base: pl.DataFrame, cfg: SignalConfig) -> pl.DataFrame:
    """``d`` over ``base`` (with a ``kind`` column), zeroed on the rows of kinds it does not apply to."""
    out = d.fn(base, cfg).cast(OUT_SCHEMA)  # type: ignore[arg-type]
    if d.kinds >= set(base["kind"].unique().to_list()):
        return out
    applies = base["kind"].is_in(list(d.kinds))
    return out.with_columns(
        score=pl.when(applies).then("score").otherwise(0.0), flagged=pl.col("flagged") & applies,
        reason=pl.when(applies).then("reason").otherwise(pl.lit("")), details=pl.when(applies).then("details"),
    )


def prepare(df: pl.DataFrame, cfg: SignalConfig | None = None) -> pl.DataFrame:
    """What every detector reads: one prompt and response per pair (``with_turns``) and its kind."""
    return pair_kinds.with_kinds(with_turns(df), cfg.key_counts if cfg else None)


def whole_project(parts: Iterable[pl.DataFrame], cfg: SignalConfig) -> SignalConfig:
    """``cfg`` with what the detectors compare a pair with measured over every part of a project
    (``key_counts``, ``length_stats``), so that running them part by part stores what running them
    on the whole would. Keeps a few bytes per pair, not its text."""
    flags, words = [], []
    for df in parts:
        base = with_turns(df)
        flags.append(pair_kinds.kind_flags(base))
        words.append(base.select(w=_words()))
    every = pl.concat(flags)
    counts = pair_kinds.key_counts(every)
    kw = pl.concat([pl.DataFrame({"kind": pair_kinds.kind_of(every, counts)}), pl.concat(words)], how="horizontal")
    return replace(cfg, key_counts=counts, length_stats=length_stats(kw))


def run(df: pl.DataFrame, names: list[str] | None = None, cfg: SignalConfig | None = None) -> pl.DataFrame:
    """Long frame of every non-zero signal: revision_id, pair_id, name, version, score, flagged, reason, details."""
    cfg = cfg or SignalConfig()
    names = names or list(DETECTORS)
    for n in names:
        if n not in DETECTORS:
            raise ValueError(f"unknown detector {n!r}; known: {', '.join(DETECTORS)}")
    base = prepare(df, cfg)
    ids = base.select("revision_id", "pair_id")
    parts = []
    for n in names:
        d = DETECTORS[n]
        res = pl.concat([ids, _apply(d, base, cfg)], how="horizontal")
        parts.append(res.filter((pl.col("score") != 0) | pl.col("flagged")).with_columns(
            name=pl.lit(d.name), version=pl.lit(d.version)
        ))
    cols = ["revision_id", "pair_id", "name", "version", "score", "flagged", "reason", "details"]
    if not parts:
        return pl.DataFrame(schema=RUN_SCHEMA)
    return pl.concat([p.select(cols) for p in parts])
