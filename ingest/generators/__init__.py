"""Pair generators, pluggable by name (``tuneloop ingest --generator NAME``).

Built in: ``auto`` (the default: picks the generators below per document, by its structure;
``ingest.generators.auto``), ``sections`` (heading -> templated question, section text ->
response), ``paragraphs`` (windows of untitled text), ``table`` (cell questions from a table's
header), ``email`` (an e-mail's body, named by its subject), ``qa`` (explicit question/answer
structure) and ``model`` (a chat model writes the questions).
Third-party generators register with ``@register`` or through the entry point group
``tuneloop.generators``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from ingest.generators.base import Generator, Source

GENERATORS: dict[str, type[Generator]] = {}
ENTRY_POINT_GROUP = "tuneloop.generators"
_plugins_loaded = False


def register(cls: type[Generator]) -> type[Generator]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    GENERATORS[cls.name] = cls
    return cls


def _load_builtin_and_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    from ingest.generators import auto, mail, model, paragraphs, qa, sections, tables  # noqa: F401  (they register themselves)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        register(cls)
    _plugins_loaded = True


def available() -> list[str]:
    _load_builtin_and_plugins()
    return sorted(GENERATORS)


def create(name: str, options: dict[str, Any] | None = None, *, author: str = "ingest") -> Generator:
    """An instance of the generator called ``name`` with ``options`` (unknown keys rejected)."""
    _load_builtin_and_plugins()
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; available: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name].from_options(options, author=author)


# The generators ``auto`` chooses from: with ``auto`` in a run, options for these (``-o sections.min_chars=50``)
# go to auto's choice.
AUTO_PICKS = ("qa", "email", "sections", "table", "paragraphs")


def options_allowed(names: Sequence[str]) -> set[str]:
    """The generator names a run of ``names`` takes options for."""
    return set(names) | (set(AUTO_PICKS) if "auto" in names else set())


def create_all(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None, *,
               author: str = "ingest") -> list[Generator]:
    """The generators of a run, each with its options (unknown keys and bad values rejected, naming
    them); with ``auto``, options for the generators it picks are checked here and passed on to it.
    Options for a generator the run does not use are an error."""
    options = dict(options or {})
    unused = sorted(set(options) - options_allowed(names))
    if unused:
        raise ValueError(f"options given for generator(s) {', '.join(unused)}, which this run does not use; "
                         f"the generators used are {', '.join(names)}")
    gens = [create(n, dict(options.get(n) or {}), author=author) for n in names]
    picks = {n: dict(o) for n, o in options.items() if n not in names}
    for n, o in picks.items():
        create(n, o, author=author)  # checked now, before any work
    for g in gens:
        if g.name == "auto":
            g.pick_options = picks  # type: ignore[attr-defined]
    return gens


def option_defaults(name: str) -> dict[str, Any]:
    """The options generator ``name`` takes, with their defaults."""
    _load_builtin_and_plugins()
    return {f.name: getattr(GENERATORS[name].Options(), f.name) for f in dataclasses.fields(GENERATORS[name].Options)}


def split_option(item: str, generators: list[str]) -> tuple[str, str, str]:
    """One generator option, ``NAME.key=value`` (or ``key=value`` when ``generators`` has one name),
    as (generator, key, value) with the text stripped; raises ValueError saying how to write it."""
    if "=" not in item:
        raise ValueError(f"option {item.strip()!r} is not key=value (e.g. {(generators or ['sections'])[0]}.min_chars=50)")
    key, value = (x.strip() for x in item.split("=", 1))
    if "." in key:
        gen, key = key.split(".", 1)
    elif len(generators) == 1:
        gen = generators[0]
    else:
        raise ValueError(f"option {item.strip()!r}: name the generator, e.g. {generators[0]}.{key}=...")
    return gen, key, value


def options_from_text(name: str, text: str) -> dict[str, str]:
    """Options of generator ``name`` written one ``key=value`` per line (blank lines and ``#``
    comments skipped), as the CLI's ``-o name.key=value``; values stay text, which ``create``
    converts. Raises ValueError for a line that is not key=value, an unknown key or a bad value."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        gen, key, value = split_option(line, [name])
        if gen != name:
            raise ValueError(f"{name} option {line!r} names another generator ({gen}): write key=value")
        out[key] = value
    create(name, out)
    return out


def why_no_pairs(elements: list[Any], generators: list[Any]) -> str:
    """Why ``generators`` (names or instances) made no pair from a document with these elements
    (``ingest.generators.auto.why_no_pairs``; pure)."""
    _load_builtin_and_plugins()
    from ingest.generators.auto import why_no_pairs as explain

    return explain(elements, generators)


__all__ = ["AUTO_PICKS", "create_all", "options_allowed", "GENERATORS", "Generator", "Source", "available", "create", "option_defaults", "options_from_text",
           "register", "split_option", "why_no_pairs"]
