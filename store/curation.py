"""Curation results: duplicate clusters, quality signals, embeddings, topic clusterings.

These tables hold *derived* data computed by ``analysis/`` from pair revisions; the pairs
themselves are never changed here (marking duplicates goes through
``store.pairs.set_status_many``, which records a review per pair).

Invariants:
- Re-running an analysis replaces its own earlier automatic output and leaves human
  decisions alone: duplicate clusters with ``resolution`` other than ``auto`` (a reviewer
  confirmed them or said "not duplicates") are kept as they are, and new clusters with
  the same id are skipped; signals of the detectors that ran are replaced for the
  revisions they ran on (all versions of that detector name), so a rule fix never leaves
  stale flags beside new ones.
- Embeddings are keyed by (revision, model name@version, field) and never recomputed:
  ``missing_embeddings`` returns only head revisions without a vector for that model,
  so an edit (a new revision) is embedded again and nothing else is.
- Clusterings are append-only runs; slice filters use the newest one.
- Writes move Arrow tables (``con.register``); every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from store.db import atomic, frame, scalar
from store.filters import compile_filter
from store.ids import event_id
from store.pairs import now, set_status_many
from store.records import DuplicateCluster, Pair, SliceFilter, Status

_FROM = "pairs p JOIN pair_revisions r ON r.id = p.head_revision_id"


def _register(con: duckdb.DuckDBPyConnection, name: str, data: pl.DataFrame | pa.Table) -> None:
    con.register(name, data.to_arrow() if isinstance(data, pl.DataFrame) else data)


def curation_frame(con: duckdb.DuckDBPyConnection, flt: SliceFilter | None = None) -> pl.DataFrame:
    """Head content of the pairs matching ``flt`` (default: all, duplicates included)."""
    where, params = compile_filter(flt or SliceFilter(exclude_duplicates=False))
    return frame(con,
        f"""SELECT p.id AS pair_id, p.head_revision_id AS revision_id, p.status, p.split, p.duplicate_of,
                   r.instruction, r.input, r.response, r.messages::VARCHAR AS messages,
                   coalesce(p.document_id, p.id) AS document_unit,
                   p.created_at
            FROM {_FROM} WHERE {where} ORDER BY p.created_at, p.id""",
        params,
    )


# ------------------------------------------------------------------------------ duplicates


def save_duplicate_clusters(
    con: duckdb.DuckDBPyConnection, members: pl.DataFrame, kinds: Sequence[str], params: dict[str, Any]
) -> dict[str, int]:
    """Replace the automatic clusters of ``kinds`` by ``members`` (one transaction).

    ``members`` has cluster_id, kind, pair_id, revision_id, kept_pair_id, is_kept, similarity.
    Returns {"clusters": n, "members": n} written.
    """
    ts = now()
    clusters = members.group_by("cluster_id", "kind", "kept_pair_id").agg(size=pl.len()).with_columns(
        params=pl.lit(orjson.dumps(params).decode())
    )
    with atomic(con):
        _register(con, "_kinds", pa.table({"kind": list(kinds)}))
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _old AS SELECT id FROM duplicate_clusters
               WHERE resolution = 'auto' AND kind IN (SELECT kind FROM _kinds)"""
        )
        con.execute("DELETE FROM duplicate_members WHERE cluster_id IN (SELECT id FROM _old)")
        con.execute("DELETE FROM duplicate_clusters WHERE id IN (SELECT id FROM _old)")
        _register(con, "_clusters", clusters)
        _register(con, "_members", members)
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _new AS SELECT * FROM _clusters c
               WHERE NOT EXISTS (SELECT 1 FROM duplicate_clusters d WHERE d.id = c.cluster_id)"""
        )
        con.execute(
            """INSERT INTO duplicate_clusters (id, kind, params, kept_pair_id, size, resolution, created_at)
               SELECT cluster_id, kind, params::JSON, kept_pair_id, size, 'auto', ? FROM _new""",
            [ts],
        )
        con.execute(
            """INSERT INTO duplicate_members (cluster_id, pair_id, revision_id, similarity, is_kept)
               SELECT m.cluster_id, m.pair_id, m.revision_id, m.similarity, m.is_kept
               FROM _members m JOIN _new n ON n.cluster_id = m.cluster_id"""
        )
        out = {
            "clusters": int(scalar(con, "SELECT count(*) FROM _new")),
            "members": int(scalar(con, "SELECT count(*) FROM _members m JOIN _new n ON n.cluster_id = m.cluster_id")),
        }
        for t in ("_old", "_new"):
            con.execute(f"DROP TABLE {t}")
        for t in ("_kinds", "_clusters", "_members"):
            con.unregister(t)
        return out


def duplicate_members(
    con: duckdb.DuckDBPyConnection, kinds: Sequence[str] | None = None, *, include_rejected: bool = False
) -> pl.DataFrame:
    """Stored members (cluster_id, kind, pair_id, revision_id, kept_pair_id, is_kept, similarity, resolution)."""
    where = ["true"]
    params: list[Any] = []
    if kinds:
        where.append("c.kind IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(kinds))
    if not include_rejected:
        where.append("c.resolution <> 'not_duplicates'")
    return frame(con,
        f"""SELECT m.cluster_id, c.kind, m.pair_id, m.revision_id, c.kept_pair_id, m.is_kept, m.similarity,
                   c.resolution
            FROM duplicate_members m JOIN duplicate_clusters c ON c.id = m.cluster_id
            WHERE {' AND '.join(where)} ORDER BY c.kind, m.cluster_id, m.is_kept DESC, m.similarity DESC, m.pair_id""",
        params,
    )


def mark_duplicates(con: duckdb.DuckDBPyConnection, marks: pl.DataFrame, *, author: str, comment: str) -> int:
    """Mark (pair_id, duplicate_of) rows as duplicates (a review each); already-marked pairs are left alone."""
    if marks.height == 0:
        return 0
    return set_status_many(
        con, marks["pair_id"].to_list(), Status.duplicate, author=author, comment=comment,
        duplicate_of=marks["duplicate_of"].to_list(),
    )


def clusters(con: duckdb.DuckDBPyConnection, kind: str | None = None, *, limit: int = 50, offset: int = 0) -> list[DuplicateCluster]:
    """A page of clusters (largest first) with their members."""
    params: list[Any] = []
    where = "true"
    if kind:
        where = "kind = ?"
        params.append(kind)
    rows = con.execute(
        f"""SELECT id, kind, params::VARCHAR, kept_pair_id FROM duplicate_clusters WHERE {where}
            ORDER BY size DESC, id LIMIT ? OFFSET ?""",
        [*params, int(limit), int(offset)],
    ).fetchall()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    mem = con.execute(
        """SELECT cluster_id, pair_id, similarity FROM duplicate_members
           WHERE cluster_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY is_kept DESC, similarity DESC, pair_id""",
        [ids],
    ).fetchall()
    by: dict[str, list[tuple[str, float]]] = {}
    for cid, pid, sim in mem:
        by.setdefault(cid, []).append((pid, float(sim)))
    return [
        DuplicateCluster(id=r[0], kind=r[1], params=orjson.loads(r[2]) if r[2] else {}, kept_pair_id=r[3],
                         members=by.get(r[0], []))
        for r in rows
    ]


def resolve_cluster(con: duckdb.DuckDBPyConnection, cluster_id: str, resolution: str) -> None:
    """A reviewer's verdict on a cluster: confirmed or not_duplicates (kept across re-runs)."""
    if resolution not in ("auto", "confirmed", "not_duplicates"):
        raise ValueError(f"resolution must be auto, confirmed or not_duplicates, not {resolution!r}")
    con.execute("UPDATE duplicate_clusters SET resolution = ? WHERE id = ?", [resolution, cluster_id])


