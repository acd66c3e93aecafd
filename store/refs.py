"""Id references: a full id, or an unambiguous prefix of one.

Ids are long (content hashes, time-sortable event ids) and people type the first few
characters, as with git. ``by_prefix`` turns such a reference into the one full id it names
or raises: ``NoSuchId`` when no id starts with it, ``AmbiguousId`` when several do (the
message lists them). Both are ``KeyError``s, so callers that catch ``KeyError`` keep working.

This module only matches prefixes; each record kind's own module (``runs.get``,
``slices.get``, ``pairs.resolve``, ``documents.find``, ``errors.resolve_prediction``...)
decides what else a reference may be (a run name, ``slice@version``, a uri) and calls it.
"""

from __future__ import annotations

import duckdb

# kind -> table; the only identifiers this module puts into SQL (never user text).
TABLES = {
    "run": "runs",
    "slice": "slices",
    "pair": "pairs",
    "prediction": "predictions",
    "prediction set": "prediction_sets",
    "document": "documents",
}
SHOWN = 8  # candidates listed in an ambiguity error


class NoSuchId(KeyError):
    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


class AmbiguousId(KeyError):
    def __init__(self, message: str, candidates: list[str]):
        super().__init__(message)
        self.candidates = candidates

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def matches(con: duckdb.DuckDBPyConnection, kind: str, prefix: str, limit: int = SHOWN + 1) -> list[str]:
    """Ids of ``kind`` that start with ``prefix`` (at most ``limit``, sorted)."""
    table = TABLES[kind]
    if not prefix:
        return []
    rows = con.execute(f"SELECT id FROM {table} WHERE starts_with(id, ?) ORDER BY id LIMIT ?",
                       [prefix, int(limit)]).fetchall()
    return [r[0] for r in rows]


def ambiguous(kind: str, ref: str, candidates: list[str]) -> AmbiguousId:
    many = len(candidates) > SHOWN
    listed = ", ".join(candidates[:SHOWN]) + (", ..." if many else "")
    count = f"more than {SHOWN}" if many else str(len(candidates))
    return AmbiguousId(f"{kind} {ref!r} is ambiguous: {count} ids start with it ({listed}); type more characters",
                       candidates)


def by_prefix(con: duckdb.DuckDBPyConnection, kind: str, ref: str, hint: str = "") -> str:
    """The one id of ``kind`` equal to or starting with ``ref``."""
    found = matches(con, kind, ref)
    if ref in found:
        return ref
    if len(found) == 1:
        return found[0]
    if found:
        raise ambiguous(kind, ref, found)
    raise NoSuchId(f"no such {kind} {ref!r}" + (f"; {hint}" if hint else ""))
