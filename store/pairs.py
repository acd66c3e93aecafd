"""Pairs: append-only revisions and reviews, plus a current-state projection.

- ``pair_revisions`` and ``reviews`` are logs: rows are inserted, never updated or deleted.
- ``pairs`` holds, per pair, the head revision, the status and a ``version`` counter. It is
  updated in the same transaction as the log row that changes it, so it always equals a
  replay of the logs.
- Optimistic concurrency: every edit names the revision it was based on (``base_revision_id``,
  the head its writer saw); a status change names the ``version`` it was based on. If another
  writer moved the head meanwhile, the edit is still stored, as a revision marked ``conflict``
  whose parent is the base its writer saw (the fields it left alone come from that base too),
  and the caller is told (``RevisionResult.conflict``; ``revise`` raises ``ConflictError``
  after the commit). The head is not moved, so the first writer's text is not silently
  replaced by the second's. A pair has an *unresolved conflict* while a conflict revision is
  newer than its head (``unresolved_conflicts``); the next edit saved from the head resolves
  it, even one that keeps the head's text (then recorded as a revision of its own).
- Bulk inserts move Arrow tables (``insert_rows``); a pair whose id already exists is
  skipped, which makes re-imports no-ops.
- A pair's id hashes its content, so the same text from two documents (or two imported files) is
  one pair. ``pair_sources`` keeps every source: ``insert_rows`` appends one row per distinct source
  of the batch, for new and already stored pairs alike (``sources`` reads them). The source id
  hashes its fields, so re-ingesting records nothing new; the pair's own provenance columns stay
  its first source: of one batch's (or one ingest's, ``claim_first_source``) sources, the first by
  ``first_source_key`` (line of an imported file, then path, then character), so which worker
  finished first does not decide it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
import pyarrow as pa

from store.db import ConflictError, atomic, one, scalar
from store.filters import compile_filter
from store.ids import content_id, event_id, pair_content, pair_id
from store.records import (
    Message,
    NewPair,
    Pair,
    PairRevision,
    PairSource,
    Provenance,
    Review,
    SliceFilter,
    Status,
)
from store.refs import by_prefix

if TYPE_CHECKING:  # polars loads where a frame is asked for: ingest, which never asks, starts ~0.1 s sooner
    import polars as pl


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def revision_id(pair: str, parent: str | None, content: dict[str, Any], tags: Sequence[str]) -> str:
    return content_id({"pair": pair, "parent": parent, "content": content, "tags": sorted(tags)}, prefix="r_")


# Arrow schema of a bulk batch: one row per new pair (its first revision).
BATCH_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("revision_id", pa.string()),
        ("instruction", pa.string()),
        ("input", pa.string()),
        ("response", pa.string()),
        ("system", pa.string()),
        ("messages", pa.string()),  # JSON text or null
        ("tags", pa.list_(pa.string())),
        ("split", pa.string()),
        ("status", pa.string()),
        ("document_id", pa.string()),
        ("page", pa.int32()),
        ("element_ids", pa.list_(pa.string())),
        ("char_start", pa.int32()),
        ("char_end", pa.int32()),
        ("generator", pa.string()),
        ("generator_version", pa.string()),
        ("source_uri", pa.string()),
        ("source_line", pa.int32()),
        ("author", pa.string()),
        ("grounding", pa.float64()),
        ("tools", pa.string()),  # JSON text or null
    ]
)


def batch_row(
    content: dict[str, Any],
    *,
    tags: Sequence[str] = (),
    split: str | None = None,
    status: str = "pending",
    provenance: Provenance | None = None,
    author: str = "import",
    key: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One bulk-insert row from pair content (as made by ``store.ids.pair_content``).

    ``key``: the content the pair id is hashed from, when it is not ``content`` (an import that
    repairs mojibake keys the pair by the repaired text and stores the original first)."""
    pid = pair_id(content if key is None else key)
    prov = provenance or Provenance()
    return {
        "pair_id": pid,
        "revision_id": revision_id(pid, None, content, tags),
        "instruction": content["instruction"],
        "input": content["input"],
        "response": content["response"],
        "system": content["system"],
        "messages": orjson.dumps(content["messages"]).decode() if content["messages"] else None,
        "tags": list(tags),
        "split": split,
        "status": str(status),
        "document_id": prov.document_id,
        "page": prov.page,
        "element_ids": list(prov.element_ids) or None,
        "char_start": prov.char_start,
        "char_end": prov.char_end,
        "generator": prov.generator,
        "generator_version": prov.generator_version,
        "source_uri": prov.source_uri,
        "source_line": prov.source_line,
        "author": author,
        "grounding": prov.grounding,
        "tools": orjson.dumps(content["tools"]).decode() if content.get("tools") else None,
    }


def rows_to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=BATCH_SCHEMA)


def _sql_literal(text: str) -> str:
    """A string literal for the few places DuckDB cannot bind a parameter (table functions in DDL)."""
    return "'" + text.replace("'", "''") + "'"


