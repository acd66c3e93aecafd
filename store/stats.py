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


def loop_facts(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """What the next-step advice needs: where the project stands in the loop (one read, small)."""
    by_status = count_by_status(con)
    newest_slice = con.execute("SELECT name, version, n_items FROM slices ORDER BY created_at DESC LIMIT 1").fetchone()
    live = con.execute("SELECT name FROM runs WHERE status IN ('queued', 'running') ORDER BY created_at DESC LIMIT 1"
                       ).fetchone()
    unpredicted = con.execute(
        """SELECT name FROM runs r WHERE status = 'succeeded'
               AND NOT EXISTS (SELECT 1 FROM prediction_sets ps WHERE ps.run_id = r.id)
           ORDER BY created_at DESC LIMIT 1""").fetchone()
    predicted = con.execute(
        """SELECT r.name, r.created_at,
                  (SELECT count(DISTINCT l.prediction_id) FROM error_labels l JOIN predictions p ON p.id = l.prediction_id
                    JOIN prediction_sets s ON s.id = p.prediction_set_id WHERE s.run_id = r.id AND l.source = 'auto'
                      AND NOT EXISTS (SELECT 1 FROM error_labels h WHERE h.prediction_id = l.prediction_id
                                      AND h.source = 'human')) AS open_errors,
                  (SELECT count(*) FROM preference_pairs pp JOIN predictions p ON p.id = pp.prediction_id
                    JOIN prediction_sets s ON s.id = p.prediction_set_id WHERE s.run_id = r.id) AS corrections,
                  EXISTS (SELECT 1 FROM runs c WHERE c.parent_run_id = r.id) AS retrained
           FROM runs r WHERE EXISTS (SELECT 1 FROM prediction_sets ps WHERE ps.run_id = r.id)
           ORDER BY r.created_at DESC""").fetchall()
    return {
        "pairs": sum(by_status.values()),
        "pending": int(by_status.get("pending", 0)),
        "accepted": int(by_status.get("accepted", 0)),
        "deduped": _scalar(con, "SELECT count(*) FROM duplicate_clusters") > 0,
        "signals": _scalar(con, "SELECT count(*) FROM quality_signals") > 0,
        "newest_slice": f"{newest_slice[0]}@{newest_slice[1]}" if newest_slice else None,
        "live_run": live[0] if live else None,
        "unpredicted_run": unpredicted[0] if unpredicted else None,
        "predicted_runs": [{"name": r[0], "open_errors": int(r[2]), "corrections": int(r[3]), "retrained": bool(r[4])}
                           for r in predicted],
    }
