"""Quality detectors: a parametrised table of positive and negative cases for each one, and
the stored signals working in slice filters."""

from __future__ import annotations

import json

import polars as pl
import pytest

from analysis import signals as sig
from analysis.curate import run_signals
from store import curation as cur
from store import pairs as pairs_store
from store.db import frame
from store.filters import parse_where
from store.records import NewPair, PairContent

LONG_OK = ("Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to "
           "make glucose and oxygen. It happens in the chloroplasts, mainly in the leaves, and it is the "
           "basis of almost every food chain on Earth.")

TOOLS = "You have access to the following tools:\nrequest(url: str, method: str = 'GET') - fetch a URL"

# (detector, instruction, input, response, flagged)
CASES = [
    ("empty_response", "Explain gravity.", "", "", True),
    ("empty_response", "Explain gravity.", "", "   \n ", True),
    ("empty_response", "Explain gravity.", "", "N/A", True),
    ("empty_response", "Explain gravity.", "", "<No Output>", True),
    ("empty_response", "Explain gravity.", "", "<nooutput>", True),
    ("empty_response", "Explain gravity.", "", "Mass attracts mass.", False),
    ("empty_response", "Is 4 prime?", "", "No, 4 = 2 x 2.", False),
    ("placeholder_input", "Summarize this article.", "https://example.com/news/123", "It says...", True),
    ("placeholder_input", "Describe the picture.", "<image>", "A cat.", True),
    ("placeholder_input", "What is in the file?", "report_2023.pdf", "Numbers.", True),
    ("placeholder_input", "Describe this image in detail.", "", "A red car parked by a tree.", True),
    ("placeholder_input", "Summarize the text.", "The meeting moved to Friday because the CEO is travelling.", "Moved to Friday.", False),
    ("placeholder_input", "Is this URL safe: https://example.com?", "", "It looks fine.", False),
    ("placeholder_input", "Can I order a virtual card on the website?", "", "Yes.", False),
    ("merged_instructions", "Name a fruit.", "", "Apple.\n\n2. Instruction: Name a vegetable.\n2. Input: <noinput>\n2. Output: Carrot.", True),
    ("merged_instructions", "Name a fruit.", "", "Apple\n### Instruction:\nName a colour", True),
    ("merged_instructions", "Give instructions for tea.", "", "1. Boil water.\n2. Add the tea.\nFollow the instructions: steep 3 minutes.", False),
    ("echoes_instruction", "Tell me the capital of France", "", "Tell me the capital of France.", True),
    ("echoes_instruction", "Tell me the capital of France", "", "tell me the capital of france please", True),
    ("echoes_instruction", "Tell me the capital of France", "", "The capital of France is Paris.", False),
    ("echoes_instruction", "Activate my card", "", "activate_my_card", False),  # intent label, too short to count
    ("repetition", "Say something.", "", "I am happy. " * 30, True),
    ("repetition", "List items.", "", "\n".join(["- same line"] * 8), True),
    ("repetition", "Laugh.", "", "ha" * 30, True),
    ("repetition", "Explain.", "", LONG_OK, False),
    ("repetition", "List.", "", "- apples\n- pears\n- plums\n- figs", False),
    ("truncated", "Write code.", "", "```python\nprint('hi')", True),
    ("truncated", "Explain.", "", "The results of the survey were clear and most of the respondents said that", True),
    ("truncated", "Explain.", "", "The answer depends on several factors, including cost, time,", True),
    ("truncated", "Explain.", "", LONG_OK, False),
    ("truncated", "Write code.", "", "```python\nprint('hi')\n```", False),
    ("truncated", "Label it.", "", "card_arrival", False),
    ("language", "Explain.", "", "Le chat est sur la table et nous pensons que il est très content avec vous pour la journée.", True),
    ("language", "Erkläre das.", "", "Der Hund ist nicht im Haus und wir wissen auch nicht, wie er mit der Katze spielt.", True),
    ("language", "Explain.", "", "Это очень хороший ответ на ваш вопрос о погоде.", True),
    ("language", "Translate to French: the cat is on the table and we think it is happy", "", "Le chat est sur la table et nous pensons que il est très content.", False),
    ("language", "What do I do if I do not recognise a cash withdrawal?", "", "cash_withdrawal_not_recognised", False),
    ("language", "Explain.", "", LONG_OK, False),
    ("pii", "Contact", "", "Write to jane.doe@fastmail.fm for details.", True),
    ("pii", "Contact", "", "Call me on +44 20 7946 0958 tomorrow.", True),
    ("pii", "Contact", "", "Call (415) 555-0132.", True),
    ("pii", "Pay", "", "My card is 4111 1111 1111 1111.", True),
    ("pii", "Pay", "", "IBAN: DE89 3704 0044 0532 0130 00", True),
    ("pii", "ID", "", "SSN 123-45-6789", True),
    ("pii", "Pay", "", "Order 4111 1111 1111 1112 shipped.", False),  # fails the Luhn check
    ("pii", "Dates", "", "From 2020-01-01 to 2021-12-31, 1,234,567 units.", False),
    ("pii", "Email", "", "Use the @mention feature, e.g. @john.", False),
    ("mojibake", "x", "", "CafÃ© au lait costs â‚¬3 and itâ€™s good.", True),
    ("mojibake", "x", "", "Broken \ufffd character.", True),
    ("mojibake", "x", "", "Café au lait costs €3 and it’s good. São Paulo, NÃO.", False),
    ("tool_call", TOOLS, "Open https://example.org/a?q=1", 'request(url="https://example.org/a?q="1"")', True),
    ("tool_call", TOOLS, "Open https://example.org/a", 'fetch(url="https://example.org/a")', True),
    ("tool_call", TOOLS, "Open https://example.org/a", 'request(url="https://example.org/a"))', True),
    ("tool_call", TOOLS, "Open https://example.org/a", 'request(url="https://example.org/a")', False),
    ("code_syntax", "Write code.", "", "```python\ndef f(x:\n    return x\n```", True),
    ("code_syntax", "Write code.", "", "```json\n{\"a\": 1,}\n```", True),
    ("code_syntax", "Write code.", "", "```python\ndef f(x):\n    return x\n```", False),
    ("arithmetic", "Tom buys 8 packs of 3 pens.", "", "He has 8*3 = 240 pens.\n#### 240", True),
    ("arithmetic", "Tom buys 8 packs of 3 pens.", "", "He has 8*3 = <<8*3=24>>24 pens.\n#### 24", False),
]


