"""Curation results: duplicate clusters, quality signals, embeddings, topic clusterings.

These tables hold *derived* data computed by ``analysis/`` from pair revisions; the pairs'
statuses change only through ``store.pairs.set_status``/``set_status_many``, which record a
review per pair.

Invariants of a reviewer's verdict on a cluster (``keep_one``, ``not_duplicates``, the one
implementation the app and any command use):
- One transaction over the whole cluster: the pairs' statuses, the members' ``is_kept`` and the
  cluster's ``kept_pair_id``/``resolution`` change together or not at all.
- A pair marked duplicate that becomes live again gets back the status it had before it was
  marked (the ``previous_status`` of that review), not a blanket ``pending``.
- Changing the status of a pair that a frozen slice holds, or marking an accepted pair
  duplicate, needs ``confirm_in_slices=True``; without it ``NeedsConfirmation`` names the pairs
  and slices and nothing is written. Frozen slices themselves never change (they point at
  revisions), which is exactly why the reviewer is asked: the slice keeps training on the pair.

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
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from store import slices as slices_store
from store.db import atomic, frame, one, scalar
from store.filters import compile_filter
from store.ids import event_id
from store.pairs import now, set_status, set_status_many
from store.records import DuplicateCluster, Pair, SliceFilter, Status

_FROM = "pairs p JOIN pair_revisions r ON r.id = p.head_revision_id"


def _register(con: duckdb.DuckDBPyConnection, name: str, data: pl.DataFrame | pa.Table) -> None:
    con.register(name, data.to_arrow() if isinstance(data, pl.DataFrame) else data)


def curation_frame(con: duckdb.DuckDBPyConnection, flt: SliceFilter | None = None,
                   part: tuple[int, int] | None = None) -> pl.DataFrame:
    """Head content of the pairs matching ``flt`` (default: all, duplicates included).

    ``part`` (i, n): only part i of n (by a hash of the pair id), for passes over a project too
    big for memory at once; the n parts hold every pair once."""
    where, params = compile_filter(flt or SliceFilter(exclude_duplicates=False))
    if part is not None:
        where += " AND hash(p.id) % ? = ?"
        params = [*params, int(part[1]), int(part[0])]
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


def held_for_decision(con: duckdb.DuckDBPyConnection, pair_ids: Sequence[str]) -> set[str]:
    """Pairs an automatic pass must not mark duplicate: accepted ones and ones in a frozen slice
    (a person decided about them; the Duplicates page asks before changing them)."""
    if not pair_ids:
        return set()
    rows = con.execute(
        """SELECT id FROM pairs WHERE id IN (SELECT unnest(?::VARCHAR[]))
             AND (status = 'accepted' OR EXISTS (SELECT 1 FROM slice_items si WHERE si.pair_id = pairs.id))""",
        [list(pair_ids)]).fetchall()
    return {r[0] for r in rows}


def mark_duplicates(con: duckdb.DuckDBPyConnection, marks: pl.DataFrame, *, author: str, comment: str) -> tuple[int, int]:
    """Mark (pair_id, duplicate_of) rows as duplicates (a review each); already-marked pairs are left alone,
    and accepted or sliced pairs are held for a person (``held_for_decision``). Returns (marked, held)."""
    if marks.height == 0:
        return 0, 0
    held = held_for_decision(con, marks["pair_id"].to_list())
    todo = marks.filter(~pl.col("pair_id").is_in(list(held)))
    if todo.height == 0:
        return 0, len(held)
    n = set_status_many(
        con, todo["pair_id"].to_list(), Status.duplicate, author=author, comment=comment,
        duplicate_of=todo["duplicate_of"].to_list(),
    )
    return n, len(held)


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


class NeedsConfirmation(ValueError):
    """A cluster verdict would change accepted pairs or pairs held by frozen slices, and the caller
    did not confirm it. ``in_slices`` maps each such pair to its slices (``name@version``);
    ``accepted`` lists the accepted pairs that would become duplicates."""

    def __init__(self, message: str, *, in_slices: dict[str, list[str]], accepted: list[str]) -> None:
        super().__init__(message)
        self.in_slices = in_slices
        self.accepted = accepted


@dataclass(frozen=True)
class ClusterVerdict:
    """What a verdict changed: ``restored`` maps each pair made live again to the status it got
    back; ``marked`` became duplicates now; ``repointed`` were duplicates of another pair."""

    cluster_id: str
    kept_pair_id: str | None
    restored: dict[str, str]
    marked: list[str]
    repointed: list[str]


def _members_state(con: duckdb.DuckDBPyConnection, cluster_id: str) -> list[tuple[str, str, str | None]]:
    if one(con, "SELECT 1 FROM duplicate_clusters WHERE id = ?", [cluster_id]) is None:
        raise KeyError(f"no duplicate cluster {cluster_id!r}")
    return [(r[0], r[1], r[2]) for r in con.execute(
        """SELECT m.pair_id, p.status, p.duplicate_of FROM duplicate_members m JOIN pairs p ON p.id = m.pair_id
           WHERE m.cluster_id = ? ORDER BY m.pair_id""", [cluster_id]).fetchall()]


def _status_before_duplicate(con: duckdb.DuckDBPyConnection, pair_id: str) -> str:
    """The status a duplicate pair had before it was last marked duplicate (pending if unknown)."""
    prev = scalar(con,
        """SELECT previous_status FROM reviews WHERE pair_id = ? AND status = 'duplicate'
           AND coalesce(previous_status, '') <> 'duplicate' ORDER BY created_at DESC, id DESC LIMIT 1""",
        [pair_id])
    return prev or Status.pending.value


def _check_confirmed(
    con: duckdb.DuckDBPyConnection, what: str, changing: Sequence[str], accepted: Sequence[str], confirmed: bool,
) -> None:
    in_slices = slices_store.containing(con, changing)
    if confirmed or not (in_slices or accepted):
        return
    lines = [f"{what} would change the status of pairs that need a confirmation:"]
    lines += [f"- {pid} is in frozen slice(s) {', '.join(names)}" for pid, names in in_slices.items()]
    if accepted:
        lines.append(f"- accepted pair(s) {', '.join(accepted)} would be marked duplicate")
    lines.append("Frozen slices never change: they point at the revisions they froze and keep training on "
                 "these pairs whatever their status now. Confirm (confirm_in_slices=True) to go ahead.")
    raise NeedsConfirmation("\n".join(lines), in_slices=in_slices, accepted=list(accepted))


def keep_one(
    con: duckdb.DuckDBPyConnection, cluster_id: str, pair_id: str, author: str, *, confirm_in_slices: bool = False,
) -> ClusterVerdict:
    """Keep ``pair_id`` of a duplicate cluster and mark every other member its duplicate, in one
    transaction over the whole cluster.

    The kept pair, if it was marked duplicate, gets back the status it had before; each other
    member becomes ``duplicate`` of it (a review each; one already marked duplicate of another
    pair is re-pointed). The cluster records the kept pair and the ``confirmed`` verdict, and only
    that member is ``is_kept``. Raises KeyError for an unknown cluster, ValueError for a pair that
    is not a member, and NeedsConfirmation (nothing written) when a status would change for a
    pair in a frozen slice, or an accepted pair would become a duplicate, without
    ``confirm_in_slices``.
    """
    with atomic(con):
        members = _members_state(con, cluster_id)
        if pair_id not in {m[0] for m in members}:
            raise ValueError(f"pair {pair_id!r} is not a member of duplicate cluster {cluster_id!r} "
                             f"(members: {', '.join(m[0] for m in members)})")
        kept_status = next(status for pid, status, _ in members if pid == pair_id)
        restored = ({pair_id: _status_before_duplicate(con, pair_id)}
                    if kept_status == Status.duplicate.value else {})
        to_mark = [pid for pid, status, _ in members if pid != pair_id and status != Status.duplicate.value]
        repoint = [pid for pid, status, dup in members
                   if pid != pair_id and status == Status.duplicate.value and dup != pair_id]
        accepted = [pid for pid, status, _ in members if pid in to_mark and status == Status.accepted.value]
        _check_confirmed(con, f"Keeping {pair_id} in cluster {cluster_id}", [*restored, *to_mark], accepted,
                         confirm_in_slices)
        comment = f"duplicate of {pair_id} (cluster {cluster_id})"
        for pid, status in restored.items():
            set_status(con, pid, status, author=author, comment=f"kept in duplicate cluster {cluster_id}")
        set_status_many(con, to_mark, Status.duplicate, author=author, comment=comment,
                        duplicate_of=[pair_id] * len(to_mark))
        for pid in repoint:
            set_status(con, pid, Status.duplicate, author=author, comment=comment, duplicate_of=pair_id)
        con.execute("UPDATE duplicate_clusters SET kept_pair_id = ?, resolution = 'confirmed' WHERE id = ?",
                    [pair_id, cluster_id])
        con.execute("UPDATE duplicate_members SET is_kept = (pair_id = ?) WHERE cluster_id = ?", [pair_id, cluster_id])
    return ClusterVerdict(cluster_id, pair_id, restored, to_mark, repoint)


def not_duplicates(
    con: duckdb.DuckDBPyConnection, cluster_id: str, author: str, *, confirm_in_slices: bool = False,
) -> ClusterVerdict:
    """The reviewer's "not duplicates" on a cluster, in one transaction: every member marked a
    duplicate of another member gets back its status from before, and the cluster is resolved
    ``not_duplicates`` (kept across re-runs). NeedsConfirmation as in ``keep_one``."""
    with atomic(con):
        members = _members_state(con, cluster_id)
        ids = {m[0] for m in members}
        restored = {pid: _status_before_duplicate(con, pid) for pid, status, dup in members
                    if status == Status.duplicate.value and dup in ids}
        _check_confirmed(con, f"Splitting cluster {cluster_id}", list(restored), [], confirm_in_slices)
        for pid, status in restored.items():
            set_status(con, pid, status, author=author, comment=f"not duplicates (cluster {cluster_id})")
        resolve_cluster(con, cluster_id, "not_duplicates")
    return ClusterVerdict(cluster_id, None, restored, [], [])


# ------------------------------------------------------------------------------ signals


def save_signals(
    con: duckdb.DuckDBPyConnection, signals: pl.DataFrame, revision_ids: Sequence[str] | pl.Series,
    names: Sequence[str]
) -> int:
    """Replace the signals ``names`` of ``revision_ids`` by the rows of ``signals`` (one transaction).

    ``signals`` has revision_id, pair_id, name, version, score, flagged, reason, details (JSON text).
    """
    ts = now()
    with atomic(con):
        rids = (revision_ids.cast(pl.String).to_arrow() if isinstance(revision_ids, pl.Series)
                else pa.array(list(revision_ids), pa.string()))
        _register(con, "_revs", pa.table({"rid": rids}))
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


def quality_penalties(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """(revision_id, quality_penalty): the summed score of the flagged quality signals of each head
    revision that has any (the ``quality`` keep rule of dedupe prefers the lowest; none = 0)."""
    return frame(con,
        """SELECT s.revision_id, sum(s.score)::DOUBLE AS quality_penalty
           FROM quality_signals s JOIN pairs p ON p.head_revision_id = s.revision_id
           WHERE s.flagged GROUP BY s.revision_id ORDER BY s.revision_id"""
    )


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
    revision_ids: Sequence[str] | None = None, among: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, np.ndarray]:
    """(rows, matrix): head revisions matching ``flt`` (or exactly ``revision_ids``) that have a
    vector, with pair_id, revision_id, status, created_at, text columns, and their vectors.
    ``among``: keep only these revision ids of the ``flt`` set (candidates of the ANN index)."""
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
        join = ""
        if among is not None:
            _register(con, "_among", pa.table({"rid": pa.array(list(among), pa.string())}))
            join = "JOIN (SELECT DISTINCT rid FROM _among) a ON a.rid = p.head_revision_id"
        try:
            df = frame(con,
                f"""SELECT p.id AS pair_id, p.head_revision_id AS revision_id, p.status, p.created_at,
                           r.instruction, r.input, r.response, e.vector
                    FROM {_FROM} {join}
                    JOIN embeddings e ON e.revision_id = p.head_revision_id AND e.model = ? AND e.field = ?
                    WHERE {where} ORDER BY p.created_at, p.id""",
                [model, field, *params],
            )
        finally:
            if among is not None:
                con.unregister("_among")
    if df.height == 0:
        return df.drop("vector"), np.zeros((0, 0), dtype=np.float32)
    return df.drop("vector"), _matrix(df["vector"])


def _matrix(vec: pl.Series) -> np.ndarray:
    """A FLOAT[] column as a float32 (rows x dim) matrix."""
    dim = int(vec.list.len().to_numpy().max()) if len(vec) else 0
    return vec.explode().to_numpy().astype(np.float32).reshape(len(vec), dim)


def embedded_count(con: duckdb.DuckDBPyConnection, model: str, field: str, flt: SliceFilter | None = None) -> int:
    """How many head revisions matching ``flt`` have a vector for (model, field): the searched set."""
    where, params = compile_filter(flt or SliceFilter(exclude_duplicates=False))
    return int(scalar(con,
        f"""SELECT count(*) FROM {_FROM}
            JOIN embeddings e ON e.revision_id = p.head_revision_id AND e.model = ? AND e.field = ?
            WHERE {where}""",
        [model, field, *params],
    ))


def embedded_heads(con: duckdb.DuckDBPyConnection, model: str, field: str) -> list[str]:
    """Revision ids of every head revision with a vector for (model, field), oldest vector first."""
    rows = con.execute(
        """SELECT e.revision_id FROM embeddings e JOIN pairs p ON p.head_revision_id = e.revision_id
           WHERE e.model = ? AND e.field = ? ORDER BY e.created_at, e.revision_id""",
        [model, field],
    ).fetchall()
    return [r for (r,) in rows]


def embedding_vectors(con: duckdb.DuckDBPyConnection, model: str, field: str, revision_ids: Sequence[str]) -> np.ndarray:
    """The vectors of exactly ``revision_ids`` for (model, field), in that order (each must have one)."""
    if not len(revision_ids):
        return np.zeros((0, 0), dtype=np.float32)
    _register(con, "_want", pa.table({"rid": pa.array(list(revision_ids), pa.string()),
                                      "pos": pa.array(range(len(revision_ids)), pa.int64())}))
    try:
        df = frame(con,
            """SELECT e.vector FROM _want w JOIN embeddings e ON e.revision_id = w.rid AND e.model = ? AND e.field = ?
               ORDER BY w.pos""",
            [model, field],
        )
    finally:
        con.unregister("_want")
    if df.height != len(revision_ids):
        raise KeyError(f"{len(revision_ids) - df.height} of {len(revision_ids)} revisions have no {model} / {field} vector")
    return _matrix(df["vector"])


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
