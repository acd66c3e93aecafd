"""Parser worker processes with a per-file time limit.

Parsing runs in child processes so a parser that hangs (or crashes, or eats memory) on one
file can be killed without taking the batch down; the parent kills the worker once a file
passes its deadline, records a ``timeout`` error and starts a fresh worker. Workers never
open the database: they return ``Parsed`` data (or an ``IngestError``) through a pipe.

Workers come from the parser server (``ingest.parser_server``), a ``forkserver`` that imported
unstructured, loaded the spaCy model and the parsers of the batch's formats once (``prestart``), so a new or
replacement worker starts warm in milliseconds instead of paying the ~3 s import again. The
forkserver is a clean process (no threads, no database handles), which makes forking from it safe.
It is started once per process: a later batch's other formats load in its workers, reported as
loading, outside the files' time limits.

The forkserver forks nothing before it is warm. With a core the workers leave free, a batch's
first file need not wait for that: a *cold* worker starts first, a fresh interpreter (``python -m
ingest.workers``, not multiprocessing's ``spawn``, which would run the caller's main module again)
that loads only what its files need (``offline.warm(ext)``); the forkserver warms on the spare core
once that worker has loaded its parser, and the pool grows when it is warm (``forkserver_warm``).
With as many workers as cores, cold workers would each import the same parsers at once, competing
for the cores: there the workers wait for the forkserver, which then preloads only the text path
and what PDFs and images need (~2.7 s on 2 cores), and meanwhile one cold worker, the *scout*, parses
the light files (office, e-mail, HTML, text, tables: unstructured's core, the sentence model and
the format's small module, ~2 s to load) on the core the waiting workers leave free; it stops when
no light file is left, and forked workers take the rest. Measured on 2 cores, 14 files of every
format, 2 workers against the plain ``partition`` loop: all cold 1.10x; cold without torch and
with one OCR thread (both below) 1.39x; forked from the batch's forkserver 1.32x; with the scout
~2.5 % faster again (7.2-7.8 s against 7.4-8.0 s, 5 of 6 alternating rounds). The import cannot be
shared out: the plain loop there is ~3.3 s of import and ~5.7 s of parsing; two workers still wait
~2.7 s for the forkserver's import, plus the parent's own ~0.8 s start, before ~5.7 / 2 s of
parsing, so ~1.45x is the most this corpus allows on 2 cores (a longer corpus amortises it).
Less work per file took it past that (session 18, 1.50x -> 1.70-1.74x): gray scans OCR'd as one
channel (``ingest.tesseract.gray_if_gray``), page ranges that shrink (``split_pages``) cut by qpdf,
no costly task queued behind a busy worker (``deal``), a writer that stops lingering once parsing is
over, and workers forked the moment the forkserver is warm (``parser_server.warm_signal``).

Parser processes keep torch out (``offline.keep_torch_out``; ``hi_res`` workers start cold and
keep it) and use one thread each for tesseract and BLAS (``offline.one_thread_each``).

Each worker says when it starts a file (``STARTED``, and whether it first loads the parser for
the file's format) and, if it had to, when the parser is loaded (``LOADED``). A file's time
limit counts from the start of its parse: a cold worker's loading has the boot limit instead,
so a short ``timeout_s`` never fails a file for the parser's import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from ingest import offline
from ingest import parser_server as server
from ingest.filetypes import IngestError, extension
from ingest.limits import clip
from ingest.partition import Parsed, partition_file


@dataclass(frozen=True)
class Task:
    key: int
    path: str
    name: str
    limit_s: float | None = None  # this file's parse time limit (``time_limit``); None: the batch's ``timeout_s``
    limit_for: str = ""  # what the limit was sized for, for the message ("619 pages", "3.2 MB")
    n_pages: int | None = None  # a PDF's page count: a long one is parsed in page ranges (``split_pages``)
    pages: tuple[int, int] | None = None  # the range this task parses (first, last), set by ``parse_all``
    cost: float = 1.0  # expected work (``parse_cost``): several workers take the costliest tasks first


def parse_cost(*, pages: int | None = None, size_bytes: int = 0, ocr: bool = False) -> float:
    """A file's expected parse seconds, roughly (measured on 2 cores: a text PDF page ~0.02 s, an
    OCR'd page or image ~3 s, an office or text file ~0.1 s plus ~1 s per MB). Several workers take
    the costliest files first, so a scan or a long PDF does not start last and leave one worker
    busy alone at the end (longest-processing-time-first scheduling)."""
    if ocr:
        return 3.0 * (pages or 1)
    if pages:
        return 0.02 * pages
    return 0.1 + size_bytes / 1048576


# A file's time limit grows with its size: a 619-page PDF or a 1,225-page text on a loaded
# 2-core machine needs minutes where a memo needs a second, and one fixed limit either fails
# the big files or waits far too long for a hung small one. Pages when the count is known
# (PDFs, counted in the parent before parsing), else megabytes.
PER_PAGE_S = {"fast": 1.0, "auto": 1.0, "ocr_only": 10.0, "hi_res": 15.0}
PER_MB_S = 120.0
FREE_MB = 1.0  # the base covers a file's first MB: the per-MB share is for the big ones



def time_limit(base_s: float, *, pages: int | None = None, size_bytes: int = 0,
               pdf_strategy: str = "auto") -> tuple[float, str]:
    """A file's parse time limit in seconds, and what it was sized for: ``base_s`` (``--timeout``)
    plus a share per page (PDFs, more when OCR reads them) or per MB past the first (everything else)."""
    if pages:
        return base_s + PER_PAGE_S.get(pdf_strategy, 1.0) * pages, f"{pages} page{'s' if pages != 1 else ''}"
    mb = size_bytes / 1048576
    return base_s + PER_MB_S * max(0.0, mb - FREE_MB), f"{mb:.1f} MB"


@dataclass(frozen=True)
class ParseOptions:
    pdf_strategy: str = "auto"
    languages: tuple[str, ...] | None = None


class _Capture(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.into.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Collect what a parser says while it works (Python warnings, log records at WARNING and up),
    instead of letting it print loose on stderr, where a batch cannot tell which file it was about.
    Each logger's own handlers are swapped for the capture meanwhile, and put back after."""
    out: list[str] = []
    cap = _Capture(out)
    loggers = [logging.root] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                if isinstance(lg, logging.Logger) and lg.handlers]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = [cap] if lg is logging.root else []
        lg.propagate = True if lg is not logging.root else lg.propagate
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield out
            out.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate


