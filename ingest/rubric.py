"""An automatic usability rubric for one instruction/response pair (pure; issue 15's measure).

Five checks, each a bool on ``Rubric``; ``passed`` is all five, ``reasons`` names the failed ones
("check: why"), in the order below.

- ``is_question``: the instruction asks something: it ends with "?" and has two words or more, or
  it is a request that starts with a verb such as "Write", "Describe", "Summarise", "List"
  (the ``email`` generator's "Write the e-mail ..." is one).
- ``names_subject``: the instruction has a content word (``scoring.grounding.content_words``: not a
  stop word, three letters or more, numbers always count) beyond the generic words of the
  generators' templates ("document", "passage", "e-mail", "table", "say", "begins", ...). "What
  does the document say about this?" names nothing. It must not dangle either: no Markdown
  emphasis/heading marks ("**", "__", "#"), no braces (an unfilled field "{heading}", quoted
  JSON), no empty or unbalanced quotes, no last word that needs an object ("... of the?", "... say about?"); a
  stranded preposition is fine ("What is the Travel Policy about?").
- ``full_sentence``: the response has one sentence of four words or more that ends in ". ! ?"
  (closing quotes/brackets allowed) and is not a raw JSON record, or it answers a *lookup*
  question with a value. A lookup question asks for one fact: "What is/are/was/were ...", "Who/When/Where/Which ...", "How
  many/much/long/old ...", or the ``table`` generator's "What does the table list for K (...)?".
  Its answer may be a bare value, as a table cell is ("871.5" to "What is the score of X?",
  "Mediterranean Sea" to "What is the Outflow of Nile?", "Two years." to "What is the
  warranty?"): at most ``LOOKUP_MAX_WORDS`` words, with a letter or digit in it. This is a
  deliberate decision: a table pair is a record lookup, and padding its answer into a sentence
  would make the response no longer the exact span of the source.
- ``grounded``: the response (whitespace folded) occurs verbatim in ``span_text``, the text the
  pair's provenance points at (``document.text[char_start:char_end]``); every generated pair's
  response is that span, so this checks provenance. A response that is not verbatim (a reviewer
  edited it) is grounded when its ``scoring.grounding.score`` against ``span_text`` (the share of
  its content words the span supports, the number the error analysis's hallucination detector
  and the ``model`` generator use) is ``>= grounded_at`` (0.8); ``grounding`` overrides the scorer.
  Without ``span_text`` nothing grounds the response and the check fails.
- ``no_boilerplate``: neither text holds a control character (``ingest.cleaning.CONTROL``, NUL
  included), a ``(cid:N)`` glyph reference (``ingest.cleaning.CID``), a U+FFFD replacement
  character, a "Page N of M" page label, or a line of ``boilerplate`` (the running headers and
  footers the caller knows of): matched line by line with ``ingest.cleaning.line_key`` (case,
  spacing and digits folded), and as a substring once spacing and case are folded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ingest.cleaning import CID, CONTROL, line_key
from scoring.grounding import content_words
from scoring.grounding import score as grounding_score

LOOKUP_MAX_WORDS = 60  # a table cell may hold a description phrase ("A series of models fine-tuned for ...")
MIN_SENTENCE_WORDS = 4
GROUNDED_AT = 0.8

# the generic words of the generators' templates: a question made only of these (and stop words) names
# no subject.
_GENERIC_WORDS = (
    "document documents passage passages text section sections file page pages e-mail email mail message "
    "table row column cell say says said write tell key facts fact begins begin start starts about above below "
    "following thing things something stuff content contents part information info topic list describe summarise "
    "summarize explain give please answer question"
)
_GENERIC = frozenset(_GENERIC_WORDS.split())
_REQUEST = re.compile(r"^\s*(write|describe|summari[sz]e|list|explain|give|name|outline|compare|draft|translate"
                      r"|rewrite|classify|define|state|tell)\b", re.I)
_LOOKUP = re.compile(r"^\s*(?:in the .{1,80}? table,\s*)?(?:what (?:is|are|was|were)\b|who\b|when\b|where\b|which\b"
                     r"|how (?:many|much|long|old|often|far)\b|what does the table list for\b)", re.I)
# a last word that needs an object; a stranded preposition is good English ("What is the policy about?",
# "What does the e-mail ask for?"), so only an empty template slot is caught for those
_DANGLING_WORDS = "the a an and or this that these those its their"
_EMPTY_SLOT = re.compile(r"\b(?:says?|said)\s+(?:about|on|in)\s*[?.]?$|^\s*what (?:is|are) the .+ of\s*\?$", re.I)
_DANGLING_END = frozenset(_DANGLING_WORDS.split())
_MARKUP = re.compile(r"\*\*|__|(^|\s)#{1,6}\s|[{}]|\"\s*\"|''|\(\s*\)")
_RAW_RECORD = re.compile(r"^\s*[\[{]\s*[\[{]?\s*\"[^\"\n]*\"\s*:")  # a JSON object or array of objects
_SENTENCE = re.compile(r"[^.!?\n]*[.!?]+[\"')\]»”’]*(?!\w)")
_PAGE_LABEL = re.compile(r"\bpage\s+\d+\s+of\s+\d+\b", re.I)


@dataclass(frozen=True)
class Rubric:
    is_question: bool
    names_subject: bool
    full_sentence: bool
    grounded: bool
    no_boilerplate: bool
    reasons: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.is_question and self.names_subject and self.full_sentence and self.grounded \
            and self.no_boilerplate


def _fold(s: str) -> str:
    return " ".join(s.split()).casefold()


def _is_question(instruction: str) -> str | None:
    q = instruction.strip()
    if q.endswith("?"):
        return None if len(q.rstrip("?").split()) >= 2 else "one word"
    if _REQUEST.match(q) and len(q.split()) >= 3:
        return None
    return "neither ends with '?' nor is a request"


def _names_subject(instruction: str) -> str | None:
    q = instruction.strip()
    if _MARKUP.search(q):
        return "markup, an empty quote or an unfilled field"
    if q.count('"') % 2 or q.count("“") != q.count("”"):
        return "unbalanced quotes"
    words = q.rstrip("?.!: ").split()
    if words and not words[-1].endswith(('"', "'", "”")) and words[-1].casefold() in _DANGLING_END:
        return f"dangles after {words[-1]!r}"
    if _EMPTY_SLOT.search(q):
        return "dangles: an empty slot at the end"
    content = [t for t in content_words(q) if t not in _GENERIC]
    return None if content else "no content word"


def _full_sentence(instruction: str, response: str) -> str | None:
    if _RAW_RECORD.match(response):
        return "raw JSON, not prose"
    for m in _SENTENCE.finditer(response):
        if len(re.findall(r"\w+", m.group())) >= MIN_SENTENCE_WORDS:
            return None
    if _LOOKUP.match(instruction):
        n = len(response.split())
        if 0 < n <= LOOKUP_MAX_WORDS and re.search(r"\w", response):
            return None
        return "lookup answer empty or too long" if n else "empty"
    return "no sentence of 4+ words ending in . ! ?"


def _default_grounding(response: str, span_text: str) -> float:
    return grounding_score(response, span_text).score


def _grounded(response: str, span_text: str | None, grounding: Callable[[str, str], float],
              grounded_at: float) -> str | None:
    if span_text is None:
        return "no source span"
    if _fold(response) and _fold(response) in _fold(span_text):
        return None
    s = grounding(response, span_text)
    return None if s >= grounded_at else f"grounding {s:.2f} < {grounded_at}"


def _boilerplate(texts: tuple[str, str], boilerplate: Iterable[str]) -> str | None:
    for t in texts:
        if "\x00" in t:
            return "NUL"
        if CONTROL.search(t):
            return "control character"
        if CID.search(t):
            return "(cid:N) glyph reference"
        if "\ufffd" in t:
            return "replacement character"
        if _PAGE_LABEL.search(t):
            return "page label"
    lines = [b for b in (b.strip() for b in boilerplate) if b]
    keys = {line_key(b) for b in lines}
    for t in texts:
        if any(line_key(ln) in keys for ln in t.splitlines() if ln.strip()):
            return "boilerplate line"
        folded = _fold(t)
        if any(_fold(b) in folded for b in lines):
            return "boilerplate text"
    return None


def usability(instruction: str, response: str, span_text: str | None, *, boilerplate: Iterable[str] = (),
              grounding: Callable[[str, str], float] = _default_grounding, grounded_at: float = GROUNDED_AT) -> Rubric:
    """The rubric's verdict on one pair (see the module docstring for each check)."""
    fails = {
        "is_question": _is_question(instruction),
        "names_subject": _names_subject(instruction),
        "full_sentence": _full_sentence(instruction, response),
        "grounded": _grounded(response, span_text, grounding, grounded_at),
        "no_boilerplate": _boilerplate((instruction, response), boilerplate),
    }
    return Rubric(**{k: v is None for k, v in fails.items()},
                  reasons=tuple(f"{k}: {v}" for k, v in fails.items() if v is not None))
