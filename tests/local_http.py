"""A real local HTTP server in a thread for tests that talk to an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

S = TypeVar("S", bound=ThreadingHTTPServer)


@contextmanager
def serving(srv: S) -> Iterator[S]:
    """Serve ``srv`` in a daemon thread for the block; shut it down and close it after."""
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def reply(handler: BaseHTTPRequestHandler, body: bytes | Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
    """Answer with ``body`` (bytes as they are, anything else as JSON), ``status`` and ``headers``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
