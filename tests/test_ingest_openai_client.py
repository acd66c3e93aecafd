"""The OpenAI-compatible chat client against a real local HTTP server (in a thread): it retries a
busy server with backoff and, when the server never recovers, says which endpoint failed."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ingest.generators.model import ModelError, OpenAIChat
from tests.local_http import reply, serving


class FlakyServer(ThreadingHTTPServer):
    """Answers the first ``failures`` requests with ``status``, then with a chat completion."""

    def __init__(self, failures: int, status: int = 503, retry_after: str | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failures = failures
        self.status = status
        self.retry_after = retry_after
        self.bodies: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FlakyServer

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        if len(self.server.bodies) <= self.server.failures:
            reply(self, b'{"error": "model is loading"}', self.server.status,
                  {"Retry-After": self.server.retry_after} if self.server.retry_after is not None else None)
        else:
            reply(self, {"choices": [{"message": {"role": "assistant", "content": "Recovered."}}]})


_serve = serving


@pytest.fixture
def fails_twice() -> Iterator[FlakyServer]:
    with _serve(FlakyServer(failures=2, status=503)) as srv:
        yield srv


@pytest.fixture
def always_fails() -> Iterator[FlakyServer]:
    with _serve(FlakyServer(failures=10**6, status=503, retry_after="0")) as srv:
        yield srv


def test_a_busy_server_is_retried_until_it_answers(fails_twice):
    client = OpenAIChat(fails_twice.url, "tiny-chat", timeout_s=10, retries=3, backoff_s=0.01)
    assert client.chat([[{"role": "user", "content": "Hello?"}]], max_new_tokens=8) == ["Recovered."]
    assert len(fails_twice.bodies) == 3  # two 503s, then the answer
    assert {b["model"] for b in fails_twice.bodies} == {"tiny-chat"}
    assert fails_twice.bodies[-1]["max_tokens"] == 8


def test_a_server_that_never_recovers_fails_naming_the_endpoint(always_fails):
    client = OpenAIChat(always_fails.url, "tiny-chat", timeout_s=10, retries=2, backoff_s=0.01)
    with pytest.raises(ModelError) as err:
        client.chat([[{"role": "user", "content": "Hello?"}]])
    msg = str(err.value)
    assert f"{always_fails.url}/chat/completions answered HTTP 503" in msg
    assert "model is loading" in msg and "after 3 attempts" in msg
    assert len(always_fails.bodies) == 3


def test_a_client_error_is_not_retried():
    with _serve(FlakyServer(failures=10**6, status=400)) as srv:
        client = OpenAIChat(srv.url, "tiny-chat", timeout_s=10, retries=3, backoff_s=0.01)
        with pytest.raises(ModelError, match="answered HTTP 400"):
            client.chat([[{"role": "user", "content": "Hello?"}]])
        assert len(srv.bodies) == 1


def test_an_unreachable_endpoint_is_retried_then_explained():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OpenAIChat(f"http://127.0.0.1:{port}", "x", timeout_s=5, retries=1, backoff_s=0.01)
    with pytest.raises(ModelError, match=rf"cannot reach the chat endpoint http://127.0.0.1:{port}/v1/chat/completions"):
        client.chat([[{"role": "user", "content": "Hello?"}]])

