"""Document partitioning on Ray (``--engine ray``): one Ray task per file (or page range of a long
PDF), at most one per CPU slot at a time, with the same per-file time limits and errors as the
local workers (``ingest.workers``).

A task's time limit counts from its submission, since no more tasks run than there are slots;
the first task on each slot also gets ``BOOT_TIMEOUT_S`` for the Ray worker's first import of
the parsers. A task over its limit is cancelled (its worker process killed, as a local worker
is) and the file fails with the same "timed out" message; a task whose worker dies fails with
"crash". Everything after parsing (layout, chunks, pairs, the store) runs in the calling
process exactly as with the local engine, so the results are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ingest.filetypes import IngestError
from ingest.partition import Parsed
from ingest.workers import BOOT_TIMEOUT_S, ParseOptions, Task, _parse, timed_out
from scale.engine import Engine, runtime, slots


def _parse_on_worker(task: Task, opts: ParseOptions) -> Parsed | tuple[str, str]:
    """Runs in a Ray worker: offline and quiet like a local parser process; an error as (kind, message)."""
    from ingest import offline

    offline.one_ocr_thread()
    offline.defer_plotting()
    offline.configure()
    res = _parse(task, opts)
    return (res.kind, res.message) if isinstance(res, IngestError) else res


def parse_all_ray(tasks: Sequence[Task], engine: Engine, *, timeout_s: float, opts: ParseOptions,
                  on_start: Callable[[Task, bool], None] | None = None) -> Iterator[tuple[Task, Parsed | IngestError]]:
    """Parse ``tasks`` (in this order) on Ray; yield results in completion order."""
    with runtime(engine) as ray:
        remote = ray.remote(num_cpus=1, max_retries=0)(_parse_on_worker)
        n = slots(ray)
        pending = list(reversed(tasks))
        running: dict[Any, tuple[Task, float, float]] = {}  # ref -> (task, submitted, limit)
        booting = n  # tasks still to start on a fresh worker (the parsers' first import)
        try:
            while pending or running:
                while pending and len(running) < n:
                    task = pending.pop()
                    fresh = booting > 0
                    booting -= 1
                    running[remote.remote(task, opts)] = (
                        task, time.monotonic(), (task.limit_s or timeout_s) + (BOOT_TIMEOUT_S if fresh else 0.0))
                    if on_start:
                        on_start(task, fresh)
                next_deadline = min(started + limit for _, started, limit in running.values())
                ready, _ = ray.wait(list(running), num_returns=1,
                                    timeout=max(0.0, min(1.0, next_deadline - time.monotonic())))
                for ref in ready:
                    task, _, _ = running.pop(ref)
                    yield task, _result(ray, ref, task)
                now = time.monotonic()
                for ref, (task, started, limit) in list(running.items()):
                    if now >= started + limit:
                        ray.cancel(ref, force=True)  # kills the worker process: a new one starts cold
                        del running[ref]
                        booting += 1
                        yield task, timed_out(now - started, task.limit_s or timeout_s, task.limit_for)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)


def _result(ray: Any, ref: Any, task: Task) -> Parsed | IngestError:
    try:
        out = ray.get(ref)
    except ray.exceptions.WorkerCrashedError:
        return IngestError("crash", "the parser process died on this file; the file may be malformed or too large "
                                    "for the available memory")
    except ray.exceptions.RayError as exc:
        return IngestError("parse_error", f"parser failed on {task.name} on Ray ({type(exc).__name__}: "
                                          f"{str(exc)[:300]})")
    return IngestError(*out) if isinstance(out, tuple) else out
