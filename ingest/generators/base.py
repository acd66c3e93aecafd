"""The ``Generator`` interface: a document (text, elements, chunks) in, candidate pairs out.

A generator is a class with a ``name``, a ``version`` and a typed ``Options`` dataclass
(unknown option keys are rejected). Every pair it makes carries a ``Provenance`` with the
document id, the element ids, the page, the character span into ``Document.text`` and the
generator's name and version, so a reviewer can always follow a pair back to its source.

Add your own in a few lines::

    from ingest.generators import Generator, register

    @register
    class FirstSentence(Generator):
        name = "first-sentence"
        version = "1"

        def generate(self, source):
            for ch in source.chunks:
                yield self.pair(source, f"Summarise: {ch.title}", ch.text,
                                span=(ch.char_start, ch.char_end), element_ids=ch.element_ids,
                                page=ch.page_start)

Or ship it in a package with an entry point in the group ``tuneloop.generators``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ingest.limits import clip
from store.records import Chunk, Document, Element, NewPair, PairContent, Provenance


@dataclass(frozen=True)
class Source:
    """What a generator sees of one document."""

    document: Document
    elements: list[Element]
    chunks: list[Chunk]

    def span_text(self, start: int, end: int) -> str:
        return self.document.text[start:end]


def pick(templates: Sequence[str], key: str) -> str:
    """One of ``templates``, chosen by a hash of ``key``: varied across items, stable across runs."""
    return templates[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(templates)]


@dataclass(frozen=True)
class NoOptions:
    pass


class Generator:
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None, *, author: str = "ingest"):
        self.options = options if options is not None else self.Options()
        self.author = author
        self._notes: list[str] = []

    def note(self, text: str) -> None:
        """Say something about the document just generated (what was dropped and why); the ingest
        summary shows it with the file's warnings."""
        self._notes.append(text)

    def take_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    @classmethod
    def from_options(cls, options: dict[str, Any] | None = None, *, author: str = "ingest") -> Generator:
        """Build from a plain dict (CLI ``key=value`` pairs, TOML), rejecting unknown keys."""
        options = dict(options or {})
        known = {f.name: f for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for generator {cls.name!r}; "
                f"known: {', '.join(sorted(known)) or 'none'}"
            )
        for k, v in list(options.items()):
            try:
                options[k] = _coerce(v, known[k].type, known[k].default)
            except ValueError as exc:
                raise ValueError(f"option {cls.name}.{k}={clip(str(v), 60)!r}: {exc}") from None
        return cls(cls.Options(**options), author=author)

    def version_tag(self) -> str:
        """What goes into ``generator_version``: the class version, plus whatever else changes output."""
        return self.version

    def generate(self, source: Source) -> Iterable[NewPair]:
        raise NotImplementedError

    def generate_many(self, sources: Sequence[Source]) -> list[list[NewPair]]:
        """Pairs for several documents; model-backed generators override this to batch calls."""
        return [list(self.generate(s)) for s in sources]

    def pair(
        self, source: Source, instruction: str, response: str, *, span: tuple[int, int] | None,
        element_ids: Sequence[str], page: int | None, input: str = "", tags: Sequence[str] = (),
    ) -> NewPair:
        doc = source.document
        return NewPair(
            content=PairContent(instruction=instruction, input=input, response=response),
            provenance=Provenance(
                document_id=doc.id, page=page, element_ids=list(element_ids),
                char_start=span[0] if span else None, char_end=span[1] if span else None,
                generator=self.name, generator_version=self.version_tag(), source_uri=doc.uri,
            ),
            tags=list(tags), author=self.author,
        )


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(value: Any, typ: Any, default: Any) -> Any:
    """Options from the CLI arrive as strings; convert them to the field's default's type.

    Raises ``ValueError`` saying what was expected (the caller names the option)."""
    if not isinstance(value, str):
        return value
    if isinstance(default, bool):
        if value.lower() not in _TRUE + _FALSE:
            raise ValueError("expected true or false")
        return value.lower() in _TRUE
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise ValueError("expected a whole number, e.g. 50") from None
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise ValueError("expected a number, e.g. 0.5") from None
    if isinstance(default, list | tuple) or "list" in str(typ):
        return [v for v in value.split("|") if v]
    return value
