"""Projects and connections.

A project is a folder: ``tuneloop.duckdb`` plus artifact folders (``runs/``, ``exports/``,
``uploads/``, ``cache/``). DuckDB lets one process at a time hold the file (readers too),
so every caller opens a *short-lived* connection for one unit of work and closes it; when
another process holds the file, ``connect`` retries with backoff until ``timeout`` and then
raises ``StoreBusyError`` (a message a user can act on that names the process holding the
file, never a raw lock error). Long work
(parsing, training, generation) happens outside a connection; training processes exchange
files through their run folder and never open the database.

Inside one process several threads may connect at once: DuckDB shares one instance per
file, and each ``connect`` returns its own connection, so no connection crosses threads.

Transactions: every unit of work that writes more than one row goes through ``atomic(con)``
(``Project.transaction`` is ``connect`` + ``atomic``). There are no savepoints: an ``atomic``
block entered while the connection is already inside one *joins* it, so a store function
that is atomic on its own composes into a caller's larger transaction, and the outermost
block alone commits or rolls back. DuckDB does not report whether a connection is inside a
transaction (and a failed BEGIN aborts the open one), so ``atomic`` tracks the connections
it opened a transaction on; nothing else may call ``begin``/``commit``/``rollback``.

Keeping the instance warm: DuckDB drops its in-process instance (catalog, buffer pool) when
the last connection to a file closes, so an app that opens a connection per action would
re-read the database from disk on every rerun (tens of milliseconds at 100K pairs, far more
at 1M). ``Project.hold_warm`` keeps one idle connection open for ``idle_s`` seconds after the
last call; later connections in the same process share the warm instance. When the app is
idle the connection is closed, so a CLI command (ingest, a training sync) can take the file.
Polling code (progress fragments) must not hold the project warm, or an open page would keep
the file locked forever.

A warm hold yields at once to a waiting process: ``connect`` leaves a wait mark
``<db>.wait-<pid>`` beside the file while it retries (refreshed on every try, removed when it
gets in), and the holder, which looks for fresh marks every ``WARM_POLL_S``, closes its idle
connection and warms nothing more while one is there. A reviewer clicking every second would
otherwise keep the file forever (each click restarts the idle clock), locking the CLI out;
dropping warm altogether instead costs every click a cold open, and a write click also the
checkpoint on close (``tests/bench/bench_cli_wait.py`` measures both).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

DB_NAME = "tuneloop.duckdb"
ENV_PROJECT = "TUNELOOP_PROJECT"
DEFAULT_TIMEOUT_S = float(os.environ.get("TUNELOOP_LOCK_TIMEOUT", "120"))


class StoreBusyError(RuntimeError):
    """The project database stayed locked by another process for longer than the timeout."""

    def __init__(self, message: str, holder_pid: int | None = None):
        super().__init__(message)
        self.holder_pid = holder_pid


class ConflictError(RuntimeError):
    """An optimistic-concurrency check failed; the losing write was still recorded."""

    def __init__(self, message: str, kept_revision_id: str | None = None):
        super().__init__(message)
        self.kept_revision_id = kept_revision_id


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


def _lock_holder(exc: BaseException) -> tuple[int | None, str]:
    """The process id in DuckDB's lock error, and what that process is running (best effort)."""
    m = _HOLDER.search(str(exc))
    if m is None:
        return None, ""
    pid, what = int(m["pid"]), m["exe"]
    with contextlib.suppress(OSError):  # Linux names the command line; elsewhere the executable will do
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        what = " ".join(a.decode(errors="replace") for a in cmdline if a) or what
    return pid, what if len(what) <= 120 else what[:119] + "…"


def _is_txn_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.TransactionException) or "Conflict on" in str(exc)


# One process-wide lock per database file serialises *opening* (DuckDB's instance cache is
# not safe against concurrent first opens of the same file from several threads).
_open_locks: dict[str, threading.Lock] = {}
_open_locks_guard = threading.Lock()


def _open_lock(path: str) -> threading.Lock:
    with _open_locks_guard:
        return _open_locks.setdefault(path, threading.Lock())


# The connections inside an ``atomic`` block (weak: a closed, dropped connection leaves).
_in_transaction: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, bool] = weakref.WeakKeyDictionary()
_in_transaction_guard = threading.Lock()