def _parse(task: Task, opts: ParseOptions) -> Parsed | IngestError:
    with captured_warnings() as said:
        try:
            res: Parsed | IngestError = partition_file(
                task.path, task.name, pdf_strategy=opts.pdf_strategy,
                languages=list(opts.languages) if opts.languages else None, pages=task.pages,
                n_pages=task.n_pages)
        except IngestError as exc:
            res = exc
        except Exception as exc:  # a parser bug must not kill the worker
            res = IngestError("parse_error", f"parser failed on {task.name} ({type(exc).__name__}: {str(exc)[:300]})")
    said = list(dict.fromkeys(said))  # a parser repeats itself per page or element: each once
    if isinstance(res, Parsed):
        res.warnings = res.warnings + [f"parser: {clip(w, 300)}" for w in said[:20]]
    elif said:
        res = IngestError(res.kind, f"{res.message} (parser said: {'; '.join(x[:200] for x in said[:3])})")
    return res


READY = "__ready__"
STARTED, LOADED = "started", "loaded"
BOOT_TIMEOUT_S = 300.0


def _serve(conn: Connection, opts: ParseOptions, cold: bool = False) -> None:
    # Tell the parent we are up: a file's time limit counts from its start, not from the fork
    # (on a loaded machine a worker can take seconds to be scheduled at all).
    conn.send((READY, "ready", None))
    loaded: set[str] = set()
    preloaded = None if cold else offline.preloaded_formats()  # a forked worker has these warm (None: all)
    cold = cold or preloaded is not None  # ... and loads any other format as a cold worker does
    loaded.update(preloaded or ())
    while True:
        try:
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        ext = extension(task.name)
        loading = cold and ext not in loaded
        conn.send((task.key, STARTED, loading))
        if loading:  # a cold worker loads this format's parser first, outside the file's time limit
            with contextlib.suppress(Exception):  # a missing piece is the file's own error, below
                offline.warm(ext)
            loaded.add(ext)
            conn.send((task.key, LOADED, None))
        res = _parse(task, opts)
        if isinstance(res, IngestError):
            conn.send((task.key, "err", (res.kind, res.message)))
        else:
            conn.send((task.key, "ok", res))