# ------------------------------------------------------------------------------ signals


def save_signals(
    con: duckdb.DuckDBPyConnection, signals: pl.DataFrame, revision_ids: Sequence[str], names: Sequence[str]
) -> int:
    """Replace the signals ``names`` of ``revision_ids`` by the rows of ``signals`` (one transaction).

    ``signals`` has revision_id, pair_id, name, version, score, flagged, reason, details (JSON text).
    """
    ts = now()
    with atomic(con):
        _register(con, "_revs", pa.table({"rid": pa.array(list(revision_ids), pa.string())}))
        _register(con, "_names", pa.table({"name": pa.array(list(names), pa.string())}))
        con.execute(
            """DELETE FROM quality_signals WHERE name IN (SELECT name FROM _names)
               AND revision_id IN (SELECT rid FROM _revs)"""
        )
        n = 0
        if signals.height:
            _register(con, "_sig", signals.select(
                "revision_id", "pair_id", "name", "version", "score", "flagged", "reason", "details"
            ))
            con.execute(
                """INSERT INTO quality_signals (revision_id, pair_id, name, version, score, flagged, reason, details, created_at)
                   SELECT DISTINCT ON (revision_id, name, version)
                          revision_id, pair_id, name, version, score, flagged, coalesce(reason, ''), details::JSON, ?
                   FROM _sig""",
                [ts],
            )
            n = signals.height
            con.unregister("_sig")
        con.unregister("_revs")
        con.unregister("_names")
        return n


