"""Each rule detector on a table of positives and negatives; the text helpers they rest on."""

from __future__ import annotations

import pytest

from analysis.errors.detectors import BY_NAME, Case, DetectorConfig
from scoring import grounding

LABELS = frozenset({"card arrival", "duplicate charge", "top up transfer"})
LONG_REF = "The refund is sent to the card you paid with and usually arrives within five working days."

# (detector, case, expected category or None)
TABLE = [
    ("empty", Case(output=""), "incomplete"),
    ("empty", Case(output="   \n"), "incomplete"),
    ("empty", Case(output="ok"), None),
    ("truncated", Case(output="The answer is that the", finish_reason="length"), "truncated"),
    ("truncated", Case(output="The answer.", finish_reason="stop"), None),
    ("repetition", Case(output="I can help you with that. " * 6), "repetitive"),
    ("repetition", Case(output="the card the card the card the card the card the card the card"), "repetitive"),
    ("repetition", Case(output=LONG_REF), None),
    ("repetition", Case(output="yes yes yes"), None),  # too short to judge
    ("verbosity", Case(output=" ".join(["word"] * 40) + " " + LONG_REF, reference="Five working days."), "verbose"),
    ("verbosity", Case(output=LONG_REF, reference=LONG_REF), None),
    ("verbosity", Case(output="a b c d e f g h i j", reference="a b c"), None),  # not enough extra words
    ("too_short", Case(output="Five days.", reference=LONG_REF), "incomplete"),
    ("too_short", Case(output=LONG_REF, reference=LONG_REF), None),
    ("too_short", Case(output="Five days.", reference=LONG_REF, finish_reason="length"), None),
    ("refusal", Case(output="I'm sorry, but I can't help with that request."), "refusal"),
    ("refusal", Case(output="As an AI language model, I do not have opinions."), "refusal"),
    ("refusal", Case(output="I cannot assist with that."), "refusal"),
    ("refusal", Case(output="I can't help with that.", reference="I can't help with that."), None),
    ("refusal", Case(output="Sorry for the wait: your card ships today."), None),
    ("label_set", Case(output="card_arrival", label_set=LABELS), None),
    ("label_set", Case(output="Card Arrival.", label_set=LABELS), None),
    ("label_set", Case(output="I think it is about your card", label_set=LABELS), "format_violation"),
    ("label_set", Case(output="lost_card", label_set=LABELS), "format_violation"),
    ("label_set", Case(output="anything"), None),  # not a label task
    ("json", Case(output='{"a": 1}', expect_json=True), None),
    ("json", Case(output='```json\n{"a": 1}\n```', expect_json=True), None),
    ("json", Case(output='{"a": 1', expect_json=True), "format_violation"),
    ("json", Case(output="a: 1", expect_json=True), "format_violation"),
    ("json", Case(output="a: 1"), None),
    ("language", Case(output="Le remboursement est envoyé sur la carte que vous avez utilisée pour le paiement.",
                      reference=LONG_REF), "language_mismatch"),
    ("language", Case(output="Die Rückerstattung ist nicht auf der Karte, mit der Sie bezahlt haben.",
                      reference=LONG_REF), "language_mismatch"),
    ("language", Case(output="Возврат отправляется на карту, которой вы платили.", reference=LONG_REF),
     "language_mismatch"),
    ("language", Case(output="It is sent to the card you used for the payment.", reference=LONG_REF), None),
    ("language", Case(output="ok", reference=LONG_REF), None),
    ("off_topic", Case(output="Bananas grow quickly in tropical climates near beaches.",
                       prompt="How long does a refund take?", reference=LONG_REF), "off_topic"),
    ("off_topic", Case(output="Refunds arrive within five working days.", prompt="How long does a refund take?",
                       reference=LONG_REF), None),
    ("metric", Case(output="duplicate_charge", reference="card_arrival", label_set=LABELS), "wrong_label"),
    ("metric", Case(output="card_arrival", reference="card_arrival", label_set=LABELS), None),
    ("metric", Case(output="lost_card", reference="card_arrival", label_set=LABELS), None),  # format, not label
    ("metric", Case(output="Paris is the capital of Italy and Spain.", reference="Rome"), "incorrect"),
    ("metric", Case(output=LONG_REF, reference=LONG_REF), None),
    ("metric", Case(output="It arrives within five working days.", reference="Usually within five working days."),
     None),
    ("grounding", Case(output="The refund takes 30 days and costs 25 euros in fees.",
                       source="Refunds reach your card within five working days. There is no fee."), "hallucination"),
    ("grounding", Case(output="Refunds reach your card within five working days.",
                       source="Refunds reach your card within five working days. There is no fee."), None),
    ("grounding", Case(output="The refund takes 30 days and costs 25 euros."), None),  # no source: no judgement
    ("judge_faithfulness", Case(output="The refund takes 30 days.", judge_faithful=1), "hallucination"),
    ("judge_faithfulness", Case(output="The refund takes 30 days.", judge_faithful=2), "hallucination"),
    ("judge_faithfulness", Case(output="Refunds take five days.", judge_faithful=3), None),
    ("judge_faithfulness", Case(output="Refunds take five days."), None),  # not judged
    ("judge_faithfulness", Case(output="refund", judge_faithful=1, label_set=frozenset({"refund"})), None),
]


@pytest.mark.parametrize(("name", "case", "expected"), TABLE, ids=[f"{t[0]}-{i}" for i, t in enumerate(TABLE)])
def test_detector_table(name, case, expected):
    finding = BY_NAME[name](case, DetectorConfig())
    got = finding.category if finding else None
    assert got == expected, finding
    if finding:
        assert 0 < finding.confidence <= 1 and finding.evidence


def test_every_detector_is_in_the_table_both_ways():
    pos = {t[0] for t in TABLE if t[2]}
    neg = {t[0] for t in TABLE if not t[2]}
    assert set(BY_NAME) <= pos and set(BY_NAME) <= neg


def test_grounding_counts_numbers_double_and_lists_unsupported_words():
    g = grounding.score("Refunds take 30 days", "Refunds take five working days")
    # content words: refunds, take, 30 (x2), days -> 3 of 5 supported
    assert g.score == pytest.approx(3 / 5)
    assert g.unsupported == ["30"]


