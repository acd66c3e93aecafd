"""A pair's id hashes its content, so the same text from two sources is one pair; ``pair_sources``
keeps every source (issue 15, point 6): from documents, from imported files, and for pairs stored
before the table existed (the migration backfills them)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from ingest.documents import IngestConfig, ingest
from ingest.importer import import_file
from store import pairs as pairs_store
from store.db import Project, scalar
from store.migrations import MIGRATIONS, migrate
from store.records import NewPair, PairContent, Provenance

CFG = IngestConfig(generators=("qa",), workers=0)
SECTION = "## How do I reset the sensor?\n\nHold the reset button for ten seconds until the light blinks twice.\n"


def two_manuals(folder: Path) -> tuple[Path, Path]:
    """Two different Markdown files that share one question section, at different offsets."""
    a = folder / "alpha.md"
    b = folder / "beta.md"
    a.write_text("# Alpha manual\n\nAbout the alpha sensor.\n\n" + SECTION)
    b.write_text("# Beta handbook\n\nThe beta sensor is the newer model.\n\nIt ships in two colours.\n\n" + SECTION)
    return a, b


def the_pair(project: Project) -> str:
    with project.connect() as con:
        ids = [r[0] for r in con.execute("SELECT id FROM pairs").fetchall()]
    assert len(ids) == 1, ids
    return ids[0]


def ingested_pair(project: Project, paths: list[Path], cfg: IngestConfig):
    """Ingest ``paths``; the report, the one pair, its sources and the stored documents (id -> (name, text))."""
    report = ingest(project, paths, cfg)
    assert report.ok, [f.error for f in report.files]
    pid = the_pair(project)
    with project.connect() as con:
        docs = {r[0]: (r[1], r[2]) for r in con.execute("SELECT id, name, text FROM documents").fetchall()}
        return report, pairs_store.get(con, pid), pairs_store.sources(con, pid), docs


def test_same_section_in_two_documents_keeps_both_sources(project, tmp_path):
    a, b = two_manuals(tmp_path)
    _, pair, got, docs = ingested_pair(project, [a, b], CFG)
    pid = pair.id
    texts = dict(docs.values())
    assert [(s.document_name, s.source_uri, s.generator) for s in got] == [
        ("alpha.md", "alpha.md", "qa"), ("beta.md", "beta.md", "qa")]
    for s in got:  # each span points at the answer in its own document
        assert s.char_start is not None and s.char_end is not None and s.element_ids
        assert texts[s.document_name][s.char_start:s.char_end].endswith("until the light blinks twice.")
    assert got[0].char_start != got[1].char_start
    # the pair's own provenance is untouched: still its first source
    assert (pair.provenance.document_id, pair.provenance.char_start) == (got[0].document_id, got[0].char_start)

    again = ingest(project, [a, b], CFG)  # re-ingesting records nothing new
    assert again.ok and {f.status for f in again.files} == {"unchanged"}
    with project.connect() as con:
        assert pairs_store.sources(con, pid) == got
        assert scalar(con, "SELECT count(*) FROM pair_sources") == 2


def test_a_pair_in_two_files_of_one_ingest_belongs_to_the_first_by_path_whichever_finishes_first(tmp_path):
    """Documents are stored as they finish, and the costliest start first: beta (over 0.1 MB) is
    parsed and stored before alpha. The pair still belongs to alpha, the first by path, and counts
    as new there only, with one worker or two (before: to beta, the first stored)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    a, b = two_manuals(docs)
    b.write_text("# Beta handbook\n\n## Materials\n\n" + "\n\n".join(
        f"Note {i} on materials: the casing is recycled aluminium. " * 8 for i in range(300)) + "\n\n" + SECTION)
    assert b.stat().st_size > 110_000
    seen = []
    for workers in (0, 2):
        project = Project(tmp_path / f"p{workers}").init()
        report, pair, got, stored = ingested_pair(project, [docs], IngestConfig(generators=("qa",), workers=workers))
        assert stored[pair.provenance.document_id][0] == "alpha.md"
        assert [s.document_name for s in got] == ["alpha.md", "beta.md"]
        assert (pair.provenance.char_start, pair.provenance.source_uri) == (got[0].char_start, got[0].source_uri)
        new = {Path(f.uri).name: f.pairs_new for f in report.files}
        assert new == {"alpha.md": 1, "beta.md": 0}
        seen.append((pair.provenance, [(s.document_name, s.char_start) for s in got]))
    assert seen[0] == seen[1]


