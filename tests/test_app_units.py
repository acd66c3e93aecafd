"""Units behind the app: accounts and agreement, upload names, jobs, Markdown escaping, the search index."""

from __future__ import annotations

import sys
import time

import pytest

from app import components, jobs
from store import pair_pages
from store import pairs as pairs_store
from store import users as users_store
from store.records import NewPair, PairContent, SliceFilter


def test_passwords_are_salted_scrypt_and_verify(project):
    with project.connect() as con:
        users_store.create_user(con, "root", "admin", "admin-pass")  # the first account is always admin
        users_store.create_user(con, "bob", "reviewer", "s3cret-pass")
        stored = con.execute("SELECT password_hash FROM users WHERE name = 'bob'").fetchall()[0][0]
        assert stored.startswith("scrypt$") and "s3cret-pass" not in stored
        assert users_store.authenticate(con, "bob", "s3cret-pass").role == "reviewer"
        assert users_store.authenticate(con, "bob", "wrong") is None
        assert users_store.authenticate(con, "nobody", "s3cret-pass") is None
        with pytest.raises(ValueError):
            users_store.create_user(con, "bob", "admin", "another-pass")
        with pytest.raises(ValueError):
            users_store.create_user(con, "carol", "boss", "another-pass")
    assert users_store.hash_password("x" * 8) != users_store.hash_password("x" * 8)


@pytest.mark.parametrize(("a", "b", "kappa"), [
    (["acc", "rej", "acc", "rej"], ["acc", "rej", "acc", "rej"], 1.0),
    (["acc", "acc", "rej", "rej"], ["acc", "rej", "acc", "rej"], 0.0),
    (["acc", "acc", "acc", "rej"], ["acc", "acc", "rej", "rej"], 0.5),
    ([], [], None),
])
def test_cohen_kappa(a, b, kappa):
    got = users_store.cohen_kappa(a, b)
    assert got == kappa if kappa is None else abs(got - kappa) < 1e-9


def test_assignment_overlap_progress_and_agreement(project):
    with project.transaction() as con:
        ids = pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=f"q{i}", response="a"))
                                          for i in range(6)])
    with project.connect() as con:
        assert users_store.assign(con, ids, ["ann", "ben"], overlap=2) == 12
        assert users_store.assign(con, ids, ["ann", "ben"], overlap=2) == 0  # idempotent
        for i, pid in enumerate(ids):
            pairs_store.set_status(con, pid, "accepted", author="ann")
            pairs_store.set_status(con, pid, "accepted" if i < 4 else "rejected", author="ben")
        prog = {p.user_name: p for p in users_store.progress(con)}
        assert prog["ann"].assigned == 6 and prog["ann"].done_assigned == 6 and prog["ann"].accepted == 6
        assert prog["ben"].rejected == 2
        assert users_store.assigned_pair_ids(con, "ann") == []
        (a, b, n, k), = users_store.agreement(con)
    assert (a, b, n) == ("ann", "ben", 6) and k == 0.0  # ann always accepts: no agreement beyond chance


@pytest.mark.parametrize(("name", "safe"), [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\boot.ini", "boot.ini"),
    ("report (final).pdf", "report _final_.pdf"),
    ("..", "upload"),
    ("\x00evil\n.md", "_evil_.md"),
])
def test_upload_names_cannot_leave_the_uploads_folder(project, name, safe):
    project.init()
    assert jobs.safe_name(name) == safe
    path = jobs.save_upload(project, name, b"hello", max_bytes=100)
    assert path.resolve().is_relative_to(project.uploads_dir.resolve())
    with pytest.raises(ValueError, match="upload limit"):
        jobs.save_upload(project, "big.txt", b"x" * 101, max_bytes=100)


def test_jobs_run_in_the_background_and_report(project, monkeypatch):
    project.init()
    monkeypatch.setattr(jobs, "cli_command", lambda: [sys.executable, "-c", "import sys; print('hi', sys.argv[1:])"])
    job = jobs.start(project, "echo", ["stats"], title="echo", author="tester")
    deadline = time.monotonic() + 30
    while job.running and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.status == "succeeded" and "hi ['stats', '--project'" in job.log()
    assert [j.id for j in jobs.recent(project, kind="echo")] == [job.id]
    assert jobs.get(project, "../../etc") is None


