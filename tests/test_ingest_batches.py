"""Robust batches: size-scaled time limits, remembered failures, plain progress lines, a summary
that names duplicates and empty documents, e-mail attachments that fail alone, parser warnings
attributed to their file. Real files in tmp_path, real unstructured, real worker processes."""

from __future__ import annotations

import logging
import shutil
import warnings
from email.message import EmailMessage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingest.documents import IngestConfig, ingest
from ingest.partition import partition_file
from ingest.workers import captured_warnings, time_limit, timed_out
from tests.test_ingest_clean_text import _pdf
from tests.test_ingest_files import make
from tuneloop.cli import app

runner = CliRunner()
NO_TEXT_HTML = "<html><body><img src='a.png'></body></html>"  # parses, but to no text: a parse failure


@pytest.mark.parametrize(("pages", "size", "strategy", "limit", "what"), [
    (619, 0, "auto", 300 + 619, "619 pages"),
    (1, 0, "fast", 301, "1 page"),
    (10, 0, "ocr_only", 400, "10 pages"),
    (None, 3 * 1048576, "auto", 300 + 240, "3.0 MB"),  # the base covers the first MB
    (None, 1048576 // 2, "auto", 300, "0.5 MB"),
    (None, 0, "auto", 300, "0.0 MB"),
])
def test_time_limit_grows_with_the_file(pages, size, strategy, limit, what):
    assert time_limit(300, pages=pages, size_bytes=size, pdf_strategy=strategy) == (pytest.approx(limit), what)


def test_timeout_message_names_the_limit_and_the_size():
    err = timed_out(412.3, 919, "619 pages")
    assert err.kind == "timeout"
    assert "timed out after 412 s (the limit for 619 pages: 919 s)" in err.message and "--timeout" in err.message


def test_pdf_limit_is_sized_by_its_pages(project, tmp_path):
    _pdf(tmp_path / "manual.pdf", 3)
    (tmp_path / "notes.md").write_text("# Notes\n\nThe notes explain the travel policy for all staff members.\n")
    report = ingest(project, [tmp_path / "manual.pdf", tmp_path / "notes.md"], IngestConfig(workers=1, timeout_s=50))
    by = {f.uri: f for f in report.files}
    assert by["manual.pdf"].ok and by["manual.pdf"].n_pages == 3
    assert by["manual.pdf"].limit_s == pytest.approx(53)
    assert by["notes.md"].limit_s == pytest.approx(time_limit(50, size_bytes=(tmp_path / "notes.md").stat().st_size)[0])
    # a log names a big file when its parse starts (it may take minutes), with its limit
    _pdf(tmp_path / "book.pdf", 6)
    res = runner.invoke(app, ["ingest", str(tmp_path / "book.pdf"), "--timeout", "5", "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    assert "parsing book.pdf (a large file: time limit 11 s)" in res.output


def test_failed_content_is_skipped_until_retried(project, tmp_path):
    (tmp_path / "pic.html").write_text(NO_TEXT_HTML)
    first = ingest(project, [tmp_path / "pic.html"], IngestConfig(workers=1))
    assert first.files[0].error_kind == "no_text"
    # the same bytes under another name: remembered by content, skipped without parsing
    shutil.copy(tmp_path / "pic.html", tmp_path / "copy.html")
    again = ingest(project, [tmp_path / "pic.html", tmp_path / "copy.html"], IngestConfig(workers=1))
    for f in again.files:
        assert f.error_kind == "failed_before", f
        assert f.error.startswith("skipped: failed before (no_text: no text found")
        assert f.error.endswith("--retry-failed to try again")
    retried = ingest(project, [tmp_path / "pic.html"], IngestConfig(workers=1, retry_failed=True))
    assert retried.files[0].error_kind == "no_text"
    res = runner.invoke(app, ["ingest", str(tmp_path / "pic.html"), "--project", str(project.root)])
    assert res.exit_code == 1 and "skipped: failed before" in res.output
    res = runner.invoke(app, ["ingest", str(tmp_path / "pic.html"), "--retry-failed", "--project", str(project.root)])
    assert res.exit_code == 1 and "skipped" not in res.output and "no text found" in res.output


def test_plain_progress_line_per_file_and_summary_names_copies_and_empty(project, tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    make(kb, "md", "guide")
    (kb / "title.md").write_text("# Hello\n")
    first = runner.invoke(app, ["ingest", str(kb / "guide.md"), "--project", str(project.root)])
    assert first.exit_code == 0, first.output
    assert "[1/1] guide.md: " in first.output and " pairs, " in first.output and " new (" in first.output
    assert "ingest: 0/1 files" in first.output.split("[1/1]")[0]  # the batch's size, before any file is done
    shutil.copy(kb / "guide.md", tmp_path / "elsewhere.md")
    make(kb, "html", "faq")
    shutil.copy(kb / "faq.html", kb / "faq-copy.html")
    res = runner.invoke(app, ["ingest", str(kb), str(tmp_path / "elsewhere.md"), "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("[")]
    assert [ln.split("]")[0] for ln in lines] == [f"[{k}/5" for k in range(1, 6)]
    out = " ".join(res.output.split())  # rich wraps long lines
    assert "kb/faq.html: same content as kb/faq-copy.html in this batch"  # sorted: the copy came first in out
    from store import documents as docs_store

    with project.connect() as con:
        doc = docs_store.find(con, "guide.md")
    assert f"elsewhere.md: same content as stored document {doc.id} (guide.md)" in out
    assert f"kb/guide.md: same content as stored document {doc.id} (guide.md)" in out
    assert "3 file(s) have the same content as another" in out
    assert "1 document(s) gave no pairs:" in out and "kb/title.md (d_" in out


def _mail(tmp: Path) -> Path:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@example.org", "b@example.org", "Quarterly plan"
    m.set_content("Hello team.\n\nThe quarterly plan covers hiring and the budget for the next three months.\n")
    m.add_attachment(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 200, maintype="audio",
                     subtype="mpeg", filename="memo.mp3")
    m.add_attachment(b"PK\x03\x04 not really a document", maintype="application",
                     subtype="vnd.openxmlformats-officedocument.wordprocessingml.document", filename="broken.docx")
    m.add_attachment(b"# Travel\n\nThe attached notes explain the travel policy for all staff members.\n",
                     maintype="text", subtype="markdown", filename="notes.md")
    path = tmp / "plan.eml"
    path.write_bytes(bytes(m))
    return path


def test_email_keeps_its_body_when_an_attachment_fails(project, tmp_path):
    report = ingest(project, [_mail(tmp_path)], IngestConfig(workers=1))
    f = report.files[0]
    assert f.ok and f.pairs_total > 0, f
    said = " ".join(f.warnings)
    assert "'memo.mp3' skipped" in said and "'broken.docx' could not be parsed" in said
    texts = [e["text"] for e in partition_file(tmp_path / "plan.eml").elements]
    assert any("quarterly plan covers hiring" in t for t in texts)
    assert any("travel policy" in t for t in texts)  # the good attachment is kept too


def test_digest_is_read_message_by_message(tmp_path):
    d = MIMEMultipart("digest")
    d["Subject"], d["From"] = "Weekly digest", "list@example.org"
    for k in range(2):
        inner = MIMEText(f"Message {k} of the digest explains the release schedule for the spring.")
        inner["Subject"] = f"entry {k}"
        d.attach(MIMEMessage(inner))
    (tmp_path / "digest.eml").write_bytes(d.as_bytes())
    texts = [e["text"] for e in partition_file(tmp_path / "digest.eml").elements]
    assert texts == [f"Message {k} of the digest explains the release schedule for the spring." for k in range(2)]


def test_bare_parser_exception_is_named_with_its_place():
    from ingest.partition import _explain

    try:
        raise AssertionError  # what a parser's bare ``assert`` raises (pytest rewrites only test asserts)
    except AssertionError as exc:
        err = _explain(exc, "eml")
    assert err.kind == "parse_error"
    assert "AssertionError: no message; raised at " in err.message and "test_ingest_batches.py:" in err.message


def test_parser_warnings_are_captured_not_printed(capsys):
    loud = logging.getLogger("unstructured")
    before = loud.handlers[:]
    with captured_warnings() as said:
        loud.error("could not detect the language of page %d", 3)  # below ERROR it is muted (ingest.offline)
        warnings.warn("ambiguous encoding", UserWarning, stacklevel=1)
    assert said == ["unstructured: could not detect the language of page 3", "UserWarning: ambiguous encoding"]
    assert loud.handlers == before
    assert capsys.readouterr().err == ""


def test_pairs_show_takes_an_id_prefix(project, tmp_path):
    make(tmp_path, "md", "guide")
    ingest(project, [tmp_path / "guide.md"], IngestConfig(workers=0))
    from store import pairs as pairs_store

    with project.connect() as con:
        ids = [p.id for p in pairs_store.query(con, limit=100)]
    assert len(ids) > 1
    res = runner.invoke(app, ["pairs", "show", ids[0][:12], "--project", str(project.root)])
    assert res.exit_code == 0 and ids[0] in res.output
    res = runner.invoke(app, ["pairs", "show", "p_", "--project", str(project.root)])
    assert res.exit_code == 2 and "is ambiguous" in res.output and "start with it" in res.output


def test_the_writer_stores_the_last_documents_without_lingering_for_more(project, tmp_path, monkeypatch):
    """The writer waits a moment for more ready documents to store them together; once parsing is
    over nothing more comes, and the batch ends at once (with a 600 s linger, it would wait it out)."""
    from ingest.documents import _Writer

    monkeypatch.setattr(_Writer, "LINGER_S", 600.0)
    files = [make(tmp_path, "md", "guide"), make(tmp_path, "csv", "table")]
    report = ingest(project, files, IngestConfig(workers=0))
    assert report.ok and [f.status for f in report.files] == ["new", "new"], [f.error for f in report.files]
    assert report.seconds < 300  # minutes below the linger: the writer did not wait for a third document
