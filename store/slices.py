"""Slices: named, frozen, seeded lists of pair-revision ids.

A slice is written once and never changed. It records the filter that chose it, the seed,
the eval fraction, the unit kept whole on one side of the split (``pair``, ``document`` or
``cluster``: pairs from one document never straddle train and eval) and an optional parent
slice. Its ``content_hash`` is the SHA-256 of its ordered (revision, split, weight) items,
so two slices with the same hash train on exactly the same data. The same name again makes
a new version; ``get(name)`` returns the newest.

Split assignment is deterministic: units are sorted, shuffled with ``random.Random(seed)``
and the first ``round(n_units * eval_fraction)`` go to eval. Item order inside the slice is
a seeded shuffle too, so the training order is reproducible.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import polars as pl

from store.db import atomic, frame, one, scalar
from store.filters import compile_filter
from store.ids import canonical_json, content_id, event_id
from store.pairs import now
from store.records import Slice, SliceFilter, SliceItem
from store.refs import NoSuchId, by_prefix

SPLIT_UNITS = ("pair", "document", "cluster", "existing")


@dataclass(frozen=True)
class Item:
    pair_id: str
    revision_id: str
    split: str
    weight: float = 1.0


def assign_splits(units: Sequence[str], eval_fraction: float, seed: int) -> dict[str, str]:
    """Map each distinct unit to train/eval; deterministic for (set of units, fraction, seed)."""
    distinct = sorted(set(units))
    random.Random(seed).shuffle(distinct)
    n_eval = int(round(len(distinct) * eval_fraction))
    if eval_fraction > 0 and n_eval == 0 and len(distinct) > 1:
        n_eval = 1
    return {u: ("eval" if i < n_eval else "train") for i, u in enumerate(distinct)}


def candidates(con: duckdb.DuckDBPyConnection, flt: SliceFilter) -> pl.DataFrame:
    """Pairs matching ``flt`` with the columns split assignment needs."""
    where, params = compile_filter(flt)
    lim = f" LIMIT {int(flt.limit)}" if flt.limit else ""
    return con.sql(
        f"""SELECT p.id AS pair_id, p.head_revision_id AS revision_id, p.split AS declared_split,
                   coalesce(p.document_id, p.id) AS document_unit,
                   coalesce(
                     (SELECT min(m2.pair_id) FROM duplicate_members m1
                        JOIN duplicate_clusters c ON c.id = m1.cluster_id AND c.resolution <> 'not_duplicates'
                        JOIN duplicate_members m2 ON m2.cluster_id = m1.cluster_id
                      WHERE m1.pair_id = p.id), p.id) AS cluster_unit
            FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
            WHERE {where} ORDER BY p.id{lim}""",
        params=params,
    ).pl()


def plan_frame(cands: pl.DataFrame, *, seed: int, eval_fraction: float, split_by: str) -> pl.DataFrame:
    """Pure: split assignment and seeded order for candidate rows, as columns (pair_id, revision_id,
    split, weight): a 10M-pair slice is planned without a Python object per item (``plan_items``
    gives the same order; 9M items took 67 s and 8 GB as objects)."""
    if split_by not in SPLIT_UNITS:
        raise ValueError(f"split_by must be one of {SPLIT_UNITS}, not {split_by!r}")
    if split_by == "existing":
        split = cands.select(pl.col("declared_split").replace("", None).fill_null("train")).to_series()
    else:
        unit = cands[{"pair": "pair_id", "document": "document_unit", "cluster": "cluster_unit"}[split_by]]
        assignment = assign_splits(unit.to_list(), eval_fraction, seed)
        split = unit.replace_strict(assignment, return_dtype=pl.String)
    out = cands.select("pair_id", "revision_id").with_columns(split=split.alias("split"), weight=pl.lit(1.0))
    out = out.sort("pair_id")  # by code point, as Python sorts strings
    order = list(range(out.height))
    random.Random(seed + 1).shuffle(order)  # the permutation a shuffle of the items themselves makes
    return out[order].sort(pl.col("split") != "train", maintain_order=True)  # stable: train first


def plan_items(cands: pl.DataFrame, *, seed: int, eval_fraction: float, split_by: str) -> list[Item]:
    """``plan_frame`` as items."""
    return [Item(*row) for row in plan_frame(cands, seed=seed, eval_fraction=eval_fraction,
                                             split_by=split_by).iter_rows()]


HASH_ROWS = 500_000  # items serialised at a time for the content hash


def items_hash(items: Sequence[Item] | pl.DataFrame, part_rows: int = HASH_ROWS) -> str:
    """SHA-256 of the canonical JSON of the ordered [revision, split, weight] items; a frame
    (``plan_frame``) is hashed in parts to the same bytes, without one list of all its items."""
    if not isinstance(items, pl.DataFrame):
        return content_id([[it.revision_id, it.split, it.weight] for it in items], prefix="h_", length=64)
    h = hashlib.sha256(b"[")
    for k, part in enumerate(items.select("revision_id", "split", "weight").iter_slices(part_rows)):
        if k:
            h.update(b",")
        h.update(canonical_json(part.rows())[1:-1])
    h.update(b"]")
    return "h_" + h.hexdigest()


def freeze(
    con: duckdb.DuckDBPyConnection,
    name: str,
    items: Sequence[Item] | pl.DataFrame,
    *,
    filter: dict[str, Any] | None = None,
    seed: int = 0,
    eval_fraction: float = 0.0,
    split_by: str = "pair",
    parent_id: str | None = None,
    description: str = "",
    author: str = "",
) -> Slice:
    """Write a slice and its items in one transaction; returns the frozen record.

    Freezing exactly the newest version of ``name`` again (same items, filter, seed, split and
    parent) returns that version instead of a copy, so a re-run or a double click is a no-op.
    """
    if not name or not name.strip():
        raise ValueError("a slice needs a name")
    if len(items) == 0:
        raise ValueError(f"slice {name!r} would be empty: no pairs match its filter")
    h = items_hash(items)
    if not isinstance(items, pl.DataFrame):
        items = pl.DataFrame({"pair_id": [it.pair_id for it in items], "revision_id": [it.revision_id for it in items],
                              "split": [it.split for it in items], "weight": [float(it.weight) for it in items]},
                             schema={"pair_id": pl.String, "revision_id": pl.String, "split": pl.String,
                                     "weight": pl.Float64})
    ts = now()
    with atomic(con):
        same = scalar(con, """SELECT id FROM slices WHERE name = ? AND content_hash = ? AND filter = ?::JSON
                                AND seed = ? AND eval_fraction = ? AND split_by = ? AND parent_id IS NOT DISTINCT FROM ?
                                AND version = (SELECT max(version) FROM slices WHERE name = ?)""",
                      [name, h, orjson.dumps(filter or {}).decode(), seed, eval_fraction, split_by, parent_id, name])
        if same is not None:
            # The same slice again (a re-run, a double click): the newest version already is it.
            return get(con, same)
        version = scalar(con,
            "SELECT coalesce(max(version), 0) + 1 FROM slices WHERE name = ?", [name]
        )
        sid = event_id("s_")
        n_train = int((items["split"] == "train").sum())
        con.execute(
            "INSERT INTO slices VALUES (?, ?, ?, ?, ?::JSON, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [sid, name, version, h, orjson.dumps(filter or {}).decode(), seed, eval_fraction, split_by,
             parent_id, len(items), n_train, len(items) - n_train, description, author, ts],
        )
        tbl = items.select(slice_id=pl.lit(sid), position=pl.int_range(pl.len(), dtype=pl.Int64), pair_id="pair_id",
                           revision_id="revision_id", split="split", weight=pl.col("weight").cast(pl.Float64)).to_arrow()
        con.register("_items", tbl)
        con.execute("INSERT INTO slice_items SELECT * FROM _items")
        con.unregister("_items")
    return get(con, sid)


def create(
    con: duckdb.DuckDBPyConnection,
    name: str,
    flt: SliceFilter,
    *,
    seed: int = 0,
    eval_fraction: float = 0.1,
    split_by: str = "document",
    parent_id: str | None = None,
    description: str = "",
    author: str = "",
) -> Slice:
    """Freeze the pairs matching ``flt`` (their current head revisions) as a new slice."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval fraction must be in [0, 1), not {eval_fraction}")
    items = plan_frame(candidates(con, flt), seed=seed, eval_fraction=eval_fraction, split_by=split_by)
    return freeze(
        con, name, items, filter=flt.model_dump(mode="json", exclude_none=True), seed=seed,
        eval_fraction=eval_fraction, split_by=split_by, parent_id=parent_id, description=description,
        author=author,
    )