def test_a_later_document_adds_its_source_to_a_stored_pair(project, tmp_path):
    a, b = two_manuals(tmp_path)
    ingest(project, [a], CFG)
    pid = the_pair(project)
    with project.connect() as con:
        assert [s.document_name for s in pairs_store.sources(con, pid)] == ["alpha.md"]
    ingest(project, [b], CFG)
    assert the_pair(project) == pid
    with project.connect() as con:
        assert [s.document_name for s in pairs_store.sources(con, pid)] == ["alpha.md", "beta.md"]


def test_imports_record_file_and_line_of_every_copy(project, tmp_path):
    row = {"instruction": "What colour is the beta sensor?", "response": "Grey."}
    one = tmp_path / "one.jsonl"
    two = tmp_path / "two.jsonl"
    one.write_text(json.dumps(row) + "\n")
    two.write_text(json.dumps({"instruction": "Other?", "response": "Yes."}) + "\n" + json.dumps(row) + "\n")
    import_file(project, one)
    import_file(project, two)
    import_file(project, two)  # a re-import is a no-op here too
    with project.connect() as con:
        pid = con.execute("SELECT pair_id FROM pair_revisions WHERE instruction = ?", [row["instruction"]]).fetchone()[0]
        got = pairs_store.sources(con, pid)
    assert [(Path(s.source_uri).name, s.source_line, s.document_name) for s in got] == [
        ("one.jsonl", 1, ""), ("two.jsonl", 2, "")]


def test_migration_backfills_existing_pairs(tmp_path):
    names = sorted(n for n, _ in MIGRATIONS)
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    migrate(con, upto=names[names.index("m110_pair_sources") - 1])  # a project from before the table
    kept = pairs_store.now()
    con.execute(
        """INSERT INTO pairs (id, head_revision_id, version, status, document_id, element_ids, char_start, char_end,
                              generator, source_uri, author, updated_by, created_at, updated_at)
           VALUES ('p_old', 'r_old', 1, 'pending', 'd_old', ['e_1'], 10, 20, 'sections', 'old.md', 'x', 'x', ?, ?),
                  ('p_imp', 'r_imp', 1, 'pending', NULL, NULL, NULL, NULL, 'import', 'data.jsonl', 'x', 'x', ?, ?)""",
        [kept, kept, kept, kept])
    assert migrate(con) == names[names.index("m110_pair_sources"):]
    old = pairs_store.sources(con, "p_old")
    assert [(s.document_id, s.source_uri, s.char_start, s.char_end, s.element_ids, s.generator, s.created_at)
            for s in old] == [("d_old", "old.md", 10, 20, ["e_1"], "sections", kept)]
    assert [(s.source_uri, s.document_id, s.char_start) for s in pairs_store.sources(con, "p_imp")] == [
        ("data.jsonl", None, None)]
    # the backfilled source and the one a later batch records for the same span are one source
    row = pairs_store.batch_row({"instruction": "q", "input": "", "response": "a", "system": "", "messages": []},
                                provenance=Provenance(document_id="d_old", element_ids=["e_1"], char_start=10,
                                                      char_end=20, generator="sections", source_uri="old.md"))
    row["pair_id"] = "p_old"
    pairs_store.insert_rows(con, pairs_store.rows_to_arrow([row]))
    assert pairs_store.sources(con, "p_old") == old


def test_pairs_added_by_the_app_have_their_one_source(project):
    with project.transaction() as con:
        [pid] = pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction="Hi?", response="Hello."),
                                                    provenance=Provenance(generator="manual"))])
    with project.connect() as con:
        assert [(s.generator, s.source_uri, s.document_id) for s in pairs_store.sources(con, pid)] == [
            ("manual", "", None)]


