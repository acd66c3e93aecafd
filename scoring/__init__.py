"""Every score of a prediction against its reference, in one place. Pure: strings in, numbers out.

Training (the metrics a run stores), error analysis (categories, accuracy, confusion,
compare, reports), the CLI and the app all import these functions; none of them scores
on its own, so one prediction set has one accuracy wherever it is shown.

- **Text normal form** (``normalize_text``): Unicode NFKC, lower case, every run of
  punctuation, symbols and whitespace (``_`` and ``-`` included) -> one space, trimmed.
  Curation (dedupe, signals) uses the same form.
- **Answer tokens** follow SQuAD: the normal form's words without the articles a/an/the.
  Normalised exact match and token F1 compare answer tokens ("the cat sat" == "a cat sat").
- **ROUGE-L** is the ``rouge-score`` library's LCS F-measure with Porter stemming; its tokenizer
  is given Unicode-aware words, so non-Latin text is scored instead of dropped (the
  library's own tokenizer keeps ``[a-z0-9]`` only). **BLEU** is corpus BLEU from ``sacrebleu``.
- **Labels** compare by the normal form of their first line, so ``card_arrival``,
  ``Card arrival.`` and ``"card-arrival"`` are one label; an output outside the label set is
  ``OTHER``. Per-label precision/recall/F1 and the confusion matrix are scikit-learn's.
- **Task kind** (``task_of``): a prediction set is a *label* task when its references are
  single-line, at most ``LABEL_MAX_WORDS`` words as written (an identifier such as
  ``balance_not_updated_after_cheque_or_cash_deposit`` is one word), not JSON, and repeat
  (at most half as many distinct labels as references, at most ``MAX_LABELS``). The
  references are those of the prediction set's whole slice (train and eval), so the eval
  split alone cannot flip the decision.
- **Correct**: a label task's prediction is correct when its label equals the reference's; a
  free-text prediction when it matches exactly after normalisation, or its token F1 or
  ROUGE-L reaches ``Thresholds``. ``accuracy`` is the share of correct predictions, for
  both kinds.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

OTHER = "(other)"
LABEL_MAX_WORDS = 6
MAX_LABELS = 500
ROUGE_MAX_TOKENS = 512  # ROUGE-L is O(n*m); longer texts are scored on their first tokens
_ARTICLES = frozenset(("a", "an", "the"))


# ------------------------------------------------------------------------------ text


def normalize_text(text: str | None) -> str:
    """NFKC, lower case, anything but letters/digits/combining marks -> one space, trimmed."""
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = "".join(c if unicodedata.category(c)[0] in "LNM" else " " for c in t)
    return " ".join(t.split())


def tokens(text: str | None) -> list[str]:
    """The words of the normal form."""
    return normalize_text(text).split()


def answer_tokens(text: str | None) -> list[str]:
    """SQuAD answer tokens: the normal form's words without articles."""
    return [t for t in tokens(text) if t not in _ARTICLES]


def normalize_answer(text: str | None) -> str:
    return " ".join(answer_tokens(text))


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the texts are equal after stripping surrounding whitespace."""
    return float((pred or "").strip() == (ref or "").strip())


def normalized_exact_match(pred: str, ref: str) -> float:
    return float(answer_tokens(pred) == answer_tokens(ref))


def token_f1(pred: str, ref: str) -> float:
    """SQuAD token F1 over answer tokens (1.0 when both are empty)."""
    p, r = answer_tokens(pred), answer_tokens(ref)
    if not p and not r:
        return 1.0
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


class _RougeTokenizer:
    """rouge-score's tokenizer contract (``tokenize(text) -> list[str]``) over Unicode words, with
    the library's Porter stemming of tokens longer than three characters (as its own does)."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        toks = tokens(text)[:ROUGE_MAX_TOKENS]
        return [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in toks]


@cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_RougeTokenizer())


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure of one prediction (1.0 when both have no words)."""
    if not tokens(pred) and not tokens(ref):
        return 1.0
    return float(_rouge_scorer().score(ref or "", pred or "")["rougeL"].fmeasure)


def bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (0-100) from sacrebleu; 0.0 for an empty set."""
    import sacrebleu

    if not preds:
        return 0.0
    return float(sacrebleu.corpus_bleu([p or "" for p in preds], [[r or "" for r in refs]]).score)


def strip_code_fence(s: str) -> str:
    m = re.match(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", s or "", re.DOTALL)
    return m.group(1) if m else (s or "").strip()


def looks_like_json(s: str) -> bool:
    t = strip_code_fence(s)
    return (t.startswith("{") and t.endswith("}")) or (t.startswith("[") and t.endswith("]"))


# ------------------------------------------------------------------------------ labels and task kind


def normalize_label(text: str | None) -> str:
    """A label's comparable form: the normal form of its first non-empty line."""
    s = (text or "").strip()
    return normalize_text(s.splitlines()[0] if s else "")


@dataclass(frozen=True)
class Task:
    kind: str  # "label" or "text"
    labels: frozenset[str] = frozenset()  # normalised labels of a label task
    expect_json: bool = False  # free text whose references are JSON
    spelling: tuple[tuple[str, str], ...] = ()  # (normalised, as the references spell it), label tasks

    @property
    def is_label(self) -> bool:
        return self.kind == "label"

    def canonical(self, text: str | None) -> str:
        """The label as the references spell it, or ``OTHER`` when it is not one of the labels."""
        n = normalize_label(text)
        return dict(self.spelling).get(n, OTHER)


TASK_KINDS = ("auto", "label", "text")


def task_of(references: Iterable[str], kind: str = "auto", *, also: Iterable[str] = ()) -> Task:
    """The task kind read from references (see the module docstring). ``kind`` forces it;
    ``also``: more references (e.g. the prediction set's own) whose labels join the label set."""
    if kind not in TASK_KINDS:
        raise ValueError(f"task kind must be one of {', '.join(TASK_KINDS)}, not {kind!r}")
    refs = [r.strip() for r in references if r and r.strip()]
    expect_json = bool(refs) and sum(looks_like_json(r) for r in refs) >= 0.8 * len(refs)
    if kind == "text" or not refs:
        return Task("text", expect_json=expect_json)
    spelling: dict[str, str] = {}
    for r in [*refs, *(x.strip() for x in also if x and x.strip())]:
        spelling.setdefault(normalize_label(r), r.splitlines()[0].strip())
    short = all(len(r.split()) <= LABEL_MAX_WORDS and "\n" not in r for r in refs)
    distinct = len({normalize_label(r) for r in refs})
    label_like = (len(refs) >= 2 and short and not expect_json and distinct <= max(2, len(refs) // 2)
                  and distinct <= MAX_LABELS)
    if kind == "label" or label_like:
        spelling.pop("", None)
        return Task("label", frozenset(spelling), False, tuple(sorted(spelling.items())))
    return Task("text", expect_json=expect_json)


def task_of_predictions(references: Sequence[str], slice_references: Sequence[str] = (), kind: str = "auto") -> Task:
    """The task of a prediction set: read from the references of its slice (all splits) when it
    has one, else from the set's own references; the set's references join a label task's set.
    Training (the metrics a run stores) and error analysis both decide through this function."""
    return task_of(slice_references or references, kind, also=references)


# ------------------------------------------------------------------------------ per prediction


@dataclass(frozen=True)
class Thresholds:
    """Free text counts as correct at or above either threshold (or on a normalised exact match)."""

    f1: float = 0.5
    rouge_l: float = 0.5


@dataclass(frozen=True)
class Score:
    em: float  # normalised exact match
    f1: float
    rouge_l: float
    correct: bool


def score(pred: str, ref: str, task: Task, th: Thresholds = Thresholds()) -> Score:
    em, f1, rl = normalized_exact_match(pred, ref), token_f1(pred, ref), rouge_l(pred, ref)
    if task.is_label:
        return Score(em, f1, rl, normalize_label(pred) == normalize_label(ref))
    return Score(em, f1, rl, bool(em) or f1 >= th.f1 or rl >= th.rouge_l)


def score_all(preds: Sequence[str], refs: Sequence[str], task: Task, th: Thresholds = Thresholds()) -> list[Score]:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    return [score(p or "", r or "", task, th) for p, r in zip(preds, refs)]


# ------------------------------------------------------------------------------ per prediction set


@dataclass
class LabelReport:
    labels: list[str]  # as the references spell them, sorted
    accuracy: float
    macro_f1: float
    other_rate: float
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)  # precision, recall, f1, support
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # true -> predicted -> count


def label_report(preds: Sequence[str], refs: Sequence[str], task: Task) -> LabelReport:
    """Accuracy, per-label P/R/F1/support (scikit-learn) and the confusion matrix of a label task.
    Per-label rows cover the labels among the references; predicted labels outside them still
    count as wrong for the reference (and as false positives of nothing)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    gold = [task.canonical(r) for r in refs]
    pred = [task.canonical(p) for p in preds]
    labels = sorted({g for g in gold if g != OTHER})
    if not gold:
        return LabelReport(labels, 0.0, 0.0, 0.0)
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    per = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": float(s[i])}
           for i, lab in enumerate(labels)}
    cols = sorted(set(pred) | set(labels))
    cm = confusion_matrix(gold, pred, labels=cols)
    conf = {lab: {cols[j]: int(cm[i, j]) for j in range(len(cols)) if cm[i, j]} for i, lab in enumerate(cols)
            if lab in labels}
    acc = sum(g == q for g, q in zip(gold, pred)) / len(gold)
    macro = float(sum(x["f1"] for x in per.values()) / len(per)) if per else 0.0
    return LabelReport(labels, acc, macro, pred.count(OTHER) / len(pred), per, conf)


def metric_rows(preds: Sequence[str], refs: Sequence[str], task: Task, *, finish_reasons: Sequence[str] = (),
                n_output_tokens: Sequence[int] = (), ref_nll: float | None = None,
                th: Thresholds = Thresholds()) -> list[tuple[str, str, float]]:
    """The metrics a prediction set stores, as (scope, name, value) rows for ``store.runs.save_metrics``:
    scope ``overall``; ``label:<label>`` (precision, recall, f1, support) and ``confusion:<true label>``
    (name = predicted label, value = count) for label tasks. ``accuracy`` is the share of correct
    predictions (see ``score``) for every task kind."""
    n = len(preds)
    rows: list[tuple[str, str, float]] = [("overall", "n", float(n)), ("overall", "label_like", float(task.is_label))]
    if n:
        sc = score_all(preds, refs, task, th)
        rows += [
            ("overall", "accuracy", sum(s.correct for s in sc) / n),
            ("overall", "exact_match", sum(map(exact_match, preds, refs)) / n),
            ("overall", "normalized_exact_match", sum(s.em for s in sc) / n),
            ("overall", "token_f1", sum(s.f1 for s in sc) / n),
            ("overall", "rouge_l", sum(s.rouge_l for s in sc) / n),
            ("overall", "bleu", bleu(preds, refs)),
        ]
    if finish_reasons:
        rows.append(("overall", "length_finish_rate", sum(f == "length" for f in finish_reasons) / len(finish_reasons)))
    if n_output_tokens:
        rows.append(("overall", "mean_output_tokens", sum(n_output_tokens) / len(n_output_tokens)))
    if ref_nll is not None and math.isfinite(ref_nll):
        rows += [("overall", "reference_nll", ref_nll), ("overall", "perplexity", math.exp(min(ref_nll, 50.0)))]
    if task.is_label and n:
        lr = label_report(preds, refs, task)
        rows += [("overall", "macro_f1", lr.macro_f1), ("overall", "other_rate", lr.other_rate)]
        for lab, v in lr.per_label.items():
            rows += [(f"label:{lab}", k, x) for k, x in v.items()]
        for g, row in lr.confusion.items():
            rows += [(f"confusion:{g}", q, float(c)) for q, c in row.items()]
    return rows
