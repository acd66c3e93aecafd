"""Parsed elements -> the stored ``Document`` text and ``Element`` records, and sections.

Pure functions (no files, no database). Invariants:
- ``Document.text`` is the element texts joined by a blank line, in reading order, and
  ``document.text[e.char_start:e.char_end] == e.text`` for every element. Chunks and pair
  provenance spans point into this same text, so a span can always be shown in context.
- Element ids are ``e_`` + a hash of (document id, position): stable across re-ingests of
  the same bytes and unique across documents. Parents are mapped from the parser's ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from store.ids import content_id
from store.records import Document, Element

SEPARATOR = "\n\n"
HEADING_TYPES = frozenset({"Title"})


def element_id(document_id: str, idx: int) -> str:
    return content_id({"document": document_id, "idx": idx}, prefix="e_")


# A heading that only numbers a part ("CHAPTER I", "Section 3.2", "Appendix B", "4.1"): it names
# no topic, so no question is built from it (``informative_heading``).
_ROMAN = r"m{0,4}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})"
_LABEL = re.compile(
    r"(?:(?:(?:chapter|chap|section|sec|part|article|art|appendix|annex|schedule|title|book|volume|vol|unit"
    r"|lesson|module|step|page|figure|fig|table|exhibit|attachment|item|no|number|paragraph|para)(?:\.\s*|\s+)"
    rf"|§\s*)(?:\d+(?:[.\-]\w+)*|{_ROMAN}|[a-z])|\d+(?:[.\-]\d+)*)[.:)]?", re.I)
# A heading seen this many times in one document is a running head or a label, not a topic.
REPEATED_HEADING = 3


def title_from_name(name: str) -> str:
    """The title a file name gives (``doc_title``'s last resort); never a topic for a question."""
    return PurePath(name).stem.replace("_", " ").replace("-", " ").strip() or name


# Markdown syntax that a parser reading Markdown as plain text leaves in a heading; a question
# names the topic without it (``plain_topic``), the response keeps the exact source text.
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_LINK_TAIL = re.compile(r"\]\([^)]*\)")  # the rest of a link whose "[" the parser split off
_MD_MARKS = re.compile(r"\*\*|__|`|<!--.*?-->")
_MD_EMPHASIS = re.compile(r"(?<![\w*])[*_](?=\S)(.+?)(?<=\S)[*_](?![\w*])")


def plain_topic(text: str) -> str:
    """A heading as a question may name it: spacing folded, without Markdown heading marks
    ("## "), emphasis (``**``, ``__``, backticks, ``*x*``), link syntax ("[text](url)" -> "text"),
    table pipes and a trailing colon."""
    t = _MD_LINK_TAIL.sub("", _MD_LINK.sub(r"\1", " ".join(text.split())))
    t = _MD_EMPHASIS.sub(r"\1", _MD_MARKS.sub("", t))
    t = re.sub(r"^#{1,6}(?:\s+|$)|\s+#+$", "", t.strip(" |*_[]")).strip(" |*_[]")
    return " ".join(t.split()).rstrip(":").strip()


def heading_key(text: str) -> str:
    return " ".join(text.split()).rstrip(":").casefold()


def informative_heading(text: str, seen: int = 1) -> bool:
    """Whether a heading names a topic: not a bare part number, has letters, and was not seen
    ``REPEATED_HEADING`` times or more in its document."""
    t = " ".join(text.split()).rstrip(":")
    return (seen < REPEATED_HEADING and not _LABEL.fullmatch(t)
            and sum(c.isalpha() for c in t) >= 2)


def named_title(doc: Document, elements: list[Element], seen: int = 1) -> str:
    """The document's title when it names a topic a question may use, else "": not one taken
    from the file name (unless the first element says it too), nor a label or a heading seen
    ``seen`` >= ``REPEATED_HEADING`` times."""
    title = plain_topic(doc.title)
    from_name = title == title_from_name(doc.name) and not (
        elements and plain_topic(elements[0].text) == title)
    return title if not from_name and informative_heading(title, seen) else ""


_ARTICLE = re.compile(r"(the|a|an|this|these|that|those|our|my|your|their|its|his|her)\b", re.I)


def doc_phrase(title: str) -> str:
    """How a question names a document: "the document" without a title; "the Employee Handbook"
    for a short title that reads as a name; the title in quotes when "the ..." would not read
    (unstructured's example documents gave "What does the These are a few of my favorite things
    say ...", "... the LayoutParser: A Unified Toolkit for DL-Based DIA say ...")."""
    if not title:
        return "the document"
    if len(title.split()) <= 5 and not _ARTICLE.match(title) and not re.search(r"[^\w\s&'\-]", title):
        return f"the {title}"
    return f'"{inner_quotes(title)}"'


_OPENS_AFTER = " \t\n([{'\u2018\u2014-/"


def inner_quotes(text: str) -> str:
    """``text`` to quote inside double quotes: its own ASCII double quotes become typographic ones
    (opening at a word's start, closing elsewhere), so a passage of dialogue ("What next?" the
    princess ...) never gives ``""What next?"...`` in a question, and one that opens with a quote
    in a quote (``"'Told them,' I dare say!"``) never gives ``''Told``. Quotes left unpaired (an
    opening cut mid-quotation, a heading whose quotation closes in the next element) are dropped."""
    return _balanced(re.sub('"', lambda m: "\u201c" if m.start() == 0 or text[m.start() - 1] in _OPENS_AFTER
                            else "\u201d", text))


def opening(text: str, words: int = 8) -> str:
    """The first ``words`` words of ``text``, to quote (in double quotes) a passage that has no heading."""
    parts = text.split()
    return inner_quotes(" ".join(parts[:words]).rstrip(".,;:!?") + ("..." if len(parts) > words else ""))


def _balanced(text: str) -> str:
    """``text`` without its unpaired typographic double quotes."""
    out: list[str] = []
    open_at: int | None = None
    for ch in text:
        if ch == "\u201c":
            if open_at is not None:
                out[open_at] = ""
            open_at = len(out)
        elif ch == "\u201d":
            if open_at is None:
                continue
            open_at = None
        out.append(ch)
    if open_at is not None:
        out[open_at] = ""
    return "".join(out)


def doc_title(name: str, raw: list[dict[str, Any]]) -> str:
    """The first element when it is a top-level title, else an e-mail subject, else the file name."""
    for el in raw[:1]:
        if el["type"] in HEADING_TYPES and len(el["text"]) <= 120:
            return el["text"]
    for el in raw:
        subject = el.get("metadata", {}).get("subject")
        if subject:
            return str(subject)
    return title_from_name(name)


def build_document(
    raw: list[dict[str, Any]], *, document_id: str, uri: str, name: str, filetype: str, size_bytes: int,
    n_pages: int | None = None, previous_id: str | None = None, metadata: dict[str, Any] | None = None,
) -> tuple[Document, list[Element]]:
    """Lay the elements end to end into the document text and record each one's span."""
    parts: list[str] = []
    pos = 0
    ids: dict[str, str] = {}
    elements: list[Element] = []
    for idx, el in enumerate(raw):
        eid = element_id(document_id, idx)
        ids.setdefault(el.get("uid") or eid, eid)
        if parts:
            parts.append(SEPARATOR)
            pos += len(SEPARATOR)
        text = el["text"]
        parent = ids.get(el.get("parent_uid") or "")
        elements.append(Element(
            id=eid, document_id=document_id, idx=idx, type=el["type"], text=text, page=el.get("page"),
            parent_id=parent if parent != eid else None, char_start=pos, char_end=pos + len(text),
            metadata=el.get("metadata") or {},
        ))
        parts.append(text)
        pos += len(text)
    doc = Document(
        id=document_id, uri=uri, name=name, filetype=filetype, size_bytes=size_bytes, n_pages=n_pages,
        title=doc_title(name, raw), text="".join(parts), previous_id=previous_id, metadata=metadata or {},
    )
    return doc, elements


@dataclass
class Section:
    """A heading and the elements under it up to the next heading (``heading`` None: preamble)."""

    heading: Element | None
    body: list[Element] = field(default_factory=list)
    path: list[str] = field(default_factory=list)

    @property
    def elements(self) -> list[Element]:
        return ([self.heading] if self.heading else []) + self.body

    @property
    def body_start(self) -> int | None:
        return self.body[0].char_start if self.body else None

    @property
    def body_end(self) -> int | None:
        return self.body[-1].char_end if self.body else None


def sections(elements: list[Element]) -> list[Section]:
    """Split at every heading; ``path`` is the chain of enclosing headings (outermost first)."""
    by_id = {e.id: e for e in elements}
    out: list[Section] = []
    current = Section(heading=None)
    for el in elements:
        if el.type in HEADING_TYPES:
            if current.heading is not None or current.body:
                out.append(current)
            path = []
            parent = by_id.get(el.parent_id or "")
            seen = set()
            while parent is not None and parent.id not in seen:
                seen.add(parent.id)
                if parent.type in HEADING_TYPES:
                    path.append(parent.text)
                parent = by_id.get(parent.parent_id or "")
            current = Section(heading=el, path=list(reversed(path)) + [el.text])
        else:
            current.body.append(el)
    if current.heading is not None or current.body:
        out.append(current)
    return out