class _ColdProcess:
    """A cold worker's process: ``python -m ingest.workers FD``, talking over a socket pair, with
    the part of ``multiprocessing.Process``'s interface that ``_Worker`` uses."""

    def __init__(self, child: socket.socket):
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.popen = subprocess.Popen([sys.executable, "-m", "ingest.workers", str(child.fileno())],
                                      pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL)

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)


class _Worker:
    """One parser process with up to ``DEPTH`` tasks in its pipe.

    Keeping the next task queued in the pipe means the worker never waits for the parent to
    wake up between files (on a busy machine that hand-off costs more than parsing a small
    file). The head task started when the previous result came back (or when it was sent to
    an idle worker), and exactly when the worker says so (``STARTED``, ``LOADED``); its deadline
    counts from then.
    """

    DEPTH = 2

    def __init__(self, opts: ParseOptions, cold: bool = False, scout: bool = False):
        self.proc: Any
        self.scout = scout  # a cold worker that parses only light files while the forkserver warms
        if cold:
            mine, child = socket.socketpair()
            self.proc = _ColdProcess(child)
            child.close()
            self.conn = Connection(mine.detach())
            self.conn.send(opts)  # a cold worker's first message: its options
        else:
            ctx = server.context()
            self.conn, child_conn = ctx.Pipe()
            self.proc = ctx.Process(target=_serve, args=(child_conn, opts), daemon=True)
            self.proc.start()
            child_conn.close()
        self.tasks: deque[Task] = deque()
        self.ready = False
        self.loading = False  # loading the parser for the head task (a cold worker): the boot limit applies
        self.settled = not cold  # a cold worker has loaded its first parser (or finished a file)
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


def _new_worker(opts: ParseOptions, scout: bool = False) -> _Worker:
    """A worker forked from the forkserver when it is warm, else a cold one that starts at once.
    ``hi_res`` always gets a cold one: the forkserver keeps torch out, which the layout model may need.
    ``scout``: the one replaces a scout (a cold scout while the forkserver warms)."""
    cold = not server.forkserver_warm() or opts.pdf_strategy == "hi_res"
    return _Worker(opts, cold=cold, scout=scout and cold)


def _next_light(pending: list[Task]) -> int | None:
    """The index in ``pending`` (next task last) of the next light task, if any."""
    return next((i for i in range(len(pending) - 1, -1, -1) if server.light(pending[i].name)), None)


# A long PDF is parsed in page ranges by several workers at once (one file would otherwise keep
# one worker busy while the others idle): from SPLIT_MIN_PAGES pages, in ranges of at least
# PART_MIN_PAGES pages. Each range is partitioned with its pages numbered as in the whole file;
# running headers and footers are judged over the ranges joined (``merge_parts``), and the element
# ids (unstructured hashes file name, page and text) are the ones the whole file gets.
SPLIT_MIN_PAGES = 48
PART_MIN_PAGES = 24


