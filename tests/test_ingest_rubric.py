"""The usability rubric (``ingest.rubric``): each check passes good pairs and fails bad ones, and the
pairs the real ingest makes from a few tiny documents pass it (>= 80 %, issue 15's goal)."""

from __future__ import annotations

import pytest

from ingest.documents import IngestConfig, ingest
from ingest.rubric import Rubric, usability
from store.db import frame
from tests.test_ingest_files import EML, MD
from tests.test_ingest_structures import CSV, HTML

SPAN = ("Charge the Cobalt sensor every week. An amber light means the battery is below 15 %. "
        "Calibrate it every six months.")
GOOD_ANSWER = "Charge the Cobalt sensor every week."
HEADER = "Cat. No. 28171E Internal Revenue Manual"

# (instruction, response) that pass every check, one per kind of generated pair
GOOD = [
    ("What does the Cobalt Quick Guide say about Battery?", SPAN),                       # sections
    ('What does the passage that begins "Charge the Cobalt sensor every week" say?', SPAN),  # paragraphs
    ("How long does the Cobalt battery last?", "About seven days on one charge."),      # qa
    ("What is the Family of Rosemary?", "Lamiaceae"),                                    # table cell
    ("In the Scores table, what is the score of Ridge 4?", "871.5"),                     # one-cell number
    ("What does the table list for Nile (Length (km), Outflow)?", "6650 Mediterranean Sea"),  # table row
    ('Write the e-mail "Lisbon warehouse hours" from Ana Ribeiro.',
     "From next Monday the Lisbon warehouse opens at 8:00 and closes at 17:00."),        # email
    ("What is the warranty?", "Two years."),                                             # qa lookup
    ("What is the Travel Policy about?", "Employees book all business travel through the portal."),  # overview
    ('What does the e-mail "Lisbon warehouse hours" from Ana Ribeiro ask for?',
     "Please confirm your new shifts with Marta by Friday."),                            # email request
]


@pytest.mark.parametrize("instruction,response", GOOD)
def test_good_pairs_pass(instruction, response):
    r = usability(instruction, response, f"Intro. {response} More.", boilerplate=[HEADER])
    assert r.passed and r.reasons == (), r


# (check that must fail, instruction, response, span_text)
BAD = [
    ("is_question", "Battery", GOOD_ANSWER, SPAN),
    ("is_question", "Cobalt sensor charging", GOOD_ANSWER, SPAN),
    ("is_question", "Battery?", GOOD_ANSWER, SPAN),
    ("names_subject", "What does the document say about this?", GOOD_ANSWER, SPAN),
    ("names_subject", "What is it?", GOOD_ANSWER, SPAN),
    ("names_subject", "What does the Cobalt guide say about **Battery?", GOOD_ANSWER, SPAN),
    ("names_subject", "What does the Cobalt guide say about?", GOOD_ANSWER, SPAN),
    ("names_subject", "What is the Family of?", "Lamiaceae", "Lamiaceae"),
    ("names_subject", 'What are the key facts in the passage that begins "{ "answer": "The warranty"?',
     GOOD_ANSWER, SPAN),
    ("names_subject", "What does the Cobalt guide say about the?", GOOD_ANSWER, SPAN),
    ("names_subject", "What does the {doc_title} say about Battery?", GOOD_ANSWER, SPAN),
    ("names_subject", 'What does the passage that begins "" say about the battery?', GOOD_ANSWER, SPAN),
    ("full_sentence", "What does the Cobalt Quick Guide say about Battery?", "amber light", "amber light"),
    ("full_sentence", "What does the Cobalt Quick Guide say about Battery?", "Charge the sensor",
     "Charge the sensor"),
    ("full_sentence", "What is the Family of Rosemary?", "", ""),
    ("full_sentence", "What does the Cobalt warranty record say?", '{\n  "answer": "The warranty lasts two years."\n}',
     '{\n  "answer": "The warranty lasts two years."\n}'),
    ("full_sentence", "What is the Family of Rosemary?", " ".join(["word"] * 70), " ".join(["word"] * 70)),
    ("grounded", "What does the Cobalt Quick Guide say about Battery?",
     "The Cobalt sensor runs on solar power and never needs charging.", SPAN),
    ("grounded", "What does the Cobalt Quick Guide say about Battery?", GOOD_ANSWER, None),
    ("no_boilerplate", "What does the Cobalt Quick Guide say about Battery?", f"{HEADER}\n{GOOD_ANSWER}",
     f"{HEADER}\n{GOOD_ANSWER}"),
    ("no_boilerplate", "What does the Cobalt Quick Guide say about Battery?", f"{GOOD_ANSWER} Page 3 of 320",
     f"{GOOD_ANSWER} Page 3 of 320"),
    ("no_boilerplate", "What does the Cobalt Quick Guide say about Battery?", f"{GOOD_ANSWER}\x00",
     f"{GOOD_ANSWER}\x00"),
    ("no_boilerplate", "What does the Cobalt Quick Guide say about Battery?", f"{GOOD_ANSWER}\x07",
     f"{GOOD_ANSWER}\x07"),
    ("no_boilerplate", "What does the Cobalt Quick Guide say about Battery?", "Charge (cid:12) the sensor now.",
     "Charge (cid:12) the sensor now."),
    ("no_boilerplate", "What does the Cobalt (cid:3) guide say about Battery?", GOOD_ANSWER, SPAN),
]


