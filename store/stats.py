"""Project-wide counts for ``tuneloop stats`` and the Overview page."""

from __future__ import annotations

from typing import Any

import duckdb

from store.db import scalar
from store.pairs import count_by_status


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(scalar(con, sql))


def project_stats(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    return {
        "documents": _scalar(con, "SELECT count(*) FROM documents"),
        "elements": _scalar(con, "SELECT count(*) FROM elements"),
        "chunks": _scalar(con, "SELECT count(*) FROM chunks"),
        "pairs": _scalar(con, "SELECT count(*) FROM pairs"),
        "pairs_by_status": count_by_status(con),
        "revisions": _scalar(con, "SELECT count(*) FROM pair_revisions"),
        "reviews": _scalar(con, "SELECT count(*) FROM reviews"),
        "duplicate_clusters": _scalar(con, "SELECT count(*) FROM duplicate_clusters"),
        "duplicates_marked": _scalar(con, "SELECT count(*) FROM pairs WHERE duplicate_of IS NOT NULL"),
        "duplicate_clusters_by_kind": {
            kind: {"clusters": int(n), "members": int(m)}
            for kind, n, m in con.execute(
                """SELECT c.kind, count(DISTINCT c.id), count(m.pair_id) FROM duplicate_clusters c
                   LEFT JOIN duplicate_members m ON m.cluster_id = c.id
                   WHERE c.resolution <> 'not_duplicates' GROUP BY c.kind ORDER BY c.kind"""
            ).fetchall()
        },
        "pairs_flagged": _scalar(con,
            """SELECT count(DISTINCT s.pair_id) FROM quality_signals s
               JOIN pairs p ON p.head_revision_id = s.revision_id WHERE s.flagged"""),
        "signals_flagged": {
            name: int(n)
            for name, n in con.execute(
                "SELECT name, count(*) FROM quality_signals WHERE flagged GROUP BY name ORDER BY name"
            ).fetchall()
        },
        "embeddings": _scalar(con, "SELECT count(*) FROM embeddings"),
        "clusterings": _scalar(con, "SELECT count(*) FROM clusterings"),
        "slices": _scalar(con, "SELECT count(*) FROM slices"),
        "runs": _scalar(con, "SELECT count(*) FROM runs"),
        "runs_by_status": {
            s: int(n) for s, n in con.execute("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status").fetchall()
        },
        "predictions": _scalar(con, "SELECT count(*) FROM predictions"),
        "error_labels": _scalar(con, "SELECT count(*) FROM error_labels"),
        "preference_pairs": _scalar(con, "SELECT count(*) FROM preference_pairs"),
    }


def authors(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """How many pairs and documents each author created (``author`` of the pair or document row,
    which later edits and reviews never change)."""
    return {
        str(a): int(n)
        for a, n in con.execute(
            """SELECT author, count(*) FROM (SELECT author FROM pairs UNION ALL SELECT author FROM documents)
               GROUP BY author ORDER BY author"""
        ).fetchall()
    }
