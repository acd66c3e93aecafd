"""What kind of pair this is: the one rule the quality signals and validators share (pure).

Kinds, decided in this order (the first that fits wins):

- ``tool``: the prompt declares tools (a JSON schema with ``"parameters"``, "You have access to
  the following tools", a ``<tools>`` block, a non-empty ``tools`` column) or the response
  opens with a call: ``name(arg=...)``, a ``[name(arg=...), ...]`` list, ``{"name": ...}`` or a
  ``<tool_call>`` tag.
- ``code``: the response has a ``` fence or at least two lines that read as code.
- ``math``: the response has GSM8K marks (``#### 42``, ``<<6*7=42>>``), "The answer is 42",
  ``\\boxed{}``, a worked step ``a op b = c``, or is a bare number answering a prompt with numbers.
- ``label``: a short single-line response (at most ``scoring.LABEL_MAX_WORDS`` words) whose
  normal form recurs in the frame, so it is one value of a small set (``card_arrival``, ``yes``).
- ``extraction``: the response is JSON data, or the prompt asks to extract/list what a text mentions.
- ``chat``: everything else.

The label rule reads the whole frame (a value must recur), so kinds are computed over the
project, not one pair at a time (a project read in parts counts the recurring forms over every
part first: ``kind_flags``, ``key_counts``). Everything is a Polars expression over whole columns.
"""

from __future__ import annotations

import polars as pl

from analysis.normalize import normalize_expr
from scoring import LABEL_MAX_WORDS, MAX_LABELS

KINDS = ("chat", "tool", "code", "math", "label", "extraction")
ALL_KINDS = frozenset(KINDS)

TOOL_DECLARATION = (
    r"(?i)you (?:have|can) (?:access to|use) (?:the following |these )?(?:tools|functions|apis)"
    r"|(?:available|following) (?:tools|functions)\s*:|<tools>|\"parameters\"\s*:|\"type\"\s*:\s*\"function\""
)
# a call at the start of the response: python-style with keyword arguments (or none), JSON, or a tag
CALL_START = (
    r"^\s*(?:<tool_call>|<functioncall>|\{\s*\"(?:name|function|tool|tool_name)\"\s*:"
    r"|\[?\s*[A-Za-z_][\w.]*\(\s*(?:\)|[A-Za-z_]\w*\s*=))"
)
CODE_LINE = (
    r"(?m)^\s*(?:def \w+\(|class \w+|import \w|from [\w.]+ import |return\b|for .+ in .+:|while .+:|if .+:\s*$"
    r"|(?i:select\b.+\bfrom\b|insert into|create table)|#include|function\s+\w+\s*\(|(?:const|let|var) \w+ ?=|public |\}\s*$)"
)
MATH_MARK = (
    r"(?m)^#### ?-?\$?[\d.,]+|<<[^<>\n]*=[^<>\n]*>>|(?i:the (?:final )?answer is:?\s*\$?-?\d)|\\boxed\{"
    r"|\d\s*[+\-*/×÷x]\s*\$?\d[\d.,]*\s*=\s*\$?-?\d"
)
BARE_NUMBER = r"^\s*[-$€£]?\s*\d[\d,]*(?:\.\d+)?\s*%?\s*\.?\s*$"
EXTRACT_ASK = (
    r"(?i)\bextract\b|\bpull out\b|\blist (?:all|every|each) .{0,40}(?:mentioned|in the (?:text|passage|paragraph))"
    r"|\bidentify (?:all|the) (?:names|entities|dates|people|places)"
)
JSON_DATA = r"^\s*(?:```(?:json)?\s*)?[\[{][\s\S]*[\]}]\s*(?:```)?\s*$"


def prompt_text() -> pl.Expr:
    """Everything the model was shown: instruction, input and (multi-turn) the raw messages,
    so a system turn that declares tools counts."""
    parts = [pl.col("instruction").fill_null(""), pl.col("input").fill_null("")]
    return pl.concat_str(parts, separator="\n")


