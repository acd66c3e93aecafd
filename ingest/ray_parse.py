"""Document partitioning on Ray (``--engine ray``): one Ray task per file (or page range of a long
PDF; small files a few to a task), at most one task per CPU slot at a time, with the same
per-file time limits and errors as the local workers (``ingest.workers``).

A task's time limit counts from its submission, since no more tasks run than there are slots;
the first task on each slot also gets ``BOOT_TIMEOUT_S`` for the Ray worker's first import of
the parsers. A task over its limit is cancelled (its worker process killed, as a local worker
is) and the file fails with the same "timed out" message. A task whose worker dies is parsed
again, each of its files on its own on a fresh worker: Ray may hand a task to a worker that a
cancellation is killing at that moment, so a file fails with "crash" only when its worker dies
under it twice. Parse tasks run with one thread per BLAS and OCR pool and, unless they run
``hi_res``, with torch kept out while they parse (``offline.torch_kept_out``: spaCy imports it
only to offer it; a worker's first load of the parsers took 4.5 s with it and 2.4 s without,
measured side by side on 2 cores). They run in the cluster's ordinary worker pool, whose workers
Ray starts before any job needs them: a pool of their own (a runtime environment) made every
batch start its workers cold, ~1 s of CPU each (2-core cluster, 504 documents: 1.08x faster in
the default pool, 4 alternating rounds). ``hi_res`` parsing, which needs torch, keeps a pool of
its own. A batch warms its workers first (``prestart``).
Everything after parsing (layout, chunks, pairs, the store) runs in the calling
process exactly as with the local engine, so the results are the same.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ingest.filetypes import IngestError
from ingest.partition import Parsed
from ingest.workers import BOOT_TIMEOUT_S, ParseOptions, Task, _parse, timed_out
from scale.engine import Engine, runtime, slots

GROUP_COST = 0.5  # small files go to Ray in groups of about this much expected work (``parse_cost``) ...
GROUP_MAX = 16  # ... and at most this many: a round trip per file would cost more than a small parse


@contextlib.contextmanager
def _parser(opts: ParseOptions) -> Iterator[None]:
    """A Ray worker set up like a local parser process while a parse task runs: offline, quiet, one
    thread per pool and, unless it runs ``hi_res`` (its layout model may need it), torch kept out
    (``offline.torch_kept_out``: unstructured's tokenizer imports spaCy, which imports torch)."""
    from ingest import offline

    offline.one_thread_each()  # before the parsers' imports: numpy's and tesseract's pools read it once
    offline.defer_plotting()
    with contextlib.nullcontext() if opts.pdf_strategy == "hi_res" else offline.torch_kept_out():
        offline.configure()
        yield


def _parse_on_worker(tasks: list[Task], opts: ParseOptions) -> list[Parsed | tuple[str, str]]:
    """Runs in a Ray worker: offline and quiet like a local parser process; an error as (kind, message)."""
    out: list[Parsed | tuple[str, str]] = []
    with _parser(opts):
        for task in tasks:
            res = _parse(task, opts)
            out.append((res.kind, res.message) if isinstance(res, IngestError) else res)
    return out


def _warm_on_worker(formats: list[str], opts: ParseOptions) -> tuple[int, bool]:
    """Runs in a Ray parse worker at a batch's start: loads the parsers of ``formats`` (what a
    local worker gets from the parser forkserver, ``ingest.worker_boot``); (its process id,
    whether it could). A failure here is left to the parse tasks, which report it per file."""
    import os

    from ingest import offline

    try:
        with _parser(opts):
            for ext in formats:
                offline.warm(ext)
    except Exception:  # noqa: BLE001 - see above
        return os.getpid(), False
    return os.getpid(), True


def prestart(ray: Any, names: Sequence[str], opts: ParseOptions) -> list[Any]:
    """Start the batch's Ray parse workers now, one per CPU slot, each loading the parsers of the
    batch's formats (``ingest.parser_server.preload_formats``), so that their start (a Ray worker
    process, then ~3 s of imports on 2 cores) overlaps the caller's own preparation of the files
    (page counts, OCR checks) instead of following it. The parse tasks go to these workers (Ray
    reuses a job's idle workers of one runtime environment); the first of them on each slot waits
    for its warm-up inside its boot allowance (``BOOT_TIMEOUT_S``). The references it returns need
    not be awaited."""
    from ingest.parser_server import preload_formats

    n = slots(ray)
    warm = ray.remote(num_cpus=1, max_retries=0, runtime_env=runtime_env(opts))(_warm_on_worker)
    formats = sorted(preload_formats(names, n))
    return [warm.remote(formats, opts) for _ in range(n)]


def runtime_env(opts: ParseOptions) -> dict[str, Any]:
    """The runtime environment of parse tasks: the cluster's own (its idle workers are started
    already), except for ``hi_res``: a pool of its own, started with one thread per pool, whose
    workers load torch for the layout model."""
    from ingest import offline

    if opts.pdf_strategy != "hi_res":
        return {}
    return {"env_vars": {**offline.one_thread_env(), "TUNELOOP_RAY_PARSER": "hi_res"}}


def groups(tasks: Sequence[Task]) -> list[list[Task]]:
    """Tasks in submission order, consecutive small ones grouped (see ``GROUP_COST``). A PDF's page
    ranges are never grouped, however cheap their estimate: they exist to be parsed side by side
    (unstructured's ``failure-after-repair.pdf``, 76 pages estimated at 0.02 s each, takes ~30 s per
    24-page range; two of its ranges in one group ran one after the other while the other slot idled,
    97 s against 75 s for the local engine)."""
    out: list[list[Task]] = []
    cur: list[Task] = []
    for t in tasks:
        if t.cost >= GROUP_COST or t.pages is not None:  # a page range is cut to run beside the others
            out.append([t])
            continue
        cur.append(t)
        if sum(x.cost for x in cur) >= GROUP_COST or len(cur) >= GROUP_MAX:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def parse_all_ray(tasks: Sequence[Task], engine: Engine, *, timeout_s: float, opts: ParseOptions,
                  on_start: Callable[[Task, bool], None] | None = None) -> Iterator[tuple[Task, Parsed | IngestError]]:
    """Parse ``tasks`` (in this order) on Ray; yield results in completion order.

    Small files travel in groups; a group over its time limit (the sum of its files' limits) is
    stopped and its files are parsed again one per task, so only a file that is slow on its own
    fails with "timed out". A slot that comes free gets its next task before the caller sees the
    results (it builds pairs from each document in between, and the worker idled meanwhile)."""
    with runtime(engine) as ray:
        remote = ray.remote(num_cpus=1, max_retries=0, runtime_env=runtime_env(opts))(_parse_on_worker)
        n = slots(ray)
        pending = list(reversed(groups(tasks)))
        running: dict[Any, tuple[list[Task], float, float]] = {}  # ref -> (tasks, submitted, limit)
        booting = n  # groups still to start on a fresh worker (the parsers' first import)
        crashed: set[int] = set()  # files whose worker died under them once
        def fill() -> None:
            nonlocal booting
            while pending and len(running) < n:
                group = pending.pop()
                fresh = booting > 0
                booting -= 1
                limit = sum(t.limit_s or timeout_s for t in group) + (BOOT_TIMEOUT_S if fresh else 0.0)
                running[remote.remote(group, opts)] = (group, time.monotonic(), limit)
                if on_start:
                    for t in group:
                        on_start(t, fresh)

        try:
            while pending or running:
                fill()
                next_deadline = min(started + limit for _, started, limit in running.values())
                ready, _ = ray.wait(list(running), num_returns=1,
                                    timeout=max(0.0, min(1.0, next_deadline - time.monotonic())))
                done: list[tuple[Task, Parsed | IngestError]] = []
                for ref in ready:
                    group, _, _ = running.pop(ref)
                    try:
                        out = _results(ray, ref, group)
                    except ray.exceptions.WorkerCrashedError:
                        booting += 1  # its replacement starts cold
                        again = [t for t in group if t.key not in crashed]
                        crashed.update(t.key for t in group if len(group) == 1)
                        pending.extend([t] for t in reversed(again))
                        done += [(t, IngestError("crash", CRASH)) for t in group if t not in again]
                        continue
                    done += zip(group, out, strict=True)
                now = time.monotonic()
                for ref, (group, started, limit) in list(running.items()):
                    if now >= started + limit:
                        ray.cancel(ref, force=True)  # kills the worker process: a new one starts cold
                        del running[ref]
                        booting += 1
                        if len(group) > 1:  # which file was slow? each again on its own
                            pending.extend([t] for t in reversed(group))
                            continue
                        task = group[0]
                        done.append((task, timed_out(now - started, task.limit_s or timeout_s, task.limit_for)))
                fill()  # the freed slots get their next tasks before the caller handles these results
                yield from done
        finally:
            for ref in running:
                ray.cancel(ref, force=True)


CRASH = ("the parser process died on this file (twice, on two workers); the file may be malformed or too large "
         "for the available memory")


def _results(ray: Any, ref: Any, group: list[Task]) -> list[Parsed | IngestError]:
    """The group's results; raises ``WorkerCrashedError`` when its worker died."""
    try:
        out = ray.get(ref)
    except ray.exceptions.WorkerCrashedError:
        raise
    except ray.exceptions.RayError as exc:
        return [IngestError("parse_error", f"parser failed on {t.name} on Ray ({type(exc).__name__}: {str(exc)[:300]})")
                for t in group]
    return [IngestError(*r) if isinstance(r, tuple) else r for r in out]
