"""Keep a project's DuckDB instance warm between the app's short-lived connections.

DuckDB drops its in-process instance (catalog, buffer pool) when the last connection to a
file closes, so an app that opens a connection per action re-reads the database from disk
on every rerun (tens of milliseconds at 100K pairs, far more at 1M). ``hold`` keeps one idle
connection open for ``idle_s`` seconds after the last user action; later connections in the
same process share the warm instance. When the app is idle the connection is closed, so a
CLI command (ingest, a training sync) can take the file: DuckDB admits one process per file,
and those commands retry for up to ``TUNELOOP_LOCK_TIMEOUT`` seconds.

Polling code (progress fragments) must not call ``hold``, or an open page would keep the
file locked forever.
"""

from __future__ import annotations

import atexit
import threading
import time

import duckdb

from store.db import Project, _is_lock_error, _open_lock

_lock = threading.Lock()
_held: dict[str, tuple[duckdb.DuckDBPyConnection, float]] = {}
_timer: threading.Thread | None = None


def _reaper(idle_s: float) -> None:
    global _timer
    while True:
        time.sleep(min(0.5, idle_s / 2))
        with _lock:
            now = time.monotonic()
            for path in [k for k, (_, last) in _held.items() if now - last >= idle_s]:
                _held.pop(path)[0].close()  # no local keeps the closed connection alive
            if not _held:
                _timer = None
                return


def hold(project: Project, idle_s: float = 3.0) -> bool:
    """Keep ``project``'s database open (warm) until ``idle_s`` seconds after the last call.

    Returns False, holding nothing, when another process has the file right now.
    """
    global _timer
    path = str(project.db_path)
    with _lock:
        if path in _held:
            _held[path] = (_held[path][0], time.monotonic())
            return True
        try:
            with _open_lock(path):
                con = duckdb.connect(path)
        except duckdb.IOException as exc:
            if _is_lock_error(exc):
                return False
            raise
        _held[path] = (con, time.monotonic())
        del con
        if _timer is None:
            _timer = threading.Thread(target=_reaper, args=(idle_s,), daemon=True, name="tuneloop-warm-db")
            _timer.start()
    return True


def release(project: Project | None = None) -> None:
    """Close the warm connection now (all projects when ``project`` is None)."""
    with _lock:
        for path in list(_held):
            if project is None or path == str(project.db_path):
                _held.pop(path)[0].close()


def is_held(project: Project) -> bool:
    with _lock:
        return str(project.db_path) in _held


atexit.register(release)
