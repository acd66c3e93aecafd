"""Project settings: small named values the app remembers for everyone on the project, such as
the Ingest page's last choice of pair generators and their options.

- ``settings`` is a log: every change appends a version of the name (1, 2, ...); the highest
  version is the value, the others are its history; nothing is updated or deleted. Writing the
  value that is already current adds nothing.
- Values are JSON. A reader checks what it gets: a value saved by an older version of the app,
  or naming something that no longer exists, must not break a page (it falls back to defaults).
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from store.db import atomic, one
from store.pairs import now

MAX_CHARS = 100_000  # settings are small: a choice and its options, not data


def get(con: duckdb.DuckDBPyConnection, name: str, default: Any = None) -> Any:
    """The current value of ``name``, or ``default`` when it was never set."""
    row = one(con, "SELECT value FROM settings WHERE name = ? ORDER BY version DESC LIMIT 1", [name])
    return json.loads(row[0]) if row else default


def put(con: duckdb.DuckDBPyConnection, name: str, value: Any, *, author: str) -> bool:
    """Make ``value`` (JSON-serialisable) the current value of ``name``; False when it already was.
    Own transaction (joins a caller's)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    if len(text) > MAX_CHARS:
        raise ValueError(f"setting {name!r} is {len(text):,} characters of JSON; at most {MAX_CHARS:,} are kept")
    with atomic(con):
        row = one(con, "SELECT version, value FROM settings WHERE name = ? ORDER BY version DESC LIMIT 1", [name])
        if row is not None and json.loads(row[1]) == json.loads(text):
            return False
        con.execute("INSERT INTO settings VALUES (?, ?, ?, ?, ?)",
                    [name, (row[0] if row else 0) + 1, text, author, now()])
    return True
