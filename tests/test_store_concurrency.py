"""Several processes on one project: DuckDB admits one at a time, so we retry, never fail raw."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store import pairs
from store.db import StoreBusyError

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, env_project: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", *args, "--project", str(env_project)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    code = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
        "time.sleep(float(sys.argv[2])); c.close()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_two_processes_import_at_once(project, tmp_path):
    files = []
    for k in range(2):
        f = tmp_path / f"part{k}.jsonl"
        f.write_text("".join(json.dumps({"instruction": f"file {k} row {i}", "output": str(i)}) + "\n"
                             for i in range(20_000)))
        files.append(f)
    procs = [_cli("import", str(f), env_project=project.root) for f in files]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "Traceback" not in err and "lock" not in err.lower()
    with project.connect() as con:
        assert pairs.count(con) == 40_000
        assert con.execute("SELECT count(*) FROM import_batches").fetchall()[0][0] == 2


def test_waits_for_another_process_then_succeeds(project):
    holder = _hold_lock(project.db_path, 1.5)
    t0 = time.monotonic()
    with project.connect(timeout=30) as con:
        waited = time.monotonic() - t0
        assert pairs.count(con) == 0
    holder.wait()
    assert waited > 0.5


def test_busy_error_is_actionable(project):
    holder = _hold_lock(project.db_path, 5)
    try:
        with pytest.raises(StoreBusyError, match="in use by another process") as exc, project.connect(timeout=0.5):
            pass
        assert "Conflicting lock" not in str(exc.value)
    finally:
        holder.kill()
        holder.wait()


def test_cli_reports_busy_in_one_line(project, monkeypatch):
    holder = _hold_lock(project.db_path, 10)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tuneloop.cli", "stats", "--project", str(project.root)],
            cwd=REPO, capture_output=True, text=True, env={**__import__("os").environ, "TUNELOOP_LOCK_TIMEOUT": "0.5"},
            timeout=60,
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2
    assert "in use by another process" in proc.stderr and "Traceback" not in proc.stderr
