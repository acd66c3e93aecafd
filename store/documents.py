"""Documents, their elements and chunks.

- A document row is keyed by ``d_`` + sha256 of the file bytes: the same bytes are stored
  once, whatever their name, and re-ingesting them writes nothing.
- Versions: a document whose ``uri`` was seen before with other bytes gets
  ``previous_id`` = the newest older row of that uri. Older rows are never changed, so
  pairs made from an older version keep pointing at exactly the text they came from.
- documents, elements and chunks are append-only; the caller owns the transaction (one
  per document, so a file lands whole or not at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
import pyarrow as pa

from store.db import frame, one, scalar
from store.records import Chunk, Document, Element, Pair
from store.refs import ambiguous, matches

if TYPE_CHECKING:  # polars loads where a frame is asked for: ingest, which never asks, starts ~0.1 s sooner
    import polars as pl

_DOC_COLS = "id, uri, name, filetype, size_bytes, n_pages, title, text, previous_id, metadata, created_at"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _json(obj: dict[str, Any] | None) -> str | None:
    return orjson.dumps(obj).decode() if obj else None


def _load(raw: Any) -> dict[str, Any]:
    if not raw:
        return {}
    return orjson.loads(raw) if isinstance(raw, str | bytes) else dict(raw)


def _doc(row: tuple) -> Document:
    (id_, uri, name, ft, size, pages, title, text, prev, meta, created) = row
    return Document(id=id_, uri=uri, name=name, filetype=ft, size_bytes=size, n_pages=pages, title=title,
                    text=text, previous_id=prev, metadata=_load(meta), created_at=created)


def get(con: duckdb.DuckDBPyConnection, document_id: str) -> Document | None:
    row = one(con, f"SELECT {_DOC_COLS} FROM documents WHERE id = ?", [document_id])
    return _doc(row) if row else None


def existing(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> set[str]:
    if not ids:
        return set()
    rows = con.execute("SELECT id FROM documents WHERE list_contains(?, id)", [list(ids)]).fetchall()
    return {r[0] for r in rows}


def latest_for_uri(con: duckdb.DuckDBPyConnection, uri: str, exclude: str | None = None) -> str | None:
    """The newest stored version of ``uri`` (other than ``exclude``)."""
    row = one(con, """SELECT id FROM documents WHERE uri = ? AND id IS DISTINCT FROM ?
                      ORDER BY created_at DESC, id LIMIT 1""", [uri, exclude])
    return row[0] if row else None


def versions(con: duckdb.DuckDBPyConnection, uri: str) -> list[Document]:
    rows = con.execute(f"SELECT {_DOC_COLS} FROM documents WHERE uri = ? ORDER BY created_at, id",
                       [uri]).fetchall()
    return [_doc(r) for r in rows]


def _documents_arrow(docs: Sequence[Document], author: str) -> pa.Table:
    now = _now()
    return pa.table({
        "id": [d.id for d in docs], "uri": [d.uri for d in docs], "name": [d.name for d in docs],
        "filetype": [d.filetype for d in docs], "size_bytes": pa.array([d.size_bytes for d in docs], pa.int64()),
        "n_pages": pa.array([d.n_pages for d in docs], pa.int32()), "title": [d.title for d in docs],
        "text": [d.text for d in docs], "previous_id": pa.array([d.previous_id for d in docs], pa.string()),
        "metadata": pa.array([_json(d.metadata) for d in docs], pa.string()),
        "created_at": pa.array([d.created_at or now for d in docs], pa.timestamp("us")),
        "author": [author] * len(docs),
    })


def _elements_arrow(elements: Sequence[Element]) -> pa.Table:
    return pa.table({
        "id": [e.id for e in elements], "document_id": [e.document_id for e in elements],
        "idx": pa.array([e.idx for e in elements], pa.int32()), "type": [e.type for e in elements],
        "text": [e.text for e in elements], "page": pa.array([e.page for e in elements], pa.int32()),
        "parent_id": pa.array([e.parent_id for e in elements], pa.string()),
        "char_start": pa.array([e.char_start for e in elements], pa.int32()),
        "char_end": pa.array([e.char_end for e in elements], pa.int32()),
        "metadata": pa.array([_json(e.metadata) for e in elements], pa.string()),
    })


def insert_many(con: duckdb.DuckDBPyConnection, items: Sequence[tuple[Document, Sequence[Element]]], *,
                author: str = "") -> list[Document | None]:
    """Store new documents with their elements, set-based (the caller owns the transaction).

    Each document's ``previous_id`` is set to the newest stored version of its uri (or the one
    before it in ``items``). Returns, per item, the document as stored, or None if its id was
    already present (nothing written for it).
    """
    if not items:
        return []
    present = existing(con, [d.id for d, _ in items])
    uris = sorted({d.uri for d, _ in items})
    latest = dict(con.execute(
        """SELECT uri, arg_max(id, created_at) FROM documents WHERE list_contains(?, uri) GROUP BY uri""",
        [uris]).fetchall())
    out: list[Document | None] = []
    new_docs: list[Document] = []
    new_elements: list[Element] = []
    now = _now()
    for doc, els in items:
        if doc.id in present:
            out.append(None)
            continue
        prev = latest.get(doc.uri)
        doc = doc.model_copy(update={"previous_id": prev if prev != doc.id else None,
                                     "created_at": doc.created_at or now})
        latest[doc.uri] = doc.id
        present.add(doc.id)
        new_docs.append(doc)
        new_elements += els
        out.append(doc)
    if new_docs:
        con.register("_documents_arrow", _documents_arrow(new_docs, author))
        try:
            con.execute(f"""INSERT INTO documents ({_DOC_COLS}, author)
                            SELECT {_DOC_COLS.replace("metadata", "metadata::JSON")}, author
                            FROM _documents_arrow""")
        finally:
            con.unregister("_documents_arrow")
    if new_elements:
        con.register("_elements_arrow", _elements_arrow(new_elements))
        try:
            con.execute("""INSERT INTO elements SELECT id, document_id, idx, type, text, page, parent_id,
                               char_start, char_end, metadata::JSON FROM _elements_arrow""")
        finally:
            con.unregister("_elements_arrow")
    return out


def insert(con: duckdb.DuckDBPyConnection, doc: Document, elements: Sequence[Element], *,
           author: str = "") -> bool:
    """Store one document and its elements; False (and nothing written) if the id is present."""
    return insert_many(con, [(doc, elements)], author=author)[0] is not None


def existing_pair_ids(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> set[str]:
    if not ids:
        return set()
    return {r[0] for r in con.execute("SELECT id FROM pairs WHERE list_contains(?, id)", [list(ids)]).fetchall()}


def insert_chunks(con: duckdb.DuckDBPyConnection, chunks: Sequence[Chunk]) -> int:
    """Store chunks not stored yet (ids hash document and span); return how many were new."""
    if not chunks:
        return 0
    tbl = pa.table({
        "id": [c.id for c in chunks], "document_id": [c.document_id for c in chunks],
        "idx": pa.array([c.idx for c in chunks], pa.int32()), "title": [c.title for c in chunks],
        "text": [c.text for c in chunks], "element_ids": pa.array([c.element_ids for c in chunks],
                                                                   pa.list_(pa.string())),
        "page_start": pa.array([c.page_start for c in chunks], pa.int32()),
        "page_end": pa.array([c.page_end for c in chunks], pa.int32()),
        "char_start": pa.array([c.char_start for c in chunks], pa.int32()),
        "char_end": pa.array([c.char_end for c in chunks], pa.int32()),
    })
    con.register("_chunks_arrow", tbl)
    try:
        before = scalar(con, "SELECT count(*) FROM chunks")
        con.execute("""INSERT INTO chunks SELECT * FROM _chunks_arrow c
                       WHERE NOT EXISTS (SELECT 1 FROM chunks x WHERE x.id = c.id)""")
        return int(scalar(con, "SELECT count(*) FROM chunks")) - int(before)
    finally:
        con.unregister("_chunks_arrow")


def elements(con: duckdb.DuckDBPyConnection, document_id: str) -> list[Element]:
    rows = con.execute(
        """SELECT id, document_id, idx, type, text, page, parent_id, char_start, char_end, metadata
           FROM elements WHERE document_id = ? ORDER BY idx""", [document_id]).fetchall()
    return [Element(id=r[0], document_id=r[1], idx=r[2], type=r[3], text=r[4], page=r[5], parent_id=r[6],
                    char_start=r[7], char_end=r[8], metadata=_load(r[9])) for r in rows]


def chunks(con: duckdb.DuckDBPyConnection, document_id: str) -> list[Chunk]:
    rows = con.execute(
        """SELECT id, document_id, idx, title, text, element_ids, page_start, page_end, char_start, char_end
           FROM chunks WHERE document_id = ? ORDER BY char_start, char_end""", [document_id]).fetchall()
    return [Chunk(id=r[0], document_id=r[1], idx=r[2], title=r[3], text=r[4], element_ids=list(r[5]),
                  page_start=r[6], page_end=r[7], char_start=r[8], char_end=r[9]) for r in rows]


def list_frame(con: duckdb.DuckDBPyConnection, limit: int = 100, offset: int = 0) -> pl.DataFrame:
    """One row per stored document version, newest first, with element and pair counts."""
    return frame(con, """
        SELECT d.id, d.uri, d.filetype, d.n_pages, d.title, d.size_bytes, d.previous_id, d.created_at,
               (SELECT count(*) FROM elements e WHERE e.document_id = d.id) AS n_elements,
               (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS n_chunks,
               (SELECT count(*) FROM pairs p WHERE p.document_id = d.id) AS n_pairs
        FROM documents d ORDER BY d.created_at DESC, d.id LIMIT ? OFFSET ?""", [limit, offset])


def count(con: duckdb.DuckDBPyConnection) -> int:
    return int(scalar(con, "SELECT count(*) FROM documents"))


def find(con: duckdb.DuckDBPyConnection, key: str) -> Document | None:
    """A document by full id, unique id prefix, or uri (newest version); None when nothing matches.

    A prefix that several ids start with raises ``store.refs.AmbiguousId`` listing them."""
    doc = get(con, key)
    if doc:
        return doc
    latest = latest_for_uri(con, key)
    if latest:
        return get(con, latest)
    ids = matches(con, "document", key)
    if len(ids) > 1:
        raise ambiguous("document", key, ids)
    return get(con, ids[0]) if ids else None


def pairs_frame(con: duckdb.DuckDBPyConnection, document_id: str) -> pl.DataFrame:
    """The pairs made from a document (head content), in span order."""
    return frame(con, """
        SELECT p.id, p.status, p.generator, p.generator_version, p.page, p.char_start, p.char_end,
               p.element_ids, r.instruction, r.response
        FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
        WHERE p.document_id = ? ORDER BY p.char_start NULLS LAST, p.generator, p.id""", [document_id])


# ---------------------------------------------------------------- provenance


@dataclass(frozen=True)
class SourceContext:
    document_id: str
    name: str
    uri: str
    title: str
    page: int | None
    before: str
    span: str
    after: str
    before_start: int = 0  # document offset of ``before``: text before it was not fetched
    doc_chars: int = 0  # length of the whole document text


def source_context(con: duckdb.DuckDBPyConnection, pair: Pair, margin: int = 700) -> SourceContext | None:
    """The pair's source span with ``margin`` characters either side (sliced in SQL)."""
    pv = pair.provenance
    if not pv.document_id:
        return None
    s = max(0, int(pv.char_start or 0))
    e = max(s, int(pv.char_end if pv.char_end is not None else s))
    b0 = max(0, s - margin)
    row = one(
        con,
        """SELECT id, name, uri, title, substr(text, ? + 1, ?), substr(text, ? + 1, ?), substr(text, ? + 1, ?),
                  length(text)
           FROM documents WHERE id = ?""",
        [b0, s - b0, s, e - s, e, margin, pv.document_id],
    )
    if row is None:
        return None
    return SourceContext(document_id=row[0], name=row[1], uri=row[2], title=row[3], page=pv.page,
                         before=row[4] or "", span=row[5] or "", after=row[6] or "", before_start=b0,
                         doc_chars=int(row[7] or 0))
