"""The sample project `make run` opens: real documents, pairs with provenance, curation done.

`tuneloop sample` builds it where nothing else is, repairs a sample that is empty or from an
older tuneloop, and never deletes or writes into anything else (not even with --force).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from store import pairs, slices
from store.db import Project
from store.records import NewPair, PairContent, Provenance, SliceFilter, Status
from store.stats import project_stats
from tuneloop.cli import app
from tuneloop.sample import MARKER, SAMPLE_VERSION

runner = CliRunner()


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_empty_project_becomes_the_sample_and_an_old_sample_is_repaired(tmp_path):
    """What an old app left behind (an empty project) is repaired by `tuneloop sample`, and so is
    a sample of an older version, keeping what users did in it; a current one is left alone."""
    root = tmp_path / "sample"
    Project(root).init()
    res = runner.invoke(app, ["sample", "--project", str(root)])
    assert res.exit_code == 0, res.output
    assert "repaired" in res.output
    p = Project(root)
    with p.connect() as con:
        s = project_stats(con)
        doc_pairs = [x for x in pairs.query(con, SliceFilter(exclude_duplicates=False), limit=500)
                     if x.provenance.document_id]
        texts = dict(con.execute("SELECT id, text FROM documents").fetchall())
        filetypes = {t for (t,) in con.execute("SELECT filetype FROM documents").fetchall()}
        assert slices.get(con, "sample-accepted").n_items >= 5
    assert s["documents"] == 7
    assert filetypes == {"md", "html", "docx", "pdf", "pptx", "eml", "csv"}
    assert s["pairs"] >= 50
    # the seed set carries a case/space duplicate (its exact copy is the same pair: ids are content hashes);
    # the corpus pair with the same question and another answer is a conflict, listed but not marked
    assert s["duplicates_marked"] >= 1
    assert s["signals_flagged"].get("empty_response", 0) >= 1  # "N/A"
    # provenance: sections/qa responses are found at their recorded spans
    spanned = [x for x in doc_pairs if x.provenance.generator in ("sections", "qa")]
    assert len(spanned) >= 30
    for x in spanned:
        assert texts[x.provenance.document_id][x.provenance.char_start:x.provenance.char_end] == x.response
    assert json.loads((root / MARKER).read_text())["sample_version"] == SAMPLE_VERSION

    # A reviewer works in it; then it turns out to be from an older tuneloop: repaired, work kept.
    reviewed = doc_pairs[0].id
    with p.connect() as con:
        pairs.set_status(con, reviewed, Status.rejected, author="alice", comment="wrong span")
    (root / MARKER).write_text(json.dumps({"sample_version": SAMPLE_VERSION - 1}))
    res = runner.invoke(app, ["sample", "--project", str(root)])
    assert res.exit_code == 0 and "repaired" in res.output, res.output
    with p.connect() as con:
        assert project_stats(con)["pairs"] == s["pairs"]
        assert pairs.get(con, reviewed).status == "rejected"
    res = runner.invoke(app, ["sample", "--project", str(root)])
    assert res.exit_code == 0 and "up to date" in res.output, res.output


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
def test_sample_never_writes_into_a_users_project_or_folder(project, tmp_path, force):
    with project.connect() as con:
        pairs.add_pairs(con, [NewPair(content=PairContent(instruction=f"q{i}", response=f"a{i}"),
                                      provenance=Provenance(generator="test", source_uri="mine.jsonl", source_line=i),
                                      author="alice") for i in range(3)])
    (project.root / "uploads" / "notes.txt").write_text("my notes")
    before = snapshot(project.root)
    res = runner.invoke(app, ["sample", *force, "--project", str(project.root)])
    assert res.exit_code == 2, res.output
    assert "pairs or documents the sample did not create (3 by alice)" in res.output
    assert "nothing was changed" in res.output
    assert snapshot(project.root) == before

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "thesis.tex").write_text("chapter one")
    res = runner.invoke(app, ["sample", *force, "--project", str(plain)])
    assert res.exit_code == 2 and "is not empty and is not a tuneloop project" in res.output, res.output
    assert snapshot(plain) == {"thesis.tex": b"chapter one"}


def test_sample_does_not_follow_tuneloop_project(project, tmp_path, monkeypatch):
    """$TUNELOOP_PROJECT names the user's project; the sample goes to its own default folder."""
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    monkeypatch.chdir(tmp_path)
    own = tmp_path / ".tuneloop" / "sample"
    own.mkdir(parents=True)
    (own / "stray.txt").write_text("not a project")  # makes the command stop before any build
    before = snapshot(project.root)
    res = runner.invoke(app, ["sample", "--force"])
    assert res.exit_code == 2 and str(own) in res.output.replace("\n", ""), res.output
    assert snapshot(project.root) == before
