"""``qa``: pairs from explicit question/answer structure in a document.

Recognised, in reading order: FAQ headings that are questions (the text under them is the
answer); ``Q:``/``A:`` lines (in one element or across elements); question lines (a short
paragraph ending in "?") followed by answer paragraphs; definition lists (two or more
term/definition pairs in a row); and two-column tables of question/answer. The response is
the answer verbatim and ``document.text[char_start:char_end]`` is that answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.elements import plain_topic
from ingest.generators import register
from ingest.generators.base import Generator, Source
from store.records import Element, NewPair

Q_PREFIX = re.compile(r"^\s*(?:Q|Question)\s*(?:\d+\s*)?[:.)]\s*", re.I)
A_PREFIX = re.compile(r"^\s*(?:A|Answer)\s*[:.)]\s*", re.I)
INLINE = re.compile(r"^\s*(?:Q|Question)\s*(?:\d+\s*)?[:.)]\s*(?P<q>.+?)\s+(?:A|Answer)\s*:\s*(?P<a>\S.*)$",
                    re.S | re.I)
BODY_TYPES = frozenset({"NarrativeText", "UncategorizedText", "Text", "ListItem", "Table", "Address",
                        "EmailAddress", "Formula", "CodeSnippet", "FigureCaption"})
_Q_HEADER = {"question", "questions", "q", "faq", "query"}
_A_HEADER = {"answer", "answers", "a", "response", "reply"}
# A JSON record (an element holding one object, as unstructured renders .json/.ndjson records):
# its question and answer fields, in order of preference.
JSON_Q_KEYS = ("question", "instruction", "prompt", "query", "q", "input")
JSON_A_KEYS = ("answer", "response", "output", "completion", "reply", "a")
# a record with no question field but a title and a text: a titled section, asked as sections asks
JSON_TITLE_KEYS = ("title", "heading", "subject", "topic", "name")
JSON_TEXT_KEYS = (*JSON_A_KEYS, "text", "body", "content", "description", "summary")
TITLE_QUESTION = "What does the document say about {topic}?"  # the sections generator's wording


def json_record(text: str) -> dict | None:
    """The object an element's text holds when it is one JSON object, else None."""
    t = text.strip()
    if not (t.startswith("{") and t.endswith("}")):
        return None
    try:
        obj = json.loads(t)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _field(obj: dict, names: tuple[str, ...]) -> str | None:
    keys = {str(k).lower(): k for k in obj}
    return next((keys[k] for k in names if k in keys and isinstance(obj[keys[k]], str) and obj[keys[k]].strip()),
                None)


def json_qa(obj: dict) -> tuple[str, str] | None:
    """(question, answer field) of a JSON record: a question field and an answer field with text,
    else a title field and a text field (the question then asks about the title); None if neither."""
    q, a = _field(obj, JSON_Q_KEYS), _field(obj, JSON_A_KEYS)
    if q is not None and a is not None and q != a:
        return " ".join(str(obj[q]).split()), a
    t, body = _field(obj, JSON_TITLE_KEYS), _field(obj, JSON_TEXT_KEYS)
    if t is not None and body is not None and t != body:
        return TITLE_QUESTION.format(topic=plain_topic(str(obj[t]))), body
    return None


@dataclass(frozen=True)
class QAOptions:
    max_question_chars: int = 300
    definition_template: str = "What is {term}?"
    definitions: bool = True
    tables: bool = True


_LEAD = re.compile(r"^\s*(q\s*[.:)]|\d+(\.\d+)*[.)]|[a-z][.)])\s*", re.I)  # "Q.", "3.", "b)" before a question
_SENTENCE_BREAK = re.compile(r"[.!?][\"'\u201d\u2019)]*\s+\S")


def _is_question(el: Element, limit: int) -> bool:
    """A question line: ends with "?", one line, not too long; a paragraph (not a heading) must be
    one sentence: "My first paragraph. lorem ipsum ... how do you fault the cow?" (unstructured's
    fake-html.html) is a paragraph that ends with a question, not a question to answer."""
    text = el.text.strip()
    if not text.endswith("?") or len(text) > limit or "\n" in text:
        return False
    if el.type != "Title" and _SENTENCE_BREAK.search(_LEAD.sub("", text)[:-1]):
        return False
    return el.type in ("Title", "NarrativeText", "UncategorizedText", "Text")


def _table_rows(html: str) -> list[list[str]]:
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except Exception:  # malformed markup: not a Q/A table
        return []
    rows = []
    for tr in root.iter("tr"):
        rows.append([" ".join(c.text_content().split()) for c in tr if c.tag in ("td", "th")])
    return rows


def find_cell(text: str, cell: str, start: int, end: int) -> tuple[int, int] | None:
    """Where a table cell's text (whitespace-normalised, as ``_table_rows`` gives it) first stands in
    ``text[start:end]``, whatever whitespace the parser put between its words; None if it does not."""
    m = re.compile(r"\s+".join(map(re.escape, cell.split()))).search(text, start, end)
    return (m.start(), m.end()) if m else None