@contextmanager
def atomic(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction around the block: commit at the end, roll back on any exception.

    Inside another ``atomic`` block on the same connection this joins the outer transaction
    (no savepoint): the outermost block commits or rolls back everything, so a function that
    is atomic when called alone stays correct when a caller makes it part of a larger unit.
    """
    with _in_transaction_guard:
        joined = con in _in_transaction
        if not joined:
            _in_transaction[con] = True
    if joined:
        yield con
        return
    try:
        con.begin()
        try:
            yield con
            con.commit()
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has already rolled back
                con.rollback()
            raise
    finally:
        with _in_transaction_guard:
            _in_transaction.pop(con, None)


# Wait marks (see the module docstring). A mark older than WAIT_MARK_FRESH_S belongs to a
# process that stopped waiting without removing it (killed): it is ignored.
WAIT_MARK_FRESH_S = 2.0
WARM_POLL_S = 0.05
_RETRY_MAX_S = 0.25  # the longest pause between two tries of a waiting connect


def _wait_mark(path: str) -> Path:
    return Path(f"{path}.wait-{os.getpid()}")


def someone_waits(path: str) -> bool:
    """Whether another process is waiting for the database file ``path`` right now."""
    db = Path(path)
    prefix, own, now = db.name + ".wait-", _wait_mark(path).name, time.time()
    try:
        with os.scandir(db.parent) as entries:
            for e in entries:
                if e.name.startswith(prefix) and e.name != own:
                    with contextlib.suppress(OSError):
                        age = now - e.stat().st_mtime
                        if age < WAIT_MARK_FRESH_S:
                            return True
                        if age > 60:  # left by a killed waiter (a live one would have touched it since)
                            os.unlink(e.path)
    except OSError:
        return False
    return False


# Warm instances (see the module docstring): path -> (idle connection, time of the last hold, idle_s).
_warm_guard = threading.Lock()
_warm: dict[str, tuple[duckdb.DuckDBPyConnection, float, float]] = {}
_warm_reaper: threading.Thread | None = None


def _reap_warm() -> None:
    global _warm_reaper
    while True:
        time.sleep(WARM_POLL_S)
        with _warm_guard:
            now = time.monotonic()
            done = [k for k, (_, last, idle_s) in _warm.items() if now - last >= idle_s or someone_waits(k)]
            for path in done:
                _warm.pop(path)[0].close()  # no local keeps the closed connection alive
            if not _warm:
                _warm_reaper = None
                return


def release_warm(project: Project | None = None) -> None:
    """Close the warm connection of ``project`` now (of every project when None)."""
    with _warm_guard:
        for path in list(_warm):
            if project is None or path == str(project.db_path):
                _warm.pop(path)[0].close()


atexit.register(release_warm)


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def exists(self) -> bool:
        return self.db_path.exists()

    def init(self) -> Project:
        """Create the folders and the database (idempotent), and apply pending migrations."""
        from store.migrations import migrate

        for d in (self.root, self.runs_dir, self.exports_dir, self.uploads_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            migrate(con)
        return self

    @contextmanager
    def connect(self, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-write connection, retried while another process holds the file."""
        timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 0.02
        path = str(self.db_path)
        mark = _wait_mark(path)
        try:
            while True:
                try:
                    with _open_lock(path):
                        con = duckdb.connect(path)
                    break
                except duckdb.IOException as exc:
                    if not _is_lock_error(exc):
                        raise
                    if time.monotonic() >= deadline:
                        pid, what = _lock_holder(exc)
                        holder = f"process {pid} ({what})" if pid is not None else "another process"
                        raise StoreBusyError(
                            f"The project database {path} is in use by another process: {holder} held it "
                            f"for the last {timeout:.0f} s. Wait for that process to finish (or raise "
                            f"TUNELOOP_LOCK_TIMEOUT) and try again.", holder_pid=pid,
                        ) from None
                    with contextlib.suppress(OSError):  # a warm holder lets go when it sees this
                        mark.touch()
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 1.6, _RETRY_MAX_S)
        finally:
            with contextlib.suppress(OSError):
                mark.unlink(missing_ok=True)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside one ``atomic`` transaction; any exception rolls the whole unit back."""
        with self.connect(timeout) as con, atomic(con):
            yield con

    def hold_warm(self, idle_s: float = 3.0) -> bool:
        """Keep this database's instance open (warm) until ``idle_s`` seconds after the last call,
        or until another process waits for the file (see the module docstring).

        Returns False, holding nothing, when another process has the file or waits for it.
        """
        global _warm_reaper
        path = str(self.db_path)
        with _warm_guard:
            if someone_waits(path):
                if path in _warm:
                    _warm.pop(path)[0].close()
                return False
            if path in _warm:
                _warm[path] = (_warm[path][0], time.monotonic(), idle_s)
                return True
            try:
                with _open_lock(path):
                    con = duckdb.connect(path)
            except duckdb.IOException as exc:
                if _is_lock_error(exc):
                    return False
                raise
            _warm[path] = (con, time.monotonic(), idle_s)
            del con
            if _warm_reaper is None:
                _warm_reaper = threading.Thread(target=_reap_warm, daemon=True, name="tuneloop-warm-db")
                _warm_reaper.start()
        return True

    def is_warm(self) -> bool:
        with _warm_guard:
            return str(self.db_path) in _warm


def retry_on_conflict(fn, attempts: int = 8):
    """Run ``fn()`` again when a concurrent transaction in this process conflicted with it."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # duckdb raises several classes for the same conflict
            if not _is_txn_conflict(exc) or i == attempts - 1:
                raise
            time.sleep(0.01 * (2**i) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def resolve_project_dir(project: str | os.PathLike[str] | None = None) -> Path:
    if project:
        return Path(project).expanduser().resolve()
    env = os.environ.get(ENV_PROJECT)
    if env:
        return Path(env).expanduser().resolve()
    return Path.cwd().resolve()


def open_project(project: str | os.PathLike[str] | None = None, create: bool = False) -> Project:
    """The project at ``project``, else $TUNELOOP_PROJECT, else the current folder."""
    root = resolve_project_dir(project)
    p = Project(root)
    if not p.exists():
        if not create:
            raise FileNotFoundError(
                f"No tuneloop project at {root} (no {DB_NAME}). Run `tuneloop init {root}` "
                f"or pass --project DIR / set {ENV_PROJECT}."
            )
        return p.init()
    with p.connect() as con:
        from store.migrations import migrate

        migrate(con)
    return p


# DuckDB 2.0 refuses new relation work on a connection while an execute() result is only
# partly read (``fetchone`` on a multi-row result). Store code reads with these helpers,
# which always consume the whole result.
def one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    row = one(con, sql, params)
    return None if row is None else row[0]


def frame(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """A query's result as a Polars frame (zero-copy through Arrow)."""
    return con.sql(sql, params=params or None).pl()
