"""The ingest CLI and the sample corpus, end to end on a real project."""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

from store import documents as docs_store
from store.db import Project, frame, scalar
from tests.test_ingest_files import make
from tuneloop.cli import app
from tuneloop.sample_corpus import FILES, add_corpus, write_corpus

runner = CliRunner()


def test_cli_ingest_reports_failures_and_exits_nonzero(project, tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    make(kb, "md", "guide")
    make(kb, "html", "faq")
    (kb / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<<>>\n")
    res = runner.invoke(app, ["ingest", str(kb), "-g", "qa", "-g", "sections", "--workers", "0",
                              "--project", str(project.root)])
    assert res.exit_code == 1, res.output
    assert "ingest summary" in res.output
    assert "kb/broken.pdf" in res.output and "truncated" in res.output
    assert "2 new" in res.output
    with project.connect() as con:
        assert scalar(con, "SELECT count(*) FROM documents") == 2
        assert set(frame(con, "SELECT DISTINCT generator FROM pairs")["generator"]) == {"qa", "sections"}
    again = runner.invoke(app, ["ingest", str(kb / "guide.md"), "--workers", "0", "--project", str(project.root)])
    assert again.exit_code == 0, again.output
    assert "1 unchanged; 0 new pairs" in again.output


def test_cli_rejects_unknown_generator_and_options(project, tmp_path):
    path = make(tmp_path, "md")
    res = runner.invoke(app, ["ingest", str(path), "-g", "nope", "--project", str(project.root)])
    assert res.exit_code == 2 and "unknown generator" in res.output
    res = runner.invoke(app, ["ingest", str(path), "-o", "sections.colour=blue", "--project", str(project.root)])
    assert res.exit_code == 2 and "unknown option" in res.output
    res = runner.invoke(app, ["ingest", str(path), "-g", "sections", "-g", "qa", "-o", "min_chars=10",
                              "--project", str(project.root)])
    assert res.exit_code == 2 and "name the generator, e.g. sections.min_chars" in res.output
    res = runner.invoke(app, ["ingest", str(path), "-o", "min_chars", "--project", str(project.root)])
    assert res.exit_code == 2 and "is not key=value" in res.output


def test_the_app_and_the_cli_read_options_alike():
    from ingest.generators import options_from_text, split_option

    assert split_option(" sections.min_chars = 50 ", ["sections", "qa"]) == ("sections", "min_chars", "50")
    assert split_option("min_chars=50", ["sections"]) == ("sections", "min_chars", "50")
    assert options_from_text("sections", "# the app's box\nmin_chars = 50\n\nsections.max_chars=900") == {
        "min_chars": "50", "max_chars": "900"}
    with pytest.raises(ValueError, match="names another generator"):
        options_from_text("sections", "qa.max_pairs=3")
    with pytest.raises(ValueError, match="not key=value"):
        options_from_text("sections", "min_chars")


def test_cli_documents_list_and_show(project, tmp_path):
    path = make(tmp_path, "md", "guide")
    assert runner.invoke(app, ["ingest", str(path), "--workers", "0", "-o", "min_chars=10",
                               "--project", str(project.root)]).exit_code == 0
    res = runner.invoke(app, ["documents", "list", "--project", str(project.root)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "guide.md" in res.output and "documents (1)" in res.output
    res = runner.invoke(app, ["documents", "show", "guide.md", "--project", str(project.root)],
                        env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "Cobalt Quick Guide" in res.output
    assert "What does the Cobalt Quick Guide say about Battery?" in res.output
    assert "elements (6)" in res.output
    res = runner.invoke(app, ["documents", "show", "d_nothing", "--project", str(project.root)])
    assert res.exit_code == 2 and "no document" in res.output


def _digest(root):
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in FILES}


def test_sample_corpus_is_deterministic_and_covers_the_formats(tmp_path):
    write_corpus(tmp_path / "a")
    write_corpus(tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert sorted(p.rsplit(".", 1)[1] for p in FILES) == ["csv", "docx", "eml", "html", "md", "pdf", "pptx"]


def test_sample_corpus_ingests_into_pairs_with_provenance(project: Project):
    report = add_corpus(project, workers=0)
    assert report.ok, [(f.uri, f.error) for f in report.files]
    assert len(report.files) == 7
    assert 10 <= report.pages <= 30
    with project.connect() as con:
        pairs = frame(con, """SELECT p.generator, r.instruction, r.response, p.char_start, p.char_end, d.text
                              FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
                              JOIN documents d ON d.id = p.document_id""")
        manual = docs_store.find(con, "corpus/manuals/cobalt-user-manual.pdf")
    assert manual.n_pages == 11
    by_gen = pairs.group_by("generator").len().sort("generator").rows()
    assert dict(by_gen)["qa"] >= 15 and dict(by_gen)["sections"] >= 20
    for r in pairs.iter_rows(named=True):
        assert r["text"][r["char_start"]:r["char_end"]] == r["response"]
    instructions = set(pairs["instruction"])
    # consistent with the seed pairs of tuneloop.sample
    assert "What does the Cobalt sensor's amber light mean?" in instructions
    assert "What is the return window for hardware?" in instructions
    vacation = pairs.filter(pairs["instruction"].str.contains("about Vacation"))
    assert "22 vacation days" in vacation["response"][0]


def test_options_for_a_generator_auto_picks_reach_it(project, tmp_path):
    """With the default ``auto``, ``-o sections.…`` configures the sections auto chooses for a titled
    document; a bad value is refused before any work, naming the option."""
    path = make(tmp_path, "md", "guide")
    res = runner.invoke(app, ["ingest", str(path), "--workers", "0", "-o", "sections.templates=Explain {heading}.",
                              "-o", "sections.min_chars=10", "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    with project.connect() as con:
        made = frame(con, "SELECT r.instruction, p.generator FROM pairs p JOIN pair_revisions r "
                          "ON r.id = p.head_revision_id").to_dicts()
    sections = [m["instruction"] for m in made if m["generator"].startswith("sections")]
    assert {"Explain Battery.", "Explain Calibration."} <= set(sections), made  # the title keeps its overview
    res = runner.invoke(app, ["ingest", str(path), "-o", "table.max_rows=lots", "--project", str(project.root)])
    assert res.exit_code == 2 and "table" in res.output, res.output
