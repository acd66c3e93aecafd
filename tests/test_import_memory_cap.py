"""An import that runs out of the database's memory cap fails with a message that says what to do,
not with the clean-up's "transaction is aborted" error that used to hide it; nothing is stored.

Found at 10M rows in one file (256 MB cap); reproduced here with a 1 MB cap on 20K rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from store.db import Project, scalar
from tests.bench.bench_import import generate

REPO = Path(__file__).resolve().parents[1]


def test_out_of_memory_cap_is_a_clear_error_and_stores_nothing(tmp_path):
    data = tmp_path / "pairs.jsonl"
    generate(data, 20_000)
    proj = tmp_path / "proj"
    Project(proj).init()
    done = subprocess.run([sys.executable, "-m", "tuneloop.cli", "import", str(data), "-p", str(proj), "--format", "alpaca"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TUNELOOP_BULK_INSERT_MEMORY_MB": "1"})
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0
    assert "ran out of its memory cap for one file (1 MB, TUNELOOP_BULK_INSERT_MEMORY_MB" in out, out[-2000:]
    assert "split the file into parts of at most 1M rows" in out
    assert "transaction is aborted" not in out
    with Project(proj).connect() as con:
        assert scalar(con, "SELECT count(*) FROM pairs") == 0
        assert scalar(con, "SELECT count(*) FROM pair_revisions") == 0
