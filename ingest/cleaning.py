"""Element text cleaning before a document is laid out: garbage characters and page furniture.

Pure functions over the parser's element dicts (``ingest.partition`` calls them in the worker,
before the "no text" check), so the stored ``Document.text`` *is* the cleaned text and every
span (elements, chunks, pair provenance) points into it: nothing is cleaned after layout, and
a pair can never point at a dropped header.

What goes:
- ``(cid:N)`` glyph references (pdfminer's stand-in for a glyph without a Unicode mapping),
  NUL and the other C0/C1 control characters (tab and newline stay; CR, VT and FF become
  line breaks): they are invisible in review and poison training text.
- Page furniture: elements unstructured types ``Header``, ``Footer`` or ``PageNumber``, and
  running lines: a line whose normalised form (case and spacing folded, digits masked, so
  "Page 3 of 20" and "Page 4 of 20" match) appears on at least half the pages (80% when its
  digits differ from page to page), and on at least ``MIN_PAGES`` of them, of a document with
  text on ``MIN_PAGES`` pages or more. Only
  paged documents are judged this way; a line repeated in an unpaged file may be content.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Any

FURNITURE_TYPES = frozenset({"Header", "Footer", "PageNumber"})
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


def clean_text(text: str) -> str:
    """``text`` without glyph references and control characters, line ends as ``\\n``, stripped."""
    text = _BREAKS.sub("\n", CID.sub("", text))
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


def clean_elements(elements: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The elements with clean text and without page furniture, and how many lines were dropped
    as furniture. An element left empty is dropped; the others keep their order and ids."""
    kept: list[dict[str, Any]] = []
    dropped = 0
    for el in elements:
        if el["type"] in FURNITURE_TYPES:
            dropped += 1
            continue
        text = clean_text(el["text"])
        if text:
            # Metadata text that becomes pair text (a table's HTML, an e-mail subject as title) too.
            meta = {k: clean_text(v) if isinstance(v, str) else v for k, v in (el.get("metadata") or {}).items()}
            kept.append({**el, "text": text, "metadata": meta})
    running = running_lines(kept)
    if not running:
        return kept, dropped
    out = []
    for el in kept:
        lines = el["text"].split("\n")
        body = [line for line in lines if line_key(line) not in running]
        dropped += len(lines) - len(body)
        text = "\n".join(body).strip()
        if text:
            out.append({**el, "text": text} if len(body) < len(lines) else el)
    return out, dropped
