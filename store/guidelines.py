"""The project's annotation guideline: Markdown an admin writes, shown on the Review page.

- ``guidelines`` is a log: every save appends a version (1, 2, ...), nothing is updated or
  deleted; the highest version is the guideline and the others are its history. Saving the text
  that is already current adds nothing.
- The text is stored exactly as written. Rendering it safely (headings, emphasis, lists, code and
  tables, but no link, image or HTML) is the app's job (``app.components.safe_markdown``), so
  `tuneloop guideline show` prints what was saved.
"""

from __future__ import annotations

import duckdb

from store.db import atomic, one
from store.pairs import now
from store.records import Guideline

MAX_CHARS = 100_000  # a guideline is read on every Review page: a book belongs in a link (shown as text)

_COLUMNS = "version, text, author, created_at"


def _guideline(row: tuple) -> Guideline:
    return Guideline(version=row[0], text=row[1], author=row[2], created_at=row[3])


def latest(con: duckdb.DuckDBPyConnection) -> Guideline | None:
    """The guideline (its latest version), or None when none was ever saved."""
    row = one(con, f"SELECT {_COLUMNS} FROM guidelines ORDER BY version DESC LIMIT 1")
    return _guideline(row) if row else None


def history(con: duckdb.DuckDBPyConnection, limit: int = 20) -> list[Guideline]:
    """The saved versions, newest first."""
    rows = con.execute(f"SELECT {_COLUMNS} FROM guidelines ORDER BY version DESC LIMIT ?", [int(limit)]).fetchall()
    return [_guideline(r) for r in rows]


def save(con: duckdb.DuckDBPyConnection, text: str, *, author: str) -> Guideline:
    """Append ``text`` as the new guideline version (the current one if the text is unchanged).
    An empty text is a version too: it clears the guideline. Own transaction (joins a caller's)."""
    if not author:
        raise ValueError("a guideline version names its author")
    if len(text) > MAX_CHARS:
        raise ValueError(f"the guideline has {len(text):,} characters; at most {MAX_CHARS:,} are kept")
    with atomic(con):
        cur = latest(con)
        if cur is not None and cur.text == text:
            return cur
        g = Guideline(version=(cur.version if cur else 0) + 1, text=text, author=author, created_at=now())
        con.execute("INSERT INTO guidelines VALUES (?, ?, ?, ?)", [g.version, g.text, g.author, g.created_at])
    return g
