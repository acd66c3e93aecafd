"""The ``model`` generator against a real local HTTP server speaking the OpenAI chat API, and
(slow) against the bundled model."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ingest.chunking import ChunkConfig, chunk_document
from ingest.documents import IngestConfig, ingest
from ingest.elements import build_document
from ingest.generators import Source, create
from ingest.generators.model import chat_url, parse_questions
from store.db import frame, scalar
from tests.test_ingest_files import make


class ChatServer(ThreadingHTTPServer):
    """POST /v1/chat/completions: questions about the section heading, or a canned answer."""

    def __init__(self, status: int = 200):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = status
        self.requests: list[dict] = []
        self.extra: list[str] = []  # more questions to write after the two about the heading

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.server.status != 200:
            self.send_response(self.server.status)
            self.end_headers()
            self.wfile.write(b'{"error": "overloaded"}')
            return
        prompt = body["messages"][-1]["content"]
        m = re.search(r"\(section: (.*?)\)", prompt)
        if m:
            heading = m.group(1)
            content = f"1. What does the text say about {heading}?\n2. Why does {heading} matter?\nthanks!"
            content += "".join(f"\n{i + 3}. {q}" for i, q in enumerate(self.server.extra))
        else:  # an answer copied from the passage; an invented one for questions about a warranty
            q = prompt.rsplit("Question: ", 1)[-1]
            passage = prompt.split("Passage:\n", 1)[-1].split("\n\nQuestion:", 1)[0]
            content = ("The warranty lasts 5 years in Peru." if "warranty" in q.lower()
                       else passage.strip().splitlines()[-1])
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content},
                                       "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def server():
    srv = ChatServer()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _source() -> Source:
    raw = [{"type": "Title", "text": "Battery", "uid": "a"},
           {"type": "NarrativeText", "text": "Charge the Cobalt sensor every week with the USB-C cable.",
            "parent_uid": "a", "uid": "b"},
           {"type": "Title", "text": "Calibration", "uid": "c"},
           {"type": "NarrativeText", "text": "Calibrate it every six months, or after a firmware update.",
            "parent_uid": "c", "uid": "d"}]
    doc, els = build_document(raw, document_id="d_m", uri="m.md", name="m.md", filetype="md", size_bytes=1)
    return Source(doc, els, chunk_document(doc, els, ChunkConfig(max_chars=80, min_chars=0)))


def test_chat_url_forms():
    assert chat_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_parse_questions():
    out = "Sure!\n1. What is Cobalt?\n- How long is the warranty?\n2) what is cobalt?\nQ3: Where is it made?"
    assert parse_questions(out, 5) == ["What is Cobalt?", "How long is the warranty?", "Where is it made?"]
    assert parse_questions(out, 1) == ["What is Cobalt?"]


def test_model_generator_over_http_chunk_as_response(server, monkeypatch):
    monkeypatch.setenv("TEST_CHAT_KEY", "sk-local")
    gen = create("model", {"endpoint": server.url, "model": "tiny-chat", "api_key_env": "TEST_CHAT_KEY",
                           "min_chunk_chars": "10", "answer": "false"})
    s = _source()
    pairs = list(gen.generate(s))
    assert [(p.content.instruction, p.content.response) for p in pairs] == [
        ("What does the text say about Battery?", "Battery\n\nCharge the Cobalt sensor every week with the USB-C cable."),
        ("Why does Battery matter?", "Battery\n\nCharge the Cobalt sensor every week with the USB-C cable."),
        ("What does the text say about Calibration?",
         "Calibration\n\nCalibrate it every six months, or after a firmware update."),
        ("Why does Calibration matter?", "Calibration\n\nCalibrate it every six months, or after a firmware update."),
    ]
    for p in pairs:
        pv = p.provenance
        assert s.document.text[pv.char_start:pv.char_end] == p.content.response
        assert pv.generator == "model" and pv.generator_version.startswith("1:tiny-chat:")
        assert pv.grounding is None  # the response is the span itself
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-local"
    assert req["body"]["model"] == "tiny-chat" and req["body"]["temperature"] == 0.0
    assert req["body"]["messages"][0]["role"] == "system"
    assert "Charge the Cobalt sensor every week" in req["body"]["messages"][1]["content"]


def test_model_generator_grounded_answers_and_custom_template(server):
    gen = create("model", {"endpoint": server.url, "model": "tiny-chat",
                           "questions_per_chunk": "1", "min_chunk_chars": "10", "system_prompt": "",
                           "question_template": "Passage (section: {heading}) of {doc_title}:\n{text}\nAsk {n}."})
    pairs = list(gen.generate(_source()))
    assert [(p.content.instruction, p.content.response) for p in pairs] == [
        ("What does the text say about Battery?", "Charge the Cobalt sensor every week with the USB-C cable."),
        ("What does the text say about Calibration?", "Calibrate it every six months, or after a firmware update."),
    ]
    assert [p.provenance.grounding for p in pairs] == [1.0, 1.0]
    first = server.requests[0]["body"]["messages"]
    assert len(first) == 1 and first[0]["content"].startswith("Passage (section: Battery) of Battery:")


def test_ungrounded_answers_and_near_duplicate_questions_are_dropped_and_said(server):
    template = "Passage (section: {heading}):\n{text}\nAsk {n}."
    gen = create("model", {"endpoint": server.url, "model": "tiny-chat", "questions_per_chunk": "4",
                           "min_chunk_chars": "10", "question_template": template})
    # the fake server asks: about the heading, why it matters, and nothing else; add a warranty question
    # and a near duplicate through a template the server echoes
    server.extra = ["What is the warranty of the Cobalt sensor?", "What does the text say about the Battery?"]
    pairs = list(gen.generate(_source()))
    questions = [p.content.instruction for p in pairs]
    assert not any("warranty" in q for q in questions)  # "5 years in Peru" is not in the passage
    assert "What does the text say about the Battery?" not in questions  # near duplicate of the one kept
    assert "What does the text say about Battery?" in questions
    assert all(p.provenance.grounding is not None and p.provenance.grounding >= 0.7 for p in pairs)
    notes = gen.take_notes()
    assert len(notes) == 1 and "not grounded in the chunk" in notes[0] and "near-duplicate question" in notes[0]
    # a threshold of 0 keeps the invented answer, with its low score recorded
    lax = create("model", {"endpoint": server.url, "model": "tiny-chat", "questions_per_chunk": "4",
                           "min_chunk_chars": "10", "question_template": template, "min_grounding": "0"})
    invented = [p for p in lax.generate(_source()) if "warranty" in p.content.instruction]
    assert invented and all(p.provenance.grounding < 0.7 for p in invented)


def test_ingest_with_model_generator_and_failing_endpoint(project, tmp_path, server):
    path = make(tmp_path, "md", "guide")
    opts = {"model": {"endpoint": server.url, "model": "tiny-chat", "min_chunk_chars": "10", "retry_backoff_s": "0.01"}}
    report = ingest(project, [path], IngestConfig(generators=("model",), generator_options=opts, workers=0,
                                                  chunk_max_chars=120, chunk_min_chars=0))
    assert report.ok and report.pairs_new == 6
    with project.connect() as con:
        df = frame(con, "SELECT DISTINCT generator FROM pairs")
        grounding = frame(con, "SELECT grounding FROM pairs")["grounding"].to_list()
    assert df["generator"].to_list() == ["model"]
    assert grounding == [1.0] * 6  # the server copies a line of the passage: stored with its score

    server.status = 503
    other = make(tmp_path, "html", "faq")
    bad = ingest(project, [other], IngestConfig(generators=("model",), generator_options=opts, workers=0))
    assert bad.failed[0].error_kind == "generator" and "HTTP 503" in bad.failed[0].error
    with project.connect() as con:  # nothing of the failed document was written
        assert scalar(con, "SELECT count(*) FROM documents") == 1


def test_unreachable_endpoint_is_explained():
    gen = create("model", {"endpoint": "http://127.0.0.1:9/v1", "model": "x", "min_chunk_chars": "10",
                           "timeout_s": "5", "retry_backoff_s": "0.01"})
    with pytest.raises(RuntimeError, match="cannot reach the chat endpoint"):
        list(gen.generate(_source()))


@pytest.mark.slow
def test_model_generator_with_the_bundled_model():
    pytest.importorskip("models.lm")
    gen = create("model", {"questions_per_chunk": "2", "min_chunk_chars": "10", "max_new_tokens": "64",
                           "answer": "false"})
    s = _source()
    s = Source(s.document.model_copy(update={"title": "Cobalt guide"}), s.elements, s.chunks[:1])
    pairs = list(gen.generate(s))
    # greedy decoding of the bundled SmolLM2-135M: it writes at least one usable question here
    assert pairs, "the bundled model produced no parsable question"
    for p in pairs:
        assert p.content.instruction.endswith("?")
        assert p.content.response == s.chunks[0].text
        assert p.provenance.generator_version.startswith("1:bundled:")
    assert gen.backend.name == "bundled"
