"""Shapes from unstructured's own example documents (github.com/Unstructured-IO/unstructured,
``example-docs/``: real files nobody here wrote), rebuilt here as look-alikes, parsed by the real
unstructured and made into pairs by the default ``auto`` generator.

On that folder (246 files) these gave no pair before: a CSV whose first row is a caption
("Stanley Cups,," above "Team,Location,Stanley Cups"), a semicolon CSV with a trailing delimiter
(an empty last column), a table whose header spans two rows ("Results" over "Accuracy" and "Time
to complete"), and an essay laid out in an HTML table cell (paulgraham.com's pages); and a PDF
with a damaged cross-reference table printed pypdf's "Ignoring wrong pointing object" on stderr,
about no file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.documents import IngestConfig, ingest
from ingest.generators.tables import prose_table, table_layout
from store.db import frame
from store.records import Element

REPO = Path(__file__).resolve().parents[1]

STANLEY = "Stanley Cups,,\nTeam,Location,Stanley Cups\nBlues,STL,1\nFlyers,PHI,2\nMaple Leafs,TOR,13\n"
SEMICOLON = "Year;Month;Revenue;Costs;\n2022;1;123;-123;\n2023;2;143,1;-814,38;\n2024;3;215,32;-11,08;\n"
TWO_ROW = ("Disability Category,Participants,Ballots Completed,Results,\n"
           ",,,Accuracy,Time to complete\n"
           'Blind,5,1,"34.5%, n=1","1199 sec, n=1"\n'
           'Low Vision,5,2,"98.3% n=2","1716 sec, n=3"\n')
ESSAY = ("The way to get new ideas is to notice anomalies: what seems strange, or missing, or broken? "
         "You can see anomalies in everyday life (much of standup comedy is based on this), but the best "
         "place to look for them is at the frontiers of knowledge. Knowledge grows fractally. From a "
         "distance its edges look smooth, but when you learn enough to get close to one, you'll notice "
         "it's full of gaps.")
LAYOUT_HTML = (f"<html><head><title>How to Get New Ideas</title></head><body><table border=0><tr valign=top>"
               f"<td><img src='nav.gif'></td><td width=26></td><td><font size=2 face='verdana'>January 2023"
               f"<br><br>{ESSAY}<br><br>Thanks to the reader who asked.</font></td></tr></table></body></html>")


def _pairs(project) -> list[dict]:
    with project.connect() as con:
        return frame(con, """SELECT d.name, r.instruction, r.response, p.generator, p.char_start, p.char_end, d.text
                             FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
                             JOIN documents d ON d.id = p.document_id ORDER BY d.name, p.char_start""").to_dicts()


@pytest.fixture
def ingested(project, tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    files = {"stanley-cups.csv": STANLEY, "table-semicolon-delimiter.csv": SEMICOLON,
             "table-multi-row-column-cells.csv": TWO_ROW, "ideas-page.html": LAYOUT_HTML,
             "same-value-header.csv": "A,A,A\nA,A,A\nA,A,A\n"}  # the last has no header: still no pair
    for name, text in files.items():
        (src / name).write_text(text)
    report = ingest(project, [src], IngestConfig(workers=0))
    assert report.ok, [f.error for f in report.files]
    return report, _pairs(project)


def test_every_real_table_shape_gives_pairs_with_exact_spans(ingested):
    report, pairs = ingested
    by_name: dict[str, list[dict]] = {}
    for p in pairs:
        assert p["text"][p["char_start"]:p["char_end"]] == p["response"], p["instruction"]
        by_name.setdefault(p["name"], []).append(p)
    assert set(by_name) == {"stanley-cups.csv", "table-semicolon-delimiter.csv", "table-multi-row-column-cells.csv",
                            "ideas-page.html"}
    assert [f.uri.rsplit("/", 1)[1] for f in report.files if f.no_pairs] == ["same-value-header.csv"]

    stanley = {p["instruction"]: p["response"] for p in by_name["stanley-cups.csv"]}
    # the caption row names the table; the header is the row under it
    assert stanley["In the Stanley Cups table, what is the Location of Maple Leafs?"] == "TOR"
    assert stanley["In the Stanley Cups table, what is the Stanley Cups of Flyers?"] == "2"
    assert not any("Team" in p["response"] for p in by_name["stanley-cups.csv"])

    semi = {p["instruction"]: p["response"] for p in by_name["table-semicolon-delimiter.csv"]}
    assert semi["What is the Revenue of 2023?"] == "143,1"  # the empty trailing column is no column
    assert len(semi) == 9

    two = {p["instruction"]: p["response"] for p in by_name["table-multi-row-column-cells.csv"]}
    assert two["What is the Results: Time to complete of Low Vision?"] == "1716 sec, n=3"
    assert two["What is the Results: Accuracy of Blind?"] == "34.5%, n=1"
    assert two["What is the Participants of Blind?"] == "5"


def test_an_essay_laid_out_in_a_table_is_prose(ingested):
    _, pairs = ingested
    essay = [p for p in pairs if p["name"] == "ideas-page.html"]
    assert essay and all(p["generator"].startswith("paragraphs") for p in essay)
    said = " ".join(p["response"] for p in essay)
    assert "notice anomalies" in said and "full of gaps" in said
    assert all(re.match(r"What (are the key facts in|does) the passage", p["instruction"]) for p in essay)


def _table(html: str, text: str = "x") -> Element:
    return Element(id="e1", document_id="d", idx=0, type="Table", text=text, char_start=0, char_end=len(text),
                   metadata={"text_as_html": html})


def test_table_layout_and_prose_table_rules():
    row = lambda *cells: "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"  # noqa: E731
    # a caption in one cell of the first row names the table
    assert table_layout(_table("<table>" + row("Rivers", "", "") + row("River", "Length", "Source")
                               + row("Nile", "6650 km", "Lake Victoria") + "</table>"))[:2] == \
        ("Rivers", ["River", "Length", "Source"])
    # numbers or repeated names are no header; a one-column table has none either
    assert table_layout(_table("<table>" + row("2022", "1") + row("2023", "2") + "</table>")) == ("", [], [])
    assert table_layout(_table("<table>" + row("A", "a") + row("b", "c") + "</table>")) == ("", [], [])
    assert table_layout(_table("<table>" + row("Name") + row("Nile") + "</table>")) == ("", [], [])
    # a group cell with nothing under it is not a two-row header
    assert table_layout(_table("<table>" + row("Team", "") + row("", "") + row("Blues", "STL") + "</table>")) == \
        ("", [], [])
    long_cell = "Knowledge grows fractally. From a distance its edges look smooth. " * 3
    assert prose_table(_table("<table>" + row("", long_cell) + "</table>"))
    assert not prose_table(_table("<table>" + row("Team", "Location") + row("Blues", long_cell) + "</table>"))
    assert not prose_table(_table("<table>" + row("x " * 30, "y") + "</table>"))  # words, but no sentences


def test_pdf_page_count_warnings_belong_to_the_file(project, tmp_path):
    """pypdf's complaints while the batch counts a PDF's pages are that file's warnings (in the
    command's summary, named with the file), not loose lines on stderr (they were, about no file). Through the command line in
    a fresh process: a process whose parser already ran has pypdf's logger quietened."""
    from reportlab.pdfgen import canvas

    good = tmp_path / "good.pdf"
    c = canvas.Canvas(str(good))
    c.drawString(72, 720, "The loading dock opens at six in the morning and closes at ten at night.")
    c.drawString(72, 700, "Drivers sign in at the gate office and wait in the marked bays until called.")
    c.save()
    raw = good.read_bytes()
    # point the document information's cross-reference entry at no object (at the table itself), as
    # unstructured's DA-1p.pdf points three entries at offset 0 where no object starts
    table = raw.index(b"xref\n0 ")
    entries = re.findall(rb"\d{10} \d{5} n", raw[table:])
    damaged = tmp_path / "in" / "damaged.pdf"
    damaged.parent.mkdir()
    damaged.write_bytes(raw[:table] + raw[table:].replace(entries[4], b"%010d 00000 n" % table, 1))  # object 5
    done = subprocess.run([sys.executable, "-m", "tuneloop.cli", "ingest", str(damaged.parent), "--workers", "0",
                           "--project", str(project.root)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    said = [line.strip() for line in (done.stdout + done.stderr).splitlines() if "wrong pointing object" in line]
    assert said, done.stderr  # once, in the summary's warnings, named with the file and the step
    assert all(re.fullmatch(r"in/damaged\.pdf: page count: pypdf\S*: Ignoring wrong pointing object 5 0 .*", s)
               for s in said), said


NOVEL = """CHAPTER XII

"What next?" the princess interrupted, smiling sardonically and not changing the expression of her face.
She had heard the story before and did not care to hear it again at the dinner table.

"If there is a God and future life, there is truth and good," said Pierre, and he looked at his friend
as though the answer were written on the wall behind him, in letters only he could read.

“But on what then?” asked the prince, who had not moved from his chair by the window all evening long.
"""


def test_dialogue_is_quoted_with_typographic_quotes_inside_a_question(project, tmp_path):
    """War and Peace (unstructured's 1,225-page example text) gave 513 questions like ``begins ""What
    next?" the princess...`` (an empty quote to any reader and to the rubric): a passage's own
    ASCII double quotes become typographic ones inside the question's. (Single ones, the first fix,
    gave ``begins "''Told them,' I dare say!'...`` for a quote in a quote: 20 pairs.)"""
    from ingest.rubric import usability

    src = tmp_path / "book.txt"
    src.write_text(NOVEL)
    report = ingest(project, [src], IngestConfig(workers=0))
    assert report.ok
    pairs = _pairs(project)
    assert pairs
    for p in pairs:
        assert '""' not in p["instruction"] and "''" not in p["instruction"], p["instruction"]
        assert usability(p["instruction"], p["response"], p["text"][p["char_start"]:p["char_end"]]).names_subject
    assert any("“What next?” the princess" in p["instruction"] for p in pairs)
    from ingest.elements import opening

    assert opening("\"'Told them,' I dare say!\" said Alpatych. \"Are they drinking?\" he asked") == \
        "“'Told them,' I dare say!” said Alpatych. Are..."
    assert any(p["response"].startswith('"What next?"') for p in pairs)  # the answer is the text as it stands


def test_a_document_is_named_so_the_question_reads(project, tmp_path):
    """unstructured's simple.docx is titled "These are a few of my favorite things": questions read
    'What does the These are a few ... say about Analysis?'. A title that is no short name is quoted."""
    from ingest.elements import doc_phrase

    src = tmp_path / "simple.md"
    src.write_text("# These are a few of my favorite things\n\nParrots and hockey, mostly, and long walks.\n\n"
                   "## Analysis\n\nThis is my first thought. This is my second thought. This is my third thought.\n")
    assert ingest(project, [src], IngestConfig(workers=0, generators=["sections"])).ok
    questions = {p["instruction"] for p in _pairs(project)}
    assert 'What does "These are a few of my favorite things" say about Analysis?' in questions, questions
    assert not any("the These" in q for q in questions)
    assert doc_phrase("") == "the document" and doc_phrase("Employee Handbook") == "the Employee Handbook"
    assert doc_phrase("LayoutParser: A Unified Toolkit") == '"LayoutParser: A Unified Toolkit"'
    assert doc_phrase('The "Cobalt" manual') == '"The “Cobalt” manual"'


def test_content_decides_the_format(tmp_path):
    """language-docs/eng_spa_mult.doc and .ppt are a DOCX and a PPTX named .doc and .ppt (were
    refused: "rename it"). A file whose bytes prove it another supported format is parsed as that
    format, exactly as the rightly named file, with a warning; a PDF named .docx too."""
    from store.db import Project
    from tests.test_ingest_files import make

    cfg = IngestConfig(generators=("auto",), workers=0)
    wrong, right = tmp_path / "wrong", tmp_path / "right"
    wrong.mkdir()
    right.mkdir()
    for real, named in (("docx", "doc"), ("pptx", "ppt"), ("pdf", "docx")):
        make(right, real, f"as-{named}")
        make(wrong, real, f"as-{named}").rename(wrong / f"as-{named}.{named}")
    got = {}
    for folder in (wrong, right):
        report = ingest(Project(tmp_path / f"p-{folder.name}").init(), [folder], cfg)
        got[folder.name] = {Path(r.uri).stem: r for r in report.files}
    for stem, r in got["wrong"].items():
        twin = got["right"][stem]
        assert r.status == twin.status == "new", (r.uri, r.error)
        assert r.filetype == twin.filetype and Path(r.uri).suffix != f".{r.filetype}"
        assert (r.n_elements, r.n_chunks, r.pairs_total) == (twin.n_elements, twin.n_chunks, twin.pairs_total)
        assert r.n_elements > 0
        assert any(f"named {Path(r.uri).suffix} but is a .{r.filetype} file" in w for w in r.warnings)
        assert not any("named" in w for w in twin.warnings)


PGP_MAIL = """From: Michael Elkins <elkins@example.org>
To: Michael Elkins <elkins@example.org>
Subject: {subject}
Mime-Version: 1.0
Content-Type: multipart/encrypted; boundary=foo;
\tprotocol="application/pgp-encrypted"

--foo
Content-Type: application/pgp-encrypted

Version: 1

--foo
Content-Type: application/octet-stream

-----BEGIN PGP MESSAGE-----
Version: 2.6.2

hIwDY32hYGCE8MkBA/wOu7d45aUxF4Q0RKJprD3v5Z9K1YcRJ2fve87lMlDlx4Oj
=zzaA
-----END PGP MESSAGE-----

--foo--
"""
SMIME_MAIL = """From: a@example.org
To: b@example.org
MIME-Version: 1.0
Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename=smime.p7m

MIAGCSqGSIb3DQEHA6CAMIACAQAxggFOMIIBSgIBADAyMCUxCzAJBgNVBAYTAlVTMRYwFAYDVQQK
"""
QUOTING = """From: a@example.org
To: b@example.org
Subject: Key rotation
Content-Type: text/plain; charset=utf-8

The new signing key replaces the old one on Friday. Please re-encrypt the archive with it.
Here is the block you asked about:
-----BEGIN PGP MESSAGE-----
hIwDY32hYGCE8MkBA/wOu7d45aUxF4Q0RKJprD3v5Z9K1YcRJ2fve87lMlDlx4Oj
-----END PGP MESSAGE-----
"""


def test_an_encrypted_email_says_so(tmp_path):
    """fake-encrypted.eml (PGP/MIME) and fake-encrypted.msg failed as "no text found": an e-mail
    whose only body is encrypted fails as "encrypted", naming the scheme and what to do; a message
    that quotes a PGP block in its text is ingested."""
    from ingest.partition import encrypted_mail
    from store.db import Project

    mails = tmp_path / "mails"
    mails.mkdir()
    (mails / "pgp.eml").write_text(PGP_MAIL.format(subject="Board minutes"))
    (mails / "pgp-no-subject.eml").write_text(PGP_MAIL.replace("Subject: {subject}\n", ""))
    (mails / "smime.eml").write_text(SMIME_MAIL)
    (mails / "quoting.eml").write_text(QUOTING)
    report = ingest(Project(tmp_path / "p").init(), [mails], IngestConfig(generators=("auto",), workers=0))
    got = {Path(r.uri).name: r for r in report.files}
    assert got["quoting.eml"].status == "new" and got["quoting.eml"].pairs_total >= 1
    for name, scheme in (("pgp.eml", "PGP"), ("pgp-no-subject.eml", "PGP"), ("smime.eml", "S/MIME")):
        r = got[name]
        assert r.status == "failed" and r.error_kind == "encrypted", (name, r.error)
        assert f"the e-mail is encrypted ({scheme})" in r.error and "decrypt it" in r.error
    # an Outlook .msg keeps its strings in UTF-16 streams (fake-encrypted.msg: the attachment's MIME type)
    msg = tmp_path / "look-alike.msg"
    msg.write_bytes(b"\xd0\xcf\x11\xe0" + bytes(64) + "application/pgp-encrypted".encode("utf-16-le") + bytes(64))
    assert encrypted_mail(msg) == "PGP"
    msg.write_bytes(b"\xd0\xcf\x11\xe0" + bytes(64) + "IPM.Note.SMIME".encode("utf-16-le"))
    assert encrypted_mail(msg) == "S/MIME"
    msg.write_bytes(b"\xd0\xcf\x11\xe0" + bytes(64) + "IPM.Note".encode("utf-16-le"))
    assert encrypted_mail(msg) == ""


RAGGED = ("Team,City,Cups\nBlues,St. Louis,1\nFlyers,Philadelphia,2\nMaple Leafs,Toronto,13\n"
          "Canadiens,Montreal,24,the most of any team\n")


def test_a_ragged_csv_is_read_padded(tmp_path):
    """single-column.csv failed whole ("the .csv parser failed (ParserError: Expected 2 fields in
    line 9, saw 3)"): a row longer than the first is padded, the table read, the line named."""
    from store.db import Project

    (tmp_path / "cups.csv").write_text(RAGGED)
    project = Project(tmp_path / "p").init()
    report = ingest(project, [tmp_path / "cups.csv"], IngestConfig(generators=("auto",), workers=0))
    [r] = report.files
    assert r.status == "new", r.error
    assert any("line 5 have more cells than the first row (3)" in w and "padded to 4 columns" in w
               for w in r.warnings), r.warnings
    pairs = _pairs(project)
    asked = {p["instruction"]: p["response"] for p in pairs}
    assert any("Maple Leafs" in q and a == "Toronto" for q, a in asked.items()), asked
    assert any("Canadiens" in q and a == "24" for q, a in asked.items()), asked


PRE_LAW = """<html><body><pre>[107th Congress Public Law 56]
[From the U.S. Government Printing Office]

                                 An Act

 To deter and punish terrorist acts in the United States and around the
  world, to enhance law enforcement investigatory tools, and for other
            purposes.

SECTION 1. SHORT TITLE AND TABLE OF CONTENTS.

    (a) Short Title.--This Act may be cited as the ``Uniting and
Strengthening America Act of 2001''.

         TITLE I--ENHANCING DOMESTIC SECURITY AGAINST TERRORISM

SEC. 101. COUNTERTERRORISM FUND.

    (a) Establishment; Availability of Amounts.--There is hereby
established in the Treasury of the United States a separate fund to be
known as the ``Counterterrorism Fund'', amounts in which shall remain
available without fiscal year limitation to reimburse any Department of
Justice component for any costs incurred in connection with the
reestablishment of the operational capability of an office or facility
which has been damaged or destroyed as the result of any domestic or
international terrorism incident.

SEC. 102. SENSE OF CONGRESS.

    (a) Findings.--Congress makes the following findings: Arab Americans
and Muslim Americans enrich our society. The civil rights and civil
liberties of all Americans must be protected, and every effort must be
taken to preserve their safety.
</pre></body></html>"""
CODE_PAGE = """<html><body><h1>Installing the client</h1>
<p>The client library is installed with pip. It needs Python 3.10 or newer and no system packages.</p>
<pre>pip install tuneloop-client
export TUNELOOP_URL=http://localhost:8501
if [ -z "$TOKEN" ]; then echo "set TOKEN"; fi</pre>
<p>After the install, the client reads its address from the environment. Restart the shell first.</p>
</body></html>"""


def test_preformatted_prose_is_read_by_paragraphs(tmp_path):
    """fake-html-pre.htm (a public law in one <pre>, hard-wrapped and indented) was one element of
    460,000 characters: passages began mid-sentence and carried runs of indentation. A page that is
    mostly a <pre> block of prose is read as plain text, by paragraphs, with its headings; a <pre>
    of code among a page's paragraphs stays code."""
    from ingest.partition import partition_file

    (tmp_path / "law.htm").write_text(PRE_LAW)
    (tmp_path / "install.html").write_text(CODE_PAGE)
    law = partition_file(tmp_path / "law.htm")
    texts = [e["text"] for e in law.elements]
    assert len(law.elements) >= 8, texts
    assert any("read as plain text" in w for w in law.warnings)
    assert not any(re.search(r"\S {3,}\S", t) for t in texts), texts  # wrapped lines joined, no indentation runs
    fund = next(t for t in texts if t.startswith("(a) Establishment"))
    assert fund.endswith("terrorism incident.") and "hereby established" in fund
    code = partition_file(tmp_path / "install.html")
    assert not code.warnings and any(e["type"] == "CodeSnippet" and "pip install" in e["text"] for e in code.elements)


CATALOG = [{"sku": "GRD-8842", "name": "Garden Trowel", "price": 12.5, "in_stock": True, "notes": None},
           {"sku": "GRD-1290", "name": "Watering Can", "price": 18.0, "in_stock": False, "origin": "Großbritannien"},
           {"sku": "GRD-3317", "name": "Pruning Shears", "price": 24.99, "in_stock": True, "tags": ["steel"]}]
REVIEWS = [{"text": f"The delivery of order {k} came two days late and the box was damaged on arrival.",
            "label": "complaint"} for k in range(4)]


def test_json_records_are_table_rows(tmp_path):
    """arbitrary-records.json (a product list: sku, name, price, in_stock) gave no pair, only advice to
    import it as a dataset. Records that are rows of a table give lookup pairs keyed by their name
    field, each answer the value's exact span in the stored text; a dataset of texts stays a dataset."""
    import json

    from store.db import Project

    (tmp_path / "catalog.json").write_text(json.dumps(CATALOG, indent=2, ensure_ascii=False))
    (tmp_path / "reviews.ndjson").write_text("\n".join(json.dumps(r) for r in REVIEWS))
    project = Project(tmp_path / "p").init()
    report = ingest(project, [tmp_path / "catalog.json", tmp_path / "reviews.ndjson"],
                    IngestConfig(generators=("auto",), workers=0))
    got = {Path(r.uri).name: r for r in report.files}
    pairs = _pairs(project)
    asked = {p["instruction"]: p["response"] for p in pairs}
    assert asked["What is the price of Garden Trowel?"] == "12.5"
    assert asked["What is the sku of Pruning Shears?"] == "GRD-3317"
    assert not any("in stock" in q or "tags" in q or "notes" in q for q in asked), asked  # booleans, lists, nulls
    for p in pairs:
        assert p["text"][p["char_start"]:p["char_end"]] == p["response"]
    assert got["reviews.ndjson"].pairs_total == 0 and "tuneloop import" in (got["reviews.ndjson"].no_pairs or "")


FACTBOOK = """<?xml version="1.0" encoding="UTF-8"?>
<factbook>
  <country><name>United States</name><capital>Washington, DC</capital><sport>Baseball</sport></country>
  <country><name>Canada</name><capital>Ottawa</capital><sport>Hockey</sport></country>
  <country><name>Trinidad &amp; Tobago</name><capital>Port of Spain</capital><sport>Track &amp; Field</sport></country>
</factbook>"""
NESTED = """<?xml version="1.0"?>
<library><book><title>Dune</title><author><first>Frank</first><last>Herbert</last></author></book>
<book><title>Emma</title><author><first>Jane</first><last>Austen</last></author></book></library>"""
ENTITY = """<?xml version="1.0"?>
<!DOCTYPE items [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<items><item><name>Lamp</name><note>&secret;</note></item><item><name>Desk</name><note>oak</note></item></items>"""


def test_xml_records_are_a_table(tmp_path):
    """factbook.xml (countries: name, capital, leader, sport) gave no pair: unstructured read each
    field's text as a heading and lost the field names. Repeated flat records are a table; nested
    XML is read as before; an external entity is never resolved."""
    from ingest.partition import partition_file
    from store.db import Project

    (tmp_path / "factbook.xml").write_text(FACTBOOK)
    (tmp_path / "library.xml").write_text(NESTED)
    project = Project(tmp_path / "p").init()
    report = ingest(project, [tmp_path / "factbook.xml"], IngestConfig(generators=("auto",), workers=0))
    [r] = report.files
    assert any("3 <country> records: read as a table" in w for w in r.warnings), r.warnings
    asked = {p["instruction"]: p["response"] for p in _pairs(project)}
    assert asked["What is the capital of Canada?"] == "Ottawa"
    assert asked["What is the sport of Trinidad & Tobago?"] == "Track & Field"
    nested = partition_file(tmp_path / "library.xml")
    assert not nested.warnings and {e["type"] for e in nested.elements} != {"Table"}
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRETVALUE")
    (tmp_path / "items.xml").write_text(ENTITY.replace("/etc/hostname", str(secret)))
    items = partition_file(tmp_path / "items.xml")
    assert "TOPSECRETVALUE" not in " ".join(e["text"] for e in items.elements)
