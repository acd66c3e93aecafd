"""Clean text before pairs: encodings, garbage characters, page furniture and uninformative headings.

Files are written by the tests and parsed by the real unstructured; the pure rules get tables.
"""

from __future__ import annotations

import pytest

from ingest.chunking import chunk_document
from ingest.cleaning import clean_elements, clean_text
from ingest.documents import IngestConfig, ingest
from ingest.elements import build_document
from ingest.encodings import detect, nul_pattern
from ingest.filetypes import sniff
from ingest.generators import Source, create
from store import documents as docs_store
from store.db import frame
from tests.test_ingest_files import EML  # the same e-mail, here sent as UTF-16

CFG = IngestConfig(workers=0)
FRENCH = ("Le plat du jour est très bon et le niño mange bien. Prix : 12 € seulement. "
          "Crème brûlée à volonté, déjà servie. Garçon, l'addition s'il vous plaît.")


@pytest.mark.parametrize(("raw", "clean"), [
    ("Total(cid:3) tax (cid:12)due", "Total tax due"),
    ("a\x00b\x00c", "abc"),
    ("bell\x07 and esc\x1b[0m", "bell and esc[0m"),
    ("C1 \x85next\x9dline", "C1 \nnextline"),
    ("line one\r\nline two\rthree\x0cfour", "line one\nline two\nthree\nfour"),
    ("keep\ttabs\nand newlines", "keep\ttabs\nand newlines"),
    ("  (cid:1)(cid:2)  ", ""),
    # UTF-8 read as Latin-1 upstream (unstructured's norwich-city.txt): repaired, not cut to "2000â01"
    ("the 2000\u00e2\u0080\u009301 season", "the 2000\u201301 season"),
    ("caf\u00c3\u00a9 \u00e2\u0080\u009cfood\u00e2\u0080\u009d", "caf\u00e9 \u201cfood\u201d"),
    ("caf\u00c3\u00a9 without C1 controls stays", "caf\u00c3\u00a9 without C1 controls stays"),
    # TeX/GPO quotes (unstructured's fake-html-pre.htm, a public law)
    ("known as the ``Counterterrorism\nFund'', amounts", "known as the \u201cCounterterrorism\nFund\u201d, amounts"),
    ("inserting ``or 2339B'' after ``2339A''.", "inserting \u201cor 2339B\u201d after \u201c2339A\u201d."),
    ("an empty string '' and ``code`` stay", "an empty string '' and ``code`` stay"),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize(("data", "encoding"), [
    ("Lisbon warehouse hours\n".encode("utf-16-le"), "utf-16-le"),
    ("Lisbon warehouse hours\n".encode("utf-16-be"), "utf-16-be"),
    ("Lisbon warehouse hours\n".encode("utf-32-le"), "utf-32-le"),
    ("Lisbon warehouse hours\n".encode("utf-16"), "utf-16-le"),
    ("Größere Übungen, Straße".encode(), "utf-8"),
    (f"<p>{FRENCH}</p>".encode("cp1252"), "cp1252"),
    ("<p>Zażółć gęślą jaźń. Łódź jest dużym miastem w Polsce, mówią mieszkańcy.</p>".encode("cp1250"), "cp1250"),
    ("<p>Съешь же ещё этих мягких французских булок, да выпей чаю.</p>".encode("cp1251"), "cp1251"),
    ('<html><meta charset="windows-1250"><p>Příliš žluťoučký kůň</p>'.encode("cp1250"), "cp1250"),
])
def test_detect_encoding(data, encoding):
    assert detect(data)[0] == encoding


def test_nul_pattern_is_not_fooled_by_binary():
    assert nul_pattern(bytes(400)) is None
    assert nul_pattern(b"\x89PNG\r\n\x1a\n" + bytes(200)) is None
    assert nul_pattern(bytes(range(256)) * 4) is None


def test_utf16_without_bom_passes_the_sniff():
    kind = sniff("notes.txt", "Lisbon warehouse opens at 8:00.\n".encode("utf-16-le"))
    assert kind.detected == "text"


def _stored_text(project, uri: str) -> str:
    with project.connect() as con:
        return docs_store.find(con, uri).text


def _pairs(project):
    with project.connect() as con:
        return frame(con, """SELECT r.instruction, r.response, p.char_start, p.char_end, p.source_uri, d.text
                             FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
                             JOIN documents d ON d.id = p.document_id""").to_dicts()




def test_text_in_other_encodings_is_stored_as_unicode(project, tmp_path):
    (tmp_path / "notes.txt").write_bytes(
        "Opening hours\n\nThe Lisbon warehouse opens at 8:00, café included.\n".encode("utf-16-le"))
    (tmp_path / "hours.eml").write_bytes(EML.encode("utf-16"))
    (tmp_path / "menu.html").write_bytes(
        f"<html><body><h1>Menu du jour</h1><p>{FRENCH}</p></body></html>".encode("cp1252"))
    (tmp_path / "glyphs.md").write_text("# Tax guide\n\nThe total(cid:3) tax\x1b is due in\x07 April.\n")
    files = ["notes.txt", "hours.eml", "menu.html", "glyphs.md"]
    report = ingest(project, [tmp_path / f for f in files], CFG)
    assert report.ok, [(f.uri, f.error) for f in report.files]
    assert _stored_text(project, "glyphs.md") == "Tax guide\n\nThe total tax is due in April."
    assert "The Lisbon warehouse opens at 8:00, café included." in _stored_text(project, "notes.txt")
    eml = _stored_text(project, "hours.eml")
    assert "From next Monday the Lisbon warehouse opens at 8:00 and closes at 17:00." in eml
    assert "\x00" not in eml and "From:" not in eml
    menu = _stored_text(project, "menu.html")
    assert FRENCH in menu
    assert not {"trčs", "nińo", "ą"} & set(menu.split())


def _pdf(path, pages: int, chapter_head_from: int | None = None) -> None:
    """``chapter_head_from``: pages from this one on carry a chapter's running head too (as in an
    IRS manual's later chapters): on most pages of a late page range, not of the whole file."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    topics = [("Reasonable cause", "A taxpayer who shows ordinary business care may get relief."),
              ("First-time abatement", "A clean three-year history qualifies for an administrative waiver."),
              ("Statutory exceptions", "Relief of type 3 applies when the law itself excuses the delay."),
              ("Administrative waivers", "Waivers follow the policy statement for the penalty concerned.")]
    c = canvas.Canvas(str(path), pagesize=A4)
    for p in range(1, pages + 1):
        c.setFont("Helvetica", 8)
        c.drawString(72, 810, "Cat. No. 28171E Internal Revenue Manual")
        if chapter_head_from and p >= chapter_head_from:
            c.drawString(72, 690, "Collection Appeals Program 4.2.59")
        c.setFont("Helvetica-Bold", 14)
        heading, body = topics[(p - 1) % len(topics)]
        c.drawString(72, 770, heading)
        c.setFont("Helvetica", 11)
        c.drawString(72, 740, body)
        c.drawString(72, 724, f"Case files for this relief are kept in drawer {p * 7} of the office.")
        c.setFont("Helvetica", 8)
        c.drawString(72, 40, f"Publication 17 (2025)   Page {p} of {pages}")
        c.showPage()
    c.save()


def test_running_headers_and_footers_never_reach_pairs(project, tmp_path):
    _pdf(tmp_path / "manual.pdf", 4)
    report = ingest(project, [tmp_path / "manual.pdf"], CFG)
    assert report.ok, [f.error for f in report.files]
    text = _stored_text(project, "manual.pdf")
    assert "Cat. No." not in text and "Publication 17" not in text
    assert "Relief of type 3 applies" in text and "Statutory exceptions" in text
    rows = _pairs(project)
    assert len(rows) == 4
    for r in rows:
        assert r["text"][r["char_start"]:r["char_end"]] == r["response"]
        assert "Cat. No." not in r["instruction"] + r["response"]
        assert "Page" not in r["instruction"] + r["response"]


def test_furniture_elements_and_running_lines_are_dropped():
    def el(i: int, page: int | None, text: str, type_: str = "NarrativeText") -> dict:
        return {"type": type_, "text": text, "page": page, "uid": f"u{i}", "parent_uid": None, "metadata": {}}

    assert clean_elements([{**el(9, None, "T(cid:7)"), "metadata": {"subject": "Hours\x00", "x": [1]}}])[0] == [
        {**el(9, None, "T"), "metadata": {"subject": "Hours", "x": [1]}}]
    raw = [el(0, 1, "ACME confidential", "Header"), el(1, 1, "Body one.\nPage 1 of 3"),
           el(2, 2, "Body two.\nPage 2 of 3"), el(3, 2, "7", "PageNumber"),
           el(4, 3, "Body three.\nPage 3 of 3"), el(5, 3, "Footnote", "Footer")]
    kept, dropped = clean_elements(raw)
    assert [(e["uid"], e["text"]) for e in kept] == [("u1", "Body one."), ("u2", "Body two."), ("u4", "Body three.")]
    assert dropped == 6
    # digits that differ from page to page: a footer on nearly every page goes, a numbered heading stays
    words = ["Taxes.", "Fees.", "Relief.", "Appeals.", "Waivers.", "Records."]
    pages = [el(p, p, (f"CHAPTER {p}\n" if p % 2 else "") + f"{words[p - 1]}\n{p}") for p in range(1, 7)]
    assert [e["text"] for e in clean_elements(pages)[0]] == [
        "CHAPTER 1\nTaxes.", "Fees.", "CHAPTER 3\nRelief.", "Appeals.", "CHAPTER 5\nWaivers.", "Records."]
    # fewer than three pages: a repeated line may be content, it stays
    two = [el(1, 1, "Body one.\nSee the annex."), el(2, 2, "Body two.\nSee the annex.")]
    assert clean_elements(two)[0] == two
    # unpaged documents are not judged by repetition
    assert clean_elements([{**e, "page": None} for e in raw[1:5:3]])[0][0]["text"] == "Body one.\nPage 1 of 3"
    # a "Header" of running text is text placed outside the page's body (unstructured's
    # negative-coords.pdf: every paragraph a Header); it stays, as text; a short one still goes
    letter = ("Comprehensive Carbon Footprint Letter of Assurance. The reviewers examined the product's "
              "life-cycle assessment, its data sources and its assumptions, and found them consistent with the "
              "standard for every product line in the report.")
    kept, dropped = clean_elements([el(0, 1, letter, "Header"), el(1, 1, "2022 Environmental Progress Report 104",
                                                                   "Footer")])
    assert [(e["type"], e["text"]) for e in kept] == [("UncategorizedText", letter)] and dropped == 1


def test_html_header_and_footer_tags_are_dropped(project, tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><body><header><p>ACME intranet - internal use only</p></header><h1>Lisbon warehouse</h1>"
        "<p>The Lisbon warehouse opens at 8:00 and closes at 17:00 on weekdays.</p>"
        "<footer><p>Copyright 2025 ACME. All rights reserved.</p></footer></body></html>")
    (tmp_path / "post.html").write_text(
        "<html><body><article><header><h1>Lisbon warehouse hours</h1><p>By Ana, 3 March</p></header>"
        "<p>The Lisbon warehouse opens at 8:00 and closes at 17:00 on weekdays.</p>"
        "<footer><p>Filed under logistics</p></footer></article></body></html>")
    assert ingest(project, [tmp_path / "page.html", tmp_path / "post.html"], CFG).ok
    text = _stored_text(project, "page.html")
    assert "ACME intranet" not in text and "Copyright" not in text
    assert "The Lisbon warehouse opens at 8:00" in text
    # an article's own header holds its title: it stays
    assert _stored_text(project, "post.html").startswith("Lisbon warehouse hours")


def _questions(name: str, raw: list[tuple[str, str]]) -> list[str]:
    els = [{"type": t, "text": x, "page": None, "uid": f"u{i}", "parent_uid": None, "metadata": {}}
           for i, (t, x) in enumerate(raw)]
    doc, elements = build_document(els, document_id="d_x", uri=name, name=name, filetype="md", size_bytes=1)
    gen = create("sections")
    return [p.content.instruction for p in gen.generate(Source(doc, elements, chunk_document(doc, elements)))]


BODY = "The examiner records the decision and the reasons in the case file, then tells the taxpayer."


def test_questions_never_use_labels_repeated_headings_or_file_names():
    qs = _questions("irm_4_10.md", [
        ("Title", "CHAPTER I"), ("NarrativeText", "Penalties are assessed when a return is filed late."),
        ("Title", "Penalty relief"), ("NarrativeText", BODY),
        ("Title", "CHAPTER XIV"), ("NarrativeText", "Interest runs from the due date of the return until paid."),
        ("Title", "Notes"), ("NarrativeText", "Relief requests are answered within thirty days of receipt."),
        ("Title", "Notes"), ("NarrativeText", "A denied request can be appealed to the independent office."),
        ("Title", "Notes"), ("NarrativeText", "Records of each decision are kept for seven years at least."),
    ])
    opening = 'What does the document say in the passage that begins "{}..."?'.format
    assert qs == [
        opening("Penalties are assessed when a return is filed"),
        "What does the document say about Penalty relief?",
        opening("Interest runs from the due date of the"),
        opening("Relief requests are answered within thirty days of"),
        opening("A denied request can be appealed to the"),
        opening("Records of each decision are kept for seven"),
    ]
    # a document without a title: its file name is not a topic either
    qs = _questions("irm_4_10.md", [("NarrativeText", "Preface text."), ("Title", "Penalty relief"),
                                    ("NarrativeText", BODY)])
    assert qs == ["What does the document say about Penalty relief?"]
    # an informative title still names the document
    qs = _questions("x.md", [("Title", "Internal Revenue Manual"), ("NarrativeText", BODY),
                             ("Title", "Penalty relief"), ("NarrativeText", BODY)])
    assert qs == ["What is the Internal Revenue Manual about?",
                  "What does the Internal Revenue Manual say about Penalty relief?"]


def test_a_long_pdf_is_parsed_in_page_ranges_with_the_same_result(project, tmp_path):
    from ingest.workers import PART_MIN_PAGES, SPLIT_MIN_PAGES, split_pages
    from store.db import Project

    assert split_pages(SPLIT_MIN_PAGES - 1, 2) == [] and split_pages(500, 1) == []
    ranges = split_pages(100, 2)
    assert ranges[0][0] == 1 and ranges[-1][1] == 100 and all(b - a + 1 >= PART_MIN_PAGES for a, b in ranges)
    assert all(nxt[0] == prev[1] + 1 for prev, nxt in zip(ranges, ranges[1:]))
    assert split_pages(60, 2) == [(1, 24), (25, 60)]
    # ranges shrink, so the workers end on small ones together (each 1/(2 x workers) of what is left)
    assert split_pages(320, 2) == [(1, 80), (81, 140), (141, 185), (186, 219), (220, 245), (246, 269),
                                   (270, 293), (294, 320)]
    for n, w in ((619, 2), (619, 8), (1000, 4), (49, 3)):
        r = split_pages(n, w)
        sizes = [b - a + 1 for a, b in r]
        assert r[0][0] == 1 and r[-1][1] == n and all(nxt[0] == prev[1] + 1 for prev, nxt in zip(r, r[1:]))
        assert min(sizes) >= PART_MIN_PAGES and sizes[0] == max(PART_MIN_PAGES, -(-n // (2 * w)))
        assert all(b <= a or b < 2 * PART_MIN_PAGES for a, b in zip(sizes, sizes[1:])), (n, w, sizes)
    _pdf(tmp_path / "manual.pdf", 60, chapter_head_from=36)  # the chapter head: 25 of the 2nd range's 36 pages
    other = Project(tmp_path / "other").init()
    got = []
    for proj, workers in ((project, 1), (other, 2)):  # one piece, then two workers on page ranges
        report = ingest(proj, [tmp_path / "manual.pdf"], IngestConfig(workers=workers))
        assert report.ok and report.files[0].n_pages == 60, [f.error for f in report.files]
        with proj.connect() as con:
            got.append((_stored_text(proj, "manual.pdf"),
                        sorted(con.execute("SELECT id, type, page, char_start FROM elements").fetchall()),
                        sorted(r["instruction"] for r in _pairs(proj))))
    assert got[0] == got[1] and "Cat. No." not in got[1][0]
    assert got[1][0].count("Collection Appeals Program 4.2.59") == 25  # on under half the file's pages: text


def test_a_page_range_cut_by_qpdf_or_by_pypdf_parses_the_same(tmp_path, monkeypatch):
    """Ranges are cut with qpdf (pikepdf); a file qpdf will not open is cut with pypdf instead,
    into a part that parses to the same elements (pages numbered as in the whole file)."""
    import pikepdf

    from ingest.partition import partition_file

    _pdf(tmp_path / "manual.pdf", 60)

    def parse():
        res = partition_file(tmp_path / "manual.pdf", "manual.pdf", pdf_strategy="fast", pages=(31, 60), n_pages=60)
        return [(e["type"], e["text"], e["page"]) for e in res.elements]

    by_qpdf = parse()

    def refuse(*args, **kwargs):
        raise pikepdf.PdfError("not for qpdf")

    monkeypatch.setattr(pikepdf.Pdf, "open", refuse)
    assert parse() == by_qpdf and {p for _, _, p in by_qpdf} == set(range(31, 61))


def test_a_page_tree_that_declares_too_few_pages_loses_no_page(project, tmp_path):
    """The page count comes from the page tree's declared /Count (no walk over every page); where
    that count is short, the last page range still runs to the real last page."""
    _pdf(tmp_path / "manual.pdf", 60)
    raw = (tmp_path / "manual.pdf").read_bytes()
    assert raw.count(b"/Count 60") == 1
    (tmp_path / "short.pdf").write_bytes(raw.replace(b"/Count 60", b"/Count 50"))  # same length: xref holds
    report = ingest(project, [tmp_path / "short.pdf"], IngestConfig(workers=2))
    assert report.ok and report.files[0].n_pages == 60, [f.error for f in report.files]
    with project.connect() as con:
        pages = {r[0] for r in con.execute("SELECT page FROM elements").fetchall()}
    assert pages == set(range(1, 61))  # pages 51-60 are parsed too


def test_several_workers_start_on_the_costliest_files_first(tmp_path):
    """Longest-first scheduling: a scan or a long PDF must not start last and keep one worker busy
    alone at the end; each idle worker gets a head task before any gets a second. Then real
    files through real parser processes, in that order."""
    from ingest.workers import QUEUE_MAX_COST, Task, deal, order, parse_all, parse_cost

    assert parse_cost(pages=1, ocr=True) > parse_cost(pages=80) > parse_cost(size_bytes=1000)
    names = [f"note-{i}.txt" for i in range(5)]
    for n in names:
        (tmp_path / n).write_text(f"{n}: a short note about the warehouse.\n")
    costs = {"note-3.txt": parse_cost(pages=1, ocr=True), "note-1.txt": parse_cost(pages=80)}
    tasks = [Task(k, str(tmp_path / n), n, cost=costs.get(n, parse_cost(size_bytes=40))) for k, n in enumerate(names)]
    ordered = order(tasks)  # one order for any number of workers (and on Ray)
    assert [t.name for t in ordered] == ["note-3.txt", "note-1.txt", "note-0.txt", "note-2.txt", "note-4.txt"]
    pending = list(reversed(ordered))
    dealt = [(w, t.name) for w, t in deal(pending, [0, 0], 2)]
    assert dealt == [(0, "note-3.txt"), (1, "note-1.txt"), (0, "note-0.txt"), (1, "note-2.txt")]
    assert [t.name for t in pending] == ["note-4.txt"]
    assert [(w, t.name) for w, t in deal(pending, [2, 1], 2)] == [(1, "note-4.txt")]  # only a free slot
    # a costly task waits in no busy worker's pipe: whichever worker frees first takes it
    scan = Task(9, str(tmp_path / "scan.png"), "scan.png", cost=parse_cost(pages=1, ocr=True))
    assert deal([scan], [1, 1], 2) == []
    assert deal([scan], [1, 0], 2) == [(1, scan)]
    # nor does a page range, however cheap its estimate: ranges are cut to run side by side
    part = Task(10, str(tmp_path / "long.pdf"), "long.pdf", pages=(25, 48), cost=parse_cost(pages=24))
    assert part.cost <= QUEUE_MAX_COST and deal([part], [1, 1], 2) == []
    assert deal([part], [0, 1], 2) == [(0, part)]
    for workers in (1, 2):
        results = list(parse_all(tasks, workers=workers))
        assert sorted(t.name for t, _ in results) == names and all(not hasattr(r, "kind") for _, r in results)
        if workers == 1:  # one worker too, so every engine sees the files in one order
            assert [t.name for t, _ in results] == [t.name for t in ordered]


def test_json_records_with_a_question_and_an_answer_become_pairs_others_point_to_import(project, tmp_path):
    """A .json/.ndjson file of Q/A records gives one exact pair per record (not a window of raw
    JSON); records that are table rows give lookup pairs (``test_json_records_are_table_rows``);
    records of texts give no pair and a reason that names `tuneloop import`."""
    import json

    qa = [{"question": "What is the warranty on the Cobalt sensor?", "answer": "The warranty lasts two years."},
          {"prompt": "Where is the Cobalt warehouse?", "output": "In Lisbon, near the port, since 2019."},
          {"question": "Which line breaks?", "answer": "This one\nhas an escaped newline."}]
    (tmp_path / "faq.json").write_text(json.dumps(qa))
    (tmp_path / "faq.ndjson").write_text("".join(json.dumps(r) + "\n" for r in qa[:2]))
    (tmp_path / "prices.json").write_text(json.dumps([{"sku": "A-1", "price": 3.5}, {"sku": "B-2", "price": 4}]))
    (tmp_path / "notes.json").write_text(json.dumps([{"note": f"Call the Lisbon warehouse about order {k} today.",
                                                       "topic": "orders"} for k in range(3)]))
    report = ingest(project, [tmp_path], IngestConfig(workers=0))
    by_name = {f.uri.rsplit("/", 1)[-1]: f for f in report.files}
    assert by_name["faq.json"].pairs_total == 2 and by_name["faq.ndjson"].pairs_total == 2
    rows = _pairs(project)
    assert {(r["instruction"], r["response"]) for r in rows} == {(r.get("question") or r["prompt"],
                                                                  r.get("answer") or r["output"]) for r in qa[:2]} | {
        ("What is the price of A-1?", "3.5"), ("What is the price of B-2?", "4")}
    for r in rows:  # provenance is exact: the response is the document's own characters
        assert r["text"][r["char_start"]:r["char_end"]] == r["response"]
    notes = by_name["notes.json"]
    assert notes.pairs_total == 0 and "tuneloop import" in notes.no_pairs and "note, topic" in notes.no_pairs
