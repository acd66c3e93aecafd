"""What the machine can give a benchmark right now.

``parallel_capacity(n)``: how much faster ``n`` processes finish ``n`` equal pieces of pure
CPU work than one process doing them in turn (ideal: ``n``). On a shared virtual machine the
neighbours' load changes this from minute to minute (measured on the 2-core CI box: 1.3x to
2.3x within a minute), so a benchmark of parallel work measures it in the same round and
reports its own speed-up beside it: a 2-worker ratio is only as good as the cores allowed.
"""

from __future__ import annotations

import multiprocessing as mp
import time

_WORK = 4_000_000


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def parallel_capacity(n: int = 2, work: int = _WORK) -> float:
    """Serial time / parallel time for ``n`` equal pieces of CPU work (ideal ``n``)."""
    t = time.perf_counter()
    for _ in range(n):
        _burn(work)
    serial = time.perf_counter() - t
    ctx = mp.get_context("fork")
    with ctx.Pool(n) as pool:
        pool.map(_burn, [1000] * n)  # start the processes outside the timing
        t = time.perf_counter()
        pool.map(_burn, [work] * n)
        parallel = time.perf_counter() - t
    return serial / parallel
