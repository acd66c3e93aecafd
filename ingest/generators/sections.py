"""``sections``: each heading becomes a templated question; the text under it is the answer.

The response is exactly ``document.text[char_start:char_end]`` (the section body, or its
first ``max_chars`` cut at an element boundary), so reviewers see the source verbatim.

A question names a topic only when the heading names one (``ingest.elements.informative_heading``):
a bare label ("CHAPTER I", "Section 3") or a heading repeated through the document stands for
the nearest informative enclosing heading, else the question quotes the section's opening words
(``content_template``). A title taken from the file name, a label or a repeated heading is not
used as ``{doc_title}`` either: it becomes "document".
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ingest.chunking import _cut
from ingest.elements import Section, heading_key, informative_heading, sections, title_from_name
from ingest.generators import register
from ingest.generators.base import Generator, Source
from store.records import NewPair

DEFAULT_TEMPLATES = ["What does the {doc_title} say about {heading}?"]


@dataclass(frozen=True)
class SectionsOptions:
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    overview_template: str = "What is the {doc_title} about?"
    question_template: str = "{heading}"  # for headings that already are questions
    # for a section whose heading (and every enclosing one) names no topic
    content_template: str = 'What does the {doc_title} say in the passage that begins "{opening}"?'
    opening_words: int = 8
    min_chars: int = 30
    max_chars: int = 4000
    all_templates: bool = False


def _pick(templates: list[str], key: str) -> str:
    return templates[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(templates)]


@register
class SectionsGenerator(Generator):
    name = "sections"
    version = "2"
    Options = SectionsOptions

    def _body_span(self, sec: Section) -> tuple[int, int, list[str]]:
        opts: SectionsOptions = self.options
        start = sec.body[0].char_start
        end = start
        ids: list[str] = []
        for el in sec.body:
            if el.char_end - start > opts.max_chars:
                if not ids:  # one long element: keep its first piece
                    end = _cut(el.text, el.char_start, opts.max_chars)[0][1]
                    ids.append(el.id)
                break
            end = el.char_end
            ids.append(el.id)
        return start, end, ids

    def generate(self, source: Source) -> Iterator[NewPair]:
        opts: SectionsOptions = self.options
        doc = source.document
        secs = sections(source.elements)
        seen = Counter(heading_key(s.heading.text) for s in secs if s.heading is not None)

        def informative(text: str) -> bool:
            return informative_heading(text, seen[heading_key(text)])

        title = " ".join(doc.title.split())
        from_name = title == title_from_name(doc.name) and not (
            source.elements and " ".join(source.elements[0].text.split()) == title)
        named = not from_name and informative(title)
        doc_title = title if named else "document"
        for sec in secs:
            if sec.heading is None or not sec.body:
                continue
            start, end, body_ids = self._body_span(sec)
            response = doc.text[start:end]
            if len(response) < opts.min_chars:
                continue
            heading = next((" ".join(h.split()).rstrip(":") for h in reversed(sec.path) if informative(h)), "")
            words = response.split()
            opening = " ".join(words[:opts.opening_words]).rstrip(".,;:!?") + ("..." if len(words) > opts.opening_words else "")
            values = {"doc_title": doc_title, "heading": heading, "heading_path": " > ".join(sec.path),
                      "document": doc.name, "opening": opening}
            if not heading:
                templates = [opts.content_template]
            elif named and heading == title:
                templates = [opts.overview_template]
            elif heading.endswith("?"):
                templates = [opts.question_template]
            elif opts.all_templates:
                templates = list(opts.templates)
            else:
                templates = [_pick(opts.templates, heading)]
            page = sec.heading.page or sec.body[0].page
            for tpl in templates:
                yield self.pair(source, tpl.format(**values), response, span=(start, end),
                                element_ids=[sec.heading.id, *body_ids], page=page)
