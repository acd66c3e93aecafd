"""Images and scanned PDF pages are read by OCR (tesseract, unstructured's ``ocr_only``); JSON
Lines and the other text formats unstructured reads are accepted.

Real parts only: the images are drawn with PIL, OCR'd by the real tesseract, and ingested through
``ingest.documents.ingest`` into a real project. Without tesseract the OCR tests are skipped,
except the one that checks the error a user then gets (PATH emptied: environment only).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ingest.documents import IngestConfig, ingest
from ingest.filetypes import IngestError, sniff
from ingest.partition import pdf_needs_ocr
from ingest.workers import time_limit
from store.db import scalar
from tests.test_ingest_files import make

CFG = IngestConfig(generators=("auto",), workers=0)
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
MEMO = [
    "Warehouse Memo",
    "",
    "The Lisbon warehouse opens on Monday at nine o'clock.",
    "Every order placed before noon ships the same day.",
    "Returns are accepted within thirty days of delivery.",
    "Questions go to the logistics team in Porto.",
]
needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None,
                                     reason="tesseract is not installed (`make ocr-deps`)")


def _memo_image():  # -> PIL.Image.Image
    from PIL import Image, ImageDraw, ImageFont

    if not Path(FONT).exists():
        pytest.skip(f"{FONT} missing (Debian's fonts-dejavu-core)")
    font = ImageFont.truetype(FONT, 28)
    img = Image.new("RGB", (1100, 60 + 50 * len(MEMO)), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(MEMO):
        draw.text((40, 30 + 50 * i), line, fill="black", font=font)
    return img


def _png(tmp: Path, name: str = "memo.png") -> Path:
    path = tmp / name
    _memo_image().save(path)
    return path


def _scanned_pdf(tmp: Path) -> Path:
    """A PDF page that is only a picture of text: no text layer, as a scanner makes it."""
    path = tmp / "scan.pdf"
    _memo_image().save(path, "PDF", resolution=150)
    return path


def _stored(project, name: str) -> tuple[str, dict, int]:
    with project.connect() as con:
        doc_id, text, meta = con.execute(
            "SELECT id, text, metadata FROM documents WHERE name = ?", [name]).fetchone()
        pairs = scalar(con, "SELECT count(*) FROM pairs WHERE document_id = ?", [doc_id])
    return text, (json.loads(meta) if isinstance(meta, str) else meta or {}), pairs


def _check_memo(text: str) -> None:
    low = text.lower()
    for words in ("warehouse memo", "lisbon warehouse", "thirty days", "logistics team"):
        assert words in low, text


@needs_tesseract
def test_png_is_read_by_ocr_and_gives_pairs(project, tmp_path):
    png = _png(tmp_path)
    report = ingest(project, [png], CFG)
    assert report.ok, [(f.uri, f.error) for f in report.files]
    [r] = report.files
    assert r.filetype == "png" and r.pairs_new > 0
    text, meta, pairs = _stored(project, "memo.png")
    _check_memo(text)
    assert meta.get("strategy") == "ocr_only" and pairs == r.pairs_new


@needs_tesseract
def test_scanned_pdf_page_falls_back_to_ocr(project, tmp_path):
    pdf = _scanned_pdf(tmp_path)
    from pypdf import PdfReader

    assert not PdfReader(str(pdf)).pages[0].extract_text().strip()  # really no text layer
    report = ingest(project, [pdf], IngestConfig(generators=("auto",), workers=1))  # OCR in a worker process
    assert report.ok, [(f.uri, f.error) for f in report.files]
    [r] = report.files
    assert r.n_pages == 1 and r.pairs_new > 0
    # sized for OCR (seconds a page), not for a text layer: a long scan is not cut off half-way
    assert r.limit_s == pytest.approx(time_limit(CFG.timeout_s, pages=1, pdf_strategy="ocr_only")[0])
    text, meta, _ = _stored(project, "scan.pdf")
    _check_memo(text)
    assert meta.get("strategy") == "ocr_only"


@needs_tesseract
def test_only_pdfs_without_a_text_layer_are_sized_for_ocr(tmp_path):
    from pypdf import PdfReader, PdfWriter

    scan = _scanned_pdf(tmp_path)
    manual = make(tmp_path, "pdf", "manual")
    assert pdf_needs_ocr(scan)
    assert not pdf_needs_ocr(manual)
    # a blank first page (a cover, a separator) before the text: the first pages are probed, not one
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.append(str(manual))
    writer.write(blank_first := tmp_path / "blank-first.pdf")
    assert not pdf_needs_ocr(blank_first)
    # text from the fourth page on only: the probe reads the first three pages and no more
    writer = PdfWriter()
    for _ in range(3):
        writer.append(str(scan))
    writer.append(str(manual))
    writer.write(late := tmp_path / "late-text.pdf")
    assert len(PdfReader(str(late)).pages) > 3 and pdf_needs_ocr(late)
    # what cannot be opened is not judged a scan: its parse says what is wrong
    (broken := tmp_path / "broken.pdf").write_bytes(manual.read_bytes()[:400])
    (junk := tmp_path / "not-a-pdf.pdf").write_bytes(b"%PDF-1.7\n" + b"\x00" * 64)
    assert not pdf_needs_ocr(broken) and not pdf_needs_ocr(junk)


@needs_tesseract
@pytest.mark.parametrize("fmt,name", [("JPEG", "memo.jpeg"), ("TIFF", "memo.tif"), ("BMP", "memo.bmp")])
def test_other_image_formats(project, tmp_path, fmt, name):
    path = tmp_path / name
    _memo_image().save(path, fmt)
    report = ingest(project, [path], CFG)
    assert report.ok, [(f.uri, f.error) for f in report.files]
    _check_memo(_stored(project, name)[0])


@needs_tesseract
def test_image_without_text_is_a_clear_error(project, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (600, 400), "white").save(blank)
    report = ingest(project, [blank, make(tmp_path, "md", "good")], CFG)
    [failed] = report.failed
    assert failed.uri == "blank.png" and failed.error_kind == "no_text"
    assert "OCR found no readable text" in (failed.error or "")


def test_without_tesseract_images_say_what_to_install_and_the_batch_goes_on(project, tmp_path, monkeypatch):
    png = _png(tmp_path)
    scan = _scanned_pdf(tmp_path)
    good = make(tmp_path, "md", "good")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # no tesseract, no pdftoppm
    report = ingest(project, [png, scan, good], CFG)
    by_uri = {f.uri: f for f in report.files}
    assert by_uri["memo.png"].error_kind == "missing_dependency"
    assert "tesseract" in (by_uri["memo.png"].error or "") and "make ocr-deps" in (by_uri["memo.png"].error or "")
    assert by_uri["scan.pdf"].error_kind == "no_text"
    assert "tesseract" in (by_uri["scan.pdf"].error or "")
    assert by_uri[good.name].ok and by_uri[good.name].pairs_new > 0
    with project.connect() as con:
        assert scalar(con, "SELECT count(*) FROM documents") == 1


@needs_tesseract
def test_png_holding_jpeg_bytes_is_read_as_a_jpeg(project, tmp_path):
    """Images saved from the web often carry the wrong extension: the bytes decide, and the
    summary says so."""
    fake = tmp_path / "photo.png"
    _memo_image().save(fake, "JPEG")
    report = ingest(project, [fake], CFG)
    [r] = report.files
    assert r.status == "new" and r.filetype == "jpg", (r.status, r.error)
    assert "named .png but is a .jpg file" in " ".join(r.warnings)
    with project.connect() as con:
        text = scalar(con, "SELECT text FROM documents")
    assert "Lisbon" in text and r.pairs_total >= 1


def test_image_magic_bytes(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (20, 20), "white")
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tiff"), ("BMP", "bmp"), ("WEBP", "webp")):
        path = tmp_path / f"x.{ext}"
        img.save(path, fmt)
        assert sniff(path.name, path.read_bytes()[:4096]).ext == ext
    assert sniff("x.tif", (tmp_path / "x.tiff").read_bytes()).ext == "tiff"
    # "BM" starts a text file as well as a bitmap: text stays text
    assert sniff("cars.txt", b"BMW and Audi are car makers.\n").detected == "text"
    with pytest.raises(IngestError) as ei:
        sniff("cars.bmp", b"BMW and Audi are car makers.\n")
    assert ei.value.kind == "wrong_type"
    with pytest.raises(IngestError) as ei:
        sniff("x.gif", b"GIF89a" + bytes(20))
    assert ei.value.kind == "unsupported"


RECORDS = [
    {"title": "Cobalt battery", "answer": "Charge the Cobalt sensor every week; an amber light means a low battery."},
    {"title": "Cobalt calibration", "answer": "Calibrate the Cobalt sensor every six months or after an update."},
    {"title": "Cobalt mounting", "answer": "The Cobalt sensor is rated for indoor use only, never outdoors."},
]


@pytest.mark.parametrize("name", ["records.ndjson", "records.jsonl"])
def test_json_lines_are_ingested(project, tmp_path, name):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n", encoding="utf-8")
    report = ingest(project, [path], CFG)
    assert report.ok, [(f.uri, f.error) for f in report.files]
    [r] = report.files
    assert r.n_elements == 3 and r.pairs_new > 0, (r.no_pairs, r.warnings)
    text = _stored(project, name)[0]
    assert "amber light" in text and "indoor use only" in text


@pytest.mark.parametrize("name,body,words", [
    ("notes.rst", "Cobalt notes\n============\n\nThe Cobalt sensor is rated for indoor use only.\n", "indoor use"),
    ("notes.org", "* Cobalt notes\nThe Cobalt sensor is rated for indoor use only.\n", "indoor use"),
    ("notes.yml", "sensor: Cobalt\nnote: The Cobalt sensor is rated for indoor use only.\n", "indoor use"),
    ("notes.log", "2025-03-03 09:00 The Cobalt sensor was calibrated after the firmware update.\n", "calibrated"),
    ("table.tab", "sensor\tplace\nCobalt\tLisbon warehouse\n", "Lisbon warehouse"),
])
def test_other_text_formats_unstructured_reads(project, tmp_path, name, body, words):
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    report = ingest(project, [path], CFG)
    assert report.ok, [(f.uri, f.error) for f in report.files]
    assert words in _stored(project, name)[0]


@needs_tesseract
def test_image_attached_to_an_email_is_read_by_ocr(project, tmp_path):
    import io
    from email.message import EmailMessage

    buf = io.BytesIO()
    _memo_image().save(buf, "PNG")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "ana@larkspur.example", "team@larkspur.example", "Scanned memo"
    msg.set_content("Hello team, the scanned warehouse memo is attached.\n")
    msg.add_attachment(buf.getvalue(), maintype="image", subtype="png", filename="memo.png")
    path = tmp_path / "memo.eml"
    path.write_bytes(msg.as_bytes())
    report = ingest(project, [path], CFG)
    assert report.ok, [(f.uri, f.error) for f in report.files]
    [r] = report.files
    assert not [w for w in r.warnings if "memo.png" in w], r.warnings
    _check_memo(_stored(project, "memo.eml")[0])


def _tesseract_log(tmp: Path, monkeypatch) -> Path:
    """The real tesseract behind a logging front on PATH: each recognition run is one line."""
    real = shutil.which("tesseract")
    log, shim = tmp / "tesseract-runs.log", tmp / "bin" / "tesseract"
    shim.parent.mkdir()
    # each line: the arguments and the input's PNM magic (P5: one gray channel, P6: RGB)
    shim.write_text(f'#!/bin/sh\necho "$* $(head -c 2 "$1" 2>/dev/null | tr -cd P0-9)" >> "{log}"\nexec "{real}" "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{Path(real).parent}:/usr/bin:/bin")  # type: ignore[arg-type]
    return log


def _runs(log: Path) -> int:
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(("hocr" in line or "txt" in line) for line in lines)


@needs_tesseract
@pytest.mark.parametrize("font_px,runs_before,runs_now,ink,read_as", [
    (28, 2, 1, "black", "P5"), (9, 3, 2, "black", "P5"), (28, 2, 1, "darkred", "P6")],
    ids=["page", "small-print", "colour"])
def test_a_page_is_read_by_one_tesseract_run_into_the_elements_unstructureds_agent_gives(
        tmp_path, monkeypatch, font_px, runs_before, runs_now, ink, read_as):
    """unstructured's agent runs tesseract for boxes and again for text; ours once for both, and
    again only for its zoomed boxes (small print: the text-height rule zooms). Same elements. An
    RGB page whose channels are equal (black on white) reaches tesseract as one gray channel
    (PNM ``P5``), a coloured one as RGB (``P6``): the elements are the same either way."""
    from PIL import Image, ImageDraw, ImageFont

    from ingest import offline

    if not Path(FONT).exists():
        pytest.skip(f"{FONT} missing (Debian's fonts-dejavu-core)")
    font = ImageFont.truetype(FONT, font_px)
    img = Image.new("RGB", (40 * font_px, 4 * font_px + 2 * font_px * len(MEMO)), "white")
    for i, line in enumerate(MEMO):
        ImageDraw.Draw(img).text((font_px, font_px + 2 * font_px * i), line, fill=ink, font=font)
    img.save(tmp_path / "memo.png")
    offline.configure()
    from unstructured.partition.image import partition_image

    log = _tesseract_log(tmp_path, monkeypatch)
    got = {}
    from unstructured.partition.utils.constants import OCR_AGENT_TESSERACT

    for agent in (OCR_AGENT_TESSERACT, offline.OCR_AGENT):
        monkeypatch.setenv("OCR_AGENT", agent)
        before = _runs(log)
        els = partition_image(filename=str(tmp_path / "memo.png"), strategy="ocr_only")
        got[agent] = ([(e.category, e.text, e.metadata.coordinates.points) for e in els], _runs(log) - before)
    (theirs, their_runs), (ours, our_runs) = got.values()
    assert (their_runs, our_runs) == (runs_before, runs_now)
    assert ours == theirs and "lisbon warehouse" in " ".join(t for _, t, _ in ours).lower()
    ours_first = [line for line in log.read_text().splitlines() if "pnm" in line]
    assert ours_first and all(line.endswith(read_as) for line in ours_first), ours_first


def test_a_page_goes_gray_only_when_its_colour_channels_are_equal_everywhere():
    import numpy as np
    from PIL import Image

    from ingest.tesseract import gray_if_gray

    px = np.random.default_rng(7).integers(0, 256, (40, 30), dtype=np.uint8)
    gray = Image.fromarray(np.stack([px] * 3, axis=-1), "RGB")
    out = gray_if_gray(gray)
    assert out.mode == "L" and np.array_equal(np.asarray(out), px)  # lossless: the one channel itself
    for ch in range(3):  # one pixel off in any one channel keeps the colour
        rgb = np.stack([px] * 3, axis=-1)
        rgb[5, 7, ch] ^= 1
        assert gray_if_gray(Image.fromarray(rgb, "RGB")).mode == "RGB"
    assert gray_if_gray(Image.fromarray(px, "L")).mode == "L"


@needs_tesseract
def test_ingest_reads_a_scanned_page_with_one_tesseract_run_unless_the_user_chose_an_agent(
        project, tmp_path, monkeypatch):
    log = _tesseract_log(tmp_path, monkeypatch)  # workers=0: a worker would have the forkserver's PATH
    report = ingest(project, [_scanned_pdf(tmp_path)], CFG)
    assert report.ok and _runs(log) == 1, [(f.uri, f.error) for f in report.files]
    _check_memo(_stored(project, "scan.pdf")[0])
    monkeypatch.setenv("OCR_AGENT", "unstructured.partition.utils.ocr_models.tesseract_ocr.OCRAgentTesseract")
    png = _png(tmp_path)
    assert ingest(project, [png], CFG).ok
    assert _runs(log) == 1 + 2  # the user's agent: unstructured's own, two runs a page
