"""Standard benchmarks (MMLU, ARC-Challenge, HellaSwag, TruthfulQA MC2) scored by lm-evaluation-harness.

- The scoring is the harness's own: its task configs (prompt templates, choices, targets,
  ``process_docs``/``process_results``, metrics and standard errors) are loaded from the installed
  ``lm_eval`` package; tuneloop changes only where the data comes from and that it is zero-shot.
- Nothing is downloaded: each benchmark reads one local file per split, in the schema the harness task
  reads (the hub dataset's rows), from ``<bench dir>/<benchmark>/<split>.jsonl`` (or ``.json``,
  ``.parquet``). ``fetch_command`` is the one-off command that writes them on a connected machine
  (docs/training.md). The bench dir is ``--bench-dir``, else ``$TUNELOOP_BENCH_DIR``.
- Why Task objects and not task names: the harness would fetch ``allenai/ai2_arc`` etc. from the hub.
  Inline config dicts cannot carry a group's aggregate (lm-eval 0.4.13 hands a dict group's
  ``aggregate_metric_list`` to its tasks), so we load each registered task's YAML with the harness's
  loader, point it at the local file (``dataset_path: json``/``parquet`` + ``data_files``) and build
  ``ConfigurableTask``s; MMLU is its 57 subject tasks (each filtering the one local file by
  ``subject``) in a ``Group`` with the harness's size-weighted ``acc`` aggregate, as ``mmlu`` is.
- The model is the run's (its base with the adapter merged, ``predict.load_run_model``) wrapped in
  the harness's ``HFLM``; the harness's per-question log-likelihood scoring does the rest.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store import benchmarks as bench_store
from store import runs as runs_store
from store.db import Project
from store.records import BenchmarkResult, Run

BENCH_DIR_ENV = "TUNELOOP_BENCH_DIR"
FORMATS = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Benchmark:
    name: str            # tuneloop's name (= the harness task or group name)
    harness_task: str    # the registered harness task whose YAML config is used (mmlu: a template)
    split: str           # the split the harness scores
    hub_repo: str        # the dataset the harness task reads, and the config of it
    hub_config: str | None
    metrics: tuple[str, ...]
    fields: tuple[str, ...]  # columns the harness task reads (checked before running)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("mmlu", "mmlu_abstract_algebra", "test", "cais/mmlu", "all", ("acc",),
              ("question", "subject", "choices", "answer")),
    Benchmark("arc_challenge", "arc_challenge", "test", "allenai/ai2_arc", "ARC-Challenge", ("acc", "acc_norm"),
              ("question", "choices", "answerKey")),
    Benchmark("hellaswag", "hellaswag", "validation", "Rowan/hellaswag", None, ("acc", "acc_norm"),
              ("activity_label", "ctx_a", "ctx_b", "endings", "label")),
    Benchmark("truthfulqa_mc2", "truthfulqa_mc2", "validation", "truthfulqa/truthful_qa", "multiple_choice",
              ("acc",), ("question", "mc2_targets")),
)}


class MissingBenchmarkData(FileNotFoundError):
    """A benchmark's local copy is absent or unreadable; the message says how to fetch it."""


def fetch_command(bench: Benchmark, bench_dir: Path | str) -> str:
    """The one-off command (on a machine with internet) that writes ``bench``'s local file."""
    cfg = f", {bench.hub_config!r}" if bench.hub_config else ""
    out = Path(bench_dir) / bench.name / f"{bench.split}.jsonl"
    return (f"python -c \"from datasets import load_dataset; load_dataset({bench.hub_repo!r}{cfg}, "
            f"split={bench.split!r}).to_json({str(out)!r})\"")


def parse_names(spec: str | Sequence[str]) -> list[Benchmark]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise ValueError(f"unknown benchmark {', '.join(unknown) or '(none)'}: use one or more of "
                         f"{', '.join(BENCHMARKS)} (comma-separated)")
    return [BENCHMARKS[n] for n in dict.fromkeys(names)]


