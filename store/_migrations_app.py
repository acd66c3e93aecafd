"""Migrations of the app area (names m050-m059); see store/migrations.py. Append only."""

from __future__ import annotations

import duckdb

from store.migrations import migration


@migration
def m050_search_text(con: duckdb.DuckDBPyConnection) -> None:
    # Derived, rebuildable: the lower-cased text of each pair revision, so a text search scans
    # one column with a plain substring match instead of three ILIKEs (store/views.py keeps
    # it in step with the append-only pair_revisions before each search).
    con.execute("""
        CREATE TABLE search_text (
            revision_id VARCHAR PRIMARY KEY,
            text VARCHAR NOT NULL
        )""")