# The identity of one source of a pair (a row of a bulk batch): the same expression backfilled the
# table in store/migrations.py ``m110_pair_sources``, so an old pair's source is not recorded twice.
SOURCE_ID = """'ps_' || md5(concat_ws(chr(31), pair_id, coalesce(document_id, ''), coalesce(source_uri, ''),
                                   coalesce(source_line::VARCHAR, ''), coalesce(char_start::VARCHAR, ''),
                                   coalesce(char_end::VARCHAR, ''), coalesce(generator, '')))"""


BULK_INSERT_MEMORY_MB = 256  # a bulk insert's memory cap before its indexes (DuckDB spills the rest to disk)
# DuckDB's ART indexes must fit in memory: the primary keys of pairs, pair_revisions and
# pair_sources (66-character ids) and two secondary indexes take ~120 B per pair each (measured:
# 356 MB for one such key over 3M rows); a 3M-row file imported at 256 MB + 415 B a pair, and
# failed at 256 MB flat. 600 B per pair, stored and new, leaves a margin.
INDEX_BYTES_PER_PAIR = 600
MEMORY_SHARE = 0.8  # the most of this machine's memory a bulk insert may ask for


def fixed_memory_mb() -> int | None:
    """The bulk insert's memory cap set by ``TUNELOOP_BULK_INSERT_MEMORY_MB`` (MB), if set."""
    fixed = os.environ.get("TUNELOOP_BULK_INSERT_MEMORY_MB", "").strip()
    return int(fixed) if fixed else None


def stored_pairs(con: duckdb.DuckDBPyConnection) -> int:
    """How many pairs the project holds (every status; the table alone, no revision join)."""
    return int(scalar(con, "SELECT count(*) FROM pairs"))


def bulk_insert_memory_mb(new_rows: int, stored_pairs: int) -> int:
    """DuckDB's memory cap (MB) for inserting ``new_rows`` into a project of ``stored_pairs``: the
    floor plus the indexes' share, unless ``TUNELOOP_BULK_INSERT_MEMORY_MB`` fixes it."""
    fixed = fixed_memory_mb()
    if fixed is not None:
        return fixed
    return BULK_INSERT_MEMORY_MB + (new_rows + stored_pairs) * INDEX_BYTES_PER_PAIR // 2**20


def bulk_insert_too_big(cap_mb: int) -> str | None:
    """Why a bulk insert with this cap cannot run on this machine (None: it can)."""
    import psutil

    total = psutil.virtual_memory().total // 2**20
    if cap_mb <= MEMORY_SHARE * total:
        return None
    what = (f"its memory cap (TUNELOOP_BULK_INSERT_MEMORY_MB={cap_mb}) is" if fixed_memory_mb() is not None else
            f"it needs about {cap_mb / 1024:.1f} GB of memory for the database's indexes "
            f"({INDEX_BYTES_PER_PAIR} B per pair, stored and new), which is")
    return f"{what} more than {MEMORY_SHARE:.0%} of this machine's {total / 1024:.1f} GB"


def parquet_rows(con: duckdb.DuckDBPyConnection, path: str) -> int:
    """Rows of a Parquet file (from its metadata)."""
    return int(scalar(con, "SELECT sum(num_rows) FROM parquet_file_metadata(" + _sql_literal(path) + ")") or 0)


def first_source_key(alias: str = "") -> str:
    """The order that makes one of a pair's sources its own (the pair's provenance columns): the
    earliest line of an imported file, else the first file by path (uri), then the earliest
    character; a row value, so two sources compare with ``<``. ``alias``: a table alias."""
    a = f"{alias}." if alias else ""
    return (f"row(coalesce({a}source_line, 2147483647), coalesce({a}source_uri, ''), "
            f"coalesce({a}char_start, 2147483647), coalesce({a}document_id, ''))")


