"""An LLM judge for free-text answers: rubric scores with reasons, and how far people agree with it.

Pointwise: the judge reads the question, the answer, the reference answer (for a prediction) and
the source span the pair came from, and scores four criteria from 1 (worst) to 5 (best), each
with a one-sentence reason:

- ``correct``: the answer says what the reference says (judged from the source when there is no
  reference: a pair's own response is judged against its source);
- ``faithful``: every claim is supported by the source (or the reference when there is no source);
- ``complete``: it covers what the reference (or the source's relevant part) covers;
- ``concise``: no padding, repetition or unrelated text.

The judge is any ``ChatBackend`` (``ingest.generators.model``): the bundled model or an
OpenAI-compatible server. It answers in JSON; a reply that is not JSON is read leniently
(``correct: 4`` lines), and a criterion that cannot be read is stored without a score, with the
reply's start as its reason, never guessed. The rubric's version (``RUBRIC``: a name and a hash
of the prompt) is stored with every score, so a changed prompt never mixes with old scores.

How far to trust it: ``agreement`` compares the judge's overall score of pair responses (the
rounded mean of its criteria) with reviewers' 1-5 ratings of the same revisions
(``store/ratings.py``): quadratic-weighted Cohen's kappa (scikit-learn), exact and within-one
agreement, and n. A small model is a weak judge; the numbers say how weak.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CRITERIA = ("correct", "faithful", "complete", "concise")
MIN_SCORE, MAX_SCORE = 1, 5

SYSTEM = "You are a strict, fair grader of answers. You reply with JSON only."
TEMPLATE = """Grade the ANSWER to the QUESTION.

SOURCE (the passage the answer must be faithful to):
{source}

REFERENCE ANSWER:
{reference}

QUESTION:
{question}

ANSWER:
{answer}

Score each criterion from 1 (worst) to 5 (best), with a one-sentence reason:
- correct: the answer says what the reference answer says (with no reference: what the source supports)
- faithful: every claim in the answer is supported by the source (with no source: by the reference)
- complete: the answer covers everything the reference covers
- concise: no padding, repetition or unrelated text

Reply with JSON only, in this form:
{{"correct": {{"score": 4, "reason": "..."}}, "faithful": {{"score": 5, "reason": "..."}}, "complete": {{"score": 3, "reason": "..."}}, "concise": {{"score": 5, "reason": "..."}}}}"""

RUBRIC = "rubric-1:" + hashlib.sha256((SYSTEM + TEMPLATE).encode()).hexdigest()[:8]
NONE = "(none)"
MAX_FIELD_CHARS = 4000  # each of source, reference, question and answer, cut with a marker


@dataclass(frozen=True)
class Item:
    """One text to judge: a prediction (with its reference) or a pair's response (without one)."""

    target_id: str
    pair_id: str
    question: str
    answer: str
    reference: str = ""
    source: str = ""


@dataclass(frozen=True)
class Score:
    criterion: str
    score: int | None  # None: the judge's reply gave no readable score for it
    reason: str


def _field(text: str) -> str:
    text = (text or "").strip()
    if not text:
        return NONE
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + " [...cut]"


def prompt(item: Item) -> list[dict]:
    """The judge's conversation for one item."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": TEMPLATE.format(source=_field(item.source), reference=_field(item.reference),
                                                        question=_field(item.question), answer=_field(item.answer))}]


def _valid(x: object) -> int | None:
    try:
        v = int(float(str(x).strip()))
    except (TypeError, ValueError):
        return None
    return v if MIN_SCORE <= v <= MAX_SCORE else None


def _json_object(reply: str) -> dict | None:
    """The JSON object in a reply (from its first ``{`` to its last ``}``), else None."""
    start, end = reply.find("{"), reply.rfind("}")
    if start == -1 or end <= start:
        return None
    try:
        data = json.loads(reply[start:end + 1])
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def parse(reply: str) -> list[Score]:
    """The four criteria's scores from a judge's reply: its JSON object (``{"correct": {"score":
    4, "reason": ...}}`` or ``{"correct": 4}``), else ``correct: 4`` lines; a criterion without a
    readable 1-5 score gets None and says why."""
    found: dict[str, tuple[int | None, str]] = {}
    data = _json_object(reply)
    if data is not None:
        for c in CRITERIA:
            v = data.get(c)
            if isinstance(v, dict):
                found[c] = (_valid(v.get("score")), str(v.get("reason") or "").strip())
            elif v is not None:
                found[c] = (_valid(v), "")
    for c in CRITERIA:
        if found.get(c, (None, ""))[0] is None:
            m = re.search(rf"\b{c}\b\W{{0,12}}?([1-5])\b", reply, re.I)
            if m:
                found[c] = (int(m.group(1)), found.get(c, (None, ""))[1])
    snippet = " ".join(reply.split())[:160]
    return [Score(c, found[c][0], found[c][1][:500]) if c in found and found[c][0] is not None
            else Score(c, None, f"no 1-5 score for {c} in the judge's reply: {snippet!r}") for c in CRITERIA]


def judge(backend, items: Sequence[Item], *, batch_size: int = 8, max_new_tokens: int = 256,
          progress: Callable[[int], None] | None = None) -> list[list[Score]]:
    """Score every item (greedy: the same judge gives the same scores); ``progress(n)`` per batch."""
    out: list[list[Score]] = []
    for a in range(0, len(items), max(1, batch_size)):
        batch = items[a:a + batch_size]
        replies = backend.chat([prompt(i) for i in batch], max_new_tokens=max_new_tokens, temperature=0.0)
        out += [parse(r) for r in replies]
        if progress:
            progress(len(batch))
    return out


PAIR_TEMPLATE = """Two answers to the same QUESTION. Which one is better: more correct, more faithful to the
source, more complete, and no longer than it needs to be?

