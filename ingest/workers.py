"""Parser worker processes with a per-file time limit.

Parsing runs in child processes so a parser that hangs (or crashes, or eats memory) on one
file can be killed without taking the batch down; the parent kills the worker once a file
passes its deadline, records a ``timeout`` error and starts a fresh worker. Workers never
open the database: they return ``Parsed`` data (or an ``IngestError``) through a pipe.

Workers come from a ``forkserver`` that imported unstructured and loaded the spaCy model
once (``ingest.worker_boot``), so a new or replacement worker starts warm in milliseconds
instead of paying the ~4 s import again. The forkserver is a clean process (no threads, no
database handles), which makes forking from it safe.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ingest.filetypes import IngestError
from ingest.partition import Parsed, partition_file

_ctx: Any = None


def _context() -> Any:
    global _ctx
    if _ctx is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["ingest.worker_boot"])
        _ctx = ctx
    return _ctx


def prestart() -> None:
    """Start the (warming) forkserver now, so its imports overlap the caller's other work."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


@dataclass(frozen=True)
class Task:
    key: int
    path: str
    name: str


@dataclass(frozen=True)
class ParseOptions:
    pdf_strategy: str = "auto"
    languages: tuple[str, ...] | None = None


def _parse(task: Task, opts: ParseOptions) -> Parsed | IngestError:
    try:
        return partition_file(task.path, task.name, pdf_strategy=opts.pdf_strategy,
                              languages=list(opts.languages) if opts.languages else None)
    except IngestError as exc:
        return exc
    except Exception as exc:  # a parser bug must not kill the worker
        return IngestError("parse_error", f"parser failed ({type(exc).__name__}: {str(exc)[:300]})")


READY = "__ready__"
BOOT_TIMEOUT_S = 300.0


def _serve(conn: Connection, opts: ParseOptions) -> None:
    # Tell the parent we are up: a file's time limit counts from here, not from the fork
    # (on a loaded machine a worker can take seconds to be scheduled at all).
    conn.send((READY, "ready", None))
    while True:
        try:
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        res = _parse(task, opts)
        if isinstance(res, IngestError):
            conn.send((task.key, "err", (res.kind, res.message)))
        else:
            conn.send((task.key, "ok", res))


class _Worker:
    """One parser process with up to ``DEPTH`` tasks in its pipe.

    Keeping the next task queued in the pipe means the worker never waits for the parent to
    wake up between files (on a busy machine that hand-off costs more than parsing a small
    file). The head task started when the previous result came back (or when it was sent to
    an idle worker); its deadline counts from then.
    """

    DEPTH = 2

    def __init__(self, opts: ParseOptions):
        ctx = _context()
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, opts), daemon=True)
        self.proc.start()
        child.close()
        self.tasks: deque[Task] = deque()
        self.ready = False
        self.head_started = time.monotonic()

    def send(self, task: Task) -> None:
        if not self.tasks and self.ready:
            self.head_started = time.monotonic()
        self.tasks.append(task)
        self.conn.send(task)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.proc.join(timeout=2)
        self.kill()


def parse_all(tasks: Iterable[Task], *, workers: int = 1, timeout_s: float = 300.0,
              opts: ParseOptions | None = None) -> Iterator[tuple[Task, Parsed | IngestError]]:
    """Parse every task; yield results in completion order. ``workers=0`` parses in-process."""
    opts = opts or ParseOptions()
    pending = list(tasks)
    pending.reverse()
    if workers <= 0:
        while pending:
            t = pending.pop()
            yield t, _parse(t, opts)
        return
    pool: list[_Worker] = []
    try:
        pool = [_Worker(opts) for _ in range(min(workers, len(pending)))]
        while True:
            for w in pool:
                while pending and len(w.tasks) < w.DEPTH:
                    w.send(pending.pop())
            busy = [w for w in pool if w.tasks]
            if not busy:
                return
            limit = lambda w: timeout_s if w.ready else BOOT_TIMEOUT_S  # noqa: E731
            wait_s = max(0.0, min(w.head_started + limit(w) for w in busy) - time.monotonic())
            ready = wait([w.conn for w in busy], timeout=wait_s)
            for i, w in enumerate(pool):
                if not w.tasks:
                    continue
                if w.conn in ready:
                    try:
                        key, status, payload = w.conn.recv()
                    except (EOFError, OSError):
                        code = w.proc.exitcode
                        task = w.tasks.popleft()
                        pending.extend(reversed(w.tasks))  # queued behind the crash: parse again
                        w.kill()
                        pool[i] = _Worker(opts)
                        yield task, IngestError(
                            "crash", f"the parser process died on this file (exit code {code}); "
                                     f"the file may be malformed or too large for the available memory")
                        continue
                    if key == READY:
                        w.ready = True
                        w.head_started = time.monotonic()
                        continue
                    task = w.tasks.popleft()
                    w.head_started = time.monotonic()
                    yield task, payload if status == "ok" else IngestError(*payload)
                elif time.monotonic() >= w.head_started + limit(w):
                    task = w.tasks.popleft()
                    pending.extend(reversed(w.tasks))
                    w.kill()
                    pool[i] = _Worker(opts)
                    yield task, IngestError(
                        "timeout", f"parsing took longer than the time limit of {timeout_s:g} s and was "
                                   f"stopped; split the file, or raise the limit with --timeout")
    finally:
        for w in pool:
            w.stop()
