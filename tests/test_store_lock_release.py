"""The app's warm hold never locks the CLI out: a process waiting for the project file gets it
between two clicks, and when it cannot, the error names the process that holds the file."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from store import pairs
from store.db import WAIT_MARK_FRESH_S, Project, StoreBusyError, release_warm
from store.records import NewPair, PairContent

REPO = Path(__file__).resolve().parents[1]

# A CLI write, as `tuneloop pairs edit` makes it: wait for the file, write, let go.
CLI_WRITE = """
import sys, time
from pathlib import Path
from store import pairs
from store.db import Project
from store.records import NewPair, PairContent
p = Project(Path(sys.argv[1]))
print("ready", flush=True)
t0 = time.monotonic()
with p.connect(timeout=600) as con:
    waited = time.monotonic() - t0
    pairs.add_pairs(con, [NewPair(content=PairContent(instruction="written by the CLI", response="x"))])
print(f"done {waited:.3f}", flush=True)
"""

HOLD = ("import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
        "sys.stdin.readline(); c.close()")


def _click(project: Project, k: int) -> None:
    """One user action in the app: what app/state.db() does (warm hold, short connection), then a write."""
    project.hold_warm(idle_s=60)  # far longer than the test: before the fix this alone kept the file
    with project.connect(timeout=600) as con:
        pairs.add_pairs(con, [NewPair(content=PairContent(instruction=f"click {k}", response="r"))])


def _lines(proc: subprocess.Popen) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    return out


def test_a_cli_write_gets_in_between_clicks(project: Project):
    try:
        _click(project, 0)
        assert project.is_warm()
        cli = subprocess.Popen([sys.executable, "-c", CLI_WRITE, str(project.root)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = _lines(cli)
        assert lines.get(timeout=120) == "ready"
        # The reviewer keeps clicking every ~0.5 s. With a hold that only ends after 60 idle
        # seconds, the CLI would wait for as long as the clicks go on; it must get in meanwhile.
        done, released, clicks = None, False, 0
        while done is None and clicks < 240 and cli.poll() is None:
            clicks += 1
            _click(project, clicks)
            released |= not project.is_warm()
            time.sleep(0.5)
            released |= not project.is_warm()
            done = next((x for x in _drain(lines) if x.startswith("done")), None)
        done = done or next((x for x in _drain(lines) if x.startswith("done")), None)
        assert done is not None, f"the CLI write was still waiting after {clicks} clicks"
        assert cli.wait(timeout=60) == 0, cli.stderr.read() if cli.stderr else ""
        assert released, "the warm hold never let go, so the CLI cannot have been waiting for it"
        # the app goes on as before: its clicks work and it holds the project warm again
        _click(project, clicks + 1)
        assert project.is_warm()
        with project.connect() as con:
            assert pairs.count(con) == clicks + 3  # every click and the CLI's pair
    finally:
        release_warm(project)


def _drain(q: queue.Queue[str]) -> list[str]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_a_stale_wait_mark_does_not_stop_warming(project: Project):
    """A waiter killed before it removed its mark must not keep the app cold forever."""
    mark = Path(f"{project.db_path}.wait-999999")
    mark.touch()
    try:
        assert project.hold_warm(idle_s=60) is False  # a fresh mark: someone waits
        old = time.time() - WAIT_MARK_FRESH_S - 1
        os.utime(mark, (old, old))
        assert project.hold_warm(idle_s=60) is True
        release_warm(project)
        old = time.time() - 3600  # long dead: swept away
        os.utime(mark, (old, old))
        assert project.hold_warm(idle_s=60) is True and not mark.exists()
    finally:
        release_warm(project)
        mark.unlink(missing_ok=True)


@pytest.fixture
def holder(project: Project):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(project.db_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(timeout=60)


def test_busy_error_names_the_holder(project: Project, holder: subprocess.Popen):
    with pytest.raises(StoreBusyError) as exc, project.connect(timeout=0.3):
        pass
    assert exc.value.holder_pid == holder.pid
    assert f"process {holder.pid}" in str(exc.value) and "Conflicting lock" not in str(exc.value)
    assert not list(project.root.glob("*.wait-*"))  # the waiter took its mark away


def test_cli_busy_message_names_the_holder(project: Project, holder: subprocess.Popen):
    proc = subprocess.run([sys.executable, "-m", "tuneloop.cli", "stats", "--project", str(project.root)],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TUNELOOP_LOCK_TIMEOUT": "0.5"})
    assert proc.returncode == 2, proc.stderr
    assert f"process {holder.pid}" in proc.stderr and "Traceback" not in proc.stderr
