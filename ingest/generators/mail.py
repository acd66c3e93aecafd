"""``email``: questions over an e-mail's body (.eml, .msg), named by its subject.

The parser gives the body as elements whose metadata carry the headers (``subject``,
``sent_from``); attachments follow without them and are left to the other generators. One pair asks what the e-mail says, or asks to write it, answered by the
body (up to ``max_chars``, cut at an element boundary); one more asks what the e-mail asks
for, answered by the sentences with a request in them (from the first to the last of them
in one paragraph). Every response is exactly ``document.text[char_start:char_end]``. The
e-mail is named by its subject, else its sender, else its opening words; never its file name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ingest.chunking import bounded_span
from ingest.elements import inner_quotes, opening
from ingest.generators import register
from ingest.generators.base import Generator, Source, pick
from store.records import Element, NewPair

DEFAULT_TEMPLATES = ["What does the e-mail {about} say?", "Write the e-mail {about}."]
_REQUEST = re.compile(
    r"\b(please|kindly|could you|can you|would you|need(?:s)? to|must|make sure|remember to|don't forget"
    r"|action item|to ?do|deadline|due (?:by|on)|by (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday"
    r"|tomorrow|tonight|end of|the end|noon|\d))", re.I)
_HEADER_KEYS = frozenset({"subject", "sent_from", "sent_to"})
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")


@dataclass(frozen=True)
class EmailOptions:
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    reply_template: str = "Write the reply {about}."
    request_template: str = "What does the e-mail {about} ask for?"
    opening_words: int = 8
    min_chars: int = 30
    max_chars: int = 4000


def headers(elements: list[Element]) -> dict[str, str]:
    """The e-mail's subject and sender from its elements' metadata (empty if it is not an e-mail)."""
    out: dict[str, str] = {}
    for el in elements:
        md = el.metadata or {}
        if md.get("subject") and "subject" not in out:
            out["subject"] = " ".join(str(md["subject"]).split())
        sent = md.get("sent_from")
        if sent and "sender" not in out:
            first = str(sent[0] if isinstance(sent, list) else sent)
            out["sender"] = first.split("<")[0].strip(' "') or first.strip("<> ")
    return out


def is_email(source: Source) -> bool:
    return source.document.filetype in ("eml", "msg") or bool(headers(source.elements))


@register
class EmailGenerator(Generator):
    name = "email"
    version = "1"
    Options = EmailOptions

    def generate(self, source: Source) -> Iterator[NewPair]:
        opts: EmailOptions = self.options
        if not is_email(source):
            return
        doc = source.document
        body = [e for e in source.elements if e.text.strip() and e.type not in ("Image", "PageBreak")]
        own = [e for e in body if _HEADER_KEYS & set(e.metadata or {})]
        body = own or body  # the message's own elements carry its headers; an attachment's do not
        body = body[:next((k for k in range(1, len(body)) if body[k].idx != body[k - 1].idx + 1), len(body))]
        if not body:
            return
        start, end, ids = bounded_span(body, opts.max_chars)
        text = doc.text[start:end]
        if len(text.strip()) < opts.min_chars:
            return
        h = headers(source.elements)
        subject = re.sub(r"^\s*((re|fwd?|aw|sv)\s*:\s*)+", "", h.get("subject", ""), flags=re.I)
        if subject:
            about = f'"{inner_quotes(subject)}"' + (f" from {h['sender']}" if h.get("sender") else "")
        elif h.get("sender"):
            about = f"from {h['sender']}"
        else:
            about = f'that begins "{opening(text, opts.opening_words)}"'
        reply = subject != h.get("subject", "")
        tpl = opts.reply_template if reply and h.get("subject", "").lower().lstrip().startswith("re") \
            else pick(opts.templates, f"{doc.id}:{start}")
        page = body[0].page
        yield self.pair(source, tpl.format(about=about), text, span=(start, end), element_ids=ids, page=page)
        req = _requests(body[:len(ids)])
        if req and req[0] != (start, end):
            el, a, b = req[1], req[0][0], req[0][1]
            yield self.pair(source, opts.request_template.format(about=about), doc.text[a:b], span=(a, b),
                            element_ids=[el.id], page=el.page)


def _requests(body: list[Element]) -> tuple[tuple[int, int], Element] | None:
    """The span from the first to the last sentence with a request in it, in the first paragraph that has one."""
    for el in body:
        hits = [m for m in _SENTENCE.finditer(el.text) if _REQUEST.search(m.group())]
        if hits:
            a = el.char_start + hits[0].start() + (len(hits[0].group()) - len(hits[0].group().lstrip()))
            b = el.char_start + hits[-1].end()
            return (a, b), el
    return None