def insert_rows(con: duckdb.DuckDBPyConnection, batch: pa.Table | str) -> int:
    """Insert new pairs from an Arrow table (or a Parquet path); return how many were new.

    Rows whose pair id already exists, and repeats inside the batch, are skipped; but every
    distinct source of the batch is recorded in ``pair_sources``, whether its pair is new or not.
    The caller owns the transaction.
    """
    ts = now()
    if isinstance(batch, str):
        source = "read_parquet(" + _sql_literal(batch) + ")"
        # A staged file can hold millions of rows: cap DuckDB's memory for this insert (it spills
        # to disk beyond), its indexes included (issues 12, 19). Restored after.
        cap = bulk_insert_memory_mb(parquet_rows(con, batch), stored_pairs(con))
        con.execute(f"SET memory_limit = '{cap}MB'")
    else:
        con.register("_batch_arrow", batch)
        source = "_batch_arrow"
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _batch_new AS
               SELECT * FROM (
                   SELECT *, row_number() OVER (PARTITION BY pair_id ORDER BY {first_source_key()}) AS _rn
                   FROM {source}
               ) b
               WHERE _rn = 1 AND NOT EXISTS (SELECT 1 FROM pairs p WHERE p.id = b.pair_id)"""
        )
        n = scalar(con, "SELECT count(*) FROM _batch_new")
        con.execute(
            """INSERT INTO pair_revisions
               (id, pair_id, revision_no, parent_id, instruction, input, response, system, messages,
                tags, author, reason, conflict, created_at, tools)
               SELECT revision_id, pair_id, 1, NULL, instruction, coalesce(input, ''), coalesce(response, ''),
                      coalesce(system, ''), messages::JSON, coalesce(tags, []), author, 'created', false, ?,
                      tools::JSON
               FROM _batch_new""",
            [ts],
        )
        con.execute(
            """INSERT INTO pairs
               (id, head_revision_id, version, status, split, duplicate_of, document_id, page, element_ids,
                char_start, char_end, generator, generator_version, source_uri, source_line,
                author, updated_by, created_at, updated_at, grounding, head_tags)
               SELECT pair_id, revision_id, 1, status, split, NULL, document_id, page, element_ids,
                      char_start, char_end, generator, coalesce(generator_version, ''),
                      coalesce(source_uri, ''), source_line, author, author, ?, ?, grounding, coalesce(tags, [])
               FROM _batch_new""",
            [ts, ts],
        )
        con.execute(
            f"""INSERT INTO pair_sources
               (id, pair_id, document_id, source_uri, source_line, char_start, char_end, element_ids,
                generator, created_at)
               SELECT DISTINCT ON (sid) sid, pair_id, document_id, coalesce(source_uri, ''), source_line,
                      char_start, char_end, element_ids, generator, ?
               FROM (SELECT {SOURCE_ID} AS sid, * FROM {source}) b
               WHERE NOT EXISTS (SELECT 1 FROM pair_sources s WHERE s.id = b.sid)
               ORDER BY sid, source_line NULLS LAST""",
            [ts],
        )
        return int(n)
    finally:
        # After a failed statement DuckDB refuses every other one until the caller rolls back (which
        # drops the temp table too): a clean-up error here must not hide the real one.
        with contextlib.suppress(duckdb.Error):
            con.execute("DROP TABLE IF EXISTS _batch_new")
        if isinstance(batch, str):
            with contextlib.suppress(duckdb.Error):
                con.execute("RESET memory_limit")
        else:
            con.unregister("_batch_arrow")


@dataclass(frozen=True)
class Collisions:
    """Rows of a batch that name a pair that exists already: same content, same id."""

    in_project: int  # rows whose pair is already stored (their tags, split and status are not applied)
    repeats: int  # rows repeating an earlier row of the same batch
    examples: list[tuple[int | None, str, bool]]  # first few (source line, pair id, already stored), by line


def claim_first_source(con: duckdb.DuckDBPyConnection, batch: pa.Table, ids: Sequence[str]) -> int:
    """Pairs ``ids`` (stored before by the same ingest) take the batch's source as their own where it
    comes first (``first_source_key``); returns how many did. With several parser workers documents
    are stored as they finish, so without this a pair found in two files of one ingest would belong
    to whichever finished first (``multi-column.pdf``: 55 pairs with one worker, 46 with two). The
    caller owns the transaction; ``insert_rows`` has recorded the batch's sources already."""
    if not ids or batch.num_rows == 0:
        return 0
    con.register("_claim_arrow", batch)
    try:
        row = con.execute(
            f"""UPDATE pairs SET document_id = b.document_id, page = b.page, element_ids = b.element_ids,
                       char_start = b.char_start, char_end = b.char_end, generator = b.generator,
                       generator_version = coalesce(b.generator_version, ''),
                       source_uri = coalesce(b.source_uri, ''), source_line = b.source_line,
                       grounding = b.grounding
                FROM (SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY pair_id
                                                                  ORDER BY {first_source_key()}) AS _rn
                                     FROM _claim_arrow WHERE list_contains(?, pair_id)) WHERE _rn = 1) b
                WHERE pairs.id = b.pair_id AND {first_source_key('b')} < {first_source_key('pairs')}""",
            [list(ids)],
        ).fetchone()
        return int(row[0]) if row else 0
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister("_claim_arrow")


