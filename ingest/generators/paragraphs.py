"""``paragraphs``: windows of a few consecutive paragraphs, for text without usable headings.

A window is up to ``max_chars`` of consecutive body elements (``ingest.chunking.bounded_span``),
never crossing a heading; the response is exactly ``document.text[char_start:char_end]``. The
question names the passage by the nearest informative heading above it, else by the document's
title when that names a topic (``ingest.elements.named_title``), and always quotes the passage's
opening words, so two windows never share a question and no file name reaches a question.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Set
from dataclasses import dataclass, field

from ingest.chunking import _cut, bounded_span
from ingest.elements import (
    HEADING_TYPES,
    heading_key,
    informative_heading,
    inner_quotes,
    named_title,
    opening,
    plain_topic,
)
from ingest.generators import register
from ingest.generators.base import Generator, Source, pick
from ingest.generators.tables import prose_table
from store.records import Element, NewPair

# What a passage is made of; headings, page furniture, images and tables (the ``table``
# generator's) are not, except a table that lays out prose (``prose_table``).
PROSE_TYPES = frozenset({"NarrativeText", "UncategorizedText", "Text", "ListItem", "Address", "EmailAddress",
                         "Formula", "CodeSnippet", "FigureCaption"})

def has_words(text: str) -> bool:
    """Whether an element holds words: a lone "3" or "$1,200" (a figure's callout, a stray page or
    table number, as in unstructured's embedded-images.pdf) opens no passage and joins none."""
    return any(c.isalpha() for c in text)


DEFAULT_TEMPLATES = [
    'What are the key facts in the passage {about}that begins "{opening}"?',
    'What does the passage {about}that begins "{opening}" say?',
]


@dataclass(frozen=True)
class ParagraphsOptions:
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    opening_words: int = 8
    min_chars: int = 80
    max_chars: int = 1500
    all_templates: bool = False


@register
class ParagraphsGenerator(Generator):
    name = "paragraphs"
    version = "1"
    Options = ParagraphsOptions

    def generate(self, source: Source) -> Iterator[NewPair]:
        return self.windows(source)

    def runs(self, elements: list[Element], skip: Set[str] = frozenset()) -> list[list[Element]]:
        """Runs of consecutive prose elements (not in ``skip``), split at headings and other elements."""
        out: list[list[Element]] = []
        cur: list[Element] = []
        for el in elements:
            if (el.type in PROSE_TYPES or prose_table(el)) and el.id not in skip and has_words(el.text):
                cur.append(el)
                continue
            if cur:
                out.append(cur)
            cur = []
        if cur:
            out.append(cur)
        return out

    def windows(self, source: Source, skip: Set[str] = frozenset()) -> Iterator[NewPair]:
        """One pair per window over the prose elements not in ``skip`` (ids another generator used)."""
        opts: ParagraphsOptions = self.options
        doc = source.document
        by_id = {e.id: e for e in source.elements}
        headings = _headings(source.elements)
        title = named_title(doc, source.elements)
        for run in self.runs(source.elements, skip):
            for start, end, ids in _windows(run, opts.max_chars):
                response = doc.text[start:end]
                if len(response.strip()) < opts.min_chars:
                    continue
                about = headings[ids[0]]
                about = f'under "{inner_quotes(about)}" ' if about else (f'in "{inner_quotes(title)}" ' if title else "")
                values = {"about": about, "opening": opening(response, opts.opening_words)}
                key = f"{start}:{end}"
                for tpl in (opts.templates if opts.all_templates else [pick(opts.templates, key)]):
                    yield self.pair(source, tpl.format(**values), response, span=(start, end), element_ids=ids,
                                    page=by_id[ids[0]].page)


def _windows(run: list[Element], max_chars: int) -> Iterator[tuple[int, int, list[str]]]:
    """Consecutive windows over a run; an element longer than ``max_chars`` gives one per piece."""
    i = 0
    while i < len(run):
        el = run[i]
        if el.char_end - el.char_start > max_chars:
            for a, b in _cut(el.text, el.char_start, max_chars):
                yield a, b, [el.id]
            i += 1
            continue
        start, end, ids = bounded_span(run[i:], max_chars)
        i += len(ids)
        yield start, end, ids


def _headings(elements: list[Element]) -> dict[str, str]:
    """Each element's nearest informative heading before it ("" where the last heading names no topic)."""
    seen = Counter(heading_key(e.text) for e in elements if e.type in HEADING_TYPES)
    out: dict[str, str] = {}
    current = ""
    for el in elements:
        if el.type in HEADING_TYPES:
            text = plain_topic(el.text)
            current = text if informative_heading(text, seen[heading_key(el.text)]) else ""
        out[el.id] = current
    return out