@pytest.mark.parametrize(("name", "instruction", "input", "response", "flagged"), CASES)
def test_detector_table(name, instruction, input, response, flagged):
    df = pl.DataFrame({"revision_id": ["r1"], "pair_id": ["p1"], "instruction": [instruction], "input": [input],
                       "response": [response]})
    out = sig.detect(df, name)
    assert out["flagged"][0] is flagged, out.to_dicts()
    if flagged:
        assert out["reason"][0] and out["score"][0] > 0
    else:
        assert out["reason"][0] == ""


def test_every_detector_has_cases_both_ways():
    for name in sig.DETECTORS:
        if name in ("length", "answer_format"):
            continue  # relative to the frame; tested below and in test_signals_in_context.py
        kinds = {c[4] for c in CASES if c[0] == name}
        assert kinds == {True, False}, name


def test_length_flags_outliers_relative_to_the_frame():
    words = " ".join(["word"] * 40)
    responses = [words] * 30 + ["ok", " ".join(["long"] * 5000)]
    df = pl.DataFrame({"revision_id": [f"r{i}" for i in range(32)], "pair_id": [f"p{i}" for i in range(32)],
                       "instruction": ["Explain this topic"] * 32, "input": [""] * 32, "response": responses})
    out = sig.detect(df, "length")
    assert out["flagged"].to_list() == [False] * 30 + [True, True]
    assert "short" in out["reason"][30] and "long" in out["reason"][31]
    # label-like data (all responses short) has no outliers
    labels = pl.DataFrame({"revision_id": [f"r{i}" for i in range(40)], "pair_id": [f"p{i}" for i in range(40)],
                           "instruction": ["Where is my card?"] * 40, "input": [""] * 40,
                           "response": ["card_arrival", "lost_or_stolen_card"] * 20})
    assert not sig.detect(labels, "length")["flagged"].any()


def test_pii_reason_never_repeats_the_value():
    df = pl.DataFrame({"revision_id": ["r"], "pair_id": ["p"], "instruction": ["x"], "input": [""],
                       "response": ["mail jane.doe@fastmail.fm card 4111 1111 1111 1111"]})
    out = sig.detect(df, "pii")
    assert "jane" not in out["reason"][0] and "4111" not in out["reason"][0]
    assert json.loads(out["details"][0])["card"] == 1


def test_multi_turn_pairs_are_checked_on_their_messages():
    msgs = json.dumps([{"role": "user", "content": "Hi there, summarise this."},
                       {"role": "assistant", "content": "<No Output>"}])
    df = pl.DataFrame({"revision_id": ["r"], "pair_id": ["p"], "instruction": [""], "input": [""], "response": [""],
                       "messages": [msgs]})
    out = sig.detect(df, "empty_response")
    assert out["flagged"][0] and "placeholder" in out["reason"][0]