@register
class QAGenerator(Generator):
    name = "qa"
    version = "1"
    Options = QAOptions

    def _answer(self, els: list[Element], i: int) -> int:
        """Index one past the last answer element starting at ``i``.

        An answer runs until the next heading, question, Q/A table or definition list.
        """
        limit = self.options.max_question_chars
        j = i
        while j < len(els):
            el = els[j]
            if el.type not in BODY_TYPES or Q_PREFIX.match(el.text) or _is_question(el, limit):
                break
            if j > i and (self._qa_rows(el) or self._definitions(els, j)):
                break
            j += 1
        return j

    def generate(self, source: Source) -> Iterator[NewPair]:
        opts: QAOptions = self.options
        els = source.elements
        i = 0
        while i < len(els):
            el = els[i]
            rec = json_record(el.text)
            if rec is not None:  # a JSON record: its question and answer fields, else nothing
                yield from self._json(source, el, rec)
                i += 1
                continue
            m = INLINE.match(el.text)
            if m:
                q = " ".join(m.group("q").split())
                a0 = el.char_start + m.start("a")
                a1 = el.char_start + len(el.text.rstrip())
                yield self.pair(source, q, source.span_text(a0, a1), span=(a0, a1), element_ids=[el.id],
                                page=el.page)
                i += 1
                continue
            if Q_PREFIX.match(el.text) and i + 1 < len(els) and A_PREFIX.match(els[i + 1].text):
                q = Q_PREFIX.sub("", el.text, count=1).strip()
                first = els[i + 1]
                j = self._answer(els, i + 2)
                a_match = A_PREFIX.match(first.text)
                assert a_match is not None
                a0 = first.char_start + a_match.end()
                a1 = els[j - 1].char_end
                if a1 > a0:
                    yield self.pair(source, q, source.span_text(a0, a1), span=(a0, a1),
                                    element_ids=[e.id for e in els[i:j]], page=el.page)
                i = j
                continue
            if _is_question(el, opts.max_question_chars):
                j = self._answer(els, i + 1)
                if j > i + 1:
                    a0, a1 = els[i + 1].char_start, els[j - 1].char_end
                    yield self.pair(source, plain_topic(el.text), source.span_text(a0, a1), span=(a0, a1),
                                    element_ids=[e.id for e in els[i:j]], page=el.page)
                    i = j
                    continue
            if el.type == "Table":
                yield from self._table(source, el)
            if opts.definitions:
                n = self._definitions(els, i)
                if n:
                    for k in range(i, i + 2 * n, 2):
                        term, dd = els[k], els[k + 1]
                        yield self.pair(source, opts.definition_template.format(term=plain_topic(term.text)),
                                        dd.text, span=(dd.char_start, dd.char_end),
                                        element_ids=[term.id, dd.id], page=term.page)
                    i += 2 * n
                    continue
            i += 1

    def _json(self, source: Source, el: Element, rec: dict) -> Iterator[NewPair]:
        """One pair from a JSON record with a question and an answer field (or a title and a text,
        ``json_qa``); the response is the
        answer's characters inside its JSON string, so a string with escapes (whose text is not the
        value) makes no pair rather than an inexact span."""
        found = json_qa(rec)
        if found is None:
            return
        q, a = found[0], str(rec[found[1]])
        quoted = json.dumps(a, ensure_ascii=False)
        at = el.text.find(quoted)
        if quoted[1:-1] != a or at < 0:
            return
        a0 = el.char_start + at + 1
        a1 = a0 + len(a)
        if source.span_text(a0, a1) != a:
            return
        yield self.pair(source, q, a, span=(a0, a1), element_ids=[el.id], page=el.page)

    def _definitions(self, els: list[Element], i: int) -> int:
        """How many term/definition pairs start at ``i`` (0 unless at least two in a row)."""
        n = 0
        k = i
        while k + 1 < len(els):
            term, dd = els[k], els[k + 1]
            t = term.text.strip()
            if (term.type in ("UncategorizedText", "Text", "NarrativeText") and len(t) <= 80
                    and t[-1:] not in ".?!:;," and dd.type == "ListItem"
                    and not (k + 2 < len(els) and els[k + 2].type == "ListItem")):
                n += 1
                k += 2
            else:
                break
        return n if n >= 2 else 0

    def _qa_rows(self, el: Element) -> list[list[str]]:
        """The question/answer rows of a two-column table (empty if it is not one)."""
        if not self.options.tables or el.type != "Table" or not el.metadata.get("text_as_html"):
            return []
        rows = [r for r in _table_rows(el.metadata["text_as_html"]) if any(r)]
        if len(rows) < 1 or any(len(r) != 2 for r in rows):
            return []
        header = [c.lower().strip(" :") for c in rows[0]]
        has_header = header[0] in _Q_HEADER and header[1] in _A_HEADER
        body = rows[1:] if has_header else rows
        if not body or (not has_header and sum(r[0].endswith("?") for r in body) * 2 < len(body)):
            return []
        return body

    def _table(self, source: Source, el: Element) -> Iterator[NewPair]:
        body = self._qa_rows(el)
        text = source.document.text
        cursor = el.char_start
        for q, a in body:
            if not q or not a:
                continue
            at = find_cell(text, q, cursor, el.char_end)
            cursor = at[1] if at else cursor
            span = find_cell(text, a, cursor, el.char_end)
            if span is None:  # not in the table's text as it stands: no exact span, no pair
                continue
            cursor = span[1]
            yield self.pair(source, q, text[span[0]:span[1]], span=span, element_ids=[el.id], page=el.page)
