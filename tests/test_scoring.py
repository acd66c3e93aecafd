"""One implementation of every score (scoring/): the exact values, the task-kind rule, the language
guess, and that no second implementation exists anywhere in the code."""

from __future__ import annotations

import math
import re
from pathlib import Path

import polars as pl
import pytest

import scoring as S
from analysis import language

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("pred", "ref", "em", "nem", "f1"), [
    ("Paris", "Paris", 1.0, 1.0, 1.0),
    ("paris.", "Paris", 0.0, 1.0, 1.0),
    ("The cat sat", "a cat sat", 0.0, 1.0, 1.0),  # SQuAD: articles do not count
    ("the cat sat", "a cat sat", 0.0, 1.0, 1.0),  # the case: was 1.0 in training, 0.667 in analysis
    ("cat on mat", "the cat sat on the mat", 0.0, 0.0, 2 * (1.0 * 0.75) / 1.75),
    ("cat sat on mat", "cat sat", 0.0, 0.0, 2 * (0.5 * 1.0) / 1.5),
    ("", "x", 0.0, 0.0, 0.0),
    ("", "", 1.0, 1.0, 1.0),
    ("Le café, s'il vous plaît", "le café s il vous plaît", 0.0, 1.0, 1.0),
])
def test_text_scores(pred, ref, em, nem, f1):
    assert S.exact_match(pred, ref) == em
    assert S.normalized_exact_match(pred, ref) == nem
    assert S.token_f1(pred, ref) == pytest.approx(f1)


def test_rouge_l_is_the_library_lcs_with_unicode_words():
    from rouge_score import rouge_scorer

    lib = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for pred, ref in [("the cats sat on a mat", "a cat sat on the mats"), ("a b c d", "a x c d"),
                      ("Refunds arrive within five working days.", "Usually within five working days.")]:
        assert S.rouge_l(pred, ref) == pytest.approx(lib.score(ref, pred)["rougeL"].fmeasure)
    assert S.rouge_l("", "") == 1.0
    # the library's own tokenizer drops every non-ASCII word; ours scores them
    assert S.rouge_l("привет мир", "привет мир") == pytest.approx(1.0)
    assert S.rouge_l("привет мир", "пока мир") == pytest.approx(0.5)


def test_bleu_is_sacrebleu():
    assert S.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert S.bleu([], []) == 0.0


@pytest.mark.parametrize(("a", "b"), [
    ("card_arrival", "card arrival"), ("card_arrival", "Card Arrival."), ("card_arrival", '"card-arrival"'),
    ("card_arrival", "card_arrival\nbecause the card is late"),
])
def test_labels_compare_by_normal_form(a, b):
    assert S.normalize_label(a) == S.normalize_label(b)


def test_label_spelling_variants_score_the_same_everywhere():
    """Issue 11, defect 1: the run's stored accuracy was 0.5 and the errors path said 1.0."""
    refs = ["card_arrival", "card_arrival", "duplicate_charge", "duplicate_charge"]
    outs = ["card arrival", "card_arrival", "duplicate charge", "duplicate_charge"]
    task = S.task_of_predictions(refs)
    assert task.is_label
    rows = {(s, n): v for s, n, v in S.metric_rows(outs, refs, task)}
    assert rows[("overall", "accuracy")] == 1.0
    assert all(x.correct for x in S.score_all(outs, refs, task))
    assert rows[("confusion:card_arrival", "card_arrival")] == 2.0


def test_label_report_uses_reference_spellings_and_other():
    refs = ["card_lost", "card_lost", "refund", "refund", "refund", "top_up"]
    preds = ["card_lost", "refund", "refund", "refund", "nonsense", "top_up"]
    task = S.task_of(refs)
    lr = S.label_report(preds, refs, task)
    assert lr.accuracy == pytest.approx(4 / 6)
    assert lr.per_label["card_lost"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2.0})
    assert lr.per_label["refund"]["precision"] == pytest.approx(2 / 3)
    assert lr.confusion["refund"] == {"refund": 2, S.OTHER: 1}
    rows = S.metric_rows(preds, refs, task, finish_reasons=["stop"] * 5 + ["length"], n_output_tokens=[2] * 6,
                         ref_nll=1.0)
    got = {(s, n): v for s, n, v in rows}
    assert got[("overall", "accuracy")] == pytest.approx(4 / 6)
    assert got[("overall", "perplexity")] == pytest.approx(math.e)
    assert got[("overall", "length_finish_rate")] == pytest.approx(1 / 6)
    assert got[("confusion:card_lost", "refund")] == 1.0
    assert got[("overall", "other_rate")] == pytest.approx(1 / 6)