def signal_summary(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per detector on current head revisions: name, version(s), flagged, scored."""
    return frame(con,
        """SELECT s.name, string_agg(DISTINCT s.version, ',') AS version,
                  count(*) FILTER (WHERE s.flagged) AS flagged, count(*) AS scored
           FROM quality_signals s JOIN pairs p ON p.head_revision_id = s.revision_id
           GROUP BY s.name ORDER BY s.name"""
    )


def flagged(con: duckdb.DuckDBPyConnection, name: str, *, limit: int = 20) -> pl.DataFrame:
    """The highest-scoring flagged head revisions of one signal with their text."""
    return frame(con,
        f"""SELECT s.pair_id, s.score, s.reason, s.details::VARCHAR AS details, r.instruction, r.input, r.response
            FROM quality_signals s JOIN {_FROM} ON p.head_revision_id = s.revision_id
            WHERE s.name = ? AND s.flagged ORDER BY s.score DESC, s.pair_id LIMIT ?""",
        [name, int(limit)],
    )


# ------------------------------------------------------------------------------ embeddings


def missing_embeddings(
    con: duckdb.DuckDBPyConnection, model: str, field: str, flt: SliceFilter | None = None,
    revision_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Revisions without a vector for (model, field), with their text: the head revisions of
    the pairs matching ``flt``, or exactly ``revision_ids`` (e.g. a slice's frozen revisions)."""
    if revision_ids is not None:
        _register(con, "_want", pa.table({"rid": pa.array(list(revision_ids), pa.string())}))
        try:
            return frame(con,
                """SELECT DISTINCT ON (r.id) r.pair_id, r.id AS revision_id, r.instruction, r.input, r.response,
                          r.messages::VARCHAR AS messages
                   FROM _want w JOIN pair_revisions r ON r.id = w.rid
                   WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.revision_id = r.id AND e.model = ? AND e.field = ?)
                   ORDER BY r.id""",
                [model, field],
            )
        finally:
            con.unregister("_want")
    where, params = compile_filter(flt or SliceFilter(exclude_duplicates=False))
    return frame(con,
        f"""SELECT p.id AS pair_id, p.head_revision_id AS revision_id, r.instruction, r.input, r.response,
                   r.messages::VARCHAR AS messages
            FROM {_FROM}
            WHERE {where} AND NOT EXISTS (SELECT 1 FROM embeddings e
                WHERE e.revision_id = p.head_revision_id AND e.model = ? AND e.field = ?)
            ORDER BY p.created_at, p.id""",
        [*params, model, field],
    )


def save_embeddings(
    con: duckdb.DuckDBPyConnection, model: str, field: str, revision_ids: Sequence[str], vectors: np.ndarray
) -> int:
    """Insert vectors (float32 rows) for revisions that have none yet for (model, field)."""
    if len(revision_ids) != len(vectors):
        raise ValueError(f"{len(revision_ids)} revision ids but {len(vectors)} vectors")
    if not len(revision_ids):
        return 0
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(v.reshape(-1))
    offsets = pa.array(np.arange(0, v.size + 1, v.shape[1], dtype=np.int32))
    tbl = pa.table({"revision_id": pa.array(list(revision_ids), pa.string()),
                    "vector": pa.ListArray.from_arrays(offsets, flat)})
    ts = now()
    with atomic(con):
        _register(con, "_emb", tbl)
        before = int(scalar(con, "SELECT count(*) FROM embeddings WHERE model = ? AND field = ?", [model, field]))
        con.execute(
            """INSERT INTO embeddings (revision_id, model, field, vector, created_at)
               SELECT DISTINCT ON (e.revision_id) e.revision_id, ?, ?, e.vector, ? FROM _emb e
               WHERE NOT EXISTS (SELECT 1 FROM embeddings x WHERE x.revision_id = e.revision_id
                                 AND x.model = ? AND x.field = ?)""",
            [model, field, ts, model, field],
        )
        after = int(scalar(con, "SELECT count(*) FROM embeddings WHERE model = ? AND field = ?", [model, field]))
        con.unregister("_emb")
        return after - before


def load_embeddings(
    con: duckdb.DuckDBPyConnection, model: str, field: str, flt: SliceFilter | None = None,
    revision_ids: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, np.ndarray]:
    """(rows, matrix): head revisions matching ``flt`` (or exactly ``revision_ids``) that have a
    vector, with pair_id, revision_id, status, created_at, text columns, and their vectors."""
    if revision_ids is not None:
        _register(con, "_want", pa.table({"rid": pa.array(list(revision_ids), pa.string()),
                                          "pos": pa.array(range(len(revision_ids)), pa.int64())}))
        try:
            df = frame(con,
                """SELECT r.pair_id, r.id AS revision_id, p.status, p.created_at, r.instruction, r.input,
                          r.response, e.vector
                   FROM _want w JOIN pair_revisions r ON r.id = w.rid JOIN pairs p ON p.id = r.pair_id
                   JOIN embeddings e ON e.revision_id = r.id AND e.model = ? AND e.field = ?
                   ORDER BY w.pos""",
                [model, field],
            )
        finally:
            con.unregister("_want")
    else:
        where, params = compile_filter(flt or SliceFilter(exclude_duplicates=False))
        df = frame(con,
            f"""SELECT p.id AS pair_id, p.head_revision_id AS revision_id, p.status, p.created_at,
                       r.instruction, r.input, r.response, e.vector
                FROM {_FROM} JOIN embeddings e ON e.revision_id = p.head_revision_id AND e.model = ? AND e.field = ?
                WHERE {where} ORDER BY p.created_at, p.id""",
            [model, field, *params],
        )
    if df.height == 0:
        return df.drop("vector"), np.zeros((0, 0), dtype=np.float32)
    vec = df["vector"]
    dim = int(vec.list.len().max() or 0)
    mat = vec.explode().to_numpy().astype(np.float32).reshape(df.height, dim)
    return df.drop("vector"), mat


def embedding_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = con.execute("SELECT model || ' / ' || field, count(*) FROM embeddings GROUP BY 1 ORDER BY 1").fetchall()
    return {k: int(n) for k, n in rows}


# ------------------------------------------------------------------------------ clusterings


def save_clustering(
    con: duckdb.DuckDBPyConnection, *, model: str, k: int, params: dict[str, Any],
    topics: pl.DataFrame, assignments: pl.DataFrame,
) -> str:
    """Append a clustering run: topics (cluster, name, keywords, size) and assignments
    (revision_id, pair_id, cluster, x, y). Returns its id."""
    cid = event_id("cl_")
    ts = now()
    with atomic(con):
        con.execute("INSERT INTO clusterings VALUES (?, ?, ?, ?::JSON, ?)",
                    [cid, model, int(k), orjson.dumps(params).decode(), ts])
        _register(con, "_topics", topics.select("cluster", "name", "keywords", "size"))
        con.execute(
            """INSERT INTO topic_clusters (clustering_id, cluster, name, keywords, size)
               SELECT ?, cluster, name, keywords, size FROM _topics""",
            [cid],
        )
        _register(con, "_assign", assignments.select("revision_id", "pair_id", "cluster", "x", "y"))
        con.execute(
            """INSERT INTO cluster_assignments (clustering_id, revision_id, pair_id, cluster, x, y)
               SELECT DISTINCT ON (revision_id) ?, revision_id, pair_id, cluster, x, y FROM _assign""",
            [cid],
        )
        con.unregister("_topics")
        con.unregister("_assign")
        return cid


def latest_clustering_id(con: duckdb.DuckDBPyConnection) -> str | None:
    return scalar(con, "SELECT id FROM clusterings ORDER BY created_at DESC, id DESC LIMIT 1")


def topics(con: duckdb.DuckDBPyConnection, clustering_id: str | None = None) -> pl.DataFrame:
    """cluster, name, keywords, size of a clustering (default: the newest)."""
    cid = clustering_id or latest_clustering_id(con)
    return frame(con,
        "SELECT cluster, name, keywords, size FROM topic_clusters WHERE clustering_id = ? ORDER BY size DESC, cluster",
        [cid],
    )


def map_points(con: duckdb.DuckDBPyConnection, clustering_id: str | None = None, *, limit: int = 20000) -> pl.DataFrame:
    """2-D map points (pair_id, cluster, x, y, name) of a clustering, for the app's embedding map."""
    cid = clustering_id or latest_clustering_id(con)
    return frame(con,
        """SELECT a.pair_id, a.revision_id, a.cluster, a.x, a.y, t.name
           FROM cluster_assignments a JOIN topic_clusters t ON t.clustering_id = a.clustering_id AND t.cluster = a.cluster
           WHERE a.clustering_id = ? ORDER BY a.pair_id LIMIT ?""",
        [cid, int(limit)],
    )


# ------------------------------------------------------------------------------ splits


def slice_split_frame(con: duckdb.DuckDBPyConnection, slice_id: str) -> pl.DataFrame:
    """A slice's items with split, document unit and text, for the cross-split report."""
    return frame(con,
        """SELECT i.pair_id, i.revision_id, i.split, coalesce(p.document_id, p.id) AS document_unit,
                  r.instruction, r.input, r.response, r.messages::VARCHAR AS messages
           FROM slice_items i JOIN pair_revisions r ON r.id = i.revision_id JOIN pairs p ON p.id = i.pair_id
           WHERE i.slice_id = ? ORDER BY i.position""",
        [slice_id],
    )


# ------------------------------------------------------------------------------ pages for the app


def pair_signals(con: duckdb.DuckDBPyConnection, pair: Pair) -> list[tuple[str, float, bool, str]]:
    """(signal name, score, flagged, reason) of the pair's head revision, flagged first."""
    rows = con.execute(
        """SELECT name, score, flagged, reason FROM quality_signals WHERE revision_id = ?
           ORDER BY flagged DESC, name""",
        [pair.head_revision_id],
    ).fetchall()
    return [(r[0], float(r[1]), bool(r[2]), r[3]) for r in rows]


def pair_duplicates(con: duckdb.DuckDBPyConnection, pair_id: str) -> list[tuple[str, str, str, float]]:
    """(cluster id, kind, kept pair id, similarity) of the duplicate clusters the pair is in."""
    rows = con.execute(
        """SELECT c.id, c.kind, c.kept_pair_id, m.similarity FROM duplicate_members m
           JOIN duplicate_clusters c ON c.id = m.cluster_id WHERE m.pair_id = ? ORDER BY c.kind""",
        [pair_id],
    ).fetchall()
    return [(r[0], r[1], r[2], float(r[3])) for r in rows]


def duplicate_kinds(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int]]:
    """(kind, clusters) of the stored duplicate clusters."""
    return [(r[0], int(r[1])) for r in con.execute(
        "SELECT kind, count(*) FROM duplicate_clusters GROUP BY kind ORDER BY kind").fetchall()]