@pytest.mark.parametrize("check,instruction,response,span", BAD)
def test_each_check_fails_bad_pairs(check, instruction, response, span):
    r = usability(instruction, response, span, boilerplate=[HEADER])
    assert not getattr(r, check) and not r.passed, r
    assert any(reason.startswith(f"{check}:") for reason in r.reasons), r.reasons
    others = [f for f in Rubric.__dataclass_fields__ if f not in ("reasons", check)]
    assert all(getattr(r, f) for f in others), r  # only the check under test fails


def test_boilerplate_lines_match_with_other_page_numbers():
    r = usability("What does the manual say about Relief?", f"Publication 17 (2025) Page 9\n{GOOD_ANSWER}",
                  f"Publication 17 (2025) Page 9\n{GOOD_ANSWER}", boilerplate=["Publication 17 (2025) Page 4"])
    assert not r.no_boilerplate and r.reasons == ("no_boilerplate: boilerplate line",)


def test_grounding_score_admits_an_edited_response():
    edited = "Charge the Cobalt sensors every week; the battery is below 15 % when amber."
    default = usability("What does the Cobalt Quick Guide say about Battery?", edited, SPAN)  # scoring.grounding
    strict = usability("What does the Cobalt Quick Guide say about Battery?", edited, SPAN, grounding=lambda r, s: 0.5)
    assert default.grounded and default.passed
    assert not strict.grounded and strict.reasons == ("grounded: grounding 0.50 < 0.8",)
    assert usability("What does the Cobalt Quick Guide say about Battery?", GOOD_ANSWER, SPAN,
                     grounding=lambda r, s: 0.0).grounded  # verbatim: no score needed


def test_real_ingest_pairs_pass_the_rubric(project, tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "guide.md").write_text(MD)
    (d / "plants.csv").write_text(CSV)
    (d / "msg.eml").write_text(EML.replace("Best,", "Please confirm your new shifts with Marta by Friday.\n\nBest,"))
    (d / "harbour.html").write_text(HTML)
    report = ingest(project, [d], IngestConfig(workers=0))
    assert report.ok, [(f.uri, f.error) for f in report.failed]
    with project.connect() as con:
        rows = frame(con, """SELECT p.source_uri, r.instruction, r.response, p.char_start, p.char_end, d.text
                             FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id
                             JOIN documents d ON d.id = p.document_id""").to_dicts()
    assert {r["source_uri"] for r in rows} == {f"corpus/{n}" for n in ("guide.md", "plants.csv", "msg.eml",
                                                                         "harbour.html")}
    verdicts = [(r, usability(r["instruction"], r["response"], r["text"][r["char_start"]:r["char_end"]]))
                for r in rows]
    failed = [(r["instruction"], r["response"][:80], v.reasons) for r, v in verdicts if not v.passed]
    assert len(failed) <= 0.2 * len(rows), failed
