"""Legacy .doc/.ppt files parse through LibreOffice when it is installed (`make test` installs it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ingest.documents import IngestConfig, ingest
from store import pairs
from store.records import SliceFilter

pytestmark = pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice (soffice) is not installed")


def _convert(src, fmt: str, out_dir) -> None:
    subprocess.run(["soffice", "--headless", "--convert-to", fmt, "--outdir", str(out_dir), str(src)],
                   check=True, capture_output=True, timeout=180)


def test_doc_and_ppt_are_ingested_with_provenance(project, tmp_path):
    import docx
    import pptx

    src = tmp_path / "src"
    src.mkdir()
    d = docx.Document()
    d.add_heading("Travel policy", 1)
    d.add_paragraph("Employees book trains for trips under four hours.")
    d.add_heading("How do I claim expenses?", 2)
    d.add_paragraph("Submit receipts within 30 days through the portal.")
    d.save(src / "policy.docx")
    p = pptx.Presentation()
    slide = p.slides.add_slide(p.slide_layouts[1])
    slide.shapes.title.text = "Cobalt roadmap"
    slide.placeholders[1].text = "Battery life doubles in the third quarter."
    p.save(src / "deck.pptx")
    out = tmp_path / "legacy"
    out.mkdir()
    _convert(src / "policy.docx", "doc", out)
    _convert(src / "deck.pptx", "ppt", out)

    report = ingest(project, [out / "policy.doc", out / "deck.ppt"], IngestConfig(generators=("qa", "sections")))
    by = {f.uri: f for f in report.files}
    assert by["policy.doc"].status == "new", by["policy.doc"].error
    assert by["deck.ppt"].status == "new", by["deck.ppt"].error
    with project.connect() as con:
        got = {p.instruction: p for p in pairs.query(con, SliceFilter(exclude_duplicates=False), limit=50)}
        doc_text = con.execute("SELECT text FROM documents WHERE name = 'policy.doc'").fetchall()[0][0]
        ppt_text = con.execute("SELECT text FROM documents WHERE name = 'deck.ppt'").fetchall()[0][0]
    qa = got["How do I claim expenses?"]
    assert qa.response == "Submit receipts within 30 days through the portal."
    assert doc_text[qa.provenance.char_start:qa.provenance.char_end] == qa.response
    assert "Battery life doubles" in ppt_text