def split_pages(n_pages: int | None, workers: int) -> list[tuple[int, int]]:
    """The page ranges (first, last) a PDF of ``n_pages`` is parsed in; [] for one piece.

    Ranges shrink (guided self-scheduling): each takes 1/(2 x ``workers``) of the pages still
    left, so the costliest-first order starts the big ranges early and ends on small ones, and the
    workers finish together instead of one parsing a last equal share while the others idle
    (measured on 2 cores, 2 workers, the 14-file corpus of ``bench_ingest_quality``: a 320-page
    PDF in 80/60/45/34/26/24/24/27 pages, 5% faster than 160/80/40/40, which was faster than four
    ranges of 80; a real PDF whose first pages are slow to repair, unstructured's
    ``failure-after-repair.pdf``, took 55 s in a first range of 38 pages where 24 keep it shorter)."""
    if workers < 2 or not n_pages or n_pages < SPLIT_MIN_PAGES:
        return []
    out: list[tuple[int, int]] = []
    first = 1
    while first <= n_pages:
        left = n_pages - first + 1
        size = max(PART_MIN_PAGES, -(-left // (2 * workers)))
        if left - size < PART_MIN_PAGES:  # no range under the minimum: the last one takes the rest
            size = left
        out.append((first, first + size - 1))
        first += size
    return out


def merge_parts(parts: list[Parsed | IngestError], ranges: list[tuple[int, int]]) -> Parsed | IngestError:
    """One file's result from its page ranges' results, in page order: the first failure, else the
    elements one after another, with what is judged over the whole document (running lines, false
    headings: ``cleaning.finish_document``) done on them joined, as for the file in one piece (no
    text in any range: the whole file's ``no_text`` error)."""
    from ingest.cleaning import finish_document
    from ingest.partition import furniture_warning, pdf_without_text

    for (first, last), res in zip(ranges, parts):
        if isinstance(res, IngestError):
            return IngestError(res.kind, f"pages {first}-{last}: {res.message}")
    done = [r for r in parts if isinstance(r, Parsed)]
    strategies = sorted({r.strategy for r in done if r.strategy})
    elements, running = finish_document([e for r in done for e in r.elements])
    if not elements:
        return pdf_without_text("+".join(strategies))
    furniture = running + sum(r.furniture for r in done)
    warnings = list(dict.fromkeys(w for r in done for w in r.warnings))
    return Parsed(filetype=done[0].filetype, elements=elements, n_pages=max(r.n_pages or 0 for r in done) or None,
                  strategy="+".join(strategies), warnings=warnings + ([furniture_warning(furniture)] if furniture else []),
                  furniture=furniture)


# A task waits in a busy worker's pipe (behind its head task) only when it is small: queued, it
# starts without waiting for the parent to wake up (worth it for many small files); a big one
# queued there is bound to that worker, and another worker that frees sooner idles at the end
# while it waits (measured: a 320-page PDF's first range with a scan queued behind it, 0.5 s of
# one idle core in a 6.5 s run).
QUEUE_MAX_COST = 0.5


def _may_queue(task: Task) -> bool:
    """Whether ``task`` may wait behind another in a busy worker's pipe: a cheap file, not a page
    range (ranges are cut to run beside each other, and a range's estimate can be far off: 24 pages
    of unstructured's ``failure-after-repair.pdf`` are estimated at 0.5 s and take ~30 s)."""
    return task.cost <= QUEUE_MAX_COST and task.pages is None


def deal(pending: list[Task], queued: list[int], depth: int) -> list[tuple[int, Task]]:
    """Hand ``pending`` (next task last) to workers that hold ``queued`` tasks each, up to
    ``depth`` per worker, one round at a time: every idle worker gets a head task before any
    gets a second, so the costliest tasks (first in line) go to different workers; a task goes
    behind another only when it costs at most ``QUEUE_MAX_COST`` and is no page range
    (``_may_queue``). Pops what it hands out;
    returns (worker index, task) in order."""
    out: list[tuple[int, Task]] = []
    held = list(queued)
    for level in range(1, depth + 1):
        for i in range(len(held)):
            if pending and held[i] < level and (held[i] == 0 or _may_queue(pending[-1])):
                out.append((i, pending.pop()))
                held[i] += 1
    return out


def order(tasks: list[Task]) -> list[Task]:
    """The order tasks start in, on every engine and worker count: the costliest first (stable).

    Several workers need it (longest-processing-time-first); one worker gets the same order so
    that every engine sees files in one order: unstructured caches its sentence model's output
    per text (the last 128), so files that share text (versions of one report, copies with a
    changed line) parse faster next to each other, and one worker in path order did not get
    that: ``ingest`` of 504 files (63 copies of 8, each with a changed line), one worker, took
    59 s in path order and 31 s in this one, and one worker looked 3.5x slower than two.

    Costs count in tenths of a second, so small files (~0.1 s each) keep the order they were given
    in: a pair found in two such files keeps the first-named one as its first source."""
    return sorted(tasks, key=lambda t: -round(t.cost, 1))


def parse_all(tasks: Iterable[Task], *, workers: int = 1, timeout_s: float = 300.0,
              opts: ParseOptions | None = None,
              on_start: Callable[[Task, bool], None] | None = None,
              engine: Any = None) -> Iterator[tuple[Task, Parsed | IngestError]]:
    """Parse every task; yield results in completion order. ``workers=0`` parses in-process;
    ``engine`` ray (``scale.engine.Engine``): on Ray, one task per file and CPU slot
    (``ingest.ray_parse``), long PDFs split for the cluster's slots.

    ``on_start(task, loading)`` is called (in this thread) when a worker starts on a task;
    ``loading``: it first loads the parser for the task's format (a cold worker). A task with
    ``n_pages`` (a PDF) is parsed in page ranges when it is long and there are several workers
    (``split_pages``); its result comes back once, merged (``merge_parts``)."""
    tasks = list(tasks)
    on_ray = engine is not None and engine.is_ray
    if on_ray and tasks:  # nothing to parse (a re-run of a stored batch) starts no Ray runtime
        from scale.engine import runtime, slots

        with runtime(engine) as ray:  # connected once: the parse below reuses the runtime
            workers = slots(ray)
            yield from _split_and_parse(tasks, workers, timeout_s, opts, on_start, engine)
        return
    yield from _split_and_parse(tasks, workers, timeout_s, opts, on_start, None)


def _split_and_parse(tasks: list[Task], workers: int, timeout_s: float, opts: ParseOptions | None,
                     on_start: Callable[[Task, bool], None] | None,
                     engine: Any) -> Iterator[tuple[Task, Parsed | IngestError]]:
    whole: dict[int, Task] = {}  # a range task's key -> the file's task
    ranges: dict[int, list[tuple[int, int]]] = {}  # a file's key -> its ranges
    results: dict[int, dict[tuple[int, int], Parsed | IngestError]] = {}
    expanded: list[Task] = []
    next_key = max((t.key for t in tasks), default=0) + 1
    for t in tasks:
        parts = split_pages(t.n_pages, workers) if t.pages is None else []
        if not parts:
            expanded.append(t)
            continue
        ranges[t.key], results[t.key] = parts, {}
        limit = t.limit_s or timeout_s
        for first, last in parts:
            share = (last - first + 1) / (t.n_pages or 1)
            part = replace(t, key=next_key, pages=(first, last), limit_s=timeout_s + max(0.0, limit - timeout_s) * share,
                           limit_for=f"pages {first}-{last} of {t.n_pages}")
            whole[next_key] = t
            next_key += 1
            expanded.append(replace(part, cost=t.cost * share))
    expanded = order(expanded)
    started: set[int] = set()

    def starting(task: Task, loading: bool) -> None:
        if on_start is None:
            return
        owner = whole.get(task.key, task)
        if owner.key not in started:
            started.add(owner.key)
            on_start(owner, loading)

    if engine is not None:
        from ingest.ray_parse import parse_all_ray

        parsed = parse_all_ray(expanded, engine, timeout_s=timeout_s, opts=opts or ParseOptions(), on_start=starting)
    else:
        parsed = _parse_all(expanded, workers=workers, timeout_s=timeout_s, opts=opts, on_start=starting)
    for task, res in parsed:
        owner = whole.get(task.key)
        if owner is None:
            yield task, res
            continue
        got = results[owner.key]
        assert task.pages is not None
        got[task.pages] = res
        if len(got) == len(ranges[owner.key]):
            yield owner, merge_parts([got[r] for r in ranges[owner.key]], ranges[owner.key])


def _parse_all(tasks: Iterable[Task], *, workers: int = 1, timeout_s: float = 300.0,
               opts: ParseOptions | None = None,
               on_start: Callable[[Task, bool], None] | None = None) -> Iterator[tuple[Task, Parsed | IngestError]]:
    opts = opts or ParseOptions()
    pending = list(tasks)
    pending.reverse()
    if workers <= 0:
        while pending:
            t = pending.pop()
            if on_start:
                on_start(t, False)
            yield t, _parse(t, opts)
        return
    pool: list[_Worker] = []
    scout = server.scouting(workers, [t.name for t in pending], opts)
    formats = server.preload_formats((t.name for t in pending), workers, scout)
    # With a core the workers leave free (the parent mostly waits on their pipes), the forkserver
    # warms this batch's formats there while one cold worker starts on the first files. With no
    # more cores than workers, several cold workers would each import the same parsers at once
    # (~3 s each on 2 cores, competing for the cores); instead the forkserver imports them once and
    # every worker forks from it warm (measured on 2 cores, 2 workers, 14 files of every format:
    # 7.3-8.1 s against 8.0-8.7 s), and meanwhile one cold worker, the scout, parses the light
    # files on the core the waiting workers leave free (``scouting``). ``hi_res`` workers always
    # start cold (``_new_worker``).
    spare_core = server.forkserver_warm() or (os.cpu_count() or 1) > workers
    warm_by = time.monotonic() + BOOT_TIMEOUT_S
    if server.forkserver_first(workers, len(pending), opts):
        server.prestart(formats)
        if scout:
            pool.append(_Worker(opts, cold=True, scout=True))
        else:
            spare_core = server.await_warm(BOOT_TIMEOUT_S)  # no forkserver here after all: cold workers, as before

    def forking() -> bool:
        """Whether workers other than the scout may start: the forkserver is warm, or it will not
        be (it failed, or passed the boot limit: workers then start cold, as without one)."""
        return not scout or not server.warming(warm_by)

    try:
        while True:
            if spare_core and all(w.settled for w in pool) and (pool or server.forkserver_warm()):
                server.prestart(formats)  # no-op when running; else it warms now, not while a cold worker loads
            # A scout with no light file left stops: a forked worker takes its place.
            for w in [w for w in pool if w.scout and not w.tasks and not any(server.light(t.name) for t in pending)]:
                w.stop()
                pool.remove(w)
            # Grow to ``workers`` (no more than there are tasks): at once when the forkserver is
            # warm or will not warm (no spare core: every worker starts cold); while it warms on
            # the spare core, one cold worker starts on the first files and the rest follow.
            while (len(pool) < min(workers, len(pending) + sum(len(w.tasks) for w in pool)) and forking()
                   and (not pool or server.forkserver_warm() or not spare_core)):
                pool.append(_new_worker(opts))
            for w in pool:  # a scout takes the light files, next first
                while w.scout and len(w.tasks) < _Worker.DEPTH and (k := _next_light(pending)) is not None:
                    w.send(pending.pop(k))
            for k, task in deal(pending, [_Worker.DEPTH if w.scout else len(w.tasks) for w in pool], _Worker.DEPTH):
                pool[k].send(task)
            busy = [w for w in pool if w.tasks]
            if not busy:
                if pending and not forking():  # only heavy files left, and the forkserver still warming
                    server.await_warm(max(0.0, warm_by - time.monotonic()))
                    continue
                return
            limit = lambda w: (w.tasks[0].limit_s or timeout_s) if w.ready and not w.loading else BOOT_TIMEOUT_S  # noqa: E731
            wait_s = max(0.0, min(w.head_started + limit(w) for w in busy) - time.monotonic())
            watch: list[Any] = [w.conn for w in busy]
            if len(pool) < workers and pending and not server.forkserver_warm() and (spare_core or scout):
                watch.append(server.warm_signal())  # more workers the moment the forkserver is warm
                wait_s = min(wait_s, 0.25)  # and a look now and then, should it never be
            ready = wait(watch, timeout=wait_s)
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
                        pool[i] = _new_worker(opts, scout=w.scout)
                        yield task, IngestError(
                            "crash", f"the parser process died on this file (exit code {code}); "
                                     f"the file may be malformed or too large for the available memory")
                        continue
                    if key == READY:
                        w.ready = True
                        w.head_started = time.monotonic()
                        continue
                    if status in (STARTED, LOADED):  # the head task's parse (or its parser's loading) begins
                        w.head_started = time.monotonic()
                        w.loading = status == STARTED and bool(payload)
                        w.settled = w.settled or status == LOADED
                        if status == STARTED and on_start:
                            on_start(w.tasks[0], w.loading)
                        continue
                    task = w.tasks.popleft()
                    w.head_started = time.monotonic()
                    w.loading, w.settled = False, True
                    yield task, payload if status == "ok" else IngestError(*payload)
                elif time.monotonic() >= w.head_started + limit(w):
                    took = time.monotonic() - w.head_started
                    task = w.tasks.popleft()
                    pending.extend(reversed(w.tasks))
                    w.kill()
                    pool[i] = _new_worker(opts, scout=w.scout)
                    yield task, timed_out(took, task.limit_s or timeout_s, task.limit_for)
    finally:
        for w in pool:
            w.stop()


def timed_out(took_s: float, limit_s: float, limit_for: str = "") -> IngestError:
    """The error of a file stopped at its time limit: how long it ran, and the limit with the size it was for."""
    sized = f"the limit for {limit_for}" if limit_for else "the limit"
    return IngestError("timeout", f"timed out after {took_s:.0f} s ({sized}: {limit_s:.0f} s) and was stopped; "
                                  f"split the file, or raise the base limit with --timeout")


def _cold_main(fd: int) -> None:
    conn = Connection(fd)
    opts: ParseOptions = conn.recv()
    offline.one_thread_each()
    offline.defer_plotting()
    if opts.pdf_strategy != "hi_res":  # only the layout model may need torch (``offline.keep_torch_out``)
        offline.keep_torch_out()
    _serve(conn, opts, cold=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # nothing to clean up: skip tearing down the parser's imports (seconds, for nothing)


if __name__ == "__main__":  # a cold worker (``_ColdProcess``)
    _cold_main(int(sys.argv[1]))
