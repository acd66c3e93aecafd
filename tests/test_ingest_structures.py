"""Every parsed document yields pairs, chosen by its structure (the ``auto`` generator), or a reason.

Real files written here, parsed by the real ``unstructured``, ingested into a real project:
a CSV, a TSV, an XLSX, an e-mail, an untitled HTML page, a titled Markdown guide and a Q/A text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.documents import IngestConfig, ingest
from ingest.elements import build_document
from ingest.generators import Source, create, why_no_pairs
from store.db import frame
from tests.test_ingest_files import EML, MD

TSV = "Metal\tSymbol\tMelting point\nIron\tFe\t1538 C\nCopper\tCu\t1085 C\n"
CSV = ("Plant,Family,Height (cm),Native range\nRosemary,Lamiaceae,150,Mediterranean\n"
       "Basil,Lamiaceae,60,Tropical Asia\nSaffron crocus,Iridaceae,30,Greece\n")
QA = ("Q: How long does the Cobalt battery last?\nA: About seven days on one charge.\n\n"
      "Q: Which app pairs with the sensor?\nA: The Cobalt Home app, on Android and iOS.\n")
HTML = "<html><body>" + "".join(
    f"<p>The harbour of Velmar handled {1000 + 37 * i} tonnes of grain in {1990 + i}, mostly barley shipped "
    f"north by coastal traders who paid their duties to the town council.</p>" for i in range(14)) + "</body></html>"
REQUEST_EML = EML.replace("Best,", "Please confirm your new shifts with Marta by Friday.\n\nBest,")


def _xlsx(path: Path) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Rivers"
    for row in [["River", "Length (km)", "Outflow"], ["Nile", 6650, "Mediterranean Sea"],
                ["Amazon", 6400, "Atlantic Ocean"]]:
        ws.append(row)
    wb.save(path)


# file name -> (generators auto uses for it, instructions that must be among its pairs)
EXPECTED = {
    "data1.csv": ({"table"}, {"What is the Family of Rosemary?", "What is the Native range of Saffron crocus?"}),
    "data2.tsv": ({"table"}, {"What is the Symbol of Iron?", "What is the Melting point of Copper?"}),
    "book.xlsx": ({"table"}, {"In the Rivers table, what is the Outflow of Amazon?"}),
    "msg01.eml": ({"email"}, {'What does the e-mail "Lisbon warehouse hours" from Ana Ribeiro ask for?'}),
    "page.html": ({"paragraphs"}, set()),
    "kb.md": ({"sections"}, {"What does the Cobalt Quick Guide say about Battery?"}),
    "notes.txt": ({"qa"}, {"How long does the Cobalt battery last?", "Which app pairs with the sensor?"}),
}


@pytest.fixture
def corpus(tmp_path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "data1.csv").write_text(CSV)
    (d / "data2.tsv").write_text(TSV)
    _xlsx(d / "book.xlsx")
    (d / "msg01.eml").write_text(REQUEST_EML)
    (d / "page.html").write_text(HTML)
    (d / "kb.md").write_text(MD)
    (d / "notes.txt").write_text(QA)
    return d


def test_auto_pairs_every_structure_with_exact_provenance(project, corpus):
    report = ingest(project, [corpus], IngestConfig(workers=0))
    assert report.ok, [(f.uri, f.error) for f in report.failed]
    assert all(f.pairs_total >= 1 for f in report.files), [(f.uri, f.no_pairs) for f in report.files]
    with project.connect() as con:
        rows = frame(con, """SELECT p.source_uri, p.generator, p.char_start, p.char_end, r.instruction, r.response,
                                    d.text FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
                             JOIN documents d ON d.id = p.document_id""").to_dicts()
    for name, (generators, instructions) in EXPECTED.items():
        mine = [r for r in rows if r["source_uri"] == f"corpus/{name}"]
        assert mine and {r["generator"] for r in mine} == generators, (name, mine)
        assert instructions <= {r["instruction"] for r in mine}, (name, [r["instruction"] for r in mine])
        for r in mine:
            assert r["text"][r["char_start"]:r["char_end"]] == r["response"]
            stem = name.rsplit(".", 1)[0]
            assert stem not in r["instruction"].lower() and name not in r["instruction"]
    cells = {r["instruction"]: r["response"] for r in rows}
    assert cells["What is the Family of Rosemary?"] == "Lamiaceae"
    assert cells["In the Rivers table, what is the Outflow of Amazon?"] == "Atlantic Ocean"
    asks = cells['What does the e-mail "Lisbon warehouse hours" from Ana Ribeiro ask for?']
    assert asks == "Please confirm your new shifts with Marta by Friday."
    windows = [r for r in rows if r["generator"] == "paragraphs"]
    assert len(windows) >= 2 and all('begins "The harbour of Velmar handled' in r["instruction"] for r in windows)


def _source(elements: list[dict], name: str = "notes.txt") -> Source:
    doc, els = build_document(elements, document_id="d_t", uri=name, name=name, filetype="txt", size_bytes=1)
    return Source(doc, els, [])


def test_auto_fills_untitled_prose_around_sections_and_explicit_generators_stay_as_before():
    intro = "Revenue rose in every region this year, led by industrial sensors and service contracts. " * 3
    src = _source([{"type": "NarrativeText", "text": intro},
                   {"type": "Title", "text": "Risk factors"},
                   {"type": "NarrativeText", "text": "Supply of sensor chips depends on two foundries in Taiwan."}])
    auto = list(create("auto").generate(src))
    assert [(p.provenance.generator, p.content.instruction[:40]) for p in auto] == [
        ("sections", "What does the document say about Risk fa"),
        ("paragraphs", auto[1].content.instruction[:40])]
    assert auto[1].content.response == intro
    assert [p.provenance.generator for p in create("sections").generate(src)] == ["sections"]


@pytest.mark.parametrize(("elements", "generators", "reason"), [
    ([], ["auto"], "the parser found no text"),
    ([{"type": "NarrativeText", "text": "Too short."}], ["auto"], "too short to pair (10 characters"),
    ([{"type": "NarrativeText", "text": "Long enough text without any heading at all, " * 3}], ["sections"],
     "sections: no headings (Title elements); try -g auto"),
    ([{"type": "Table", "text": "1 2 3 4", "metadata": {"text_as_html": "<table><tr><td>1</td><td>2</td></tr>"
                                                                    "<tr><td>3</td><td>4</td></tr></table>"}}],
     ["auto", "qa"], "auto: no prose and no table with a header row (1 table(s)"),
    ([{"type": "Image", "text": "x"}], ["email"], "email: not an e-mail"),
    # enough prose in all, but cut into short runs by headings (unstructured's currency.csv.txt: "Code",
    # "Symbol", "Name" lines, each name a run of its own): the reason says so, not "too short (85 characters"
    ([{"type": "Title" if k % 2 else "NarrativeText", "text": f"Bolivian boliviano {k}"} for k in range(8)],
     ["auto"], "auto: its prose (80 characters) comes in pieces too short to pair: headings or other elements split "
               "it into runs of at most 20 characters"),
    # numbers without words (unstructured's all-number-table.pdf) are no prose
    ([{"type": "UncategorizedText", "text": f"{200 * k}.01"} for k in range(1, 30)], ["auto"],
     "auto: no prose and no table with a header row (only UncategorizedText elements)"),
])
def test_why_no_pairs(elements, generators, reason):
    src = _source(elements)
    assert not [p for g in generators for p in create(g).generate(src)]
    assert reason in why_no_pairs(src.elements, generators)
