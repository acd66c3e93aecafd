"""Pieces of the reliability suite: real CLI processes on real project folders, kill -9 at seeded
random points, orphan checks through /proc, and one tally printed at the end of the session.

Budget: ``make test`` runs every scenario once with a short concurrency window;
``make reliability`` sets ``TUNELOOP_RELIABILITY_ROUNDS`` (kills per stage) and
``TUNELOOP_RELIABILITY_SECONDS`` (concurrent writers) higher. The seed is fixed
(``TUNELOOP_RELIABILITY_SEED``), so a failure names a round that can be replayed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("TUNELOOP_RELIABILITY_ROUNDS", "1"))
SECONDS = float(os.environ.get("TUNELOOP_RELIABILITY_SECONDS", "10"))
SEED = int(os.environ.get("TUNELOOP_RELIABILITY_SEED", "20261130"))
MAX_ERROR_LINE = 1000  # a per-file error longer than this is not one readable line


@dataclass
class Row:
    operations: int = 0
    kills: int = 0
    hostile: int = 0
    lost: int = 0
    unclear: int = 0


class Tally:
    """Counts per area; ``pytest_terminal_summary`` (conftest) prints them as one table."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = defaultdict(Row)
        self.latency: dict[str, list[float]] = defaultdict(list)

    def add(self, area: str, **counts: int) -> None:
        row = self.rows[area]
        for k, v in counts.items():
            setattr(row, k, getattr(row, k) + v)

    def table(self) -> str:
        head = f"{'area':<28}{'operations':>11}{'kills':>7}{'hostile':>9}{'writes lost':>13}{'unclear errors':>16}"
        lines = [head, "-" * len(head)]
        total = Row()
        for area in sorted(self.rows):
            r = self.rows[area]
            lines.append(f"{area:<28}{r.operations:>11}{r.kills:>7}{r.hostile:>9}{r.lost:>13}{r.unclear:>16}")
            for f in ("operations", "kills", "hostile", "lost", "unclear"):
                setattr(total, f, getattr(total, f) + getattr(r, f))
        lines.append("-" * len(head))
        lines.append(f"{'total (goal: 0 lost, 0 unclear)':<28}{total.operations:>11}{total.kills:>7}{total.hostile:>9}"
                     f"{total.lost:>13}{total.unclear:>16}")
        for name, xs in sorted(self.latency.items()):
            if xs:
                s = sorted(xs)
                p50, p95 = (s[min(len(s) - 1, int(q * len(s)))] for q in (0.5, 0.95))
                lines.append(f"latency {name}: n={len(s)} p50={p50:.2f}s p95={p95:.2f}s max={s[-1]:.2f}s")
        return "\n".join(lines)


TALLY = Tally()


def env(home: Path) -> dict[str, str]:
    e = {**os.environ, "TUNELOOP_USER": "reliability", "HOME": str(home), "PYTHONUNBUFFERED": "1",
         "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
         "DO_NOT_TRACK": "true", "UNSTRUCTURED_DISABLE_NOTICE": "1"}
    e.pop("TUNELOOP_PROJECT", None)
    return e


def command(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tuneloop.cli", *args, "--project", str(project)]


def run_cli(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(project, *args), cwd=REPO, env=env(Path(os.environ["HOME"])), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def spawn(project: Path, *args: str, log: Path) -> subprocess.Popen:
    """The command in its own session, so what it leaves behind after a kill can be found."""
    out = open(log, "w")  # noqa: SIM115 - closed by the caller through ``finish``
    return subprocess.Popen(command(project, *args), cwd=REPO, env=env(Path(os.environ["HOME"])), stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, text=True)


def session_members(sid: int) -> list[str]:
    """'pid cmdline' of every live (non-zombie) process in session ``sid``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            state, session = fields[0], int(fields[3])
            if session == sid and state != "Z":
                cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{d.name} {cmdline[:200]}")
        except (OSError, IndexError, ValueError):
            continue
    return found


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL the command's own process only (as `kill -9 PID` would); its children are on their own."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def orphans_after(sid: int, *, grace_s: float = 30.0) -> list[str]:
    """Processes of a killed command's session still alive ``grace_s`` after the kill (then killed)."""
    deadline = time.monotonic() + grace_s
    left = session_members(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = session_members(sid)
    if left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sid, signal.SIGKILL)
    return left


def unclear_lines(output: str) -> list[str]:
    """Lines of a command's output a user could not act on: a traceback or an unreadably long line."""
    bad = [ln for ln in output.splitlines() if len(ln) > MAX_ERROR_LINE]
    if "Traceback (most recent call last)" in output:
        bad.append(output[output.index("Traceback"):][:2000])
    return bad


def leftover_cache(project: Path) -> list[str]:
    cache = project / "cache"
    if not cache.is_dir():
        return []
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(("import-", "tuneloop-ingest-")))


class PeakSize:
    """Largest total size of the files under ``folder`` seen while the block runs (sampled)."""

    def __init__(self, folder: Path, every_s: float = 0.05) -> None:
        self.folder, self.every_s, self.peak = folder, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _size(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.folder):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(dirpath, f)).st_size
        return total

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._size())
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakSize:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._size())
