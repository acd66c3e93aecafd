"""General-ability deltas of a fine-tuned run against its base on standard benchmarks (pure).

A run's score minus its base's, per benchmark, on the benchmark's primary metric (``acc``), in
points (x100). The 95 % interval of the delta is ``delta ± 1.96·sqrt(se_run² + se_base²)`` from the
harness's standard errors (the two passes treated as independent samples: conservative, as both
score the same questions). Forgetting: the run is worse than the base by more than ``max_drop``
points beyond that interval, i.e. the interval's upper end is below ``-max_drop`` (without
standard errors: the delta itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from store.records import BenchmarkResult

Z95 = 1.96
PRIMARY_METRIC = "acc"


@dataclass(frozen=True)
class AbilityDelta:
    benchmark: str
    base: float | None        # points (0-100)
    run: float | None
    delta: float | None       # run - base, points
    low: float | None         # 95 % interval of the delta
    high: float | None
    n: int
    forgetting: bool


def interval(value: float, stderr: float | None) -> tuple[float, float] | None:
    """95 % interval of a score from its standard error (None without one)."""
    return None if stderr is None else (value - Z95 * stderr, value + Z95 * stderr)


def deltas(base: list[BenchmarkResult], run: list[BenchmarkResult], *, max_drop: float = 2.0,
           metric: str = PRIMARY_METRIC) -> list[AbilityDelta]:
    """Per benchmark in either list: base and run scores (points), their delta with its 95 % interval,
    n, and whether it is forgetting (see the module docstring)."""
    b = {r.benchmark: r for r in base if r.metric == metric}
    r_ = {r.benchmark: r for r in run if r.metric == metric}
    out = []
    for name in sorted(set(b) | set(r_)):
        rb, rr = b.get(name), r_.get(name)
        d = lo = hi = None
        if rb is not None and rr is not None:
            d = 100 * (rr.value - rb.value)
            if rb.stderr is not None and rr.stderr is not None:
                half = 100 * Z95 * math.sqrt(rb.stderr ** 2 + rr.stderr ** 2)
                lo, hi = d - half, d + half
        # beyond the interval when there is one, else on the point estimate
        forgetting = (hi < -max_drop) if hi is not None else (d is not None and d < -max_drop)
        out.append(AbilityDelta(benchmark=name, base=None if rb is None else 100 * rb.value,
                                run=None if rr is None else 100 * rr.value, delta=d, low=lo, high=hi,
                                n=rr.n if rr is not None else (rb.n if rb is not None else 0), forgetting=bool(forgetting)))
    return out