def _add(con, instruction, response):
    return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=instruction, response=response))])[0]


def test_signals_are_stored_and_usable_in_slice_filters(project):
    with project.connect() as con:
        empty = _add(con, "Explain gravity.", "")
        pii = _add(con, "Contact?", "Mail jane.doe@fastmail.fm")
        good = _add(con, "Explain tides.", "The moon pulls the oceans.")
    counts = run_signals(project)
    assert dict(counts.select("name", "flagged").iter_rows())["pii"] == 1
    with project.connect() as con:
        assert set(pairs_store.frame(con, parse_where("flagged=pii,empty_response"))["pair_id"]) == {empty, pii}
        assert set(pairs_store.frame(con, parse_where("clean=pii,empty_response"))["pair_id"]) == {good}
        summary = cur.signal_summary(con)
        assert dict(summary.select("name", "flagged").iter_rows())["empty_response"] == 1
        top = cur.flagged(con, "pii")
        assert top["pair_id"].to_list() == [pii]
    # an edit that fixes the pair clears its flag on the next run; re-running is stable
    with project.connect() as con:
        pairs_store.revise(con, empty, expected_version=1, author="t", response="Mass attracts mass.")
    run_signals(project)
    run_signals(project)
    with project.connect() as con:
        assert set(pairs_store.frame(con, parse_where("flagged=empty_response"))["pair_id"]) == set()
        n = con.execute("SELECT count(*) FROM quality_signals WHERE name = 'pii'").fetchall()[0][0]
        assert n == 1


def _stored_signals(project) -> pl.DataFrame:
    with project.connect() as con:
        return frame(con, """SELECT revision_id, pair_id, name, version, score, flagged, reason,
                                    details::VARCHAR AS details
                             FROM quality_signals ORDER BY revision_id, name""")


def test_a_project_judged_in_parts_gets_the_signals_it_gets_judged_whole(project):
    """A big project runs in parts (memory holds one part's text); what a detector compares a pair with
    (the recurring responses that make a label, the lengths of its kind) is still measured over the
    whole project, so parts change nothing stored."""
    words = ["tide", "moon", "ocean", "pull", "water", "coast", "wave", "gravity", "earth", "sun"]
    rows = []
    for i in range(300):
        n = 4 + (i * 7) % 23 if i % 50 else 400  # a few responses far longer than the rest
        text = " ".join(words[(i + k) % 10] for k in range(n)) + "."
        if i % 37 == 0:
            text = "Der Mond zieht das Wasser an und die Flut ist nicht mit der Ebbe gleich, sie ist auch hoch."
        if i % 41 == 0:
            text += " Mail jane.doe@fastmail.fm"
        if i % 10 == 3:  # 30 labels, each answered twice: labels only when counted over every part
            text = f"label_{i // 20}"
        rows.append(NewPair(content=PairContent(instruction=f"Question {i}: why do tides happen?", response=text)))
    with project.connect() as con:
        pairs_store.add_pairs(con, rows)
    whole = run_signals(project)
    stored_whole = _stored_signals(project)
    assert stored_whole.filter(pl.col("name") == "length")["flagged"].sum() >= 5
    assert {"length", "language", "pii"} <= set(stored_whole["name"])
    parts = run_signals(project, part_pairs=40)  # 8 parts
    assert parts.to_dicts() == whole.to_dicts(), (parts, whole)
    assert _stored_signals(project).equals(stored_whole)


def test_a_label_set_too_big_for_labels_is_judged_the_same_in_parts(project):
    """600 answers that each recur are more than a label set (``scoring.MAX_LABELS``, 500): chat
    pairs, judged as such whole and in parts, though each part alone holds fewer than 500."""
    rows = [NewPair(content=PairContent(instruction=f"Ticket {i}: which queue takes it?", response=f"queue_{i // 2}"))
            for i in range(1200)]
    rows += [NewPair(content=PairContent(instruction=f"Why did ticket {i} wait?",
                                         response="It waited because the queue was full and nobody picked it up "
                                                  + "for a long time. " * (i % 5 + 1))) for i in range(100)]
    with project.connect() as con:
        pairs_store.add_pairs(con, rows)
    whole = run_signals(project)
    stored_whole = _stored_signals(project)
    parts = run_signals(project, part_pairs=200)  # 7 parts
    assert parts.to_dicts() == whole.to_dicts(), (parts, whole)
    assert _stored_signals(project).equals(stored_whole)