def test_markdown_escaping_keeps_text_literal():
    md = components.highlighted("see <b>", "**bold** [x](http://e) $1", "\n:red[x]")
    assert "<b>" not in md and "\\<b\\>" in md
    assert ":orange-background[\\*\\*bold\\*\\* \\[x\\]\\(http\\:" in md
    assert "\\:\u2060red\\[x\\]" in md  # a word joiner keeps Streamlit from reading `:red` after escapes resolve


def test_text_search_index_follows_new_revisions(project):
    with project.transaction() as con:
        (pid,) = pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction="Calibrate the Cobalt",
                                                                         response="every SIX months"))])
    with project.connect() as con:
        assert pair_pages.count(con, SliceFilter(text="six MONTHS")) == 1
        pairs_store.revise(con, pid, expected_version=1, author="t", response="every 100% of the year")
        assert pair_pages.count(con, SliceFilter(text="six months")) == 0
        assert pair_pages.count(con, SliceFilter(text="100%")) == 1
        assert pair_pages.count(con, SliceFilter(text="_")) == 0  # literal, not a LIKE wildcard


def test_text_search_scans_while_a_large_backlog_is_indexed_in_the_background(project, monkeypatch):
    with project.transaction() as con:
        pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=f"Item {i}", response=f"Refund {i} EUR"))
                                    for i in range(3)])
    monkeypatch.setattr(pair_pages, "INLINE_INDEX_MAX", 1)
    with project.connect() as con:
        assert pair_pages.count(con, SliceFilter(text="refund 1")) == 1  # plain scan, nothing indexed inline
        assert pair_pages.search_index_missing(con) == 3
        assert pair_pages.ensure_search_index(con) == 3  # what app/search_index_job.py runs
        assert pair_pages.search_index_missing(con) == 0
        assert pair_pages.count(con, SliceFilter(text="refund 1")) == 1


def test_explore_queries_narrowed_by_tag_or_text_match_the_plain_filter(project):
    """Explore narrows the pairs by tag and text first (a CTE of its own, for DuckDB's join
    sizing); with status, split and generator filters beside them, its count, pages and
    summary are the plain filter's (``store.pairs``: the compiled filter slices use)."""
    from store.records import Provenance, Status

    tags = [["billing"], ["refund"], ["billing", "urgent"], []]
    statuses = [Status.pending, Status.accepted, Status.rejected, Status.needs_fix]
    with project.transaction() as con:
        pairs_store.add_pairs(con, [NewPair(
            content=PairContent(instruction=f"Question {i} about the {'Cobalt' if i % 3 else 'Zinc'} hub",
                                response=f"Answer {i}: {'warranty invoice' if i % 5 == 0 else 'see the manual'}"),
            tags=tags[i % 4], status=statuses[i % 7 % 4], provenance=Provenance(generator=("qa", "sections")[i % 2]))
            for i in range(120)])
    flts = [SliceFilter(tags_any=["billing"]), SliceFilter(tags_any=["billing", "refund"], status=[Status.pending]),
            SliceFilter(text="WARRANTY invoice", status=[Status.pending, Status.accepted]),
            SliceFilter(text="zinc", tags_any=["urgent"], generators=["qa"]),
            SliceFilter(text="cobalt", tags_any=["refund"], status=[Status.accepted], exclude_duplicates=False),
            SliceFilter(text="no such words", tags_any=["billing"])]
    with project.connect() as con:
        for flt in flts:
            expected = [p.id for p in pairs_store.query(con, flt, limit=1000)]
            assert pair_pages.count(con, flt) == len(expected) == pairs_store.count(con, flt), flt
            assert pair_pages.page_ids(con, flt, limit=7, offset=2) == expected[2:9], flt
            summary = pair_pages.explore_summary(con, flt, limit=5, offset=1)
            assert summary.total == len(expected) and summary.table["pair_id"].to_list() == expected[1:6], flt
            assert sum(summary.by_status.values()) == len(expected)
        assert sum(len(pairs_store.query(con, f, limit=1000)) > 3 for f in flts) >= 4  # not all empty