def own_sources(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> dict[str, tuple[str | None, str]]:
    """Each stored pair of ``ids`` -> its own source's (document id, uri)."""
    if not ids:
        return {}
    return {r[0]: (r[1], r[2]) for r in con.execute(
        "SELECT id, document_id, source_uri FROM pairs WHERE list_contains(?, id)", [list(ids)]).fetchall()}


def batch_collisions(con: duckdb.DuckDBPyConnection, batch: pa.Table | str, show: int = 5) -> Collisions:
    """Which rows of a batch ``insert_rows`` would skip (call it before inserting)."""
    if isinstance(batch, str):
        source = "read_parquet(" + _sql_literal(batch) + ")"
    else:
        con.register("_collide_arrow", batch)
        source = "_collide_arrow"
    cte = f"""WITH b AS (
                  SELECT pair_id, source_line,
                         row_number() OVER (PARTITION BY pair_id ORDER BY source_line NULLS LAST) AS rn
                  FROM {source}),
              c AS (SELECT b.source_line, b.pair_id, p.id IS NOT NULL AS stored
                    FROM b LEFT JOIN pairs p ON p.id = b.pair_id
                    WHERE p.id IS NOT NULL OR b.rn > 1)"""
    try:
        row = one(con, cte + " SELECT count(*) FILTER (WHERE stored), count(*) FILTER (WHERE NOT stored) FROM c")
        ex = con.execute(cte + " SELECT source_line, pair_id, stored FROM c ORDER BY source_line NULLS LAST, pair_id "
                               "LIMIT ?", [int(show)]).fetchall()
    finally:
        if not isinstance(batch, str):
            con.unregister("_collide_arrow")
    assert row is not None
    return Collisions(int(row[0]), int(row[1]), [(r[0], r[1], bool(r[2])) for r in ex])


def add_pairs(con: duckdb.DuckDBPyConnection, pairs: Iterable[NewPair]) -> list[str]:
    """Insert records (small batches: generators, tests, the app); return every pair id."""
    rows = []
    for p in pairs:
        c = p.content
        content = pair_content(
            c.instruction, c.input, c.response, c.system, [m.model_dump() for m in c.messages], c.tools
        )
        rows.append(
            batch_row(
                content, tags=p.tags, split=p.split, status=p.status, provenance=p.provenance, author=p.author
            )
        )
    if rows:
        insert_rows(con, rows_to_arrow(rows))
    return [r["pair_id"] for r in rows]


# ---------------------------------------------------------------- reading

_PAIR_COLUMNS = """p.id, p.head_revision_id, p.version, p.status, p.split, p.duplicate_of,
    r.instruction, r.input, r.response, r.system, r.messages, r.tags,
    p.document_id, p.page, p.element_ids, p.char_start, p.char_end, p.generator, p.generator_version,
    p.source_uri, p.source_line, p.author, p.updated_by, p.created_at, p.updated_at, p.grounding, r.tools"""

_FROM = "pairs p JOIN pair_revisions r ON r.id = p.head_revision_id"


def _messages(raw: Any) -> list[Message]:
    if not raw:
        return []
    data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return [Message(**m) for m in data]


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not raw:
        return []
    data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return list(data or [])


def _to_pair(row: tuple) -> Pair:
    (pid, head, version, status, split, dup, instr, inp, resp, system, messages, tags, doc, page, elems,
     cs, ce, gen, genv, suri, sline, author, upd_by, created, updated, grounding, tools) = row
    return Pair(
        id=pid, head_revision_id=head, version=version, status=status, split=split, duplicate_of=dup,
        instruction=instr, input=inp, response=resp, system=system, messages=_messages(messages),
        tools=_tools(tools), tags=list(tags or []),
        provenance=Provenance(
            document_id=doc, page=page, element_ids=list(elems or []), char_start=cs, char_end=ce,
            generator=gen, generator_version=genv, source_uri=suri, source_line=sline, grounding=grounding,
        ),
        author=author, updated_by=upd_by, created_at=created, updated_at=updated,
    )


def resolve(con: duckdb.DuckDBPyConnection, ref: str) -> str:
    """The full id of the pair ``ref`` names: its id or an unambiguous prefix of it."""
    return by_prefix(con, "pair", ref, "`tuneloop pairs list` shows the pairs")


def get(con: duckdb.DuckDBPyConnection, pid: str) -> Pair:
    """A pair by id (or an unambiguous id prefix)."""
    row = one(con, f"SELECT {_PAIR_COLUMNS} FROM {_FROM} WHERE p.id = ?", [pid])
    if row is None:
        row = one(con, f"SELECT {_PAIR_COLUMNS} FROM {_FROM} WHERE p.id = ?", [resolve(con, pid)])
    assert row is not None
    return _to_pair(row)


def query(
    con: duckdb.DuckDBPyConnection,
    flt: SliceFilter | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
    order: str = "created",
) -> list[Pair]:
    """One page of pairs matching ``flt``; filtering, ordering and paging happen in SQL."""
    where, params = compile_filter(flt or SliceFilter(exclude_duplicates=False))
    order_sql = {
        "created": "p.created_at, p.id",
        "updated": "p.updated_at DESC, p.id",
        "id": "p.id",
        "source": "p.source_uri, p.source_line, p.document_id, p.char_start, p.id",
    }[order]
    rows = con.execute(
        f"SELECT {_PAIR_COLUMNS} FROM {_FROM} WHERE {where} ORDER BY {order_sql} LIMIT ? OFFSET ?",
        [*params, int(limit), int(offset)],
    ).fetchall()
    return [_to_pair(r) for r in rows]


def count(con: duckdb.DuckDBPyConnection, flt: SliceFilter | None = None) -> int:
    where, params = compile_filter(flt or SliceFilter(exclude_duplicates=False))
    return int(scalar(con, f"SELECT count(*) FROM {_FROM} WHERE {where}", params))


def frame(con: duckdb.DuckDBPyConnection, flt: SliceFilter | None = None, *, limit: int | None = None) -> pl.DataFrame:
    """Matching pairs (head content + provenance columns) as a Polars frame."""
    where, params = compile_filter(flt or SliceFilter(exclude_duplicates=False))
    lim = "" if limit is None else f" LIMIT {int(limit)}"
    return con.sql(
        f"""SELECT p.id AS pair_id, p.head_revision_id AS revision_id, p.status, p.split,
                   r.instruction, r.input, r.response, r.system, r.messages::VARCHAR AS messages, r.tags,
                   p.document_id, p.page, p.char_start, p.char_end, p.generator, p.generator_version,
                   p.source_uri, p.source_line, p.grounding, p.created_at, r.tools::VARCHAR AS tools
            FROM {_FROM} WHERE {where} ORDER BY p.created_at, p.id{lim}""",
        params=params,
    ).pl()


def count_by_status(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    out = {s.value: 0 for s in Status}
    for status, n in con.execute("SELECT status, count(*) FROM pairs GROUP BY status").fetchall():
        out[status] = int(n)
    return out


def history(con: duckdb.DuckDBPyConnection, pid: str) -> list[PairRevision]:
    head = one(con, "SELECT head_revision_id FROM pairs WHERE id = ?", [pid])
    rows = con.execute(
        """SELECT id, pair_id, revision_no, parent_id, instruction, input, response, system, messages, tags,
                  author, reason, created_at, conflict, tools
           FROM pair_revisions WHERE pair_id = ? ORDER BY revision_no, created_at""",
        [pid],
    ).fetchall()
    return [
        PairRevision(
            id=r[0], pair_id=r[1], revision_no=r[2], parent_id=r[3], instruction=r[4], input=r[5],
            response=r[6], system=r[7], messages=_messages(r[8]), tags=list(r[9] or []), author=r[10],
            reason=r[11], created_at=r[12], conflict=bool(r[13]), is_head=bool(head and head[0] == r[0]),
            tools=_tools(r[14]),
        )
        for r in rows
    ]


def sources(con: duckdb.DuckDBPyConnection, pid: str) -> list[PairSource]:
    """Every source the pair was produced from: its own provenance first, then the others in the
    order they were recorded (a document's name and title come with it, '' for imported data; and
    the first page of its elements, None for formats without pages)."""
    rows = con.execute(
        f"""WITH own AS (SELECT {SOURCE_ID} AS sid
                         FROM (SELECT id AS pair_id, document_id, source_uri, source_line, char_start, char_end,
                                      generator FROM pairs WHERE id = ?))
            SELECT s.pair_id, s.document_id, coalesce(d.name, ''), s.source_uri, s.source_line, s.char_start,
                   s.char_end, s.element_ids, s.generator, s.created_at, coalesce(d.title, ''),
                   (SELECT min(e.page) FROM elements e
                    WHERE e.document_id = s.document_id AND list_contains(s.element_ids, e.id))
            FROM pair_sources s LEFT JOIN documents d ON d.id = s.document_id
            WHERE s.pair_id = ?
            ORDER BY s.id IN (SELECT sid FROM own) DESC, s.created_at, coalesce(d.name, s.source_uri),
                     s.source_line, s.char_start, s.id""",
        [pid, pid],
    ).fetchall()
    return [
        PairSource(pair_id=r[0], document_id=r[1], document_name=r[2], source_uri=r[3], source_line=r[4],
                   char_start=r[5], char_end=r[6], element_ids=list(r[7] or []), generator=r[8], created_at=r[9],
                   document_title=r[10], page=r[11])
        for r in rows
    ]


def unresolved_conflicts(revisions: Sequence[PairRevision]) -> list[PairRevision]:
    """The conflict revisions of one pair's ``history`` that no edit saved from the head has settled
    yet: those newer than the head. Empty when the pair has no unresolved conflict."""
    head_no = next((r.revision_no for r in revisions if r.is_head), 0)
    return [r for r in revisions if r.conflict and r.revision_no > head_no]


def reviews(con: duckdb.DuckDBPyConnection, pid: str) -> list[Review]:
    rows = con.execute(
        """SELECT id, pair_id, revision_id, status, previous_status, author, comment, created_at
           FROM reviews WHERE pair_id = ? ORDER BY created_at, id""",
        [pid],
    ).fetchall()
    return [
        Review(id=r[0], pair_id=r[1], revision_id=r[2], status=r[3], previous_status=r[4], author=r[5],
               comment=r[6], created_at=r[7])
        for r in rows
    ]


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class RevisionResult:
    revision_id: str  # the revision that holds the edit (the head when the edit changed nothing)
    version: int  # the pair's version after the write
    conflict: bool = False  # the edit was based on an older revision: kept beside the head, which did not move
    head_revision_id: str = ""  # the head after the write


def base_revision(
    con: duckdb.DuckDBPyConnection, pid: str, base_revision_id: str | None = None, expected_version: int | None = None
) -> str:
    """The revision an edit of ``pid`` was based on: ``base_revision_id`` (one of the pair's
    revisions, or an unambiguous prefix of one), else the head the pair had at ``expected_version``
    (every version step is one ``reviews`` row naming the head after it; version 1 is the first
    revision)."""
    if base_revision_id is not None:
        found = con.execute("SELECT id FROM pair_revisions WHERE pair_id = ? AND starts_with(id, ?) ORDER BY id LIMIT 2",
                            [pid, base_revision_id]).fetchall()
        exact = [r[0] for r in found if r[0] == base_revision_id]
        if not exact and len(found) != 1:
            raise ValueError(f"{base_revision_id} is not {'an unambiguous prefix of ' if found else ''}a revision of "
                             f"pair {pid} (`tuneloop pairs show {pid}` lists them)")
        return str(exact[0] if exact else found[0][0])
    if expected_version is None:
        raise ValueError("an edit names the revision it was based on (base_revision_id)")
    if expected_version == scalar(con, "SELECT version FROM pairs WHERE id = ?", [pid]):
        rid = scalar(con, "SELECT head_revision_id FROM pairs WHERE id = ?", [pid])
    elif expected_version <= 1:
        rid = scalar(con, "SELECT id FROM pair_revisions WHERE pair_id = ? AND revision_no = 1", [pid])
    else:
        rid = scalar(con, "SELECT revision_id FROM reviews WHERE pair_id = ? ORDER BY created_at, id LIMIT 1 OFFSET ?",
                     [pid, int(expected_version) - 2])
    if rid is None:
        raise ValueError(f"pair {pid} never had version {expected_version}")
    return str(rid)


def _content(row: tuple) -> tuple[dict[str, Any], list[str]]:
    instr, inp, resp, system, msgs, tags, tools = row
    return (pair_content(instr, inp, resp, system, [m.model_dump() for m in _messages(msgs)], _tools(tools)),
            list(tags or []))


def append_revision(
    con: duckdb.DuckDBPyConnection,
    pid: str,
    *,
    author: str,
    base_revision_id: str | None = None,
    expected_version: int | None = None,
    reason: str = "",
    instruction: str | None = None,
    input: str | None = None,
    response: str | None = None,
    system: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    tags: Sequence[str] | None = None,
    status: Status | str | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> RevisionResult:
    """Append a revision of ``pid`` inside the caller's transaction; move the head if the edit
    was based on it.

    ``base_revision_id`` is the revision the writer saw (``expected_version`` may stand in for
    it: see ``base_revision``). Fields left as None keep the base's value. When the base is no
    longer the head, the revision is still stored (``conflict = true``, parent = the base) and
    the head is not moved; the result says ``conflict``. An edit whose content equals the
    head's changes nothing, except that one based on the head records a revision when the pair
    has an unresolved conflict: that settles it in favour of the head's text.
    """
    cur = one(con,
        """SELECT p.version, p.head_revision_id, p.status, r.revision_no, r.instruction, r.input, r.response,
                  r.system, r.messages, r.tags, r.tools
           FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id WHERE p.id = ?""",
        [pid],
    )
    if cur is None:
        raise KeyError(f"no pair with id {pid!r}")
    version, head, cur_status, head_no = cur[:4]
    head_content, head_tags = _content(cur[4:])
    base_id = base_revision(con, pid, base_revision_id, expected_version)
    base_row = cur[4:] if base_id == head else one(
        con, "SELECT instruction, input, response, system, messages, tags, tools FROM pair_revisions WHERE id = ?", [base_id])
    assert base_row is not None  # base_revision checked it
    base, base_tags = _content(base_row)
    new_content = pair_content(
        base["instruction"] if instruction is None else instruction,
        base["input"] if input is None else input,
        base["response"] if response is None else response,
        base["system"] if system is None else system,
        base["messages"] if messages is None else messages,
        base.get("tools") if tools is None else tools,
    )
    new_tags = base_tags if tags is None else list(tags)
    same_as_head = new_content == head_content and sorted(new_tags) == sorted(head_tags)
    conflict = base_id != head and not same_as_head  # two writers who agree do not conflict
    settles = same_as_head and base_id == head and bool(scalar(
        con, "SELECT count(*) FROM pair_revisions WHERE pair_id = ? AND conflict AND revision_no > ?", [pid, head_no]))
    ts = now()
    rid = head
    if not same_as_head or settles:
        rid = revision_id(pid, base_id, new_content, new_tags)
        if conflict:
            rid = content_id({"r": rid, "conflict_at": ts.isoformat(), "author": author}, prefix="r_")
        if not one(con, "SELECT 1 FROM pair_revisions WHERE id = ?", [rid]):
            rev_no = scalar(con, "SELECT coalesce(max(revision_no), 0) + 1 FROM pair_revisions WHERE pair_id = ?", [pid])
            con.execute(
                """INSERT INTO pair_revisions (id, pair_id, revision_no, parent_id, instruction, input,
                       response, system, messages, tags, author, reason, conflict, created_at, tools)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?::JSON, ?, ?, ?, ?, ?, ?::JSON)""",
                [rid, pid, rev_no, base_id, new_content["instruction"], new_content["input"],
                 new_content["response"], new_content["system"],
                 orjson.dumps(new_content["messages"]).decode() if new_content["messages"] else None,
                 new_tags, author, reason or ("kept this text over a conflicting edit" if settles else ""),
                 conflict, ts,
                 orjson.dumps(new_content["tools"]).decode() if new_content.get("tools") else None],
            )
    if conflict:
        return RevisionResult(revision_id=rid, version=version, conflict=True, head_revision_id=head)
    new_status = str(status) if status is not None else cur_status
    if rid != head or new_status != cur_status:
        con.execute(
            """UPDATE pairs SET head_revision_id = ?, head_tags = (SELECT tags FROM pair_revisions WHERE id = ?),
                   version = version + 1, status = ?, updated_by = ?, updated_at = ? WHERE id = ? AND version = ?""",
            [rid, rid, new_status, author, ts, pid, version],
        )
        con.execute(
            "INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [event_id("v_"), pid, rid, new_status, cur_status, author, reason, ts],
        )
        version += 1
    return RevisionResult(revision_id=rid, version=version, head_revision_id=rid)


def append_followups(con: duckdb.DuckDBPyConnection, batch: pa.Table, *, author: str, reason: str) -> int:
    """The set-based ``append_revision`` for pairs nobody has moved: each ``batch`` row
    (``BATCH_SCHEMA``: ``pair_id``, the new content and tags, and as ``revision_id`` the revision
    it follows) whose pair's head is still that revision becomes the new head, with a review row
    and ``version`` + 1, as ``append_revision`` would record it (no conflict can arise: the base
    is the head). Other rows are left out. The caller owns the transaction; returns how many."""
    rows = []
    for r in batch.to_pylist():
        content = pair_content(r["instruction"], r["input"], r["response"], r["system"],
                               orjson.loads(r["messages"]) if r["messages"] else None,
                               orjson.loads(r["tools"]) if r.get("tools") else None)
        rows.append({**r, "base_id": r["revision_id"], "review_id": event_id("v_"),
                     "revision_id": revision_id(r["pair_id"], r["revision_id"], content, r["tags"] or [])})
    if not rows:
        return 0
    ts = now()
    con.register("_followups_arrow", pa.Table.from_pylist(rows))
    try:
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _followups AS
               SELECT f.*, p.status AS cur_status,
                      (SELECT max(x.revision_no) FROM pair_revisions x WHERE x.pair_id = f.pair_id) + 1 AS rev_no
               FROM _followups_arrow f JOIN pairs p ON p.id = f.pair_id AND p.head_revision_id = f.base_id
               QUALIFY row_number() OVER (PARTITION BY f.pair_id ORDER BY f.revision_id) = 1""")
        n = scalar(con, "SELECT count(*) FROM _followups")
        con.execute(
            """INSERT INTO pair_revisions (id, pair_id, revision_no, parent_id, instruction, input, response, system,
                   messages, tags, author, reason, conflict, created_at, tools)
               SELECT revision_id, pair_id, rev_no, base_id, instruction, coalesce(input, ''), coalesce(response, ''),
                      coalesce(system, ''), messages::JSON, coalesce(tags, []), ?, ?, false, ?, tools::JSON
               FROM _followups""", [author, reason, ts])
        con.execute(
            """UPDATE pairs SET head_revision_id = f.revision_id, version = pairs.version + 1, updated_by = ?,
                   updated_at = ? FROM _followups f WHERE pairs.id = f.pair_id""", [author, ts])
        # only where the tags changed (a repair keeps them): DuckDB rewrites a row whose list value is
        # set, 0.4-3.5 s per 100K rows against 0.05 s without it
        con.execute("""UPDATE pairs SET head_tags = coalesce(f.tags, []) FROM _followups f
                       WHERE pairs.id = f.pair_id AND pairs.head_tags IS DISTINCT FROM coalesce(f.tags, [])""")
        con.execute("INSERT INTO reviews SELECT review_id, pair_id, revision_id, cur_status, cur_status, ?, ?, ? "
                    "FROM _followups", [author, reason, ts])
        return int(n)
    finally:
        con.execute("DROP TABLE IF EXISTS _followups")
        con.unregister("_followups_arrow")


def revise(con: duckdb.DuckDBPyConnection, pid: str, **changes: Any) -> RevisionResult:
    """``append_revision`` in its own transaction; an edit based on an older revision raises
    ``ConflictError`` after it has been committed beside the head (nothing is overwritten).
    Inside a caller's ``atomic`` block the revision is committed (or not) with that block."""
    with atomic(con):
        res = append_revision(con, pid, **changes)
    if res.conflict:
        raise ConflictError(
            f"Pair {pid} changed since you opened it (someone else saved revision {res.head_revision_id}). "
            f"Your edit was kept as revision {res.revision_id} beside the current one, marked as a conflict; "
            f"nothing was overwritten. Compare the two and save the text that should stand.",
            kept_revision_id=res.revision_id,
        )
    return res


def set_status(
    con: duckdb.DuckDBPyConnection,
    pid: str,
    status: Status | str,
    *,
    author: str,
    comment: str = "",
    expected_version: int | None = None,
    duplicate_of: str | None = None,
) -> int:
    """Record a review decision; returns the new version. Own transaction."""
    status = Status(status)
    with atomic(con):
        cur = one(con, "SELECT version, status, head_revision_id FROM pairs WHERE id = ?", [pid])
        if cur is None:
            raise KeyError(f"no pair with id {pid!r}")
        version, prev, head = cur
        if expected_version is not None and expected_version != version:
            raise ConflictError(
                f"Pair {pid} changed since you opened it (version {expected_version} -> {version}); "
                f"reload it and decide again."
            )
        ts = now()
        con.execute(
            """UPDATE pairs SET status = ?, version = version + 1, updated_by = ?, updated_at = ?,
                   duplicate_of = CASE WHEN ? = 'duplicate' THEN ? ELSE NULL END
               WHERE id = ?""",
            [status.value, author, ts, status.value, duplicate_of, pid],
        )
        con.execute(
            "INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [event_id("v_"), pid, head, status.value, prev, author, comment, ts],
        )
        return version + 1


def set_status_many(
    con: duckdb.DuckDBPyConnection,
    pair_ids: Sequence[str],
    status: Status | str,
    *,
    author: str,
    comment: str = "",
    duplicate_of: Sequence[str | None] | None = None,
) -> int:
    """Bulk review decision (one transaction); pairs already in ``status`` are left alone."""
    status = Status(status)
    if not pair_ids:
        return 0
    tbl = pa.table({"pair_id": list(pair_ids),
                    "dup": list(duplicate_of) if duplicate_of is not None else [None] * len(pair_ids)},
                   schema=pa.schema([("pair_id", pa.string()), ("dup", pa.string())]))
    ts = now()
    with atomic(con):
        con.register("_ids", tbl)
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _chg AS
               SELECT p.id, p.status AS prev, p.head_revision_id AS head, i.dup
               FROM pairs p JOIN (SELECT DISTINCT ON (pair_id) * FROM _ids) i ON i.pair_id = p.id
               WHERE p.status <> ?""",
            [status.value],
        )
        n = scalar(con, "SELECT count(*) FROM _chg")
        con.execute(
            """INSERT INTO reviews SELECT 'v_' || md5(id || ? || random()::VARCHAR), id, head, ?, prev, ?, ?, ?
               FROM _chg""",
            [ts.isoformat(), status.value, author, comment, ts],
        )
        con.execute(
            """UPDATE pairs SET status = ?, version = pairs.version + 1, updated_by = ?, updated_at = ?,
                   duplicate_of = CASE WHEN ? = 'duplicate' THEN _chg.dup ELSE NULL END
               FROM _chg WHERE pairs.id = _chg.id""",
            [status.value, author, ts, status.value],
        )
        con.execute("DROP TABLE _chg")
        con.unregister("_ids")
        return int(n)


def revisions_frame(con: duckdb.DuckDBPyConnection, revision_ids: Sequence[str]) -> pl.DataFrame:
    """Content of specific revisions (e.g. a slice's items), in the order given."""
    tbl = pa.table({"rid": list(revision_ids), "pos": list(range(len(revision_ids)))})
    con.register("_rids", tbl)
    try:
        return con.sql(
            """SELECT r.id AS revision_id, r.pair_id, r.instruction, r.input, r.response, r.system,
                      r.messages::VARCHAR AS messages, r.tags, p.document_id, p.page, p.char_start, p.char_end,
                      p.generator, p.generator_version, p.source_uri, p.source_line, p.status,
                      r.tools::VARCHAR AS tools
               FROM _rids x JOIN pair_revisions r ON r.id = x.rid JOIN pairs p ON p.id = r.pair_id
               ORDER BY x.pos"""
        ).pl()
    finally:
        con.unregister("_rids")
