"""``sections``: each heading becomes a templated question; the text under it is the answer.

The response is exactly ``document.text[char_start:char_end]`` (the section body, or its
first ``max_chars`` cut at an element boundary), so reviewers see the source verbatim.

A question names a topic only when the heading names one (``ingest.elements.informative_heading``):
a bare label ("CHAPTER I", "Section 3") or a heading repeated through the document stands for
the nearest informative enclosing heading, else the question quotes the section's opening words
(``content_template``). Markdown syntax left in a heading ("**", "[text](url)", "## ") is not
part of the topic (``plain_topic``). A title taken from the file name, a label or a repeated
heading is not used as ``{doc_title}`` either: it becomes "document".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ingest.chunking import bounded_span
from ingest.elements import (
    Section,
    doc_phrase,
    heading_key,
    informative_heading,
    named_title,
    opening,
    plain_topic,
    sections,
)
from ingest.generators import register
from ingest.generators.base import Generator, Source, pick
from store.records import NewPair

DEFAULT_TEMPLATES = ["What does {doc} say about {heading}?"]


@dataclass(frozen=True)
class SectionsOptions:
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    overview_template: str = "What is {doc} about?"
    question_template: str = "{heading}"  # for headings that already are questions
    # for a section whose heading (and every enclosing one) names no topic
    content_template: str = 'What does {doc} say in the passage that begins "{opening}"?'
    opening_words: int = 8
    min_chars: int = 30
    max_chars: int = 4000
    all_templates: bool = False


@register
class SectionsGenerator(Generator):
    name = "sections"
    version = "2"
    Options = SectionsOptions

    def _body_span(self, sec: Section) -> tuple[int, int, list[str]]:
        return bounded_span(sec.body, self.options.max_chars)

    def generate(self, source: Source) -> Iterator[NewPair]:
        opts: SectionsOptions = self.options
        doc = source.document
        secs = sections(source.elements)
        seen = Counter(heading_key(s.heading.text) for s in secs if s.heading is not None)

        def informative(text: str) -> bool:
            return informative_heading(plain_topic(text), seen[heading_key(text)])

        title = named_title(doc, source.elements, seen[heading_key(doc.title)])
        named = bool(title)
        doc_title = title or "document"
        for sec in secs:
            if sec.heading is None or not sec.body:
                continue
            start, end, body_ids = self._body_span(sec)
            response = doc.text[start:end]
            if len(response) < opts.min_chars:
                continue
            heading = next((plain_topic(h) for h in reversed(sec.path) if informative(h)), "")
            values = {"doc_title": doc_title, "doc": doc_phrase(title), "heading": heading, "heading_path": " > ".join(sec.path),
                      "document": doc.name, "opening": opening(response, opts.opening_words)}
            if not heading:
                templates = [opts.content_template]
            elif named and heading == title:
                templates = [opts.overview_template]
            elif heading.endswith("?"):
                templates = [opts.question_template]
            elif opts.all_templates:
                templates = list(opts.templates)
            else:
                templates = [pick(opts.templates, heading)]
            page = sec.heading.page or sec.body[0].page
            for tpl in templates:
                yield self.pair(source, tpl.format(**values), response, span=(start, end),
                                element_ids=[sec.heading.id, *body_ids], page=page)