_SLICE_COLS = """id, name, version, content_hash, filter, seed, eval_fraction, split_by, parent_id, n_items,
    n_train, n_eval, description, author, created_at"""


def _to_slice(r: tuple) -> Slice:
    return Slice(
        id=r[0], name=r[1], version=r[2], content_hash=r[3], filter=orjson.loads(r[4]) if r[4] else {},
        seed=r[5], eval_fraction=r[6], split_by=r[7], parent_id=r[8], n_items=r[9], n_train=r[10],
        n_eval=r[11], description=r[12], author=r[13], created_at=r[14],
    )


def get(con: duckdb.DuckDBPyConnection, ref: str) -> Slice:
    """A slice by id, ``name`` (newest version), ``name@version`` or an unambiguous id prefix."""
    name, _, ver = ref.partition("@")
    if ver:
        row = one(con, f"SELECT {_SLICE_COLS} FROM slices WHERE name = ? AND version = ?", [name, int(ver)])
    else:
        row = one(con,
            f"SELECT {_SLICE_COLS} FROM slices WHERE id = ? OR name = ? ORDER BY (id = ?) DESC, version DESC LIMIT 1",
            [ref, ref, ref],
        )
    missing = f"no slice named {ref!r}; `tuneloop slice list` shows the slices"
    if row is None and ver:
        raise NoSuchId(missing)
    if row is None:
        try:
            sid = by_prefix(con, "slice", ref)
        except NoSuchId:
            raise NoSuchId(missing) from None
        row = one(con, f"SELECT {_SLICE_COLS} FROM slices WHERE id = ?", [sid])
    assert row is not None
    return _to_slice(row)