SOURCE:
{source}

REFERENCE ANSWER:
{reference}

QUESTION:
{question}

ANSWER 1:
{first}

ANSWER 2:
{second}

Reply with JSON only: {{"better": "1", "reason": "..."}} with "1", "2" or "tie"."""
PAIR_RUBRIC = "pairwise-1:" + hashlib.sha256((SYSTEM + PAIR_TEMPLATE).encode()).hexdigest()[:8]


def pair_prompt(item: Item, first: str, second: str) -> list[dict]:
    """The judge's conversation comparing two answers to ``item``'s question, ``first`` shown first."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": PAIR_TEMPLATE.format(
                source=_field(item.source), reference=_field(item.reference), question=_field(item.question),
                first=_field(first), second=_field(second))}]


def parse_preference(reply: str) -> tuple[str | None, str]:
    """("1", "2" or "tie" as the judge saw the answers, or None when unreadable; its reason)."""
    data = _json_object(reply)
    if data is not None:
        v = str(data.get("better", "")).strip().lower().removeprefix("answer").strip()
        if v in ("1", "2", "tie"):
            return v, str(data.get("reason") or "").strip()[:500]
    m = re.search(r"\bbetter\W{0,6}(?:answer\s*)?(1|2|tie)\b", reply, re.I) or \
        re.search(r"\banswer\s*(1|2)\s+is\s+better\b", reply, re.I)
    if m:
        return m.group(1).lower(), ""
    return None, f"no verdict (1, 2 or tie) in the judge's reply: {' '.join(reply.split())[:160]!r}"


def combine_orders(first: str | None, second: str | None) -> str | None:
    """One verdict (a, b or tie) from both orders, each already in the runs' terms: the same winner
    both times wins; a disagreement (the judge followed the position, not the answers) is a tie;
    None when either order gave no readable verdict."""
    if first is None or second is None:
        return None
    return first if first == second else "tie"


def overall(scores: Sequence[int | None]) -> int | None:
    """One 1-5 score from the criteria's: the rounded mean of those read (None when none was)."""
    got = [s for s in scores if s is not None]
    return int(round(sum(got) / len(got) + 1e-9)) if got else None


@dataclass(frozen=True)
class Agreement:
    n: int  # revisions scored by both the judge and at least one reviewer
    kappa: float | None  # quadratic-weighted Cohen's kappa; None below 2 items or without variation
    exact: float | None  # share where the judge's overall score equals the rounded mean rating
    within_one: float | None


def agreement(judge_scores: Sequence[int], human_scores: Sequence[float]) -> Agreement:
    """How far the judge agrees with people on the same items (module docstring)."""
    from sklearn.metrics import cohen_kappa_score

    pairs = [(int(j), int(round(h + 1e-9))) for j, h in zip(judge_scores, human_scores, strict=True)]
    n = len(pairs)
    if n == 0:
        return Agreement(0, None, None, None)
    js, hs = [j for j, _ in pairs], [h for _, h in pairs]
    kappa = None
    if n >= 2 and len(set(js) | set(hs)) > 1:
        k = cohen_kappa_score(js, hs, weights="quadratic", labels=list(range(MIN_SCORE, MAX_SCORE + 1)))
        kappa = None if k != k else float(k)  # NaN when one side never varies
    return Agreement(n, kappa, sum(j == h for j, h in pairs) / n, sum(abs(j - h) <= 1 for j, h in pairs) / n)


__all__ = ["CRITERIA", "PAIR_RUBRIC", "RUBRIC", "Agreement", "Item", "Score", "agreement", "combine_orders", "judge",
           "overall", "pair_prompt", "parse", "parse_preference", "prompt"]
