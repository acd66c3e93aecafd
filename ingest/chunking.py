"""Chunking by title/section with size bounds (pure).

Invariants:
- A chunk is a span of the document text: ``chunk.text == document.text[char_start:char_end]``.
- A chunk never crosses a section boundary unless it merges whole small sections, and it
  never cuts an element unless that one element alone is longer than ``max_chars`` (then
  it is cut at sentence or word boundaries, each piece keeping that element's id).
- Chunk ids hash (document id, span), so the same document and bounds give the same ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest.elements import sections
from store.ids import content_id
from store.records import Chunk, Document, Element

_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class ChunkConfig:
    max_chars: int = 1500
    min_chars: int = 200

    def __post_init__(self) -> None:
        if self.max_chars < 50:
            raise ValueError(f"chunk max_chars must be at least 50 (got {self.max_chars})")
        if not 0 <= self.min_chars <= self.max_chars:
            raise ValueError(f"chunk min_chars must be between 0 and max_chars (got {self.min_chars})")


@dataclass
class _Span:
    start: int
    end: int
    element_ids: list[str]
    pages: list[int]
    title: str
    section: int

    @property
    def size(self) -> int:
        return self.end - self.start


def _cut(text: str, start: int, max_chars: int) -> list[tuple[int, int]]:
    """Cut one long element's text (at offset ``start``) into pieces of at most ``max_chars``."""
    pieces = []
    i, n = 0, len(text)
    while i < n:
        if n - i <= max_chars:
            pieces.append((i, n))
            break
        window = text[i:i + max_chars]
        cut = max((m.end() for m in _BREAK.finditer(window) if m.end() < len(window)), default=0)
        if cut < max_chars // 3:
            sp = window.rfind(" ")
            cut = sp + 1 if sp > max_chars // 3 else max_chars
        pieces.append((i, i + cut))
        i += cut
    out = []
    for a, b in pieces:
        seg = text[a:b]
        a += len(seg) - len(seg.lstrip())
        b -= len(seg) - len(seg.rstrip())
        if b > a:
            out.append((start + a, start + b))
    return out


def bounded_span(elements: list[Element], max_chars: int) -> tuple[int, int, list[str]]:
    """The span of consecutive ``elements`` from the first, up to ``max_chars`` and cut only at an
    element boundary (a first element longer than that alone keeps its first piece); with the
    ids of the elements it covers. Every generator's "a passage of a few elements" is this span."""
    start = end = elements[0].char_start
    ids: list[str] = []
    for el in elements:
        if el.char_end - start > max_chars:
            if not ids:  # one long element: keep its first piece
                end = _cut(el.text, el.char_start, max_chars)[0][1]
                ids.append(el.id)
            break
        end = el.char_end
        ids.append(el.id)
    return start, end, ids


def _spans(elements: list[Element], max_chars: int) -> list[_Span]:
    spans: list[_Span] = []
    for si, sec in enumerate(sections(elements)):
        title = sec.heading.text if sec.heading else ""
        cur: _Span | None = None
        for el in sec.elements:
            pages = [el.page] if el.page else []
            if el.char_end - el.char_start > max_chars:
                if cur:
                    spans.append(cur)
                    cur = None
                for a, b in _cut(el.text, el.char_start, max_chars):
                    spans.append(_Span(a, b, [el.id], pages, title, si))
                continue
            if cur and el.char_end - cur.start <= max_chars:
                cur.end = el.char_end
                cur.element_ids.append(el.id)
                cur.pages += pages
            else:
                if cur:
                    spans.append(cur)
                cur = _Span(el.char_start, el.char_end, [el.id], pages, title, si)
        if cur:
            spans.append(cur)
    return spans


def _merge_small(spans: list[_Span], cfg: ChunkConfig) -> list[_Span]:
    """Merge a small chunk with the next one when both fit in ``max_chars`` together."""
    out: list[_Span] = []
    for sp in spans:
        prev = out[-1] if out else None
        if prev and prev.size < cfg.min_chars and sp.end - prev.start <= cfg.max_chars \
                and prev.element_ids[-1] != sp.element_ids[0]:
            prev.end = sp.end
            prev.element_ids += sp.element_ids
            prev.pages += sp.pages
        else:
            out.append(sp)
    return out


def chunk_document(doc: Document, elements: list[Element], cfg: ChunkConfig | None = None) -> list[Chunk]:
    cfg = cfg or ChunkConfig()
    out = []
    for idx, sp in enumerate(_merge_small(_spans(elements, cfg.max_chars), cfg)):
        out.append(Chunk(
            id=content_id({"document": doc.id, "start": sp.start, "end": sp.end}, prefix="c_"),
            document_id=doc.id, idx=idx, title=sp.title, text=doc.text[sp.start:sp.end],
            element_ids=sp.element_ids, page_start=min(sp.pages) if sp.pages else None,
            page_end=max(sp.pages) if sp.pages else None, char_start=sp.start, char_end=sp.end,
        ))
    return out