def test_review_page_says_where_else_the_pair_is(project, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app.components import esc

    a, b = two_manuals(tmp_path)
    b = b.rename(tmp_path / "beta *draft*.md")  # a name with Markdown in it is shown as written
    ingest(project, [a, b], CFG)
    with project.connect() as con:
        other = pairs_store.sources(con, the_pair(project))[1]
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("views/review.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    also = [c.value for c in at.caption if c.value.startswith("Also in:")]
    assert also == [f"Also in: {esc('beta *draft*.md')} (chars {other.char_start}–{other.char_end})"]


def test_pairs_show_lists_every_source_and_takes_a_prefix(project, tmp_path):
    from typer.testing import CliRunner

    from tuneloop.cli import app

    runner = CliRunner()
    a, b = two_manuals(tmp_path)
    ingest(project, [a, b], CFG)
    pid = the_pair(project)
    with project.connect() as con:
        got = pairs_store.sources(con, pid)
    res = runner.invoke(app, ["pairs", "show", pid[:8], "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    assert "sources (2):" in res.output
    lines = [ln.strip() for ln in res.output.splitlines() if ln.strip().startswith(("1. ", "2. "))]
    assert [(s.document_name, s.document_title) for s in got] == [("alpha.md", "Alpha manual"),
                                                                   ("beta.md", "Beta handbook")]
    assert lines == [  # each document (name, whole id, title), its span and page (Markdown has none)
        f"{n}. {s.document_name} (document {s.document_id}, title {s.document_title!r}) · "
        f"chars {s.char_start}-{s.char_end} · page n/a · by qa" for n, s in enumerate(got, 1)]
    assert got[0].document_id != got[1].document_id and pid in res.output  # ids whole

    # a prefix that several pairs start with: an error listing them, asking for more characters
    data = tmp_path / "more.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Question {i}?", "response": f"Answer {i}."}) + "\n"
                            for i in range(3)))
    import_file(project, data)
    with project.connect() as con:
        ids = sorted(r[0] for r in con.execute("SELECT id FROM pairs").fetchall())
    res = runner.invoke(app, ["pairs", "show", "p_", "--project", str(project.root)])
    assert res.exit_code != 0
    assert "ambiguous" in res.output and "type more characters" in res.output
    assert all(i in res.output for i in ids), res.output
    res = runner.invoke(app, ["pairs", "show", "p_zzz", "--project", str(project.root)])
    assert res.exit_code != 0 and "no such pair" in res.output


def test_pairs_show_gives_the_page_of_each_source_in_a_pdf(project, tmp_path):
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas
    from typer.testing import CliRunner

    from tuneloop.cli import app

    def pdf(path: Path, pages: list[tuple[str, str]]) -> None:
        c = canvas.Canvas(str(path), pagesize=A4)
        for heading, body in pages:
            c.setFont("Helvetica-Bold", 14)
            c.drawString(72, 770, heading)
            c.setFont("Helvetica", 11)
            c.drawString(72, 740, body)
            c.showPage()
        c.save()

    qa = ("How do I reset the sensor?", "Hold the reset button for ten seconds until the light blinks twice.")
    pdf(tmp_path / "alpha.pdf", [("About the alpha sensor", "The alpha sensor measures the humidity of a room."), qa])
    pdf(tmp_path / "beta.pdf", [qa])  # the same question, on page 1 here
    report = ingest(project, [tmp_path / "alpha.pdf", tmp_path / "beta.pdf"], CFG)
    assert report.ok, [f.error for f in report.files]
    pid = the_pair(project)
    with project.connect() as con:
        assert [(s.document_name, s.page) for s in pairs_store.sources(con, pid)] == [("alpha.pdf", 2), ("beta.pdf", 1)]
    res = CliRunner().invoke(app, ["pairs", "show", pid, "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    lines = [ln.strip() for ln in res.output.splitlines() if ln.strip().startswith(("1. ", "2. "))]
    assert [ln.split(" (document")[0] for ln in lines] == ["1. alpha.pdf", "2. beta.pdf"]
    assert " · page 2 · by qa" in lines[0] and " · page 1 · by qa" in lines[1]
