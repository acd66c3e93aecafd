"""Every supported format, written by the test itself and parsed by the real unstructured.

The makers here are also used by the other ingest tests (``from tests.test_ingest_files import
make``). Exact element lists for a few formats; structural checks for all.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.elements import build_document
from ingest.filetypes import IngestError
from ingest.partition import partition_file

MD = """# Cobalt Quick Guide

The Cobalt sensor measures air quality in offices and warehouses.

## Battery

Charge the Cobalt sensor every week. An amber light means the battery is below 15 %.

## Calibration

Calibrate it every six months, or after a firmware update.
"""

HTML = """<html><head><title>Cobalt FAQ</title></head><body>
<h1>Cobalt FAQ</h1>
<h2>How do I reset the sensor?</h2>
<p>Hold the power button for ten seconds until the light blinks blue.</p>
<h2>Can I mount it outdoors?</h2>
<p>No. The Cobalt sensor is rated for indoor use only.</p>
</body></html>
"""

EML = """From: Ana Ribeiro <ana@larkspur.example>
To: Team <team@larkspur.example>
Subject: Lisbon warehouse hours
Date: Mon, 3 Mar 2025 09:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Hello team,

From next Monday the Lisbon warehouse opens at 8:00 and closes at 17:00.

Best,
Ana
"""


def _pdf(path: Path) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    c.setFont("Helvetica-Bold", 16)
    c.drawString(72, 770, "Cobalt Manual")
    c.setFont("Helvetica", 11)
    c.drawString(72, 740, "The Cobalt sensor measures temperature, humidity and CO2 levels.")
    c.showPage()
    c.setFont("Helvetica-Bold", 16)
    c.drawString(72, 770, "Maintenance")
    c.setFont("Helvetica", 11)
    c.drawString(72, 740, "Clean the air inlet with a dry cloth once a month.")
    c.save()


def _docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Travel Policy", 0)
    d.add_paragraph("Employees book travel through the Larkspur Labs portal.")
    d.add_heading("Approvals", 1)
    d.add_paragraph("Trips over 500 euros need approval from the department head.")
    d.save(str(path))


def _pptx(path: Path) -> None:
    from pptx import Presentation

    prs = Presentation()
    s = prs.slides.add_slide(prs.slide_layouts[1])
    s.shapes.title.text = "Cobalt Roadmap"
    s.placeholders[1].text = "Version 2 ships with a longer battery life."
    s = prs.slides.add_slide(prs.slide_layouts[1])
    s.shapes.title.text = "Lisbon Warehouse"
    s.placeholders[1].text = "The warehouse ships orders within two working days."
    prs.save(str(path))


def _xlsx(path: Path) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Prices"
    ws.append(["Product", "Price"])
    ws.append(["Cobalt sensor", 149])
    ws.append(["Cobalt hub", 89])
    wb.save(str(path))


def _xls(path: Path) -> None:
    xlwt = pytest.importorskip("xlwt")
    wb = xlwt.Workbook()
    ws = wb.add_sheet("Prices")
    for r, row in enumerate([["Product", "Price"], ["Cobalt sensor", 149], ["Cobalt hub", 89]]):
        for c, v in enumerate(row):
            ws.write(r, c, v)
    wb.save(str(path))


def _pandoc(fmt: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        import pypandoc

        if fmt in ("rst", "org"):
            path.write_text(pypandoc.convert_text(MD, fmt, format="md"))
        else:
            pypandoc.convert_text(MD, fmt, format="md", outputfile=str(path), extra_args=["--standalone"])

    return make


MAKERS: dict[str, Callable[[Path], None]] = {
    "txt": lambda p: p.write_text("COBALT CARE\n\nKeep the sensor away from direct sunlight.\n\n"
                                  "Wipe it with a dry cloth.\n"),
    "md": lambda p: p.write_text(MD),
    "html": lambda p: p.write_text(HTML),
    "xml": lambda p: p.write_text("<?xml version='1.0'?><faq><item><q>What is Cobalt?</q>"
                                  "<a>An environmental sensor.</a></item></faq>"),
    "csv": lambda p: p.write_text("question,answer\nWhat is the warranty?,Two years.\n"
                                  "Where is the warehouse?,Lisbon.\n"),
    "tsv": lambda p: p.write_text("product\tprice\nCobalt sensor\t149\nCobalt hub\t89\n"),
    "json": lambda p: p.write_text(json.dumps([{"question": "What is the warranty?", "answer": "Two years."}])),
    "eml": lambda p: p.write_text(EML),
    "pdf": _pdf,
    "docx": _docx,
    "pptx": _pptx,
    "xlsx": _xlsx,
    "xls": _xls,
    "epub": _pandoc("epub"),
    "odt": _pandoc("odt"),
    "rtf": _pandoc("rtf"),
    "rst": _pandoc("rst"),
    "org": _pandoc("org"),
}


def make(tmp: Path, ext: str, name: str = "sample") -> Path:
    path = tmp / f"{name}.{ext}"
    MAKERS[ext](path)
    return path


def elements(path: Path) -> list[tuple[str, str]]:
    return [(e["type"], e["text"]) for e in partition_file(path, pdf_strategy="fast").elements]


# ------------------------------------------------------------------ exact expectations

def test_markdown_exact(tmp_path):
    assert elements(make(tmp_path, "md")) == [
        ("Title", "Cobalt Quick Guide"),
        ("NarrativeText", "The Cobalt sensor measures air quality in offices and warehouses."),
        ("Title", "Battery"),
        ("NarrativeText", "Charge the Cobalt sensor every week. An amber light means the battery is below 15 %."),
        ("Title", "Calibration"),
        ("NarrativeText", "Calibrate it every six months, or after a firmware update."),
    ]


def test_html_exact(tmp_path):
    assert elements(make(tmp_path, "html")) == [
        ("Title", "Cobalt FAQ"),
        ("Title", "How do I reset the sensor?"),
        ("NarrativeText", "Hold the power button for ten seconds until the light blinks blue."),
        ("Title", "Can I mount it outdoors?"),
        ("NarrativeText", "No. The Cobalt sensor is rated for indoor use only."),
    ]


def test_docx_exact(tmp_path):
    assert elements(make(tmp_path, "docx")) == [
        ("Title", "Travel Policy"),
        # unstructured's text classifier calls this sentence uncategorised (no verb it trusts)
        ("UncategorizedText", "Employees book travel through the Larkspur Labs portal."),
        ("Title", "Approvals"),
        ("NarrativeText", "Trips over 500 euros need approval from the department head."),
    ]


def test_pdf_pages_and_text_layer(tmp_path):
    parsed = partition_file(make(tmp_path, "pdf"))
    assert parsed.n_pages == 2
    assert parsed.strategy == "fast"
    by_page = {}
    for e in parsed.elements:
        by_page.setdefault(e["page"], []).append(e["text"])
    assert by_page == {
        1: ["Cobalt Manual", "The Cobalt sensor measures temperature, humidity and CO2 levels."],
        2: ["Maintenance", "Clean the air inlet with a dry cloth once a month."],
    }


# ------------------------------------------------------------------ structure, every format

EXPECTED_WORDS = {
    "txt": "sunlight", "md": "amber", "html": "blinks blue", "xml": "environmental sensor",
    "csv": "Two years", "tsv": "Cobalt hub", "json": "warranty", "eml": "Lisbon warehouse opens",
    "pdf": "dry cloth", "docx": "department head", "pptx": "two working days", "xlsx": "Cobalt hub",
    "xls": "Cobalt hub", "epub": "amber light", "odt": "amber light", "rtf": "amber light",
    "rst": "amber light", "org": "amber light",
}


@pytest.mark.parametrize("ext", sorted(MAKERS))
def test_every_format_parses_with_consistent_offsets(tmp_path, ext):
    path = make(tmp_path, ext)
    parsed = partition_file(path)
    assert parsed.filetype == ext
    assert parsed.elements, ext
    doc, els = build_document(parsed.elements, document_id="d_x", uri=path.name, name=path.name,
                              filetype=ext, size_bytes=path.stat().st_size, n_pages=parsed.n_pages)
    assert EXPECTED_WORDS[ext] in doc.text
    assert [e.idx for e in els] == list(range(len(els)))
    for e in els:
        assert doc.text[e.char_start:e.char_end] == e.text
        assert e.type and e.id.startswith("e_")
        assert e.parent_id is None or e.parent_id in {x.id for x in els}
    assert len({e.id for e in els}) == len(els)


def test_headings_become_parents(tmp_path):
    parsed = partition_file(make(tmp_path, "md"))
    doc, els = build_document(parsed.elements, document_id="d_x", uri="a.md", name="a.md", filetype="md",
                              size_bytes=1)
    by_text = {e.text: e for e in els}
    battery = by_text["Battery"]
    assert by_text["Charge the Cobalt sensor every week. An amber light means the battery is below 15 %."] \
        .parent_id == battery.id
    assert battery.parent_id == by_text["Cobalt Quick Guide"].id
    assert doc.title == "Cobalt Quick Guide"


def test_email_keeps_subject_as_title(tmp_path):
    parsed = partition_file(make(tmp_path, "eml"))
    doc, _ = build_document(parsed.elements, document_id="d_x", uri="m.eml", name="m.eml", filetype="eml",
                            size_bytes=1)
    assert "Lisbon warehouse opens at 8:00" in doc.text
    assert doc.title  # subject or file name, never empty


@pytest.mark.parametrize("ext", ["doc", "ppt"])
def test_legacy_office_without_libreoffice_is_a_clear_error(tmp_path, ext):
    import shutil

    if shutil.which("soffice"):
        pytest.skip("LibreOffice is installed here; legacy formats are converted")
    path = tmp_path / f"old.{ext}"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 1000)
    with pytest.raises(IngestError) as ei:
        partition_file(path)
    assert ei.value.kind == "unsupported"
    assert "LibreOffice" in ei.value.message and f".{ext}x" in ei.value.message


def test_zip_maker_roundtrip(tmp_path):
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(make(tmp_path, "md"), "docs/guide.md")
    assert zipfile.ZipFile(z).namelist() == ["docs/guide.md"]
