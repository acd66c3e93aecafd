"""``model``: a chat model writes questions and answers for each chunk, and only grounded pairs are kept.

For every chunk the model writes ``questions_per_chunk`` questions, then answers each from the
chunk alone (``answer=false``: the chunk itself is the response). A pair is kept only if

- its answer is supported by the chunk: the grounding score the error analysis computes
  (``scoring.grounding``: the share of the answer's content words found in the chunk,
  numbers weighed double) is at least ``min_grounding``; an answer of "the passage does not
  say" or an invented figure falls below it;
- its question is not a near duplicate of a question already kept for the document (content
  words alike at ``question_similarity``, see ``_distinct_questions``).

Each kept pair records the generator, its version tag (model name and a hash of the prompts,
see ``version_tag``) and its grounding score; the file's summary says how many were dropped and why.

Backends: ``local`` (the shared runtime ``models.lm``, default the bundled SmolLM2) or
``openai``: any server speaking the OpenAI chat-completions API (vLLM, llama.cpp, Ollama),
given by ``endpoint`` and ``model``. Network goes only to that user-given endpoint.
Prompts are templates (``question_template``, ``answer_template``, ``system_prompt``) with
``{doc_title}``, ``{heading}``, ``{text}`` and ``{n}``; the generator version records the
model name and a hash of the prompts, since both change the output.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import httpx

from ingest.generators import register
from ingest.generators.base import Generator, Source
from scoring.grounding import content_words, stem
from scoring.grounding import score as grounding_score
from store.ids import content_id
from store.records import Chunk, NewPair

SYSTEM_PROMPT = "You write questions that people would ask about company documents. Be concise."
QUESTION_TEMPLATE = (
    "Here is a passage from the document \"{doc_title}\" (section: {heading}).\n\n{text}\n\n"
    "Write {n} different questions that this passage answers. "
    "Output one question per line, nothing else."
)
ANSWER_TEMPLATE = (
    "Answer the question using only the passage. If the passage does not answer it, say so.\n\n"
    "Passage:\n{text}\n\nQuestion: {question}"
)
_NUMBERING = re.compile(r"^\s*(?:[-*•]|\d+[.)]|Q\d*[:.)]|Question\s*\d*[:.)])\s*", re.I)


class ModelError(RuntimeError):
    """The chat model or endpoint failed; the message says what to check."""


class ChatBackend(Protocol):
    name: str

    def chat(self, conversations: list[list[dict]], max_new_tokens: int = 256,
             temperature: float = 0.0) -> list[str]: ...


def chat_url(endpoint: str) -> str:
    """Accept ``http://host:port``, ``.../v1`` or the full ``.../v1/chat/completions``."""
    url = endpoint.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