def list_slices(con: duckdb.DuckDBPyConnection) -> list[Slice]:
    rows = con.execute(f"SELECT {_SLICE_COLS} FROM slices ORDER BY name, version").fetchall()
    return [_to_slice(r) for r in rows]


def items(con: duckdb.DuckDBPyConnection, slice_id: str, split: str | None = None) -> list[SliceItem]:
    sql = "SELECT slice_id, position, pair_id, revision_id, split, weight FROM slice_items WHERE slice_id = ?"
    params: list[Any] = [slice_id]
    if split:
        sql += " AND split = ?"
        params.append(split)
    rows = con.execute(sql + " ORDER BY position", params).fetchall()
    return [SliceItem(slice_id=r[0], position=r[1], pair_id=r[2], revision_id=r[3], split=r[4], weight=r[5])
            for r in rows]


def examples(con: duckdb.DuckDBPyConnection, slice_id: str, split: str | None = None) -> pl.DataFrame:
    """The slice's items joined with their (frozen) revision content and provenance, in order."""
    sql = """SELECT i.position, i.split, i.weight, r.id AS revision_id, r.pair_id, r.instruction, r.input,
                    r.response, r.system, r.messages::VARCHAR AS messages, r.tags, p.document_id, p.page,
                    p.char_start, p.char_end, p.generator, p.generator_version, p.source_uri, p.source_line,
                    r.tools::VARCHAR AS tools
             FROM slice_items i JOIN pair_revisions r ON r.id = i.revision_id JOIN pairs p ON p.id = i.pair_id
             WHERE i.slice_id = ?"""
    params: list[Any] = [slice_id]
    if split:
        sql += " AND i.split = ?"
        params.append(split)
    return con.sql(sql + " ORDER BY i.position", params=params).pl()


def references(con: duckdb.DuckDBPyConnection, slice_id: str) -> list[str]:
    """The responses of every item of a slice (train and eval), in order: what decides the task kind
    of predictions on it (``scoring.task_of_predictions``)."""
    rows = con.execute(
        """SELECT r.response FROM slice_items i JOIN pair_revisions r ON r.id = i.revision_id
           WHERE i.slice_id = ? AND r.response IS NOT NULL ORDER BY i.position""", [slice_id]).fetchall()
    return [r[0] for r in rows]


def lineage(con: duckdb.DuckDBPyConnection, slice_id: str) -> list[Slice]:
    """This slice and its ancestors, newest first."""
    out: list[Slice] = []
    seen: set[str] = set()
    cur: str | None = slice_id
    while cur and cur not in seen:
        seen.add(cur)
        s = get(con, cur)
        out.append(s)
        cur = s.parent_id
    return out


def items_page(
    con: duckdb.DuckDBPyConnection, slice_id: str, *, split: str | None = None, limit: int = 50, offset: int = 0
) -> pl.DataFrame:
    """A page of a slice's frozen items with their revision text (cut to 300 characters)."""
    return frame(
        con,
        """SELECT i.position, i.split, i.weight, i.pair_id, left(r.instruction, 300) AS instruction,
                  left(r.response, 300) AS response, p.status AS current_status,
                  p.head_revision_id <> i.revision_id AS revised_since
           FROM slice_items i JOIN pair_revisions r ON r.id = i.revision_id JOIN pairs p ON p.id = i.pair_id
           WHERE i.slice_id = ? AND (? IS NULL OR i.split = ?) ORDER BY i.position LIMIT ? OFFSET ?""",
        [slice_id, split, split, int(limit), int(offset)],
    )


def breakdown(con: duckdb.DuckDBPyConnection, slice_id: str) -> pl.DataFrame:
    """Items per split and source (generator) of a slice."""
    return frame(
        con,
        """SELECT i.split, p.generator AS source, count(*) AS pairs FROM slice_items i JOIN pairs p ON p.id = i.pair_id
           WHERE i.slice_id = ? GROUP BY 1, 2 ORDER BY 1, 2""",
        [slice_id],
    )


def containing(con: duckdb.DuckDBPyConnection, pair_ids: Sequence[str]) -> dict[str, list[str]]:
    """The frozen slices holding each of ``pair_ids``: {pair id: ["name@version", …]} (pairs in no
    slice are left out). A slice points at the revisions it froze, so a later status change never
    alters it; callers ask before changing such a pair because the slice keeps training on it."""
    if not pair_ids:
        return {}
    rows = con.execute(
        """SELECT DISTINCT i.pair_id, s.name, s.version FROM slice_items i JOIN slices s ON s.id = i.slice_id
           WHERE i.pair_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY i.pair_id, s.name, s.version""",
        [list(pair_ids)],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for pid, name, version in rows:
        out.setdefault(pid, []).append(f"{name}@{version}")
    return out
