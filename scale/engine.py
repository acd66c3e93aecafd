"""The engine of the heavy stages, the Ray runtime, and the Parquet shards work flows through.

Choosing: ``--engine`` on a command, else the project's ``engine`` setting (``tuneloop engine
ray``), else ``local``. The cluster: ``--ray-address``, else ``RAY_ADDRESS``, else the project
setting's address, else a local Ray runtime started for the command with this machine's cores
(and stopped after it). Ray's usage statistics are switched off (``RAY_USAGE_STATS_ENABLED=0``)
and its dashboard is not started.

Shards: a stage writes its input as numbered Parquet files under
``cache/shards/<stage>/<key>/`` (``key`` hashes the input and the stage's parameters), Ray
workers read one input shard each and write its output shard beside it, atomically (a temporary
file renamed into place), so a killed job leaves only whole outputs; running the stage again on
the same input computes only the outputs that are missing. The caller reads the outputs into
the store in one transaction and then removes the stage's folder (which it created).
A cluster's workers must see the project folder at the same path (a shared file system).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ENGINES = ("local", "ray")
SETTING = "engine"  # the project setting: {"kind": "ray", "address": "..."}
RAY_HINT = "install Ray with `pip install -c constraints.txt 'ray[data]'` (tuneloop is tested with ray 2.60)"


class EngineError(RuntimeError, ValueError):
    """A wrong engine choice, or Ray missing or unreachable: the message says what to do (a
    ValueError too, so the CLI and the app's jobs print it as one line, like other user errors)."""


@dataclass(frozen=True)
class Engine:
    kind: str = "local"
    address: str | None = None  # an existing Ray cluster; None: a local runtime for the command
    num_cpus: int | None = None  # the local runtime's CPUs (default: this machine's cores)

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    def describe(self) -> str:
        if not self.is_ray:
            return "local"
        return f"ray at {self.address}" if self.address else f"ray (local, {self.num_cpus or os.cpu_count()} CPUs)"


def resolve(kind: str | None = None, address: str | None = None, setting: dict[str, Any] | None = None) -> Engine:
    """The engine a command runs on: ``kind`` (its flag) over the project ``setting`` over local."""
    setting = setting if isinstance(setting, dict) else {}
    chosen = str(kind or setting.get("kind") or "local").strip().lower()
    if chosen not in ENGINES:
        raise EngineError(f"engine {chosen!r} is not known: choose one of {', '.join(ENGINES)}")
    if chosen == "local":
        return Engine()
    addr = address or os.environ.get("RAY_ADDRESS") or setting.get("address") or None
    cpus = setting.get("num_cpus")
    return Engine("ray", str(addr) if addr else None, int(cpus) if isinstance(cpus, int) and cpus > 0 else None)


def for_project(project: Any, kind: str | None = None, address: str | None = None) -> Engine:
    """``resolve`` with the project's ``engine`` setting."""
    from store import settings

    with project.connect() as con:
        setting = settings.get(con, SETTING, {})
    return resolve(kind, address, setting)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise EngineError(f"the ray engine needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


def _reachable(address: str, timeout_s: float = 5.0) -> str | None:
    """None when ``host:port`` of a Ray address (``ray://host:port`` or ``host:port``) accepts a
    connection, else why not. Ray itself retries an unreachable address for minutes."""
    import socket

    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None  # "auto", a name Ray resolves itself: let Ray try
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{host}:{port} did not accept a connection within {timeout_s:.0f} s ({exc.strerror or exc})"


@contextmanager
def runtime(engine: Engine) -> Iterator[Any]:
    """The ``ray`` module, connected: to ``engine.address``, else to a local runtime started here
    (stopped on exit). A runtime that is already connected in this process is used as it is."""
    ray = _ray()
    if engine.address and (why := _reachable(engine.address)):
        raise EngineError(f"could not reach the Ray cluster at {engine.address}: {why}; check --ray-address / "
                          f"RAY_ADDRESS (the head node's GCS port, 6379 by default, or ray://HOST:10001), "
                          f"or run with --engine local")
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # telemetry off
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if engine.address:
            ray.init(address=engine.address, **kwargs)
        else:
            ray.init(num_cpus=engine.num_cpus or os.cpu_count() or 1, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {engine.address}" if engine.address else "a local Ray runtime"
        raise EngineError(f"could not start or reach {where} ({type(exc).__name__}: {exc}); check "
                          f"--ray-address / RAY_ADDRESS, or run with --engine local") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_connected() -> bool:
    """Whether this process is connected to a Ray runtime already (without importing Ray)."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def slots(ray: Any) -> int:
    """CPU slots of the connected cluster (one actor or task per slot)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def actor_plan(resources: dict[str, float], todo: int, per_gpu: bool) -> dict[str, Any]:
    """Ray Data's actor pool for ``todo`` shards on a cluster with ``resources``
    (``ray.cluster_resources()``): an actor per GPU when ``per_gpu`` and the cluster has GPUs
    (each given one GPU and one CPU), else an actor per CPU slot."""
    gpus = int(resources.get("GPU", 0)) if per_gpu else 0
    if gpus >= 1:
        return {"concurrency": max(1, min(todo, gpus)), "num_cpus": 1, "num_gpus": 1}
    return {"concurrency": max(1, min(todo, int(resources.get("CPU", 1)))), "num_cpus": 1}


def quiet_data(ray: Any) -> None:
    """Ray Data without its own progress bars and log lines: the caller reports progress."""
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def content_key(*parts: Iterable[str | bytes] | str | bytes) -> str:
    """A short hash of a stage's input and parameters: its shards' folder name."""
    h = hashlib.sha256()
    for part in parts:
        items = [part] if isinstance(part, str | bytes) else part
        for x in items:
            h.update(x if isinstance(x, bytes) else str(x).encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()[:20]


class Shards:
    """Numbered Parquet inputs and outputs of one stage run (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.dir = Path(folder)

    @classmethod
    def of(cls, project: Any, stage: str, key: str) -> Shards:
        return cls(Path(project.cache_dir) / "shards" / stage / key)

    def input_path(self, k: int) -> Path:
        return self.dir / f"in-{k:05d}.parquet"

    def output_path(self, k: int) -> Path:
        return self.dir / f"out-{k:05d}.parquet"

    def _write(self, path: Path, table: pa.Table) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def write_inputs(self, tables: Iterable[pa.Table]) -> int:
        """Write the input shards that are not there yet (a re-run keeps them); how many there are."""
        n = 0
        for k, t in enumerate(tables):
            if not self.input_path(k).exists():
                self._write(self.input_path(k), t)
            n = k + 1
        return n

    def read_input(self, k: int) -> pa.Table:
        return pq.read_table(self.input_path(k))

    def write_output(self, k: int, table: pa.Table) -> None:
        self._write(self.output_path(k), table)

    def pending(self, n: int) -> list[int]:
        return [k for k in range(n) if not self.output_path(k).exists()]

    def outputs(self, n: int) -> pa.Table:
        """Every output shard, in order, as one table."""
        missing = self.pending(n)
        if missing:
            raise EngineError(f"{len(missing)} of {n} output shards under {self.dir} are missing "
                              f"(first: {self.output_path(missing[0]).name}); run the stage again to finish them")
        return pa.concat_tables([pq.read_table(self.output_path(k)) for k in range(n)])

    def remove(self) -> None:
        """Remove this stage run's folder (created by ``write_inputs``)."""
        shutil.rmtree(self.dir, ignore_errors=True)


def map_shards(ray: Any, shards: Shards, n: int, *, fn: Callable[..., Any] | None = None,
               actor: type | None = None, kwargs: dict[str, Any] | None = None, per_gpu: bool = False,
               progress: Callable[[int], None] | None = None) -> int:
    """Compute the missing output shards on Ray Data, one shard per batch; how many were computed.

    ``fn(shards, k, **kwargs) -> rows``: a task per shard. ``actor(shards, **kwargs)`` with
    ``__call__(k) -> rows``: an actor per CPU slot, or per GPU with ``per_gpu`` on a cluster
    with GPUs (``actor_plan``), each loading its model once. ``progress(rows)`` after each shard."""
    todo = shards.pending(n)
    if not todo:
        return 0
    quiet_data(ray)
    ds = ray.data.from_items([{"k": k} for k in todo], override_num_blocks=len(todo))
    folder = str(shards.dir)
    if actor is not None:
        ds = ds.map_batches(_ShardActor, fn_constructor_kwargs={"cls": actor, "folder": folder, "kwargs": kwargs or {}},
                            batch_size=1, **actor_plan(ray.cluster_resources(), len(todo), per_gpu))
    elif fn is not None:
        ds = ds.map_batches(_shard_task, fn_kwargs={"fn": fn, "folder": folder, "kwargs": kwargs or {}},
                            batch_size=1, num_cpus=1)
    else:
        raise ValueError("map_shards needs fn or actor")
    done = 0
    for row in ds.iter_rows():
        done += 1
        if progress:
            progress(int(row["rows"]))
    return done


def _shard_task(batch: dict[str, Any], *, fn: Callable[..., int], folder: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    shards = Shards(folder)
    ks = [int(k) for k in batch["k"]]
    return {"k": ks, "rows": [int(fn(shards, k, **kwargs)) for k in ks]}


class _ShardActor:
    """Ray Data's callable class around a stage's actor: built once per slot, one shard per call."""

    def __init__(self, cls: type, folder: str, kwargs: dict[str, Any]):
        self.shards = Shards(folder)
        self.inner = cls(self.shards, **kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        ks = [int(k) for k in batch["k"]]
        return {"k": ks, "rows": [int(self.inner(k)) for k in ks]}