def declares_tools(df: pl.DataFrame) -> pl.Expr:
    """True where the prompt, the messages or a ``tools`` column declares tools."""
    hit = prompt_text().str.contains(TOOL_DECLARATION)
    if "messages" in df.columns:
        hit = hit | pl.col("messages").fill_null("").str.contains(TOOL_DECLARATION)
    if "tools" in df.columns:
        hit = hit | (pl.col("tools").cast(pl.String).fill_null("").str.strip_chars().str.len_chars() > 2)
    return hit


def kind_flags(df: pl.DataFrame) -> pl.DataFrame:
    """Per row of ``df``, what the kind rules read: tool, code, math, extraction, short, and the
    response's normal form as a 64-bit hash (``key``; ``blank`` when the form is empty). Compact, so
    a project too big for memory keeps every row's flags while its text is read in parts."""
    r = pl.col("response").fill_null("")
    stripped = r.str.strip_chars()
    prompt = prompt_text()
    tool = declares_tools(df) | (stripped.str.contains(CALL_START) & ~r.str.contains("```"))
    code = r.str.contains("```") | (r.str.count_matches(CODE_LINE) >= 2)
    prompt_numbers = prompt.str.count_matches(r"\d+(?:\.\d+)?") >= 2
    math = r.str.contains(MATH_MARK) | (stripped.str.contains(BARE_NUMBER) & prompt_numbers)
    short = (~stripped.str.contains("\n")) & (stripped.str.count_matches(r"\S+") <= LABEL_MAX_WORDS) & (stripped != "")
    norm = normalize_expr(stripped)
    return df.select(tool=tool, code=code, math=math, short=short, key=norm.hash(seed=0), blank=norm == "",
                     extraction=stripped.str.contains(JSON_DATA) | prompt.str.contains(EXTRACT_ASK))


def key_counts(flags: pl.DataFrame) -> pl.DataFrame:
    """How many rows share each normal form (``kind_flags``' key), and whether one of them is a
    short, non-blank response: what the label rule reads."""
    return flags.group_by("key").agg(n=pl.len(), short=(pl.col("short") & ~pl.col("blank")).any())


def kind_of(flags: pl.DataFrame, counts: pl.DataFrame | None = None) -> pl.Series:
    """The kind of each row of ``flags`` (``kind_flags``). ``counts`` (``key_counts``): of the whole
    project when ``flags`` are of one part of it; default: of ``flags``."""
    counts = counts if counts is not None else key_counts(flags)
    # the distinct recurring short forms of the whole project (not of this part): a label set is small
    distinct = counts.filter((pl.col("n") >= 2) & pl.col("short")).height
    tmp = flags.join(counts.select("key", "n"), on="key", how="left", maintain_order="left")
    recurs = (pl.col("n") >= 2) & pl.col("short") & ~pl.col("blank")
    label = recurs & (distinct <= MAX_LABELS)
    return tmp.select(
        pl.when("tool").then(pl.lit("tool"))
        .when("code").then(pl.lit("code"))
        .when("math").then(pl.lit("math"))
        .when(label).then(pl.lit("label"))
        .when("extraction").then(pl.lit("extraction"))
        .otherwise(pl.lit("chat")).alias("kind")
    ).to_series()


def kinds(df: pl.DataFrame, counts: pl.DataFrame | None = None) -> pl.Series:
    """The kind of each row of ``df`` (instruction, input, response; optional messages, tools).
    ``counts``: see ``kind_of``."""
    return kind_of(kind_flags(df), counts)


def with_kinds(df: pl.DataFrame, counts: pl.DataFrame | None = None) -> pl.DataFrame:
    """``df`` with a ``kind`` column (kept when it is already there). ``counts``: see ``kind_of``."""
    return df if "kind" in df.columns else df.with_columns(kinds(df, counts))
