"""Pairs: content ids, append-only revisions, reviews, optimistic concurrency."""

from __future__ import annotations

import threading

import pytest

from store import pairs
from store.db import ConflictError, retry_on_conflict
from store.ids import pair_content, pair_id
from store.records import NewPair, PairContent, Provenance, SliceFilter, Status


def _new(instr: str, resp: str = "r", **kw) -> NewPair:
    return NewPair(content=PairContent(instruction=instr, response=resp), **kw)


def test_ids_are_content_hashes_and_duplicates_collide(project):
    with project.connect() as con:
        a = pairs.add_pairs(con, [_new("q1"), _new("q1"), _new("q2")])
        assert a[0] == a[1] != a[2]
        assert a[0] == pair_id(pair_content("q1", "", "r"))
        assert pairs.count(con) == 2
        # re-adding is a no-op, even with other tags/provenance
        pairs.add_pairs(con, [_new("q1", tags=["x"], provenance=Provenance(source_uri="other"))])
        assert pairs.count(con) == 2
        assert pairs.get(con, a[0]).tags == []


def test_edit_appends_revision_and_keeps_history(project):
    with project.connect() as con:
        (pid,) = pairs.add_pairs(con, [_new("What is 2+2?", "5")])
        before = pairs.get(con, pid)
        res = pairs.revise(con, pid, expected_version=before.version, author="ana", reason="wrong sum", response="4")
        after = pairs.get(con, pid)
        hist = pairs.history(con, pid)
    assert after.response == "4" and after.version == before.version + 1
    assert [h.response for h in hist] == ["5", "4"]
    assert [h.is_head for h in hist] == [False, True]
    assert hist[1].author == "ana" and hist[1].reason == "wrong sum" and hist[1].parent_id == hist[0].id
    assert res.revision_id == after.head_revision_id != before.head_revision_id
    # the pair id never changes: identity is the first content
    assert after.id == pid


def test_same_content_edit_is_noop(project):
    with project.connect() as con:
        (pid,) = pairs.add_pairs(con, [_new("q", "a")])
        res = pairs.revise(con, pid, expected_version=1, author="x", response="a")
        assert res.version == 1
        assert len(pairs.history(con, pid)) == 1


def test_conflicting_edits_keep_both(project):
    with project.connect() as con:
        (pid,) = pairs.add_pairs(con, [_new("q", "original")])
        base = pairs.get(con, pid)
        pairs.revise(con, pid, expected_version=base.version, author="ana", response="ana's answer",
                     base_revision_id=base.head_revision_id)
        with pytest.raises(ConflictError) as exc:
            pairs.revise(con, pid, expected_version=base.version, author="ben", response="ben's answer",
                         base_revision_id=base.head_revision_id)
        assert "nothing was overwritten" in str(exc.value)
        cur = pairs.get(con, pid)
        hist = pairs.history(con, pid)
    assert cur.response == "ana's answer"
    assert {h.response for h in hist} == {"original", "ana's answer", "ben's answer"}
    ben = next(h for h in hist if h.author == "ben")
    assert ben.parent_id == base.head_revision_id and not ben.is_head
    assert exc.value.kept_revision_id == ben.id


def test_status_changes_are_reviews_and_version_checked(project):
    with project.connect() as con:
        (pid,) = pairs.add_pairs(con, [_new("q")])
        v = pairs.set_status(con, pid, Status.accepted, author="ana", expected_version=1)
        assert v == 2
        with pytest.raises(ConflictError):
            pairs.set_status(con, pid, Status.rejected, author="ben", expected_version=1)
        pairs.set_status(con, pid, Status.rejected, author="ben", comment="off-topic")
        revs = pairs.reviews(con, pid)
        assert [(r.previous_status, r.status, r.author) for r in revs] == [
            ("pending", "accepted", "ana"), ("accepted", "rejected", "ben")]
        # rejected pairs stay in the store with their status
        assert pairs.get(con, pid).status == "rejected"
        assert pairs.count_by_status(con)["rejected"] == 1


def test_bulk_status_and_duplicate_pointer(project):
    with project.connect() as con:
        ids = pairs.add_pairs(con, [_new(f"q{i}") for i in range(5)])
        n = pairs.set_status_many(con, ids[1:3], Status.duplicate, author="dedupe", duplicate_of=[ids[0], ids[0]])
        assert n == 2
        assert pairs.set_status_many(con, ids[1:3], Status.duplicate, author="dedupe") == 0  # idempotent
        assert pairs.get(con, ids[1]).duplicate_of == ids[0]
        assert pairs.count(con, SliceFilter()) == 3  # default filter leaves duplicates out
        assert pairs.count(con, SliceFilter(exclude_duplicates=False)) == 5


def test_filters_text_tags_status(project):
    with project.connect() as con:
        pairs.add_pairs(con, [
            _new("Reset my password", "Use the link", tags=["account"]),
            _new("100% refund?", "Yes", tags=["billing"]),
            _new("Cancel order", "Done", status=Status.accepted),
        ])
        assert pairs.count(con, SliceFilter(text="PASSWORD")) == 1
        assert pairs.count(con, SliceFilter(text="100%")) == 1
        assert pairs.count(con, SliceFilter(text="0% r")) == 1
        assert pairs.count(con, SliceFilter(text="_")) == 0  # LIKE wildcards are escaped
        assert pairs.count(con, SliceFilter(tags_any=["billing", "nope"])) == 1
        assert pairs.count(con, SliceFilter(status=[Status.accepted])) == 1
        page = pairs.query(con, SliceFilter(), limit=2, offset=1)
        assert len(page) == 2


def test_threads_editing_different_pairs(project):
    """Many threads (like Streamlit sessions) write through their own connections."""
    with project.connect() as con:
        ids = pairs.add_pairs(con, [_new(f"q{i}") for i in range(8)])
    errors: list[BaseException] = []

    def work(pid: str) -> None:
        try:
            for k in range(5):
                with project.connect() as c:
                    cur = pairs.get(c, pid)
                    retry_on_conflict(lambda c=c, cur=cur, k=k: pairs.revise(
                        c, pid, expected_version=cur.version, author="t", response=f"v{k}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(pid,)) for pid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with project.connect() as con:
        assert all(pairs.get(con, pid).response == "v4" for pid in ids)
        assert sum(len(pairs.history(con, pid)) for pid in ids) == 8 * 6


def test_leaving_duplicate_status_clears_the_pointer(project):
    with project.connect() as con:
        a, b = pairs.add_pairs(con, [_new("same question"), _new("Same question!")])
        pairs.set_status_many(con, [b], Status.duplicate, author="dedupe", duplicate_of=[a])
        assert pairs.count(con, SliceFilter()) == 1
        pairs.set_status(con, b, Status.pending, author="ana", comment="not a duplicate")
        assert pairs.get(con, b).duplicate_of is None
        assert pairs.count(con, SliceFilter()) == 2
