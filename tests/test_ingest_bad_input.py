"""Every kind of bad file ends as a per-file error with an actionable reason; the batch goes on
and nothing of a failed file is written."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ingest.documents import IngestConfig, ingest
from store.db import scalar
from tests.test_ingest_files import make

CFG = IngestConfig(generators=("sections", "qa"), workers=0)


def _write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def _encrypted_pdf(tmp: Path) -> Path:
    from pypdf import PdfReader, PdfWriter

    w = PdfWriter()
    w.append(PdfReader(make(tmp, "pdf", "plain")))
    w.encrypt("secret")
    out = tmp / "locked.pdf"
    w.write(str(out))
    return out


def _encrypted_docx(tmp: Path) -> Path:
    from msoffcrypto.format.ooxml import OOXMLFile

    src = make(tmp, "docx", "plain")
    out = tmp / "locked.docx"
    with open(src, "rb") as fh, open(out, "wb") as dst:
        OOXMLFile(fh).encrypt("secret", dst)
    return out


def _truncated(tmp: Path, ext: str) -> Path:
    src = make(tmp, ext, "whole")
    data = src.read_bytes()
    out = tmp / f"cut.{ext}"
    out.write_bytes(data[: len(data) // 2])
    return out


def _docx_without_body(tmp: Path) -> Path:
    out = tmp / "hollow.docx"
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/styles.xml", "<styles/>")
    return out


def _blank_pdf(tmp: Path) -> Path:
    from reportlab.pdfgen import canvas

    out = tmp / "scan.pdf"
    c = canvas.Canvas(str(out))
    c.rect(100, 100, 300, 400, fill=1)  # a picture, no text layer
    c.save()
    return out


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("notes.txt", "hello")
    return buf.getvalue()


def _encrypted_zip_member(tmp: Path) -> Path:
    # zipfile cannot write encrypted members; set the "encrypted" flag bit on a stored member.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("secret.md", "# hidden\n\nnot readable without the password\n")
    data = bytearray(buf.getvalue())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        i = data.find(sig)
        flag_at = i + (6 if sig == b"PK\x03\x04" else 8)
        data[flag_at] |= 0x1
    out = tmp / "locked.zip"
    out.write_bytes(bytes(data))
    return out


BAD = {
    "empty": (lambda t: _write(t / "empty.md", b""), "empty", "empty"),
    "blank": (lambda t: _write(t / "blank.txt", "  \n\n "), "empty", "empty"),
    "truncated_pdf": (lambda t: _truncated(t, "pdf"), "corrupt", "truncated"),
    "truncated_docx": (lambda t: _truncated(t, "docx"), "corrupt", "damaged or truncated"),
    "corrupt_docx": (_docx_without_body, "corrupt", "no word/document.xml part"),
    "zip_named_docx": (lambda t: _write(t / "archive.docx", _zip_bytes()), "wrong_type", "rename it to .zip"),
    "encrypted_pdf": (_encrypted_pdf, "encrypted", "password-protected"),
    "password_docx": (_encrypted_docx, "encrypted", "remove the password"),
    "encrypted_zip": (_encrypted_zip_member, "encrypted", "password-protected"),
    "wrong_extension": (lambda t: _write(t / "report.docx", "Minutes of the March meeting.\n"),
                        "wrong_type", "contains plain text"),
    "ole_named_pdf": (lambda t: _write(t / "scan.pdf", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)),
                      "wrong_type", "contains an old-style Office/Outlook (OLE) file"),
    # bytes that start as a PNG are read as one (see ``test_content_decides_the_format``): a broken one
    # fails as an image, and the message says the name and the content disagree
    "binary_as_text": (lambda t: _write(t / "notes.md", b"\x89PNG\r\n\x1a\n" + bytes(200)),
                       "corrupt", "named .md but is a .png file"),
    "zero_text_pdf": (_blank_pdf, "no_text", "no text layer"),
    "zero_text_html": (lambda t: _write(t / "pic.html", "<html><body><img src='a.png'></body></html>"),
                       "no_text", "no text found"),
    "unsupported": (lambda t: _write(t / "tool.exe", b"MZ" + bytes(100)),
                    "unsupported", "supported: "),
    "missing": (lambda t: t / "does-not-exist.md", "not_found", "no such file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_fails_alone_and_leaves_nothing(project, tmp_path, case):
    maker, kind, words = BAD[case]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = maker(bad_dir)
    good = make(tmp_path, "md", "good")
    report = ingest(project, [bad, good], CFG)
    failed = report.failed
    assert len(failed) == 1, [(f.uri, f.status, f.error) for f in report.files]
    assert failed[0].error_kind == kind, failed[0].error
    assert words in failed[0].error
    ok = [f for f in report.files if f.ok]
    assert [f.status for f in ok] == ["new"] and ok[0].pairs_new > 0
    with project.connect() as con:  # only the good file is in the store
        assert scalar(con, "SELECT count(*) FROM documents") == 1
        assert scalar(con, "SELECT count(*) FROM pairs WHERE document_id <> ?", [ok[0].document_id]) == 0


def test_size_limit_is_configurable(project, tmp_path):
    big = tmp_path / "big.md"
    big.write_text("# Big\n\n" + "Cobalt sensor readings are stored hourly. " * 1000)
    small = make(tmp_path, "md", "small")
    report = ingest(project, [big, small], IngestConfig(workers=0, max_file_mb=0.01))
    assert [(f.uri, f.error_kind) for f in report.failed] == [("big.md", "too_large")]
    assert "--max-file-mb" in report.failed[0].error
    assert ingest(project, [big], IngestConfig(workers=0, max_file_mb=1)).ok


def test_time_limit_kills_a_slow_parse_and_the_batch_goes_on(project, tmp_path):
    slow = tmp_path / "slow.md"
    # One paragraph of unclosed link brackets: the Markdown parser's inline pass is quadratic in
    # it (16 KB take ~50 s here, so this 1 MB file needs days on any machine): the time limit
    # cannot be met, whatever the machine's speed, while the small HTML file needs milliseconds.
    slow.write_text("\n".join(["[" * 100] * 10_000))
    good = make(tmp_path, "html", "faq")
    report = ingest(project, [slow, good], IngestConfig(workers=1, timeout_s=2.0))
    by_uri = {f.uri: f for f in report.files}
    assert by_uri["slow.md"].error_kind == "timeout"
    assert "--timeout" in by_uri["slow.md"].error
    assert by_uri["faq.html"].status == "new", by_uri["faq.html"].error
    with project.connect() as con:
        assert scalar(con, "SELECT count(*) FROM documents") == 1
