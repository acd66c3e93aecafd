"""``auto`` (the default): choose the generators per document, by its structure.

The rule, in one place (``plan``): ``qa`` always runs (it finds nothing in text that is not
Q/A shaped); an e-mail gets ``email``, else a document with headings gets ``sections``; a
document with tables that have a header row gets ``table``; and the prose that no pair covers yet
(untitled text, the preamble before the first heading, the rest of a long section or e-mail)
gets ``paragraphs`` windows. Each pair keeps the name and version of the generator that made it,
so ``auto`` and an explicit ``-g NAME`` make the same pairs for the same part of a document.
A pair whose instruction and response another generator already made is dropped.

``why_no_pairs`` says, for a document that got no pair, why, in words a user can act on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ingest.elements import HEADING_TYPES
from ingest.generators import register
from ingest.generators.base import Generator, Source
from ingest.generators.mail import is_email
from ingest.generators.paragraphs import PROSE_TYPES, ParagraphsGenerator, ParagraphsOptions, has_words
from ingest.generators.qa import json_record
from ingest.generators.tables import header_and_rows, prose_table, record_table
from store.records import Element, NewPair


@dataclass(frozen=True)
class AutoOptions:
    qa: bool = True
    min_chars: int = 30
    max_chars: int = 1500


def plan(source: Source, *, qa: bool = True) -> list[str]:
    """The generators ``auto`` runs on this document, in order (``paragraphs`` last: it fills the gaps)."""
    names = ["qa"] if qa else []
    if is_email(source):
        names.append("email")
    elif any(e.type in HEADING_TYPES for e in source.elements):
        names.append("sections")
    if any(header_and_rows(e)[1] for e in source.elements if e.type == "Table") or record_table(source.elements)[2]:
        names.append("table")
    return [*names, "paragraphs"]


@register
class AutoGenerator(Generator):
    name = "auto"
    version = "1"
    Options = AutoOptions

    # Options the user gave for the generators auto picks (``create_all``): they win over auto's limits.
    pick_options: dict[str, dict] = {}  # noqa: RUF012  (replaced per instance, never mutated)

    def _sub(self, name: str) -> Generator:
        from ingest.generators import create

        opts: AutoOptions = self.options
        limits = {"sections": {"min_chars": opts.min_chars, "max_chars": max(opts.max_chars, 4000)},
                  "email": {"min_chars": opts.min_chars, "max_chars": max(opts.max_chars, 4000)},
                  "paragraphs": {"min_chars": max(opts.min_chars, 80), "max_chars": opts.max_chars}}
        return create(name, {**limits.get(name, {}), **self.pick_options.get(name, {})}, author=self.author)

    def generate(self, source: Source) -> Iterator[NewPair]:
        made: set[tuple[str, str]] = set()
        # JSON records are data, not prose: qa pairs the Q/A-shaped ones, nothing windows their raw JSON
        covered: set[str] = {e.id for e in source.elements if json_record(e.text) is not None}
        for name in plan(source, qa=self.options.qa):
            gen = self._sub(name)
            pairs = gen.windows(source, covered) if isinstance(gen, ParagraphsGenerator) else gen.generate(source)
            for p in pairs:
                key = (p.content.instruction, p.content.response)
                if key in made:
                    continue
                made.add(key)
                covered.update(p.provenance.element_ids)
                yield p


def why_no_pairs(elements: Sequence[Element], generators: Sequence[str | Generator]) -> str:
    """Why ``generators`` made no pair from a document with these ``elements``: one sentence per
    generator, naming what it looks for and what to try instead."""
    text = [e for e in elements if e.text.strip()]
    if not text:
        return "the parser found no text in it (a scan without OCR, an image, or an empty document)"
    records = [r for r in (json_record(e.text) for e in text) if r is not None]
    if len(records) == len(text):
        fields = sorted({str(k) for r in records[:50] for k in r})[:8]
        return (f"it holds {len(records)} JSON record(s) (fields: {', '.join(fields)}) without a question and an "
                f"answer field (or a title and a text field): it is a dataset, so import it with `tuneloop import FILE --map "
                f"instruction=FIELD,response=FIELD`")
    prose = [e for e in text if (e.type in PROSE_TYPES or prose_table(e)) and has_words(e.text)]
    chars = sum(len(e.text.strip()) for e in prose)
    tables = [e for e in text if e.type == "Table"]
    headed = [e for e in tables if header_and_rows(e)[1]]
    reasons: list[str] = []
    for g in generators:
        name = g if isinstance(g, str) else g.name
        if name == "auto":
            if not prose and not headed:
                kinds = sorted({e.type for e in text})
                why = (f"{len(tables)} table(s) without a header row and data rows" if tables
                       else f"only {', '.join(kinds)} elements")
                reasons.append(f"auto: no prose and no table with a header row ({why})")
            else:
                need = ParagraphsOptions().min_chars
                longest = max((sum(len(e.text.strip()) for e in run) for run in ParagraphsGenerator().runs(text)),
                              default=0)
                reasons.append(f"auto: its text is too short to pair ({chars} characters of prose; a passage needs "
                               f"{need})" if longest >= need or chars < need else
                               f"auto: its prose ({chars} characters) comes in pieces too short to pair: headings or "
                               f"other elements split it into runs of at most {longest} characters (a passage needs "
                               f"{need}); try -g sections")
        elif name == "sections":
            reasons.append("sections: no heading with text under it" if any(e.type in HEADING_TYPES for e in text)
                           else "sections: no headings (Title elements); try -g auto or -g paragraphs")
        elif name == "qa":
            reasons.append("qa: no questions with answers, Q:/A: lines, definition lists or question/answer tables")
        elif name == "table":
            reasons.append(f"table: none of its {len(tables)} table(s) has a header row and data rows" if tables
                           else "table: no tables")
        elif name == "email":
            reasons.append("email: not an e-mail (no subject or sender), or its body is too short")
        elif name == "paragraphs":
            reasons.append(f"paragraphs: no passage of {ParagraphsOptions().min_chars} characters or more "
                           f"({chars} characters of prose in all)")
        else:
            reasons.append(f"{name}: made no pairs")
    return "; ".join(reasons) or "no generator was run"
