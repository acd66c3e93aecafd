"""Standard benchmarks of a run and of its base, and the run's general-ability deltas (issue 18).

The CLI (`tuneloop eval`) and the Compare page call these; the scoring is lm-evaluation-harness's
(training/benchmarks.py), the deltas are analysis/benchmarks.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from analysis.benchmarks import AbilityDelta, deltas
from store import benchmarks as bench_store
from store import runs as runs_store
from store.db import Project
from store.records import BenchmarkResult
from training.benchmarks import Benchmark, base_run_for, evaluate_run


def evaluate_with_base(project: Project, run_ref: str, benchmarks: Sequence[Benchmark], root: Path, *,
                       limit: int | None = None, batch_size: int = 8, base: bool = True, device: str | None = None,
                       max_drop: float = 2.0, progress: Callable[[str], None] | None = None
                       ) -> tuple[str, str | None, list[AbilityDelta]]:
    """Score the run (and, with ``base``, its base model on a baseline run, reusing earlier base scores
    at the same limit); returns (run id, baseline run id, deltas)."""
    with project.connect() as con:
        run = runs_store.get(con, run_ref)
    base_id = None
    if base and run.kind != "baseline":
        base_id, todo = base_run_for(project, run, benchmarks, limit)
        if todo:
            evaluate_run(project, base_id, todo, root, limit=limit, batch_size=batch_size, device=device,
                         progress=progress)
    evaluate_run(project, run.id, benchmarks, root, limit=limit, batch_size=batch_size, device=device,
                 progress=progress)
    names = {b.name for b in benchmarks}
    return run.id, base_id, [d for d in general_ability(project, run.id, limit=limit, max_drop=max_drop)
                             if d.benchmark in names]


def newest_general_ability(project: Project, run_ref: str, *, max_drop: float = 2.0) -> list[AbilityDelta]:
    """``general_ability`` at the --limit of the run's newest benchmark pass ([] before any): deltas
    compare like with like."""
    with project.connect() as con:
        newest = bench_store.results(con, runs_store.get(con, run_ref).id)
    if not newest:
        return []
    limit = max(newest, key=lambda r: str(r.created_at)).limit
    return general_ability(project, run_ref, limit=limit, max_drop=max_drop)


def general_ability(project: Project, run_ref: str, *, limit: int | None = None, max_drop: float = 2.0
                    ) -> list[AbilityDelta]:
    """The run's newest benchmark scores at ``limit`` against its base's newest at the same limit."""
    with project.connect() as con:
        run = runs_store.get(con, run_ref)
        mine = bench_store.results(con, run.id, limit=limit, any_limit=False)
        theirs: list[BenchmarkResult] = []
        if run.kind != "baseline":
            for bid in bench_store.baselines_of(con, run.base_model):
                got = {r.benchmark for r in theirs}
                theirs += [r for r in bench_store.results(con, bid, limit=limit, any_limit=False)
                           if r.benchmark not in got]
    return deltas(theirs, mine, max_drop=max_drop)
