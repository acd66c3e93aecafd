"""Benchmark: ingest quality and speed on a corpus of every format, generated here (issue 15).

The corpus (written to a temp dir): a long PDF (``--pages``, default 320) with a running header
"Cat. No. 28171E Internal Revenue Manual" and a footer "Page N of M" on every page; a UTF-16-LE
text file without BOM; a cp1252 HTML page; an e-mail with a text and a binary attachment; a
scanned page (PNG and image-only PDF: need tesseract, else "skipped: no OCR"); an untitled long
HTML page (only <p>); an XLSX with a header row; a CSV; a DOCX; a PPTX; a Markdown FAQ (Q:/A:);
a JSON and an NDJSON file.

Each round runs, each in its own fresh process (as ``bench_ingest`` does): ``plain``
(``unstructured.partition.auto.partition(filename=f)`` per file, PDFs with ``fast``, images with
``ocr_only`` as ingest reads them; a file it cannot parse is counted, not fatal), then ``ingest
w=1`` and ``w=2`` (``ingest.documents.ingest`` with the default settings, generator ``auto``,
into a fresh project). Rounds alternate A B A B; the speed ratio is the median of the per-round
ratios. Pages/s use one page count for all three: ingest's (PDF pages, 1 for other files).

Quality, from the pairs read back from the last 1-worker project's DuckDB (after its process
exited): the share of parsed documents with >= 1 pair (goal >= 95 %), pairs holding the running
header, a "Page N of" label, a control character, NUL or "(cid:N)" (goal 0), the share of pairs
passing ``ingest.rubric.usability`` (goal >= 80 %), and ingest's pages/s at 1 and 2 workers
against the plain loop (goal >= 1.6x).

``--documents DIR`` runs the same rounds and quality measures on a folder of your own instead
(recursively, as ``tuneloop ingest DIR`` reads it; the header/footer check then looks for control
characters, NULs and "(cid:N)" only, and the scans count as any other file).

Usage: python -m tests.bench.bench_ingest_quality [--pages 320] [--rounds 2] [--documents DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from tests.bench.bench_ingest import ingest_order, ingest_rounds

HEADER = "Cat. No. 28171E Internal Revenue Manual"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SCANS = ("scan.png", "scan-image-only.pdf")
_IMAGES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".heic", ".webp"}
_CONTROL = r"\(cid:\d+\)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_DIRTY = re.compile(r"Cat\.\s*No\.\s*28171E|Internal Revenue Manual|\bPage\s+\d+\s+of\b|" + _CONTROL, re.I)

_ADJ = ["Reasonable", "Statutory", "Administrative", "Temporary", "Annual", "Regional", "Deferred", "Joint",
        "Estimated", "Delinquent", "Corrected", "Foreign", "Electronic", "Seasonal", "Voluntary", "Substitute",
        "Partial", "Quarterly", "Amended", "Certified"]
_NOUN = ["cause relief", "filing extensions", "penalty waivers", "installment agreements", "refund offsets",
         "interest abatement", "levy releases", "payroll deposits", "return reviews", "credit transfers",
         "audit reconsideration", "appeal requests", "lien withdrawals", "trust fund recovery",
         "collection holds", "notice corrections"]


# ---------------------------------------------------------------- corpus


def _long_pdf(path: Path, pages: int, note: str = "") -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    for p in range(1, pages + 1):
        topic = f"{_ADJ[(p - 1) % len(_ADJ)]} {_NOUN[((p - 1) // len(_ADJ)) % len(_NOUN)]}"
        c.setFont("Helvetica", 8)
        c.drawString(72, 810, HEADER)
        c.setFont("Helvetica-Bold", 14)
        c.drawString(72, 770, topic.capitalize() if p > len(_ADJ) * len(_NOUN) else topic)
        c.setFont("Helvetica", 11)
        lines = [f"Rule {p} covers {topic.lower()} for taxpayers who file their returns on paper.",
                 f"An examiner reviews each case within {p % 45 + 15} days of the request.",
                 f"Case files for this rule are kept in drawer {p * 7} of the records office.",
                 "The examiner records the decision and sends a letter to the taxpayer."]
        if note and p == 1:  # copies of the file are distinct documents
            lines.append(note)
        for i, line in enumerate(lines):
            c.drawString(72, 740 - 16 * i, line)
        c.setFont("Helvetica", 8)
        c.drawString(72, 40, f"Page {p} of {pages}")
        c.showPage()
    c.save()


def _eml(path: Path) -> None:
    m = EmailMessage()
    m["From"] = "Ana Ribeiro <ana@larkspur.example>"
    m["To"] = "Team <team@larkspur.example>"
    m["Subject"] = "Lisbon warehouse inventory"
    m["Date"] = "Mon, 3 Mar 2025 09:00:00 +0000"
    m.set_content("Hello team,\n\nThe Lisbon warehouse counts its inventory on the first Monday of April.\n\n"
                  "Please send your shelf counts to Marta by Friday so the totals are ready.\n\nBest,\nAna\n")
    m.add_attachment("Shelf A holds the Cobalt sensors. Shelf B holds the Cobalt hubs.\n",
                     filename="shelves.txt")
    m.add_attachment(random.Random(15).randbytes(4096), maintype="application", subtype="octet-stream",
                     filename="scan.bin")
    path.write_bytes(bytes(m))


def _scan(png: Path, pdf: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(img)
    title, body = ImageFont.truetype(FONT, 44), ImageFont.truetype(FONT, 28)
    draw.text((100, 120), "Warehouse Safety Rules", font=title, fill=0)
    lines = ["Every visitor signs the register at the front desk.",
             "Forklifts stay inside the yellow lanes at all times.",
             "Fire doors are kept closed and never blocked by pallets.",
             "Report every spill to the shift manager at once."]
    for i, line in enumerate(lines):
        draw.text((100, 240 + 60 * i), line, font=body, fill=0)
    img.save(png)
    img.convert("RGB").save(pdf, "PDF", resolution=150.0)


def _xlsx(path: Path) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Rivers"
    for row in [["River", "Length (km)", "Outflow"], ["Nile", 6650, "Mediterranean Sea"],
                ["Amazon", 6400, "Atlantic Ocean"], ["Yangtze", 6300, "East China Sea"],
                ["Danube", 2850, "Black Sea"]]:
        ws.append(row)
    wb.save(path)


def _docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("Travel Policy", 0)
    d.add_paragraph("Employees book all business travel through the Larkspur Labs portal.")
    d.add_heading("Approvals", 1)
    d.add_paragraph("Trips that cost more than 500 euros need approval from the department head.")
    d.add_heading("Expenses", 1)
    d.add_paragraph("Receipts are uploaded to the portal within ten days of the trip.")
    d.save(str(path))


def _pptx(path: Path) -> None:
    from pptx import Presentation

    prs = Presentation()
    for title, body in [("Cobalt Roadmap", "Version 2 ships in June with a longer battery life."),
                        ("Lisbon Warehouse", "The warehouse ships orders within two working days.")]:
        s = prs.slides.add_slide(prs.slide_layouts[1])
        s.shapes.title.text = title
        s.placeholders[1].text = body
    prs.save(str(path))


UNTITLED = "<html><body>" + "".join(
    f"<p>In {1990 + i} the harbour of Velmar handled {1000 + 37 * i} tonnes of grain, mostly barley shipped "
    f"north by coastal traders who paid their duties to the town council.</p>" for i in range(30)) + "</body></html>"
CP1252 = ("<html><head><meta charset=windows-1252><title>Café Niño</title></head><body>"
          "<h1>Café Niño</h1><p>The café on the harbour is très popular with students in the evening.</p>"
          "<h2>Opening hours</h2><p>The café opens at seven and the niño menu is served until noon.</p>"
          "</body></html>")
UTF16 = ("COBALT CARE\n\nKeep the Cobalt sensor away from direct sunlight and radiators.\n\n"
         "Wipe the sensor with a dry cloth once a month and never use solvents on it.\n\n"
         "Replace the filter every six months, or sooner in dusty rooms.\n")
FAQ = ("# Cobalt FAQ\n\nQ: How long does the Cobalt battery last?\nA: About seven days on one charge.\n\n"
       "Q: Which app pairs with the Cobalt sensor?\nA: The Cobalt Home app pairs with it on Android and iOS.\n\n"
       "Q: Can the Cobalt sensor be mounted outdoors?\nA: No, the sensor is rated for indoor use only.\n")
CSV = ("Plant,Family,Height (cm),Native range\nRosemary,Lamiaceae,150,Mediterranean\n"
       "Basil,Lamiaceae,60,Tropical Asia\nSaffron crocus,Iridaceae,30,Greece\n")
RECORDS = [{"question": "What is the warranty on the Cobalt sensor?", "answer": "The warranty lasts two years."},
           {"question": "Where is the Cobalt warehouse?", "answer": "The warehouse is in Lisbon, near the port."}]


def build_corpus(root: Path, pages: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    _long_pdf(root / "manual.pdf", pages)
    (root / "care-utf16.txt").write_bytes(UTF16.encode("utf-16-le"))
    (root / "cafe-cp1252.html").write_bytes(CP1252.encode("cp1252"))
    _eml(root / "inventory.eml")
    _scan(root / SCANS[0], root / SCANS[1])
    (root / "untitled.html").write_text(UNTITLED)
    _xlsx(root / "rivers.xlsx")
    (root / "plants.csv").write_text(CSV)
    _docx(root / "policy.docx")
    _pptx(root / "roadmap.pptx")
    (root / "faq.md").write_text(FAQ)
    (root / "records.json").write_text(json.dumps(RECORDS))
    (root / "records.ndjson").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return sorted(p for p in root.iterdir() if p.is_file())


# ---------------------------------------------------------------- children (one process each)


def corpus_files(corpus: Path) -> list[Path]:
    """The files ``ingest`` reads in ``corpus`` (recursively, skipping what it skips), in its order."""
    from ingest.documents import _skip

    if not corpus.is_dir():
        raise SystemExit(f"--documents {corpus}: no such folder")
    return ingest_order([f for f in sorted(corpus.rglob("*"))
                         if f.is_file() and not any(_skip(p) for p in f.relative_to(corpus).parts)])


def run_plain(corpus: Path) -> dict:
    files = corpus_files(corpus)  # before the clock, as in bench_ingest
    t0 = time.perf_counter()
    from ingest import offline

    offline.configure()
    from unstructured.partition.utils.constants import OCR_AGENT_TESSERACT

    os.environ["OCR_AGENT"] = OCR_AGENT_TESSERACT  # the plain loop OCRs with unstructured's own agent
    from unstructured.partition.auto import partition

    failed: list[str] = []
    n_el = 0
    for f in files:
        kw = {"strategy": "fast"} if f.suffix == ".pdf" else {"strategy": "ocr_only"} if f.suffix in _IMAGES else {}
        try:
            els = partition(filename=str(f), **kw)
            if f.suffix == ".pdf" and not any(e.text.strip() for e in els):  # a scan: OCR it, as ingest's auto does
                els = partition(filename=str(f), strategy="ocr_only")
            n_el += len(els)
        except Exception as e:  # noqa: BLE001 - a file the plain loop cannot read is a result, not a crash
            failed.append(f"{f.name}: {type(e).__name__}")
    return {"seconds": time.perf_counter() - t0, "elements": n_el, "failed": failed}


def run_ingest(corpus: Path, workers: int, project_dir: Path) -> dict:
    t0 = time.perf_counter()
    from ingest.documents import IngestConfig, ingest
    from store.db import Project

    project = Project(project_dir).init()
    report = ingest(project, [corpus], IngestConfig(workers=workers))
    files = [{"uri": f.uri, "ok": f.ok, "pairs": f.pairs_total, "pages": f.n_pages, "error": f.error,
              "error_kind": f.error_kind, "no_pairs": f.no_pairs} for f in report.files]
    return {"seconds": time.perf_counter() - t0, "pages": report.pages, "files": files}


# ---------------------------------------------------------------- quality


def read_pairs(project_dir: Path) -> list[dict]:
    from store.db import Project, frame

    with Project(project_dir).connect() as con:
        return frame(con, """SELECT p.source_uri, p.generator, r.instruction, r.response, p.char_start, p.char_end,
                                    d.text FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
                             LEFT JOIN documents d ON d.id = p.document_id""").to_dicts()


def judge(rows: list[dict], dirty_re: re.Pattern[str] = _DIRTY) -> list[dict]:
    from ingest.rubric import usability

    out = []
    for r in rows:
        span = r["text"][r["char_start"]:r["char_end"]] if r["text"] is not None and r["char_start"] is not None \
            else None
        v = usability(r["instruction"], r["response"], span, boilerplate=[HEADER])
        dirty = bool(dirty_re.search(r["instruction"]) or dirty_re.search(r["response"]))
        out.append({**r, "passed": v.passed, "reasons": v.reasons, "dirty": dirty})
    return out


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f} %" if b else "   n/a"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=320, help="pages of the long PDF")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of plain, ingest w=1, ingest w=2")
    ap.add_argument("--documents", type=Path, help="a folder of your own documents instead of the generated corpus")
    ap.add_argument("--show-failures", type=int, default=8, help="rubric failures to print")
    ap.add_argument("--child", choices=["plain", "ingest"], help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child == "plain":
        print(json.dumps(run_plain(a.corpus)))
        return 0
    if a.child == "ingest":
        print(json.dumps(run_ingest(a.corpus, a.workers, a.project)))
        return 0

    ocr = shutil.which("tesseract") is not None
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-quality-"))
    try:
        if a.documents:
            corpus = a.documents.resolve()
            files, what = corpus_files(corpus), f"from {corpus}"
        else:
            corpus = tmp / "corpus"
            files, what = build_corpus(corpus, a.pages), f"({a.pages}-page PDF)"
        print(f"corpus: {len(files)} files {what}, OCR {'on' if ocr else 'off'}, "
              f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
        rounds = ingest_rounds("tests.bench.bench_ingest_quality", corpus, tmp, a.rounds)
        last = rounds[-1]
        judged = judge(read_pairs(tmp / f"proj-r{a.rounds - 1}-w1"),
                       re.compile(_CONTROL) if a.documents else _DIRTY)

        # per document
        print(f"\n{'file':<24} {'parsed':<18} {'pages':>5} {'pairs':>6} {'rubric':>8}  note")
        parsed = with_pairs = 0
        for f in last["w1"]["files"]:
            name = f["uri"].split("/", 1)[-1] if a.documents else f["uri"].split("/")[-1]
            mine = [j for j in judged if j["source_uri"] == f["uri"]]
            if name in SCANS and not ocr and not a.documents:
                state, note = "skipped: no OCR", f["error"] or ""
            elif f["ok"]:
                state, note = "yes", f["no_pairs"] or ""
                if f["pairs"] and not mine:
                    note = "its pairs equal another file's: stored once, judged there"
                parsed += 1
                with_pairs += f["pairs"] >= 1
            else:
                state, note = f"no ({f['error_kind']})", (f["error"] or "")[:60]
            print(f"{name:<24} {state:<18} {f['pages'] or 1:>5} {f['pairs']:>6} "
                  f"{_pct(sum(j['passed'] for j in mine), len(mine)):>8}  {note[:70]}")

        # totals and goals
        n = len(judged)
        dirty = sum(j["dirty"] for j in judged)
        passed = sum(j["passed"] for j in judged)
        pages = last["w1"]["pages"]
        speeds = {c: [pages / r[c]["seconds"] for r in rounds] for c in ("plain", "w1", "w2")}
        ratio = {w: statistics.median(r["plain"]["seconds"] / r[w]["seconds"] for r in rounds) for w in ("w1", "w2")}
        doc_share = with_pairs / parsed if parsed else 0.0
        rub_share = passed / n if n else 0.0

        def met(ok: bool) -> str:
            return "met" if ok else "NOT met"

        print(f"\n{'measure':<44} {'value':>14}  {'goal':<10} verdict")
        print(f"{'parsed documents with >= 1 pair':<44} {f'{with_pairs}/{parsed} ' + _pct(with_pairs, parsed):>14}"
              f"  {'>= 95 %':<10} {met(doc_share >= 0.95)}")
        print(f"{'pairs with header/footer/control text':<44} {dirty:>14}  {'0':<10} {met(dirty == 0)}")
        print(f"{'pairs passing the usability rubric':<44} {f'{passed}/{n} ' + _pct(passed, n):>14}"
              f"  {'>= 80 %':<10} {met(rub_share >= 0.8)}")
        for c, label in (("plain", "pages/s plain unstructured loop"), ("w1", "pages/s ingest, 1 worker"),
                         ("w2", "pages/s ingest, 2 workers")):
            med = statistics.median(speeds[c])
            print(f"{label:<44} {med:14.2f}")
        print(f"{'ratio ingest w=1 / plain (median of rounds)':<44} {ratio['w1']:13.2f}x")
        print(f"{'ratio ingest w=2 / plain (median of rounds)':<44} {ratio['w2']:13.2f}x  {'>= 1.6x':<10} "
              f"{met(ratio['w2'] >= 1.6)}")
        cap = statistics.median(r["capacity"]["x"] for r in rounds)
        print(f"{'the cores own 2-process speed-up (same rounds)':<44} {cap:13.2f}x  (2 workers reached "
              f"{ratio['w2'] / cap:.0%} of it)")
        if last["plain"]["failed"]:
            print(f"plain loop could not read: {', '.join(last['plain']['failed'])}")
        fails = [j for j in judged if not j["passed"]]
        if fails:
            print(f"\nrubric failures (first {min(a.show_failures, len(fails))} of {len(fails)}):")
            for j in fails[:a.show_failures]:
                print(f"  [{j['generator']}] {j['instruction'][:90]!r} -> {j['response'][:60]!r}: {'; '.join(j['reasons'])}")
        print(f"\nload average after: {os.getloadavg()[0]:.1f} (other processes on this machine skew the speed figures)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
