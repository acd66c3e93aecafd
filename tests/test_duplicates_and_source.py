"""Issue 13 items 9 and 10: keeping one pair of a duplicate cluster (one transaction over the whole
cluster, asking before accepted or sliced pairs change), the source span kept in view, and the
word-level side-by-side diff (revisions, near-duplicate clusters).

Real DuckDB projects in ``tmp_path``; the pages through ``AppTest`` on the seeded project of
``test_app_pages``.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from app import components
from store import curation, pair_pages
from store import documents as docs_store
from store import pairs as pairs_store
from store import slices as slices_store
from store.db import Project
from store.records import Document, NewPair, PairContent, Provenance, Status
from store.slices import Item
from tests import test_app_pages as pages
from tests.test_app_markdown_safety import assert_all_literal, payload, problems

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")


# ---------------------------------------------------------------- helpers


def add_pairs(project: Project, n: int, **fields) -> list[str]:
    with project.transaction() as con:
        return pairs_store.add_pairs(con, [
            NewPair(content=PairContent(instruction=f"How often is sensor {i} calibrated?",
                                        response=f"Sensor {i} is calibrated every {i + 2} months."),
                    author="import", **fields)
            for i in range(n)])


def cluster(con, cid: str, ids: list[str], kind: str = "near_lexical") -> None:
    """A stored automatic cluster whose first member is the kept one."""
    revs = {p.id: p.head_revision_id for p in pair_pages.pairs_by_ids(con, ids)}
    curation.save_duplicate_clusters(con, pl.DataFrame({
        "cluster_id": [cid] * len(ids), "kind": [kind] * len(ids), "pair_id": ids,
        "revision_id": [revs[i] for i in ids], "kept_pair_id": [ids[0]] * len(ids),
        "is_kept": [i == ids[0] for i in ids], "similarity": [1.0] + [0.9] * (len(ids) - 1)}), [kind], {})


def snapshot(con, cid: str) -> tuple:
    """Everything a cluster verdict may change."""
    return (
        con.execute("SELECT id, status, duplicate_of, version FROM pairs ORDER BY id").fetchall(),
        con.execute("SELECT count(*) FROM reviews").fetchone(),
        con.execute("SELECT kept_pair_id, resolution FROM duplicate_clusters WHERE id = ?", [cid]).fetchall(),
        con.execute("SELECT pair_id, is_kept FROM duplicate_members WHERE cluster_id = ? ORDER BY pair_id",
                    [cid]).fetchall(),
    )


def state_of(con, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    return {p.id: (p.status, p.duplicate_of) for p in pair_pages.pairs_by_ids(con, ids)}


def kept_members(con, cid: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT pair_id FROM duplicate_members WHERE cluster_id = ? AND is_kept", [cid]).fetchall()]


# ---------------------------------------------------------------- keep one: the store


def test_keep_one_on_the_right_pair_makes_it_the_only_kept_one(project):
    left, right, third = add_pairs(project, 3)
    with project.connect() as con:
        pairs_store.set_status(con, right, Status.needs_fix, author="rev")
        cluster(con, "dc1", [left, right, third])
        curation.keep_one(con, "dc1", left, "rev")  # what the automatic pass decided: left kept
        assert state_of(con, [right])[right] == ("duplicate", left)
        reviews_before = len(pairs_store.reviews(con, left))
        v = curation.keep_one(con, "dc1", right, "alice")
        assert state_of(con, [left, right, third]) == {
            left: ("duplicate", right), right: ("needs_fix", None), third: ("duplicate", right)}
        assert kept_members(con, "dc1") == [right]
        assert con.execute("SELECT kept_pair_id, resolution FROM duplicate_clusters WHERE id = 'dc1'").fetchone() \
            == (right, "confirmed")
        assert curation.clusters(con)[0].kept_pair_id == right
        assert v.restored == {right: "needs_fix"} and v.marked == [left] and v.repointed == [third]
        latest = pairs_store.reviews(con, left)
        assert len(latest) == reviews_before + 1
        assert any(r.author == "alice" and r.status == "duplicate" and right in r.comment for r in latest)


def test_keep_one_with_a_pair_outside_the_cluster_changes_nothing(project):
    a, b, outsider = add_pairs(project, 3)
    with project.connect() as con:
        cluster(con, "dc1", [a, b])
        curation.keep_one(con, "dc1", a, "rev")
        before = snapshot(con, "dc1")
        with pytest.raises(ValueError, match="not a member"):
            curation.keep_one(con, "dc1", outsider, "rev")
        with pytest.raises(KeyError, match="no duplicate cluster"):
            curation.keep_one(con, "dc-none", a, "rev")
        assert snapshot(con, "dc1") == before


def test_keep_one_that_fails_midway_changes_nothing(project, monkeypatch):
    a, b, c = add_pairs(project, 3)
    with project.connect() as con:
        cluster(con, "dc1", [a, b, c])
        curation.keep_one(con, "dc1", a, "rev")
        before = snapshot(con, "dc1")
        real = curation.set_status_many

        def fails_after_writing(*args, **kwargs):  # a write fails after the kept pair was restored
            real(*args, **kwargs)
            raise RuntimeError("disk full")

        monkeypatch.setattr(curation, "set_status_many", fails_after_writing)
        with pytest.raises(RuntimeError, match="disk full"):
            curation.keep_one(con, "dc1", b, "rev")
        assert snapshot(con, "dc1") == before
        assert state_of(con, [a, b]) == {a: ("pending", None), b: ("duplicate", a)}


@pytest.mark.parametrize("case", ["accepted member", "member in a slice", "kept pair in a slice"])
def test_keep_one_asks_before_changing_accepted_or_sliced_pairs(project, case):
    a, b, c = add_pairs(project, 3)
    with project.connect() as con:
        cluster(con, "dc1", [a, b, c])
        if case == "accepted member":
            pairs_store.set_status(con, b, Status.accepted, author="rev")
            keep, sensitive = a, b
        elif case == "member in a slice":
            keep, sensitive = a, b
        else:  # b is a duplicate now; making it live again changes the status of a sliced pair
            curation.keep_one(con, "dc1", a, "rev")
            keep, sensitive = b, b
        sl = None
        if case != "accepted member":
            p = pairs_store.get(con, sensitive)
            sl = slices_store.freeze(con, "frozen-set", [Item(p.id, p.head_revision_id, "train")])
            items_before = slices_store.items(con, sl.id)
        before = snapshot(con, "dc1")
        with pytest.raises(curation.NeedsConfirmation) as exc:
            curation.keep_one(con, "dc1", keep, "rev")
        assert snapshot(con, "dc1") == before
        assert sensitive in str(exc.value) and "Frozen slices never change" in str(exc.value)
        if sl is not None:
            assert exc.value.in_slices == {sensitive: ["frozen-set@1"]} and "frozen-set@1" in str(exc.value)
        else:
            assert exc.value.accepted == [b] and exc.value.in_slices == {}
        curation.keep_one(con, "dc1", keep, "rev", confirm_in_slices=True)
        assert kept_members(con, "dc1") == [keep]
        assert state_of(con, [c])[c] == ("duplicate", keep)
        if sl is not None:
            assert slices_store.items(con, sl.id) == items_before
            assert slices_store.get(con, sl.id).content_hash == sl.content_hash


def test_no_confirmation_needed_when_nothing_sensitive_changes(project):
    a, b = add_pairs(project, 2)
    with project.connect() as con:
        pa_ = pairs_store.get(con, a)
        slices_store.freeze(con, "has-the-kept-one", [Item(a, pa_.head_revision_id, "train")])
        pairs_store.set_status(con, a, Status.accepted, author="rev")
        cluster(con, "dc1", [a, b])
        curation.keep_one(con, "dc1", a, "rev")  # the kept pair is sliced and accepted but keeps its status
        assert state_of(con, [a, b]) == {a: ("accepted", None), b: ("duplicate", a)}


def test_not_duplicates_restores_the_statuses_from_before(project):
    a, b, c = add_pairs(project, 3)
    with project.connect() as con:
        pairs_store.set_status(con, b, Status.needs_fix, author="rev")
        cluster(con, "dc1", [a, b, c])
        curation.keep_one(con, "dc1", a, "rev")
        v = curation.not_duplicates(con, "dc1", "rev")
        assert v.restored == {b: "needs_fix", c: "pending"}
        assert state_of(con, [a, b, c]) == {a: ("pending", None), b: ("needs_fix", None), c: ("pending", None)}
        assert con.execute("SELECT resolution FROM duplicate_clusters WHERE id = 'dc1'").fetchone() == (
            "not_duplicates",)


def test_slices_containing_names_each_pairs_slices(project):
    a, b, c = add_pairs(project, 3)
    with project.connect() as con:
        heads = {p.id: p.head_revision_id for p in pair_pages.pairs_by_ids(con, [a, b, c])}
        slices_store.freeze(con, "one", [Item(a, heads[a], "train")])
        slices_store.freeze(con, "one", [Item(a, heads[a], "train"), Item(b, heads[b], "eval")])
        slices_store.freeze(con, "two", [Item(b, heads[b], "train")])
        assert slices_store.containing(con, [a, b, c]) == {a: ["one@1", "one@2"], b: ["one@2", "two@1"]}
        assert slices_store.containing(con, []) == {}


# ---------------------------------------------------------------- the word diff (pure)

_MARK = re.compile(r":(red|green)-background\[((?:\\.|[^\\\]])*)\]")


def unescape(md: str) -> str:
    return re.sub(r"\\(.)", r"\1", md).replace("\u2060", "")


def marked(md: str, color: str) -> list[str]:
    """The words inside the ``color`` marks of ``md``, unescaped."""
    return [w for m in _MARK.finditer(md) if m.group(1) == color for w in unescape(m.group(2)).split()]


def words_of(md: str) -> list[str]:
    return unescape(_MARK.sub(lambda m: m.group(2), md)).split()


@pytest.mark.parametrize(("old", "new", "left", "right"), [
    ("a b c", "a b c", "a b c", "a b c"),
    ("a b c", "a x c", "a :red-background[b] c", "a :green-background[x] c"),
    ("a b", "a b c d", "a b", "a b :green-background[c d]"),
    ("a b c d", "c d", ":red-background[a b] c d", "c d"),
    ("one\ntwo three", "one\ntwo four", "one  \ntwo :red-background[three]", "one  \ntwo :green-background[four]"),
    ("x y\nz", "q", ":red-background[x y]  \n:red-background[z]", ":green-background[q]"),
    ("", "new", "", ":green-background[new]"),
])
def test_word_diff_marks_the_changed_words(old, new, left, right):
    assert components.word_diff(old, new) == (left, right)


def test_word_diff_of_two_long_lines_keeps_every_word_and_marks_exactly_the_changed_ones():
    old_words = [f"word{i}" for i in range(600)]
    new_words = list(old_words)
    new_words[10] = "CHANGED10"
    new_words[300] = "CHANGED300"
    del new_words[500]
    new_words.insert(599, "INSERTED")
    old, new = " ".join(old_words), " ".join(new_words)
    assert len(old) > 4000 and "\n" not in old
    left, right = components.word_diff(old, new)
    assert words_of(left) == old_words and words_of(right) == new_words
    assert marked(left, "red") == ["word10", "word300", "word500"] and marked(left, "green") == []
    assert marked(right, "green") == ["CHANGED10", "CHANGED300", "INSERTED"] and marked(right, "red") == []


def test_word_diff_keeps_hostile_text_inert():
    old, new = payload("old") + " ]] :red[x] \\", payload("new") + " ]] :red[y] \\"
    left, right = components.word_diff(old, new)
    assert problems(left) == [] and problems(right) == []
    assert words_of(left) == old.split() and words_of(right) == new.split()
    assert "old" in " ".join(marked(left, "red")) and "new" in " ".join(marked(right, "green"))


# ---------------------------------------------------------------- the source window


def document_project(project: Project, monkeypatch, before: str, span: str, after: str) -> str:
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    text = before + span + after
    doc = Document(id="d_long", uri="long.md", name="long.md", filetype="md", size_bytes=len(text), text=text)
    with project.transaction() as con:
        docs_store.insert(con, doc, [])
        (pid,) = pairs_store.add_pairs(con, [NewPair(
            content=PairContent(instruction="What does the span say?", response="It says so."),
            provenance=Provenance(document_id=doc.id, char_start=len(before), char_end=len(before) + len(span)),
            author="import")])
    return pid


def test_source_window_keeps_a_far_span_in_view():
    before = "filler words here " * 1200
    assert len(before) > 20_000
    hidden, shown, after, below = components.source_window(before, "tail text " * 300)
    assert hidden + shown == before and len(shown) <= components.SOURCE_ABOVE
    assert hidden[-1] == " " and shown[0] != " "  # cut between words
    assert after.endswith(" ") and len(after) <= components.SOURCE_BELOW
    assert after + below == "tail text " * 300
    assert components.source_window("short", "") == ("", "short", "", "")


def test_review_page_shows_the_span_after_20000_characters_in_view(project, monkeypatch):
    span = "THE SPAN ITSELF " + payload("span")
    before = "Lorem ipsum dolor sit amet. " * 800 + payload("before")
    pid = document_project(project, monkeypatch, before, span, " After the span. " * 100)
    with project.connect() as con:
        ctx = docs_store.source_context(con, pairs_store.get(con, pid))
    assert ctx is not None and ctx.span == span and ctx.before_start == len(before) - 700
    assert ctx.doc_chars == len(before) + len(span) + len(" After the span. " * 100)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/review.py").run()
    assert assert_all_literal(at, "review") > 0  # the hostile text above, in and around the span is inert
    boxes = [m.value for m in at.markdown if ":orange-background[" in m.value]
    assert len(boxes) == 1
    box = boxes[0]
    assert problems(box) == []
    first_mark = box.index(":orange-background[")
    shown_before = unescape(box[:first_mark])
    assert len(shown_before) <= components.SOURCE_ABOVE + 2  # "… " and the window: the span is at the top
    assert "THE SPAN ITSELF" in unescape(box[first_mark:first_mark + 200])
    more = [e.label for e in at.expander if "more characters" in e.label]
    assert len(more) == 2 and more[0].endswith("more characters above") and more[1].endswith("below")
    assert f"… {len(before) - 700:,} characters before these" in [c.value for c in at.caption]


def test_review_history_shows_each_revision_as_a_word_diff(project, monkeypatch):
    pid = document_project(project, monkeypatch, "Intro. ", "The span.", " Outro.")
    long_old = " ".join(f"w{i}" for i in range(400))
    long_new = long_old.replace("w200 ", "CHANGED ")
    with project.connect() as con:
        pairs_store.revise(con, pid, expected_version=1, author="alice", reason="longer", response=long_old)
        pairs_store.revise(con, pid, expected_version=2, author="bob", reason="fix", response=long_new)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [m.value for m in at.markdown]
    assert components.word_diff(long_old, long_new) == (
        long_old.replace("w200 ", ":red-background[w200] "), long_new.replace("CHANGED ", ":green-background[CHANGED] "))
    assert long_old.replace("w200 ", ":red-background[w200] ") in shown
    assert long_new.replace("CHANGED ", ":green-background[CHANGED] ") in shown
    assert any("Revision 3 by bob" in c.value and "fix" in c.value for c in at.caption)


# ---------------------------------------------------------------- the Duplicates page


seeded = pages.seeded  # the seeded project of the page tests: pairs, a slice of the accepted ones, a run


def duplicates_page() -> AppTest:
    return pages.app("duplicates")


def test_duplicates_page_asks_before_marking_a_sliced_accepted_pair(seeded):
    p: Project = seeded["project"]
    accepted, pending = seeded["pair_ids"][0], seeded["pair_ids"][20]  # the first ten are accepted and sliced
    sl = seeded["slice"]
    with p.connect() as con:
        cluster(con, "dc1", [accepted, pending])
        items_before = slices_store.items(con, sl.id)
    at = duplicates_page()
    at.button(key=f"du_keep_dc1_{pending}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    warning = unescape(" ".join(w.value for w in at.warning))
    assert "kb-accepted@1" in warning and accepted in warning and "would become duplicates" in warning
    with p.connect() as con:
        assert state_of(con, [accepted, pending]) == {accepted: ("accepted", None), pending: ("pending", None)}
        assert kept_members(con, "dc1") == [accepted]
    assert at.button(key="du_confirm_dc1").disabled
    at.checkbox(key=f"du_ok_dc1_{pending}").check().run()
    at.button(key="du_confirm_dc1").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.warning
    with p.connect() as con:
        assert state_of(con, [accepted, pending]) == {accepted: ("duplicate", pending), pending: ("pending", None)}
        assert kept_members(con, "dc1") == [pending]
        assert slices_store.items(con, sl.id) == items_before


def test_duplicates_page_keep_on_the_right_pair_moves_the_kept_mark(seeded):
    p: Project = seeded["project"]
    left, right = seeded["pair_ids"][20:22]
    with p.connect() as con:
        cluster(con, "dc1", [left, right])
    at = duplicates_page()
    assert at.button(key=f"du_keep_dc1_{left}").proto.type == "primary"
    at.button(key=f"du_keep_dc1_{right}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.button_group(key="du_resolution").set_value("confirmed").run()  # the reviewed clusters
    assert at.button(key=f"du_keep_dc1_{right}").proto.type == "primary"
    assert at.button(key=f"du_keep_dc1_{left}").proto.type == "secondary"
    with p.connect() as con:
        assert kept_members(con, "dc1") == [right]
        assert state_of(con, [left, right]) == {left: ("duplicate", right), right: ("pending", None)}


def test_duplicates_page_shows_a_word_diff_for_a_near_duplicate_cluster(seeded):
    p: Project = seeded["project"]
    kept, other = seeded["pair_ids"][20:22]  # "Question number 20 …" and "Question number 21 …"
    with p.connect() as con:
        cluster(con, "dc1", [kept, other])
    at = duplicates_page()
    shown = [m.value for m in at.markdown]
    assert "Question number :red-background[20] about the Cobalt sensor?" in shown
    assert "Question number :green-background[21] about the Cobalt sensor?" in shown
    assert "Answer :green-background[21\\:] calibrate every :green-background[1] months\\." in shown
