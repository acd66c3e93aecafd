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
    assert "ran out of its memory cap for one file (1 MB, set by TUNELOOP_BULK_INSERT_MEMORY_MB)" in out, out[-2000:]
    assert "raise the variable or unset it" in out
    assert "transaction is aborted" not in out
    with Project(proj).connect() as con:
        assert scalar(con, "SELECT count(*) FROM pairs") == 0
        assert scalar(con, "SELECT count(*) FROM pair_revisions") == 0


def test_the_cap_grows_with_the_pairs_stored_and_new(monkeypatch):
    from store import pairs as pairs_store

    monkeypatch.delenv("TUNELOOP_BULK_INSERT_MEMORY_MB", raising=False)
    small = pairs_store.bulk_insert_memory_mb(1_000, 0)
    assert small == pairs_store.BULK_INSERT_MEMORY_MB
    # 3M new pairs into a project of 1M: measured to need more than 256 MB + 415 B a pair
    big = pairs_store.bulk_insert_memory_mb(3_000_000, 1_000_000)
    assert big >= 256 + 4_000_000 * 415 // 2**20
    assert pairs_store.bulk_insert_memory_mb(3_000_000, 0) < big
    monkeypatch.setenv("TUNELOOP_BULK_INSERT_MEMORY_MB", "512")
    assert pairs_store.bulk_insert_memory_mb(3_000_000, 1_000_000) == 512


def test_a_cap_beyond_this_machine_is_refused_before_anything_is_stored(tmp_path, monkeypatch):
    from ingest.importer import import_file

    data = tmp_path / "pairs.jsonl"
    generate(data, 50)
    monkeypatch.setenv("TUNELOOP_BULK_INSERT_MEMORY_MB", str(10**9))  # ~1 PB
    p = Project(tmp_path / "proj").init()
    r = import_file(p, str(data), "alpaca")
    assert r.fatal is not None and r.new == 0
    assert f"{data}: not imported: its memory cap (TUNELOOP_BULK_INSERT_MEMORY_MB={10**9}) is more than 80% of " \
           "this machine's" in r.fatal
    assert "Nothing was stored" in r.fatal
    with p.connect() as con:
        assert scalar(con, "SELECT count(*) FROM pairs") == 0
    monkeypatch.delenv("TUNELOOP_BULK_INSERT_MEMORY_MB")
    again = import_file(p, str(data), "alpaca")
    assert again.fatal is None and again.new == 50