def test_free_text_accuracy_is_stored_too():
    refs = ["Refunds take five working days.", "The office opens at nine.", "Call the helpdesk first."]
    outs = ["Refunds take five working days", "It is closed on Sundays.", "Call the helpdesk first, then IT."]
    task = S.task_of_predictions(refs)
    assert not task.is_label
    got = {(s, n): v for s, n, v in S.metric_rows(outs, refs, task)}
    assert got[("overall", "accuracy")] == pytest.approx(2 / 3)
    assert got[("overall", "label_like")] == 0.0


@pytest.mark.parametrize(("refs", "kind"), [
    (["card_arrival", "balance_not_updated_after_cheque_or_cash_deposit"] * 3, "label"),  # identifiers: one word each
    (["yes", "no", "yes", "no"], "label"),
    (["The card arrives within five working days of the order.", "Rates update every hour on weekdays."] * 3, "text"),
    ([f"answer {i}" for i in range(10)], "text"),  # every reference different: not a label set
    (['{"a": 1}', '{"a": 2}', '{"a": 1}', '{"a": 2}'], "text"),  # JSON is structured output, not a label
    (["only one"], "text"),
    ([], "text"),
])
def test_task_kind(refs, kind):
    assert S.task_of(refs).kind == kind


def test_task_kind_is_read_from_the_slice_not_the_eval_split():
    """An eval split of 6 rows with 5 labels looks like free text on its own; the slice decides."""
    slice_refs = [f"label_{i % 5}" for i in range(60)]
    eval_refs = ["label_0", "label_1", "label_2", "label_3", "label_4", "label_0"]
    assert S.task_of(eval_refs).kind == "text"
    assert S.task_of_predictions(eval_refs, slice_refs).is_label
    with pytest.raises(ValueError, match="task kind"):
        S.task_of(eval_refs, "labels")


@pytest.mark.parametrize(("s", "lang"), [
    ("the card is on the way and you can track it in the app", "en"),
    ("la carte est en route et vous pouvez la suivre dans l'application", "fr"),
    ("la tarjeta está en camino y puede seguirla en la aplicación con su número", "es"),
    ("de kaart is onderweg en je kunt het volgen in de app", "nl"),
    ("カードは発送されました。アプリで追跡できます。", "Jpan"),
    ("Возврат отправляется на карту, которой вы платили.", "Cyrl"),
    ("ok", None),
    ("", None),
    ("12 * 3 = 36", None),
])
def test_one_language_guess(s, lang):
    assert language.guess_language(s) == lang
    # the vectorised form (quality signals) is the same guess
    assert pl.select(language.guess_expr(pl.lit(s))).item() == lang


# Concepts that must have exactly one definition in the product code (STYLE.md 16).
ONE_DEFINITION = ["normalize_text", "normalize_label", "token_f1", "rouge_l", "bleu", "exact_match",
                  "guess_language", "task_of", "is_label_like", "infer_task", "label_metrics", "_lcs"]


def test_every_score_has_one_implementation():
    defs: dict[str, list[str]] = {name: [] for name in ONE_DEFINITION}
    for pkg in ("store", "scoring", "ingest", "training", "analysis", "models", "workflows", "app", "tuneloop"):
        for f in (ROOT / pkg).rglob("*.py"):
            for m in re.finditer(r"^\s*def (\w+)\(", f.read_text(encoding="utf-8"), re.M):
                if m.group(1) in defs:
                    defs[m.group(1)].append(str(f.relative_to(ROOT)))
    where = {k: v for k, v in defs.items() if len(v) > 1}
    assert not where, f"defined more than once: {where}"
    assert defs["token_f1"] == ["scoring/__init__.py"] and defs["normalize_text"] == ["scoring/__init__.py"]
    assert "rouge_score" not in (ROOT / "analysis").joinpath("errors", "text.py").read_text(encoding="utf-8")