def cluster_count(con: duckdb.DuckDBPyConnection, kind: str | None = None, resolution: str | None = None) -> int:
    return int(scalar(
        con,
        "SELECT count(*) FROM duplicate_clusters WHERE (? IS NULL OR kind = ?) AND (? IS NULL OR resolution = ?)",
        [kind, kind, resolution, resolution],
    ))


def clusters_page(
    con: duckdb.DuckDBPyConnection, *, kind: str | None = None, resolution: str | None = None,
    limit: int = 10, offset: int = 0,
) -> pl.DataFrame:
    """A page of duplicate clusters (largest first) as a frame, without their members."""
    return frame(
        con,
        """SELECT id, kind, kept_pair_id, size, resolution, params::VARCHAR AS params, created_at
           FROM duplicate_clusters WHERE (? IS NULL OR kind = ?) AND (? IS NULL OR resolution = ?)
           ORDER BY size DESC, created_at, id LIMIT ? OFFSET ?""",
        [kind, kind, resolution, resolution, int(limit), int(offset)],
    )


def cluster_members(con: duckdb.DuckDBPyConnection, cluster_id: str, limit: int = 20) -> pl.DataFrame:
    """Members of one cluster (kept one first) with their head text and status."""
    return frame(
        con,
        """SELECT m.pair_id, m.similarity, m.is_kept, p.status, p.version, r.instruction, r.input, r.response,
                  coalesce(nullif(p.source_uri, ''), p.document_id, '') AS source
           FROM duplicate_members m JOIN pairs p ON p.id = m.pair_id
           JOIN pair_revisions r ON r.id = p.head_revision_id
           WHERE m.cluster_id = ? ORDER BY m.is_kept DESC, m.similarity DESC, m.pair_id LIMIT ?""",
        [cluster_id, int(limit)],
    )
