"""Concurrent edits of one pair: every edit names the revision it was based on; a stale one is
kept, marked CONFLICT, hangs off the revision its writer saw, and is shown as such (Review, the
History panel, `tuneloop pairs show`) until an edit saved from the head settles it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from store import errors as errors_store
from store import pairs
from store.db import ConflictError, Project, atomic
from store.records import NewPair, PairContent, SliceFilter, Status
from tests.test_app_pages import app, seed
from tuneloop.cli import app as cli

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _pair(project: Project, instruction: str = "How often is the sensor calibrated?",
          response: str = "Every year.") -> pairs.Pair:
    with project.connect() as con:
        (pid,) = pairs.add_pairs(con, [NewPair(content=PairContent(instruction=instruction, response=response))])
        return pairs.get(con, pid)


def test_two_writers_from_one_base_both_kept_the_second_marked_on_its_base(project):
    base = _pair(project)
    with project.connect() as con:
        with atomic(con):
            ana = pairs.append_revision(con, base.id, base_revision_id=base.head_revision_id, author="ana",
                                        instruction="How often is the Cobalt sensor calibrated?",
                                        response="Every six months.")
        with atomic(con):
            ben = pairs.append_revision(con, base.id, base_revision_id=base.head_revision_id, author="ben",
                                        response="Every three months.", reason="manual p. 4")
        cur = pairs.get(con, base.id)
        hist = {h.author: h for h in pairs.history(con, base.id)}
        both = pairs.history(con, base.id)
    assert not ana.conflict and ana.head_revision_id == ana.revision_id
    # the second writer is told, without an exception, and the first writer's text stays the head
    assert ben.conflict and ben.head_revision_id == ana.revision_id
    assert cur.head_revision_id == ana.revision_id and cur.response == "Every six months."
    # both kept; the conflict hangs off the revision ben saw, not off ana's
    assert hist["ben"].conflict and not hist["ana"].conflict and not hist["ben"].is_head
    assert hist["ben"].parent_id == base.head_revision_id != hist["ana"].id
    # what ben left alone is the text ben saw, not ana's newer instruction
    assert hist["ben"].instruction == base.instruction and hist["ben"].response == "Every three months."
    assert [c.author for c in pairs.unresolved_conflicts(both)] == ["ben"]


def test_revise_raises_after_keeping_the_conflict(project):
    base = _pair(project)
    with project.connect() as con:
        pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ana", response="A")
        with pytest.raises(ConflictError, match="nothing was overwritten") as exc:
            pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ben", response="B")
        kept = next(h for h in pairs.history(con, base.id) if h.id == exc.value.kept_revision_id)
    assert kept.response == "B" and kept.conflict and kept.parent_id == base.head_revision_id


def test_an_edit_from_the_head_settles_the_conflict(project):
    base = _pair(project)
    with project.connect() as con:
        pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ana", response="A")
        with pytest.raises(ConflictError):
            pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ben", response="B")
        head = pairs.get(con, base.id)
        assert pairs.unresolved_conflicts(pairs.history(con, base.id))
        # an edit from a stale base does not settle it ...
        with pytest.raises(ConflictError):
            pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="cy", response="C")
        assert len(pairs.unresolved_conflicts(pairs.history(con, base.id))) == 2
        # ... one from the head does
        res = pairs.revise(con, base.id, base_revision_id=head.head_revision_id, author="dee", response="B, checked")
        hist = pairs.history(con, base.id)
    assert not res.conflict and next(h for h in hist if h.is_head).response == "B, checked"
    assert pairs.unresolved_conflicts(hist) == []


def test_keeping_the_head_text_settles_the_conflict_and_is_recorded(project):
    base = _pair(project)
    with project.connect() as con:
        # no open conflict: an edit that changes nothing records nothing
        same = pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="x")
        assert same.revision_id == base.head_revision_id and len(pairs.history(con, base.id)) == 1
        ana = pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ana", response="A")
        with pytest.raises(ConflictError):
            pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ben", response="B")
        kept = pairs.revise(con, base.id, base_revision_id=ana.revision_id, author="dee")
        hist = pairs.history(con, base.id)
    assert kept.revision_id != ana.revision_id and not kept.conflict
    assert hist[-1].is_head and hist[-1].response == "A" and hist[-1].parent_id == ana.revision_id
    assert "conflicting" in hist[-1].reason
    assert pairs.unresolved_conflicts(hist) == []


def test_two_writers_who_agree_do_not_conflict(project):
    base = _pair(project)
    with project.connect() as con:
        a = pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ana", response="Same fix")
        b = pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ben", response="Same fix")
        hist = pairs.history(con, base.id)
    assert b.revision_id == a.revision_id and not b.conflict and len(hist) == 2


def test_an_edit_names_its_base(project):
    base = _pair(project)
    with project.connect() as con:
        with pytest.raises(ValueError, match="based on"):
            pairs.revise(con, base.id, author="x", response="no base")
        with pytest.raises(ValueError, match="not a revision of pair"):
            pairs.revise(con, base.id, base_revision_id="r_nope", author="x", response="bad base")
        assert len(pairs.history(con, base.id)) == 1


def test_a_version_alone_finds_the_revision_its_writer_saw(project):
    base = _pair(project)
    with project.connect() as con:
        pairs.set_status(con, base.id, Status.accepted, author="rev")  # version 2, same text
        seen = pairs.get(con, base.id)
        a = pairs.revise(con, base.id, expected_version=seen.version, author="ana", response="A")  # version 3
        pairs.set_status(con, base.id, Status.pending, author="rev")  # version 4
        # a status change alone is no conflict for an edit
        b = pairs.revise(con, base.id, expected_version=3, author="ben", response="B")
        assert not b.conflict
        with pytest.raises(ConflictError):
            pairs.revise(con, base.id, expected_version=seen.version, author="cy", response="C")
        cy = next(h for h in pairs.history(con, base.id) if h.author == "cy")
    assert cy.conflict and cy.parent_id == seen.head_revision_id == base.head_revision_id
    assert a.revision_id != base.head_revision_id


def test_a_correction_against_an_older_revision_hangs_off_it(crafted_prediction):
    p, pred_id, pid = crafted_prediction
    with p.connect() as con:
        seen = pairs.get(con, pid)
        pairs.revise(con, pid, base_revision_id=seen.head_revision_id, author="bob", response="other")
        with pytest.raises(ConflictError, match="kept as revision"):
            errors_store.correct(con, pred_id, "right", author="ann", base_revision_id=seen.head_revision_id)
        ann = next(h for h in pairs.history(con, pid) if h.author == "ann")
    assert ann.conflict and ann.parent_id == seen.head_revision_id and ann.response == "right"


@pytest.fixture
def crafted_prediction(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    info = seed(project)
    row = info["wrong"].row(0, named=True)
    return project, row["prediction_id"], row["pair_id"]


# ---------------------------------------------------------------- the CLI


def _conflicted(project: Project) -> tuple[pairs.Pair, str]:
    base = _pair(project, response="Every year.")
    with project.connect() as con:
        pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ana", response="Every six months.")
        with pytest.raises(ConflictError) as exc:
            pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ben",
                         response="Every three months.")
    assert exc.value.kept_revision_id
    return base, exc.value.kept_revision_id


def test_cli_pairs_show_shows_every_revision_text_and_the_conflict(project):
    base, ben = _conflicted(project)
    res = runner.invoke(cli, ["pairs", "show", base.id, "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    out = res.output
    for text in ("Every year.", "Every six months.", "Every three months.", "How often is the sensor calibrated?"):
        assert text in out
    ben_line = next(line for line in out.splitlines() if ben in line)
    assert "CONFLICT" in ben_line and "by ben" in ben_line and "(parent r1)" in ben_line
    headers = [line for line in out.splitlines() if re.match(r"[* ] r\d+ r_", line)]
    assert len(headers) == 3 and sum("CONFLICT" in line for line in headers) == 1
    assert "UNRESOLVED CONFLICT" in out


def test_cli_pairs_edit_without_base_edits_the_head_and_settles(project):
    base, _ = _conflicted(project)
    res = runner.invoke(cli, ["pairs", "edit", base.id[:12], "--response", "Every four months.", "--reason", "checked",
                              "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    with project.connect() as con:
        cur = pairs.get(con, base.id)
        hist = pairs.history(con, base.id)
    assert cur.response == "Every four months." and hist[-1].author != "ben" and not hist[-1].conflict
    assert pairs.unresolved_conflicts(hist) == []
    res = runner.invoke(cli, ["pairs", "show", base.id, "--project", str(project.root)])
    assert "UNRESOLVED" not in res.output and "CONFLICT" in res.output  # the history still says what happened


def test_cli_pairs_edit_with_a_stale_base_is_kept_and_reported(project):
    base = _pair(project)
    with project.connect() as con:
        pairs.revise(con, base.id, base_revision_id=base.head_revision_id, author="ana", response="Newer")
    proc = subprocess.run(
        [sys.executable, "-m", "tuneloop.cli", "pairs", "edit", base.id, "--response", "Mine", "--base",
         base.head_revision_id[:10], "--project", str(project.root)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "changed since you opened it" in proc.stderr, proc.stderr
    with project.connect() as con:
        mine = next(h for h in pairs.history(con, base.id) if h.response == "Mine")
        assert pairs.get(con, base.id).response == "Newer"
    assert mine.conflict and mine.parent_id == base.head_revision_id


# ---------------------------------------------------------------- the app


def test_review_save_is_based_on_the_revision_shown(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    seed(project)
    with project.connect() as con:
        shown = pairs.query(con, SliceFilter(status=[Status.pending]), limit=1)[0]
    at = app("review")
    assert any(shown.id in m.value for m in at.markdown)
    at.button(key="rv_edit").click().run()
    # another reviewer saves the same pair while this one is editing it
    with project.connect() as con:
        other = pairs.revise(con, shown.id, base_revision_id=shown.head_revision_id, author="other",
                             response="Their answer.")
    next(t for t in at.text_area if t.label == "Response").set_value("My answer.")
    at.button(key="rv_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with project.connect() as con:
        hist = pairs.history(con, shown.id)
        assert pairs.get(con, shown.id).head_revision_id == other.revision_id
    mine = next(h for h in hist if h.response == "My answer.")
    assert mine.conflict and mine.parent_id == shown.head_revision_id and mine.author == "tester"
    # the page says so: a warning on the item, CONFLICT in the History panel
    assert any("Unresolved conflict" in w.value for w in at.warning)
    assert any("CONFLICT" in c.value for c in at.caption)
    # taking the kept revision settles it with that text
    at.button(key=f"rv_take_{mine.revision_no}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with project.connect() as con:
        hist = pairs.history(con, shown.id)
        assert pairs.get(con, shown.id).response == "My answer."
    assert pairs.unresolved_conflicts(hist) == []
    assert not any("Unresolved conflict" in w.value for w in at.warning)