MAX_BACKOFF_S = 30.0


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds a 429/503 asks us to wait (``Retry-After: N``), else None."""
    try:
        return max(0.0, float(resp.headers.get("Retry-After", "")))
    except ValueError:
        return None


class OpenAIChat:
    """OpenAI-compatible chat client (httpx, one request per conversation).

    Every request has a timeout (``timeout_s``; connecting at most 10 s). A server that cannot
    be reached or answers 429 or 5xx (busy, restarting, overloaded) is retried ``retries``
    times with exponential backoff from ``backoff_s`` (or the server's ``Retry-After``); any
    other error answer fails at once. Failures raise ``ModelError`` naming the endpoint.
    """

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, timeout_s: float = 120.0, *,
                 retries: int = 3, backoff_s: float = 0.5):
        if not endpoint:
            raise ModelError("the openai backend needs --endpoint URL (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise ModelError("the openai backend needs --model NAME (the model name the server serves)")
        self.url = chat_url(endpoint)
        self.name = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retries = max(0, int(retries))
        self.backoff_s = max(0.0, float(backoff_s))

    def _client(self) -> httpx.Client:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return httpx.Client(headers=headers, timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0)))

    def _post(self, client: httpx.Client, payload: dict[str, Any]) -> httpx.Response:
        failure = ""
        for attempt in range(self.retries + 1):
            wait: float | None = None
            try:
                resp = client.post(self.url, json=payload)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure = f"cannot reach the chat endpoint {self.url} ({exc}); is the server running?"
            except httpx.TimeoutException:
                raise ModelError(f"the chat endpoint {self.url} did not answer within {self.timeout_s:g} s; "
                                 f"raise timeout_s for a slow model") from None
            except httpx.HTTPError as exc:
                raise ModelError(f"the chat endpoint {self.url} failed: {exc}") from None
            else:
                if resp.status_code < 400:
                    return resp
                failure = f"{self.url} answered HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code != 429 and resp.status_code < 500:
                    raise ModelError(failure)
                wait = _retry_after(resp)
            if attempt < self.retries:
                time.sleep(min(MAX_BACKOFF_S, self.backoff_s * 2**attempt if wait is None else wait))
        raise ModelError(failure + (f" (gave up after {self.retries + 1} attempts)" if self.retries else ""))

    def _one(self, client: httpx.Client, messages: list[dict], max_new_tokens: int, temperature: float) -> str:
        resp = self._post(client, {"model": self.name, "messages": messages, "max_tokens": max_new_tokens,
                                   "temperature": temperature})
        try:
            data = resp.json()
        except json.JSONDecodeError:
            raise ModelError(f"{self.url} did not answer with JSON; is it an OpenAI-compatible server?") from None
        try:
            return data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ModelError(f"{self.url} answered without choices[0].message.content: {str(data)[:200]}") from None

    def chat(self, conversations: list[list[dict]], max_new_tokens: int = 256,
             temperature: float = 0.0) -> list[str]:
        with self._client() as client:  # one connection pool per batch
            return [self._one(client, c, max_new_tokens, temperature) for c in conversations]


class LocalChat:
    """The shared local runtime (``models.lm``); loaded on first use."""

    def __init__(self, model: str | None = None):
        self.name = model or "bundled"
        self._model_name = model or None
        self._lm: Any = None

    def chat(self, conversations: list[list[dict]], max_new_tokens: int = 256,
             temperature: float = 0.0) -> list[str]:
        if self._lm is None:
            try:
                from models.lm import load_chat_model
            except ImportError as exc:
                raise ModelError(f"the local model runtime is not available ({exc}); "
                                 f"use --endpoint URL --model NAME for a server") from None
            self._lm = load_chat_model(self._model_name)
        return self._lm.chat(conversations, max_new_tokens=max_new_tokens, temperature=temperature)


@dataclass(frozen=True)
class ModelOptions:
    backend: str = "local"
    endpoint: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    questions_per_chunk: int = 2
    answer: bool = True  # the model answers from the chunk; false: the chunk itself is the response
    min_grounding: float = 0.7  # keep a model-written answer only if this share of it is in the chunk
    question_similarity: float = 0.8  # drop a question this similar (Jaccard) to one kept before; 1 = off
    system_prompt: str = SYSTEM_PROMPT
    question_template: str = QUESTION_TEMPLATE
    answer_template: str = ANSWER_TEMPLATE
    max_new_tokens: int = 192
    temperature: float = 0.0
    batch_size: int = 8
    timeout_s: float = 120.0
    retries: int = 3
    retry_backoff_s: float = 0.5
    min_chunk_chars: int = 80
    max_chunks_per_document: int = 0


def parse_questions(output: str, n: int) -> list[str]:
    """Questions from a model's output: one per line, numbering stripped, deduplicated."""
    out: list[str] = []
    for line in output.splitlines():
        q = _NUMBERING.sub("", line).strip().strip('"').strip()
        if len(q) < 8 or not q.endswith("?"):
            continue
        if q.lower() not in {x.lower() for x in out}:
            out.append(q)
        if len(out) >= n:
            break
    return out


@register
class ModelGenerator(Generator):
    name = "model"
    version = "1"
    Options = ModelOptions

    def __init__(self, options: ModelOptions | None = None, *, author: str = "ingest",
                 backend: ChatBackend | None = None):
        super().__init__(options, author=author)
        self._backend = backend

    @property
    def backend(self) -> ChatBackend:
        if self._backend is None:
            o: ModelOptions = self.options
            if o.backend == "openai" or o.endpoint:
                self._backend = OpenAIChat(o.endpoint, o.model, os.environ.get(o.api_key_env), o.timeout_s,
                                           retries=o.retries, backoff_s=o.retry_backoff_s)
            elif o.backend == "local":
                self._backend = LocalChat(o.model or None)
            else:
                raise ModelError(f"unknown model backend {o.backend!r}; use local or openai")
        return self._backend

    def version_tag(self) -> str:
        o: ModelOptions = self.options
        prompts = {k: v for k, v in asdict(o).items() if k.endswith(("template", "prompt"))}
        prompts["answer"] = o.answer
        return f"{self.version}:{o.model or 'bundled'}:{content_id(prompts, length=8)}"

    def _chat(self, conversations: list[list[dict]]) -> list[str]:
        o: ModelOptions = self.options
        out: list[str] = []
        for i in range(0, len(conversations), max(1, o.batch_size)):
            out += self.backend.chat(conversations[i:i + o.batch_size], max_new_tokens=o.max_new_tokens,
                                     temperature=o.temperature)
        return out

    def _messages(self, user: str) -> list[dict]:
        o: ModelOptions = self.options
        msgs = [{"role": "system", "content": o.system_prompt}] if o.system_prompt else []
        return msgs + [{"role": "user", "content": user}]

    def generate(self, source: Source) -> list[NewPair]:
        return self.generate_many([source])[0]

    def generate_many(self, sources: Sequence[Source]) -> list[list[NewPair]]:
        o: ModelOptions = self.options
        work: list[tuple[int, Chunk]] = []
        for si, s in enumerate(sources):
            chunks = [c for c in s.chunks if len(c.text) >= o.min_chunk_chars]
            if o.max_chunks_per_document:
                chunks = chunks[: o.max_chunks_per_document]
            work += [(si, c) for c in chunks]
        prompts = [self._messages(o.question_template.format(
            doc_title=sources[si].document.title, heading=c.title or sources[si].document.title,
            text=c.text, n=o.questions_per_chunk)) for si, c in work]
        outputs = self._chat(prompts)
        items = [(si, c, q) for (si, c), out in zip(work, outputs)
                 for q in parse_questions(out, o.questions_per_chunk)]
        if o.answer:
            answers = self._chat([self._messages(o.answer_template.format(
                doc_title=sources[si].document.title, heading=c.title, text=c.text, question=q))
                for si, c, q in items])
        else:
            answers = [c.text for _, c, _ in items]
        result: list[list[NewPair]] = [[] for _ in sources]
        empty = ungrounded = 0
        grounded: list[tuple[int, Chunk, str, str, float | None]] = []
        for (si, c, q), a in zip(items, answers):
            a = a.strip()
            if not a:
                empty += 1
                continue
            g = grounding_score(a, c.text).score if o.answer else None
            if g is not None and g < o.min_grounding:
                ungrounded += 1
                continue
            grounded.append((si, c, q, a, g))
        keep = self._distinct_questions([q for _, _, q, _, _ in grounded], [si for si, *_ in grounded])
        for (si, c, q, a, g), kept in zip(grounded, keep):
            if kept:
                pair = self.pair(sources[si], q, a, span=(c.char_start, c.char_end), element_ids=c.element_ids,
                                 page=c.page_start)
                result[si].append(pair.model_copy(update={
                    "provenance": pair.provenance.model_copy(update={"grounding": g})}))
        dropped = [f"{n} {what}" for n, what in (
            (ungrounded, f"answer(s) not grounded in the chunk (grounding < {o.min_grounding:g})"),
            (len(keep) - sum(keep), f"near-duplicate question(s) (similarity >= {o.question_similarity:g})"),
            (empty, "empty answer(s)")) if n]
        if dropped:
            self.note(f"model: kept {sum(len(r) for r in result)} of {len(items)} pairs; dropped "
                      + ", ".join(dropped))
        return result

    def _distinct_questions(self, questions: list[str], groups: list[int]) -> list[bool]:
        """Which questions to keep: not a near duplicate of a question kept before for the same document.

        Near duplicate = Jaccard of the questions' content-word sets (``scoring.grounding``: stop
        words out, light stemming as grounding does) >= ``question_similarity``. Not curation's
        character shingles: for a short question those rate "the price of A?" and "the price of B?"
        0.89 alike, while they ask about different things."""
        o: ModelOptions = self.options
        keep = [True] * len(questions)
        if o.question_similarity >= 1:
            return keep
        kept: dict[int, list[frozenset[str]]] = {}
        for i, (q, g) in enumerate(zip(questions, groups)):
            words = frozenset(stem(w) for w in content_words(q))
            seen = kept.setdefault(g, [])
            if any(len(words & w) >= o.question_similarity * len(words | w) for w in seen):
                keep[i] = False
            else:
                seen.append(words)
        return keep
