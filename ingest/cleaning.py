"""Element text cleaning before a document is laid out: garbage characters and page furniture.

Pure functions over the parser's element dicts (``ingest.partition`` calls them in the worker,
before the "no text" check), so the stored ``Document.text`` *is* the cleaned text and every
span (elements, chunks, pair provenance) points into it: nothing is cleaned after layout, and
a pair can never point at a dropped header.

What goes:
- ``(cid:N)`` glyph references (pdfminer's stand-in for a glyph without a Unicode mapping),
  NUL and the other C0/C1 control characters (tab and newline stay; CR, VT and FF become
  line breaks): they are invisible in review and poison training text.
- Page furniture: elements unstructured types ``Header``, ``Footer`` or ``PageNumber`` (unless
  one holds more than ``FURNITURE_MAX_WORDS`` words: running text a PDF placed outside the page's
  body, as with negative coordinates, where unstructured typed every paragraph a ``Header``; it
  stays, as text), and running lines: a line whose normalised form (case and spacing folded, digits masked, so
  "Page 3 of 20" and "Page 4 of 20" match) appears on at least half the pages (80% when its
  digits differ from page to page), and on at least ``MIN_PAGES`` of them, of a document with
  text on ``MIN_PAGES`` pages or more. Only
  paged documents are judged this way; a line repeated in an unpaged file may be content.

What stops being a heading (a ``Title`` element becomes text, ``demote_false_headings``; the
text stays, in the body of the section around it):
- Lines inside a fenced code block (between two fences of three backticks or tildes, as a
  Markdown file read as plain text gives them): "# install deps" in a shell block is a comment, not a
  heading. A fence never closed demotes nothing.
- The rest of a wrapped sentence: a line in lower case after running text whose sentence has not
  ended ("his 18th birthday.[9]" in a hard-wrapped text file).
- Data rows: "agent (model): 871.5" (a name, a colon, a number), lines made mostly of numbers,
  and, where most of a document's headings end with a score-like number ("gpt-4 (FC) 871.5",
  a leaderboard), those lines.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any

from ingest.elements import HEADING_TYPES

FURNITURE_TYPES = frozenset({"Header", "Footer", "PageNumber"})
FURNITURE_MAX_WORDS = 25  # a running header or footer is a line: "Cat. No. 28171E Internal Revenue Manual"
MIN_PAGES = 3
RUNNING_SHARE = 0.5
# Lines alike only with digits masked ("Page 3 of 20", but also "CHAPTER 3") must be on most pages:
# a page-numbered footer is on nearly all of them, a numbered heading is not.
NUMBERED_SHARE = 0.8
# Longer lines are prose, even when repeated (a legal notice is content once per page, not a header).
MAX_RUNNING_CHARS = 120

CID = re.compile(r"\(cid:\d+\)")
# C0 controls but tab, newline and carriage return; DEL; C1 controls (after a right decode they are
# garbage). The one rule: documents drop them (``clean_text``, after turning \x0b/\x0c into line
# breaks), a dataset import refuses a record holding one (``ingest.datasets``).
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BREAKS = re.compile("\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_DIGITS = re.compile(r"\d+")
FENCE = re.compile(r"```|~~~")
_NUMBER = r"[-+]?[$€£]?\d[\d,]*(?:\.\d+)?\s*%?"
# "name (variant): 871.5", "Accuracy = 0.93": the key ends with something other than a digit
# ("10:30" is a time, "Step 2: 3" is left alone).
_KEY_NUMBER = re.compile(rf".*[^\d\s]\s*[:=]\s*{_NUMBER}")
_NUMBERS = re.compile(r"\d+(?:[.,]\d+)*")
# A score, not a label or a year: 871.5 with two or more decimals, or three or more digits.
_ENDS_WITH_SCORE = re.compile(r".*[^\d\s.,:-]\s+[-+]?(?:\d+\.\d{2,}|(?!(?:19|20)\d\d\b)\d{3,}(?:\.\d+)?)\s*%?")


_C1 = re.compile("[\x80-\x9f]")
# TeX's and the U.S. Government Printing Office's ASCII quotes: ``Counterterrorism Fund'' is
# “Counterterrorism Fund” (unstructured's fake-html-pre.htm, a public law: its questions read
# ``Network.''.``, which the rubric and readers take for an empty quote).
_TEX_QUOTES = re.compile(r"``(?=\S)([^`\n]{0,400}?(?:\n[^`\n]{1,400}?){0,8})(?<=\S)''")


def clean_text(text: str) -> str:
    """``text`` without glyph references and control characters, line ends as ``\\n``, stripped.

    C1 control characters (U+0080-U+009F) in decoded text are nearly always mojibake: UTF-8 read
    as Latin-1 somewhere upstream ("2000\u00e2\u0080\u009301" for "2000\u201301", in
    unstructured's own norwich-city.txt), where deleting them would leave "2000\u00e201". Text that
    holds them is repaired with ftfy's ``fix_encoding`` first (``ingest.mojibake``) when the repair
    explains every one of them (none is left); other text is left as the author wrote it. TeX-style
    ASCII quotes (``like this'') become typographic ones."""
    if _C1.search(text):
        from ingest.mojibake import repair_text

        fixed = repair_text(text)
        text = text if _C1.search(fixed) else fixed
    text = _BREAKS.sub("\n", CID.sub("", text))
    if "``" in text:
        text = _TEX_QUOTES.sub("\u201c\\1\u201d", text)
    return CONTROL.sub("", text).strip()


def line_key(line: str) -> str:
    """What makes two lines "the same running line": case and spacing folded, digits masked."""
    return _DIGITS.sub("#", " ".join(line.lower().split()))


def running_lines(elements: list[dict[str, Any]]) -> set[str]:
    """Keys of lines that repeat on most pages (see the module docstring)."""
    pages_of: dict[str, set[int]] = defaultdict(set)
    variants: dict[str, set[str]] = defaultdict(set)
    pages: set[int] = set()
    for el in elements:
        page = el.get("page")
        if not page:
            continue
        pages.add(page)
        for line in el["text"].split("\n"):
            if line.strip() and len(line) <= MAX_RUNNING_CHARS:
                key = line_key(line)
                pages_of[key].add(page)
                variants[key].add(" ".join(line.split()))
    if len(pages) < MIN_PAGES:
        return set()
    same = max(MIN_PAGES, math.ceil(RUNNING_SHARE * len(pages)))
    numbered = max(MIN_PAGES, math.ceil(NUMBERED_SHARE * len(pages)))
    return {key for key, on in pages_of.items() if len(on) >= (same if len(variants[key]) == 1 else numbered)}


def data_row(text: str) -> bool:
    """Whether a line reads as a data row ("agent (model): 871.5", "12.5 13.1 9.8"), not a heading."""
    t = " ".join(text.split())
    if _KEY_NUMBER.fullmatch(t):
        return True
    digits = sum(c.isdigit() for c in t)
    return len(_NUMBERS.findall(t)) >= 2 and digits > sum(c.isalpha() for c in t)


_OPEN_END = re.compile(r"[.!?:;][\"'\u201d\u2019)\]]*(\[\d+\])*$")  # a sentence (and its citation) ends


def wrapped_line(elements: list[dict[str, Any]], i: int) -> bool:
    """Whether element ``i`` (a ``Title``) is the rest of the sentence before it: a hard-wrapped text
    file (or a page copied from the web) gives one element a line, and unstructured calls a short
    last line a title: "his 18th birthday.[9]" after "... in July 1986, shortly after". It starts
    in lower case, and the text before it is running text whose sentence has not ended."""
    text = elements[i]["text"].strip()
    if not text[:1].islower() or i == 0:
        return False
    prev = elements[i - 1]
    return prev["type"] not in HEADING_TYPES and not _OPEN_END.search(prev["text"].strip())


def demote_false_headings(elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``Title`` elements that are code lines or data rows become text (``CodeSnippet`` inside a
    closed fence, else ``UncategorizedText``); see the module docstring. Text and order are kept."""
    demote: dict[int, str] = {}
    pending: list[int] = []
    inside = False
    for i, el in enumerate(elements):
        fences = len(FENCE.findall(el["text"]))
        if el["type"] in HEADING_TYPES and (inside or fences):
            pending.append(i)
        if fences % 2:
            inside = not inside
            if not inside:  # a closed fence: its lines were code
                demote.update((j, "CodeSnippet") for j in pending)
                pending = []
        elif not inside:
            demote.update((j, "CodeSnippet") for j in pending)  # a heading holding a whole fence
            pending = []
    titles = [i for i, el in enumerate(elements) if el["type"] in HEADING_TYPES and i not in demote]
    scores = [i for i in titles if _ENDS_WITH_SCORE.fullmatch(" ".join(elements[i]["text"].split()))]
    if len(scores) < 3 or 2 * len(scores) < len(titles):
        scores = []
    demote.update((i, "UncategorizedText") for i in [*scores, *(i for i in titles if data_row(elements[i]["text"]))])
    demote.update((i, "NarrativeText") for i in titles if i not in demote and wrapped_line(elements, i))
    if not demote:
        return elements
    return [{**el, "type": demote[i]} if i in demote else el for i, el in enumerate(elements)]


def clean_elements(elements: list[dict[str, Any]], *, whole: bool = True) -> tuple[list[dict[str, Any]], int]:
    """The elements with clean text and without page furniture, and how many lines were dropped
    as furniture. An element left empty is dropped; the others keep their order and ids.

    ``whole=False``: the elements are one page range of a longer document (``ingest.workers``
    parses a long PDF in ranges): each element is cleaned, but what is judged over the whole
    document (running lines, false headings) waits for ``finish_document`` on the ranges joined,
    or a line that runs over most pages of one range only (a chapter's running head) went in a
    range and stayed in the whole file, and two workers gave other text than one."""
    kept: list[dict[str, Any]] = []
    dropped = 0
    for el in elements:
        if el["type"] in FURNITURE_TYPES:
            if len(el["text"].split()) <= FURNITURE_MAX_WORDS:
                dropped += 1
                continue
            el = {**el, "type": "UncategorizedText"}  # running text misplaced as furniture
        text = clean_text(el["text"])
        if text:
            # Metadata text that becomes pair text (a table's HTML, an e-mail subject as title) too.
            meta = {k: clean_text(v) if isinstance(v, str) else v for k, v in (el.get("metadata") or {}).items()}
            kept.append({**el, "text": text, "metadata": meta})
    if not whole:
        return kept, dropped
    out, more = finish_document(kept)
    return out, dropped + more


def finish_document(elements: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The steps of ``clean_elements`` that judge the whole document's clean elements: false
    headings become text, running lines go; with the count of lines dropped."""
    kept = demote_false_headings(elements)
    running = running_lines(kept)
    if not running:
        return kept, 0
    dropped = 0
    out = []
    for el in kept:
        lines = el["text"].split("\n")
        body = [line for line in lines if line_key(line) not in running]
        dropped += len(lines) - len(body)
        text = "\n".join(body).strip()
        if text:
            out.append({**el, "text": text} if len(body) < len(lines) else el)
    return out, dropped
