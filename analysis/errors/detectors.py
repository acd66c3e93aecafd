"""Named, versioned rule detectors: one prediction in, zero or one finding out.

Each detector is a pure function of a ``Case`` (the prediction with its reference, prompt,
finish reason, the task's label set and the source text) and a ``DetectorConfig``. A
finding names the category it proposes, a confidence in [0, 1] and human-readable evidence.
The detector's ``name@version`` is stored with every label it writes, so changing a rule
means bumping its version: old labels keep saying which rule produced them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from pydantic import BaseModel, ConfigDict

import scoring
from analysis import language as lang
from analysis.errors import text
from scoring import grounding


class DetectorConfig(BaseModel):
    """Thresholds of the rule detectors and the metric-based checks (defaults in code)."""

    model_config = ConfigDict(extra="forbid")

    repetition_n: int = 3
    repetition_min_tokens: int = 12
    repetition_ratio: float = 0.3  # share of n-grams that repeat an earlier one
    verbose_ratio: float = 3.0  # output tokens > ratio * reference tokens ...
    verbose_min_extra: int = 20  # ... and at least this many tokens more
    short_ratio: float = 0.3  # output tokens < ratio * reference tokens -> incomplete
    short_min_reference: int = 10
    f1_threshold: float = 0.5  # free text: token F1 below this (and ROUGE-L too) is incorrect
    rouge_threshold: float = 0.5
    grounding_threshold: float = 0.6  # share of content words the source supports
    grounding_min_words: int = 4
    off_topic_max_overlap: float = 0.0
    off_topic_min_words: int = 5
    language_min_words: int = 4
    judge_faithful_max: int = 2  # an LLM judge's faithfulness score (1-5) at or below this -> hallucination

    def thresholds(self) -> scoring.Thresholds:
        return scoring.Thresholds(f1=self.f1_threshold, rouge_l=self.rouge_threshold)


@dataclass(frozen=True)
class Case:
    output: str
    reference: str = ""
    prompt: str = ""
    finish_reason: str = "stop"
    source: str = ""  # source span text (document span, else the pair's input); "" = none
    label_set: frozenset[str] | None = None  # normalised labels when the task is label-like
    expect_json: bool = False
    judge_faithful: int | None = None  # an LLM judge's faithfulness score, 1-5 (analysis/judge.py); None: not judged


@dataclass(frozen=True)
class Finding:
    category: str
    confidence: float
    evidence: str


@dataclass(frozen=True)
class Detector:
    name: str
    version: int
    category: str
    fn: Callable[[Case, DetectorConfig], Finding | None] = field(repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def __call__(self, case: Case, cfg: DetectorConfig | None = None) -> Finding | None:
        return self.fn(case, cfg or DetectorConfig())


def _clip(x: float) -> float:
    return round(max(0.0, min(1.0, x)), 4)


def empty(c: Case, cfg: DetectorConfig) -> Finding | None:
    if c.output.strip():
        return None
    return Finding("incomplete", 1.0, "empty output")


def truncated(c: Case, cfg: DetectorConfig) -> Finding | None:
    if c.finish_reason != "length":
        return None
    tail = c.output[-60:].replace("\n", " ")
    return Finding("truncated", 1.0, f"stopped at the max-token limit (finish_reason=length); ends with ...{tail!r}")


def repetition_ratio(tokens: list[str], n: int) -> tuple[float, str]:
    """Share of n-grams that repeat an earlier n-gram, and the most repeated one."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0, ""
    counts = Counter(grams)
    repeats = len(grams) - len(counts)
    top, k = counts.most_common(1)[0]
    return repeats / len(grams), f"{' '.join(top)!r} x{k}"


def repetitive(c: Case, cfg: DetectorConfig) -> Finding | None:
    toks = scoring.tokens(c.output)
    if len(toks) < cfg.repetition_min_tokens:
        return None
    ratio, top = repetition_ratio(toks, cfg.repetition_n)
    ref_ratio, _ = repetition_ratio(scoring.tokens(c.reference), cfg.repetition_n)
    if ratio < cfg.repetition_ratio or ratio <= ref_ratio + 0.1:
        return None
    return Finding("repetitive", _clip(0.5 + ratio / 2), f"{ratio:.0%} of {cfg.repetition_n}-grams repeat; top {top}")


def verbose(c: Case, cfg: DetectorConfig) -> Finding | None:
    n_out, n_ref = len(scoring.tokens(c.output)), len(scoring.tokens(c.reference))
    if not c.reference.strip() or n_out <= cfg.verbose_ratio * n_ref or n_out - n_ref < cfg.verbose_min_extra:
        return None
    ratio = n_out / max(n_ref, 1)
    return Finding("verbose", _clip(0.5 + (ratio - cfg.verbose_ratio) / (4 * cfg.verbose_ratio)),
                   f"{n_out} words vs {n_ref} in the reference ({ratio:.1f}x)")


def too_short(c: Case, cfg: DetectorConfig) -> Finding | None:
    n_out, n_ref = len(scoring.tokens(c.output)), len(scoring.tokens(c.reference))
    if not c.output.strip() or n_ref < cfg.short_min_reference or n_out >= cfg.short_ratio * n_ref:
        return None
    if c.finish_reason == "length":
        return None  # the truncation detector explains it
    return Finding("incomplete", _clip(1 - n_out / (cfg.short_ratio * n_ref) / 2),
                   f"{n_out} words vs {n_ref} in the reference")