def bench_dir(path: Path | str | None) -> Path:
    chosen = path or os.environ.get(BENCH_DIR_ENV)
    if not chosen:
        raise MissingBenchmarkData(f"no benchmarks folder: pass --bench-dir DIR or set {BENCH_DIR_ENV} "
                                   "(docs/training.md, 'Standard benchmarks', says how to fill it)")
    return Path(chosen).expanduser()


def local_file(bench: Benchmark, root: Path) -> Path:
    """``root/<benchmark>/<split>.<jsonl|json|parquet>``, or MissingBenchmarkData naming it and the fix."""
    folder = root / bench.name
    for ext in FORMATS:
        f = folder / f"{bench.split}{ext}"
        if f.is_file():
            return f
    raise MissingBenchmarkData(
        f"{bench.name}: no local copy at {folder / (bench.split + '.jsonl')} (nor .json/.parquet). Nothing is "
        f"downloaded at run time; on a machine with internet run\n  {fetch_command(bench, root)}\n"
        f"and copy {folder} here.")


def _check_fields(bench: Benchmark, rows: Any, path: Path) -> None:
    missing = [f for f in bench.fields if f not in rows.column_names]
    if missing:
        raise MissingBenchmarkData(f"{path}: missing field(s) {', '.join(missing)}: {bench.name} reads "
                                   f"{', '.join(bench.fields)} (the rows of {bench.hub_repo}); refetch with\n  "
                                   f"{fetch_command(bench, path.parent.parent)}")


def _task_config(task_manager: Any, name: str, path: Path, split: str, cache_dir: str) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = task_manager.task_index.get(name)
    if entry is None or entry.yaml_path is None:
        raise ValueError(f"the installed lm-eval has no task {name!r}")
    cfg = dict(load_yaml(entry.yaml_path, resolve_func=True))
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    builder = "parquet" if path.suffix == ".parquet" else "json"
    cfg.update(dataset_path=builder, dataset_name=None,
               dataset_kwargs={"data_files": {split: str(path)}, "cache_dir": cache_dir},
               training_split=None, validation_split=split if split == "validation" else None,
               test_split=split if split == "test" else None, fewshot_split=None, num_fewshot=0)
    return cfg


def _subject_filter(subject: str) -> Callable[[Any], Any]:
    return lambda ds: ds.filter(lambda row: row["subject"] == subject)


def harness_tasks(bench: Benchmark, path: Path, cache_dir: str, task_manager: Any) -> Any:
    """The harness Task (or, for MMLU, Group of subject tasks) scoring ``bench`` from ``path``."""
    from lm_eval.api.group import Group, GroupConfig
    from lm_eval.api.task import ConfigurableTask

    if bench.name != "mmlu":
        return ConfigurableTask(config=_task_config(task_manager, bench.harness_task, path, bench.split, cache_dir))
    from datasets import load_dataset

    rows = load_dataset("parquet" if path.suffix == ".parquet" else "json", data_files={"test": str(path)},
                        split="test", cache_dir=cache_dir)
    _check_fields(bench, rows, path)
    group = Group.from_config(GroupConfig(group="mmlu", aggregate_metric_list=[
        {"metric": "acc", "aggregation": "mean", "weight_by_size": True}], metadata={"version": 2}))
    for subject in sorted(set(rows["subject"])):
        name = f"mmlu_{subject}"
        if name not in task_manager.task_index:
            raise MissingBenchmarkData(f"{path}: subject {subject!r} is not an MMLU subject of the harness")
        cfg = _task_config(task_manager, name, path, "test", cache_dir)
        cfg["process_docs"] = _subject_filter(subject)
        group.add(ConfigurableTask(config=cfg))
    return group


