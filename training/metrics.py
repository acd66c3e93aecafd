"""Metrics of predictions against references. Pure: lists of strings in, numbers out.

- Exact match compares stripped text; normalised exact match and token F1 follow SQuAD
  (lowercase, drop punctuation and the articles a/an/the, collapse whitespace).
- ROUGE-L (F-measure, ``rouge-score`` with stemming) is averaged over pairs; BLEU is corpus BLEU
  from ``sacrebleu`` (0-100).
- A slice is *label-like* when its references are short (at most 6 words) and repeat
  (distinct values at most half the pairs, at most 200 of them). Then predictions are matched
  to labels case-insensitively, ignoring surrounding punctuation and spacing
  (``normalize_label``); anything else counts as ``<other>``, and we report accuracy,
  per-label precision/recall/F1/support, macro F1 and the confusion matrix.
- Rows come out as (scope, name, value) for ``store.runs.save_metrics``: scope ``overall``,
  ``label:<label>`` and ``confusion:<true label>`` (name = predicted label, value = count).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

OTHER = "<other>"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = (text or "").lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(pred: str, ref: str) -> float:
    return float((pred or "").strip() == (ref or "").strip())


def normalized_exact_match(pred: str, ref: str) -> float:
    return float(normalize(pred) == normalize(ref))


def token_f1(pred: str, ref: str) -> float:
    p, r = normalize(pred).split(), normalize(ref).split()
    if not p and not r:
        return 1.0
    if not p or not r:
        return 0.0
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def rouge_l(preds: Sequence[str], refs: Sequence[str]) -> float:
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    vals = [sc.score(r or "", p or "")["rougeL"].fmeasure for p, r in zip(preds, refs)]
    return sum(vals) / len(vals) if vals else 0.0


def bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    import sacrebleu

    if not preds:
        return 0.0
    return float(sacrebleu.corpus_bleu(list(preds), [list(refs)]).score)


def is_label_like(refs: Sequence[str]) -> bool:
    if len(refs) < 2:
        return False
    norm = [normalize_label(r) for r in refs]
    if any(not r or len(r.split()) > 6 for r in norm):
        return False
    distinct = len(set(norm))
    return distinct <= max(2, len(norm) // 2) and distinct <= 200


def normalize_label(text: str) -> str:
    """Labels compare case-insensitively, ignoring surrounding quotes/punctuation and spacing."""
    return " ".join((text or "").strip().strip(string.punctuation.replace("_", "") + " \n\t").lower().split())


def label_metrics(preds: Sequence[str], refs: Sequence[str]) -> dict:
    """Accuracy, per-label P/R/F1/support and the confusion matrix (labels as the references spell them)."""
    canon: dict[str, str] = {}
    for r in refs:
        canon.setdefault(normalize_label(r), r.strip())
    gold = [canon[normalize_label(r)] for r in refs]
    labels = sorted(set(gold))
    pred = [canon.get(normalize_label(x), OTHER) for x in preds]
    confusion: dict[str, Counter] = {lab: Counter() for lab in labels}
    for g, p in zip(gold, pred):
        confusion[g][p] += 1
    per: dict[str, dict[str, float]] = {}
    for lab in labels:
        tp = confusion[lab][lab]
        fp = sum(confusion[g][lab] for g in labels if g != lab)
        fn = sum(confusion[lab].values()) - tp
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": float(tp + fn)}
    acc = sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0
    macro = sum(v["f1"] for v in per.values()) / len(per) if per else 0.0
    return {"accuracy": acc, "macro_f1": macro, "per_label": per,
            "confusion": {g: dict(c) for g, c in confusion.items()}, "other_rate": pred.count(OTHER) / max(1, len(pred))}


def compute(preds: Sequence[str], refs: Sequence[str], *, finish_reasons: Sequence[str] = (),
            n_output_tokens: Sequence[int] = (), ref_nll: float | None = None) -> list[tuple[str, str, float]]:
    """All metrics as (scope, name, value) rows."""
    n = len(preds)
    rows: list[tuple[str, str, float]] = [("overall", "n", float(n))]
    if n:
        rows += [
            ("overall", "exact_match", sum(map(exact_match, preds, refs)) / n),
            ("overall", "normalized_exact_match", sum(map(normalized_exact_match, preds, refs)) / n),
            ("overall", "token_f1", sum(map(token_f1, preds, refs)) / n),
            ("overall", "rouge_l", rouge_l(preds, refs)),
            ("overall", "bleu", bleu(preds, refs)),
        ]
    if finish_reasons:
        rows.append(("overall", "length_finish_rate", sum(f == "length" for f in finish_reasons) / len(finish_reasons)))
    if n_output_tokens:
        rows.append(("overall", "mean_output_tokens", sum(n_output_tokens) / len(n_output_tokens)))
    if ref_nll is not None and math.isfinite(ref_nll):
        rows += [("overall", "reference_nll", ref_nll), ("overall", "perplexity", math.exp(min(ref_nll, 50.0)))]
    if is_label_like(refs):
        lm = label_metrics(preds, refs)
        rows += [("overall", "accuracy", lm["accuracy"]), ("overall", "macro_f1", lm["macro_f1"]),
                 ("overall", "other_rate", lm["other_rate"]), ("overall", "label_like", 1.0)]
        for lab, v in lm["per_label"].items():
            rows += [(f"label:{lab}", k, x) for k, x in v.items()]
        for g, row in lm["confusion"].items():
            rows += [(f"confusion:{g}", p, float(c)) for p, c in row.items()]
    return rows
