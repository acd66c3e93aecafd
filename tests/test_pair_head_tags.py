"""``pairs.head_tags`` is the head revision's tags, whichever way the head moved (issue 19).

The tag filter of Explore, slices and exports reads ``head_tags`` instead of joining every pair to
its revision, so a path that moves ``head_revision_id`` without it would silently filter on stale
tags. Real project databases, real imports and edits; the check is against ``pair_revisions``.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from ingest.importer import import_file
from store import pair_pages
from store import pairs as pairs_store
from store.db import ConflictError, atomic
from store.ids import pair_content
from store.migrations import MIGRATIONS, migrate
from store.records import SliceFilter


def stale(con) -> list[tuple[str, list[str], list[str]]]:
    """Pairs whose ``head_tags`` differ from their head revision's tags."""
    return con.execute(
        """SELECT p.id, p.head_tags, r.tags FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
           WHERE p.head_tags IS DISTINCT FROM r.tags""").fetchall()


def tagged(con, tag: str) -> set[str]:
    flt = SliceFilter(tags_any=[tag], exclude_duplicates=False)
    ids = set(pair_pages.page_ids(con, flt, limit=1000))
    assert {p.id for p in pairs_store.query(con, flt, limit=1000)} == ids  # the compiled filter, as slices use it
    assert pair_pages.count(con, flt) == len(ids)
    return ids


def edit(con, pid: str, **changes):
    return pairs_store.revise(con, pid, base_revision_id=pairs_store.get(con, pid).head_revision_id, **changes)


def test_every_path_that_moves_the_head_moves_its_tags(project, tmp_path):
    broken = {"instruction": "Order a cafÃ© au lait.", "output": "Itâ€™s 3 â‚¬."}  # repaired: a 2nd revision
    rows = [broken, {"instruction": "Plain?", "output": "Fine.", "tags": ["faq"]}, {"instruction": "Bare?", "output": "Yes."}]
    f = tmp_path / "rows.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = import_file(project, f, tags=["batch"], fix_text=True)
    assert (r.new, r.repaired) == (3, 1)
    with project.connect() as con:
        assert stale(con) == []
        ids = {p.instruction: p.id for p in pairs_store.query(con, SliceFilter(exclude_duplicates=False))}
        cafe, plain, bare = ids["Order a café au lait."], ids["Plain?"], ids["Bare?"]
        assert tagged(con, "batch") == {cafe, plain, bare}  # the import's tag, on the repaired head too
        assert tagged(con, "faq") == {plain}
        head = pairs_store.get(con, cafe)  # the set-based follow-up revision, with other tags this time
        follow = {**pairs_store.batch_row(pair_content(head.instruction, "", head.response), tags=["bulk"], author="x"),
                  "pair_id": cafe, "revision_id": head.head_revision_id}
        with atomic(con):
            assert pairs_store.append_followups(con, pairs_store.rows_to_arrow([follow]), author="x", reason="r") == 1
        assert tagged(con, "bulk") == {cafe} and tagged(con, "batch") == {plain, bare} and stale(con) == []

        edit(con, bare, author="ann", tags=["refund", "billing"])
        assert tagged(con, "refund") == {bare} and tagged(con, "batch") == {plain}
        edit(con, bare, author="ann", tags=[])  # all tags removed
        assert tagged(con, "refund") == set() and stale(con) == []
        edit(con, bare, author="ann", tags=["billing"])
        assert tagged(con, "billing") == {bare} and stale(con) == []

        version = pairs_store.get(con, plain).version
        edit(con, plain, author="bob", response="Fine, thanks.")  # text only: tags stay
        assert tagged(con, "faq") == {plain}
        with pytest.raises(ConflictError):  # an edit on a stale version: kept beside, head not moved
            pairs_store.revise(con, plain, author="cy", tags=["stale"], expected_version=version,
                               base_revision_id=pairs_store.history(con, plain)[0].id)
        assert tagged(con, "stale") == set() and tagged(con, "faq") == {plain}
        pairs_store.set_status(con, plain, "accepted", author="bob")
        assert stale(con) == []
        assert set(pair_pages.facets(con)["tags"]) == {"batch", "faq", "billing", "bulk"}


def test_the_migration_fills_head_tags_of_a_project_stored_before_it(tmp_path):
    names = sorted(n for n, _ in MIGRATIONS)
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    migrate(con, upto=names[names.index("m180_pair_head_tags") - 1])
    ts = pairs_store.now()
    con.execute(
        """INSERT INTO pair_revisions (id, pair_id, revision_no, parent_id, instruction, tags, author, created_at)
           VALUES ('r_1', 'p_a', 1, NULL, 'q', ['old'], 'x', ?), ('r_2', 'p_a', 2, 'r_1', 'q2', ['new', 'two'], 'x', ?),
                  ('r_3', 'p_b', 1, NULL, 'b', [], 'x', ?), ('r_4', 'p_c', 1, NULL, 'c', ['c'], 'x', ?)""",
        [ts] * 4)
    con.execute(
        """INSERT INTO pairs (id, head_revision_id, version, status, generator, author, updated_by, created_at, updated_at)
           VALUES ('p_c', 'r_4', 1, 'pending', 'import', 'x', 'x', ?, ?), ('p_a', 'r_2', 2, 'accepted', 'import', 'x', 'x', ?, ?),
                  ('p_b', 'r_3', 1, 'pending', 'import', 'x', 'x', ?, ?)""", [ts] * 6)
    before = con.execute("SELECT * FROM pairs").fetchall()
    assert migrate(con) == names[names.index("m180_pair_head_tags"):]
    # the table is copied: same rows in the same order, the new column filled, constraints and index kept
    assert con.execute("SELECT * EXCLUDE (head_tags) FROM pairs").fetchall() == before
    assert con.execute("SELECT id, head_tags FROM pairs").fetchall() == [
        ("p_c", ["c"]), ("p_a", ["new", "two"]), ("p_b", [])]
    assert stale(con) == []
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO pairs (id, head_revision_id, version, status, generator, author, updated_by, created_at, "
                    "updated_at) VALUES ('p_a', 'r_1', 1, 'pending', 'import', 'x', 'x', ?, ?)", [ts, ts])
    assert con.execute("SELECT index_name FROM duckdb_indexes() WHERE table_name = 'pairs'").fetchall() == [
        ("pairs_status_idx",)]