def evaluate_model(model: Any, tokenizer: Any, benchmarks: Sequence[Benchmark], root: Path, *, limit: int | None = None,
                   batch_size: int = 8, device: str = "cpu", log_samples: bool = False) -> dict[str, dict[str, Any]]:
    """Score a loaded transformers model on ``benchmarks`` read from ``root``: per benchmark
    ``{"metrics": {metric: (value, stderr|None)}, "n": int, "task": str, "seconds": float, "samples": [...]}``."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    files = {b.name: local_file(b, root) for b in benchmarks}  # every missing copy fails before any work
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    tm = TaskManager(verbosity="ERROR")
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as cache:
        for b in benchmarks:
            task = harness_tasks(b, files[b.name], cache, tm)
            t0 = time.perf_counter()
            res = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=tm, limit=limit,
                                          log_samples=log_samples, verbosity="ERROR")
            seconds = time.perf_counter() - t0
            assert res is not None
            scores = res["results"][b.name]
            metrics = {m: (float(scores[f"{m},none"]), _stderr(scores.get(f"{m}_stderr,none")))
                       for m in b.metrics if f"{m},none" in scores}
            n_samples = res.get("n-samples", {})
            n = sum(int(v.get("effective", 0)) for v in n_samples.values())
            out[b.name] = {"metrics": metrics, "n": n, "task": b.name, "seconds": seconds,
                           "samples": res.get("samples", {})}
    return out


def _stderr(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):  # "N/A" when the harness cannot compute one
        return None
    return f if f == f else None


def _harness_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def evaluate_run(project: Project, run_ref: str, benchmarks: Sequence[Benchmark], root: Path, *,
                 limit: int | None = None, batch_size: int = 8, device: str | None = None,
                 progress: Callable[[str], None] | None = None) -> list[BenchmarkResult]:
    """Score a run's model (its base with its adapter; a baseline run: the untrained base) and store it."""
    from models.lm import pick_device
    from training.predict import load_run_model

    with project.connect() as con:
        run = runs_store.get(con, run_ref)
    for b in benchmarks:
        local_file(b, root)
    if progress:
        progress(f"loading {run.name or run.id}")
    dev = pick_device(device)
    cm = load_run_model(run, device=dev)
    rows: list[BenchmarkResult] = []
    for b in benchmarks:
        if progress:
            progress(f"{b.name} on {run.name or run.id}")
        got = evaluate_model(cm.model, cm.tokenizer, [b], root, limit=limit, batch_size=batch_size, device=dev)[b.name]
        rows += [BenchmarkResult(id="", run_id=run.id, benchmark=b.name, task=got["task"], metric=m, value=v,
                                 stderr=se, n=got["n"], limit=limit, num_fewshot=0, harness_version=_harness_version(),
                                 seconds=got["seconds"])
                 for m, (v, se) in got["metrics"].items()]
    with project.connect() as con:
        return bench_store.add_results(con, rows)


def base_run_for(project: Project, run: Run, benchmarks: Sequence[Benchmark], limit: int | None) -> tuple[str, list[Benchmark]]:
    """The baseline run holding ``run``'s base model scores, and the benchmarks it still lacks at ``limit``
    (a baseline of the same base with results is reused; else a new one is created)."""
    if run.kind == "baseline":
        return run.id, []
    with project.connect() as con:
        have = {b.name: bench_store.baseline_with(con, run.base_model, b.name, limit) for b in benchmarks}
        existing = next((rid for rid in have.values() if rid), None)
        if existing is None:
            existing = runs_store.create(
                con, base_model=run.base_model, config={"purpose": "standard benchmarks"}, run_dir="",
                kind="baseline", slice_id=run.slice_id, slice_hash=run.slice_hash,
                name=runs_store.free_name(con, "", default=f"baseline {run.base_model}"),
                status="succeeded").id
        done = {r.benchmark for r in bench_store.results(con, existing, limit=limit, any_limit=False)}
    return existing, [b for b in benchmarks if b.name not in done]