REFUSAL_PATTERNS = [
    r"\bi(?: am|'m) (?:sorry|afraid)\b.{0,40}\b(?:can(?:no|')t|unable|not able)\b",
    r"\bi can(?:no|')t (?:help|assist|answer|provide|do that|comply)\b",
    r"\bi(?: am|'m) (?:unable|not able) to\b",
    r"\bas an ai(?: language model)?\b",
    r"\bi (?:do not|don't) have (?:access|the ability|enough information)\b",
    r"\bi (?:won't|will not) (?:help|assist|provide)\b",
    r"\bi must decline\b",
]
_REFUSAL_RE = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE | re.DOTALL)


def refusal(c: Case, cfg: DetectorConfig) -> Finding | None:
    m = _REFUSAL_RE.search(c.output[:400])
    if not m or _REFUSAL_RE.search(c.reference[:400]):
        return None
    return Finding("refusal", 0.9, f"refusal phrase {m.group(0)!r}")


def label_format(c: Case, cfg: DetectorConfig) -> Finding | None:
    if not c.label_set:
        return None
    norm = scoring.normalize_label(c.output)
    if norm in c.label_set:
        return None
    return Finding("format_violation", 1.0 if norm else 0.6,
                   f"{c.output.strip()[:80]!r} is not one of the {len(c.label_set)} labels")


def json_format(c: Case, cfg: DetectorConfig) -> Finding | None:
    if not c.expect_json:
        return None
    try:
        orjson.loads(scoring.strip_code_fence(c.output))
    except orjson.JSONDecodeError as exc:
        return Finding("format_violation", 1.0, f"invalid JSON where the reference is JSON: {str(exc)[:80]}")
    return None


def language(c: Case, cfg: DetectorConfig) -> Finding | None:
    want_text = c.reference if len(scoring.tokens(c.reference)) >= cfg.language_min_words else c.prompt
    if len(scoring.tokens(c.output)) < cfg.language_min_words or len(scoring.tokens(want_text)) < cfg.language_min_words:
        return None
    got, want = lang.guess_language(c.output), lang.guess_language(want_text)
    if got is None or want is None or got == want:
        return None
    return Finding("language_mismatch", 0.8, f"output looks {lang.describe(got)}, expected {lang.describe(want)}")


def off_topic(c: Case, cfg: DetectorConfig) -> Finding | None:
    if c.label_set:
        return None
    out = set(text.content_words(c.output))
    ctx = set(text.content_words(c.prompt)) | set(text.content_words(c.reference)) | set(text.content_words(c.source))
    if len(out) < cfg.off_topic_min_words or not ctx:
        return None
    overlap = len(out & ctx) / len(out)
    if overlap > cfg.off_topic_max_overlap:
        return None
    return Finding("off_topic", 0.6, f"none of {len(out)} content words appear in the prompt, reference or source")


def incorrect(c: Case, cfg: DetectorConfig) -> Finding | None:
    """Metric-based: the wrong label for label-like tasks, else token F1 and ROUGE-L below threshold."""
    if not c.reference.strip():
        return None
    if c.label_set:
        out, ref = scoring.normalize_label(c.output), scoring.normalize_label(c.reference)
        if out == ref or out not in c.label_set:
            return None  # right, or outside the label set (format_violation says so)
        return Finding("wrong_label", 1.0, f"predicted {out!r}, reference {ref!r}")
    s = scoring.score(c.output, c.reference, scoring.Task("text"), cfg.thresholds())
    if s.correct:
        return None
    return Finding("incorrect", _clip(1 - max(s.f1, s.rouge_l)),
                   f"token F1 {s.f1:.2f}, ROUGE-L {s.rouge_l:.2f} vs the reference")


def hallucination(c: Case, cfg: DetectorConfig) -> Finding | None:
    if not c.source.strip() or c.label_set:
        return None
    g = grounding.score(c.output, c.source)
    if g.n_words < cfg.grounding_min_words or g.score >= cfg.grounding_threshold:
        return None
    return Finding("hallucination", _clip(1 - g.score),
                   f"grounding {g.score:.2f}: not in the source: {', '.join(g.unsupported[:8])}")


def judged_unfaithful(c: Case, cfg: DetectorConfig) -> Finding | None:
    if c.judge_faithful is None or c.judge_faithful > cfg.judge_faithful_max or c.label_set:
        return None
    return Finding("hallucination", _clip((cfg.judge_faithful_max + 1 - c.judge_faithful) / cfg.judge_faithful_max),
                   f"an LLM judge scored its faithfulness to the source {c.judge_faithful}/5")


DETECTORS: list[Detector] = [
    Detector("empty", 1, "incomplete", empty),
    Detector("truncated", 1, "truncated", truncated),
    Detector("repetition", 1, "repetitive", repetitive),
    Detector("verbosity", 1, "verbose", verbose),
    Detector("too_short", 1, "incomplete", too_short),
    Detector("refusal", 1, "refusal", refusal),
    Detector("label_set", 1, "format_violation", label_format),
    Detector("json", 1, "format_violation", json_format),
    Detector("language", 2, "language_mismatch", language),
    Detector("off_topic", 1, "off_topic", off_topic),
    Detector("metric", 2, "incorrect", incorrect),
    Detector("grounding", 1, "hallucination", hallucination),
    Detector("judge_faithfulness", 1, "hallucination", judged_unfaithful),
]

BY_NAME = {d.name: d for d in DETECTORS}
