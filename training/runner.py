"""Launch training runs in their own process and mirror their run folders into the store.

``start_run`` freezes everything the trainer needs into ``runs/<run_id>/`` (job, config, the
slice rows), records the run as queued, and starts ``python -m training.train RUN_DIR`` (or, when ``nproc > 1``,
``accelerate launch --config_file training/launch/<distributed>.yaml --num_processes N -m training.train
RUN_DIR``) in a new session, detached from the caller:
the CLI, the app and tests never train in their own thread. The trainer never opens the
database; ``sync_run`` reads status.json, events.jsonl and metrics.jsonl and writes them through
store/runs.py, holding the database only for that short moment; once the run has ended, its
training dynamics (dynamics.jsonl) too, through store/dynamics.py. Every status change the trainer
made is replayed from events.jsonl in order, with its own time, so the store's history of a run
does not depend on how often anybody looked at it.

A run may carry a step to run after it succeeded (``start_run(after=ARGV)``, kept in job.json):
the run's launcher process runs the trainer, then, only if status.json says succeeded,
``ARGV + [RUN_DIR]`` (``workflows.train`` passes its "predict after training" step this way, so
this layer needs no knowledge of it). The step reports in status.json under ``after`` (state
pending/running/done/skipped/failed, done/total, message); the run's status stays succeeded
whatever the step does, and ``wait_run`` returns once the step has ended too. ``launcher_pid``
in status.json is the launcher's pid: a step whose launcher is gone without a final word failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from store import dynamics as dynamics_store
from store import runs as runs_store
from store import slices as slices_store
from store.db import Project
from store.records import Run, RunStatus
from store.scratch import pid_alive
from training.config import TrainConfig, load, to_toml
from training.runfolder import RunFolder

# A running trainer rewrites status.json at least every step; a dead pid with no heartbeat for
# this long is a crashed run.
STALE_AFTER_S = 5.0
REPO_ROOT = Path(__file__).resolve().parents[1]

_STATUSES = {s.value for s in RunStatus}
# Ended states a run leaves when its trainer is started again from the folder.
_REOPENABLE = {RunStatus.failed.value, RunStatus.cancelled.value}

# The states in which a run's step after training (``after``) has ended.
AFTER_FINAL = {"done", "skipped", "failed"}

# Runs the trainer, then (only when the run succeeded) the step after it; exits with the last code.
_CHAIN = (
    "import json, subprocess, sys\n"
    "status_file, n = sys.argv[1], int(sys.argv[2])\n"
    "rc = subprocess.call(sys.argv[3:3 + n])\n"
    "try:\n"
    "    ok = json.load(open(status_file, encoding='utf-8')).get('status') == 'succeeded'\n"
    "except (OSError, ValueError):\n"
    "    ok = False\n"
    "if ok:\n"
    "    rc = subprocess.call(sys.argv[3 + n:])\n"
    "sys.exit(rc)\n"
)

_SLICE_COLUMNS = ("pair_id", "revision_id", "split", "weight", "instruction", "input", "response", "system", "messages",
                  "tools")


def run_folder(project: Project, run_id: str) -> RunFolder:
    return RunFolder(project.runs_dir / run_id)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# accelerate launch configs shipped with the package, one per config ``distributed``
LAUNCH_DIR = Path(__file__).resolve().parent / "launch"


def launch_config(distributed: str) -> Path:
    """The shipped ``accelerate launch --config_file`` for ``distributed`` (ddp, fsdp, deepspeed_zero2/3)."""
    return LAUNCH_DIR / f"{distributed}.yaml"


def launch_command(folder: RunFolder, cfg: TrainConfig) -> list[str]:
    """One process: ``python -m training.train RUN_DIR``. Several: accelerate's launcher with the
    shipped config of ``cfg.distributed`` (it starts them through torchrun on a free port). No
    ``--cpu``: accelerate then starts a single process; the trainer picks its device from the config."""
    if cfg.nproc > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_config(cfg.distributed)),
                "--num_processes", str(cfg.nproc), "--num_machines", "1", "--main_process_port", "0",
                "-m", "training.train", str(folder.path)]
    return [sys.executable, "-m", "training.train", str(folder.path)]


def check_launch(cfg: TrainConfig, *, cuda_devices: int | None = None) -> None:
    """Refuse, before anything is created, a multi-process run this machine cannot start: more
    CUDA processes than CUDA devices, or a DeepSpeed run (not run by the trainer). ``cuda_devices``:
    the count to assume (default: torch's)."""
    if cfg.nproc <= 1:
        return
    if cfg.distributed.startswith("deepspeed"):
        import importlib.util

        missing = "" if importlib.util.find_spec("deepspeed") else " (and deepspeed is not installed: pip install deepspeed)"
        raise ValueError(f"distributed={cfg.distributed}: tuneloop's trainer does not run DeepSpeed yet{missing}; "
                         "use distributed=fsdp (FSDP2 full shard: parameters, gradients and optimizer state split "
                         "across processes, like ZeRO-3) or distributed=ddp")
    if cfg.device in ("cpu", "mps"):
        if cfg.device == "mps":
            raise ValueError("nproc > 1 runs one process per CUDA GPU (or device=cpu); mps has one device")
        return
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cfg.device == "auto" and cuda_devices == 0:
        return  # no GPU: the processes train on the CPU (gloo), as device=cpu
    if cuda_devices < cfg.nproc:
        raise ValueError(f"{cfg.nproc} GPU processes (--gpus {cfg.nproc} / nproc={cfg.nproc}) need {cfg.nproc} CUDA "
                         f"devices; this machine has {cuda_devices}. To try {cfg.nproc} processes on the CPU: "
                         f"nproc={cfg.nproc} device=cpu")


def launch(folder: RunFolder) -> int:
    """Start the trainer for ``folder`` (and, chained, the run's step after training) in a new
    process session; returns the launched process's pid."""
    cfg = TrainConfig(**folder.read_json(folder.config_file, {}))
    cmd = launch_command(folder, cfg)
    after = folder.job().get("after")
    if after:
        cmd = [sys.executable, "-c", _CHAIN, str(folder.status_file), str(len(cmd)), *cmd, *after, str(folder.path)]
    folder.cancel_file.unlink(missing_ok=True)
    log = folder.log_file.open("ab")
    proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=_env(), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    folder.update_status(status="queued", pid=proc.pid, launcher_pid=proc.pid, launched_at=time.time(), after=None)
    _children[proc.pid] = proc
    return proc.pid


# Popen objects of runs this process started, so their exit is reaped (no zombies).
_children: dict[int, subprocess.Popen] = {}


def _reap() -> None:
    for pid, p in list(_children.items()):
        if p.poll() is not None:
            _children.pop(pid, None)


def start_run(
    project: Project,
    slice_ref: str | None,
    *,
    base_model: str | None = None,
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
    parent_run_id: str | None = None,
    init_adapter: str | None = None,
    name: str = "",
    author: str = "",
    wait: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    after: Sequence[str] | None = None,
    launch_now: bool = True,
) -> str:
    """Create a training run on slice ``slice_ref`` and launch it; returns the run id.

    ``launch_now=False``: create the run (folder, frozen data, store record, queued) without
    starting it, for a launch by hand (``accelerate launch`` / ``torchrun`` on a cluster:
    ``tuneloop train --no-launch`` prints the line).

    ``init_adapter``: an adapter folder to continue training from (LoRA). Config ``from_run``: a
    succeeded LoRA run whose adapter to start from (its base, and its slice when ``slice_ref`` is
    None; it becomes the parent run); with ``objective`` dpo/orpo the run trains on the slice's
    preference pairs (``preference_rows``, training/preference.py). ``name``: refused when
    another run has it (``store.runs.create``); empty = ``SLICE@VERSION``, made unique with a
    " (2)" suffix. ``after``: a command to run when the run succeeded, with the run folder as its
    last argument (see the module docstring). ``wait=True`` blocks until the run (and its step
    after) ends, syncing it into the store. Raises ``ConfigError`` on a bad config, ``KeyError``
    on an unknown slice and ``ValueError`` on a taken name, before anything is created.
    """
    cfg = load(config_path, list(overrides))
    if launch_now:  # a run prepared for a launch by hand may be started on other machines
        check_launch(cfg)
    if init_adapter and cfg.method != "lora":
        raise ValueError("init_adapter needs method=lora")
    if cfg.from_run:
        src = _source_run(project, cfg.from_run, init_adapter=init_adapter, base_model=base_model, method=cfg.method)
        cfg.from_run, init_adapter, base_model = src.id, src.adapter_path, src.base_model
        parent_run_id = parent_run_id or src.id
        slice_ref = slice_ref or src.slice_id
    if not slice_ref:
        raise ValueError("no slice: pass one (--slice), or from_run a run that has one")
    base = base_model or "smollm2"
    with project.connect() as con:
        sl = slices_store.get(con, slice_ref)
        df = slices_store.examples(con, sl.id)
        name = runs_store.free_name(con, name, default=f"{sl.name}@{sl.version}")
    rows = [{k: r.get(k) for k in _SLICE_COLUMNS} for r in df.to_dicts()]
    train_rows = [r for r in rows if r["split"] == "train"]
    eval_rows = [r for r in rows if r["split"] == "eval"]
    if not train_rows:
        raise ValueError(f"slice {sl.name!r} has no train items")
    pref_rows = preference_rows(project, cfg, rows, train_rows) if cfg.objective != "sft" else []
    run_id = runs_store.new_run_id()
    folder = run_folder(project, run_id)
    folder.path.mkdir(parents=True, exist_ok=False)
    job = {"run_id": run_id, "base_model": base, "slice_id": sl.id, "slice_name": sl.name,
           "slice_hash": sl.content_hash, "init_adapter": str(Path(init_adapter).resolve()) if init_adapter else None,
           "parent_run_id": parent_run_id, "created_at": time.time(), "after": list(after) if after else None}
    folder.write_json(folder.job_file, job)
    folder.write_json(folder.config_file, cfg.model_dump(mode="json"))
    (folder.path / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
    folder.write_rows("train", train_rows)
    folder.write_rows("eval", eval_rows)
    if cfg.objective != "sft":
        folder.write_rows("preference", pref_rows)
    folder.update_status(status="queued", step=0, total_steps=None)
    try:
        with project.connect() as con:
            runs_store.create(con, run_id=run_id, base_model=base, config=cfg.model_dump(mode="json"),
                              run_dir=str(folder.path), kind=run_kind(cfg), slice_id=sl.id, slice_hash=sl.content_hash,
                              parent_run_id=parent_run_id, name=name, author=author)
    except ValueError:  # the name was taken since it was checked: nothing of this run stays
        shutil.rmtree(folder.path, ignore_errors=True)
        raise
    if not launch_now:
        return run_id
    launch(folder)
    if wait:
        wait_run(project, run_id, progress=progress)
    return run_id


def run_kind(cfg: TrainConfig) -> str:
    """The store's kind of a run with this config: train (SFT), dpo or orpo."""
    return "train" if cfg.objective == "sft" else cfg.objective


def _source_run(project: Project, ref: str, *, init_adapter: str | None, base_model: str | None, method: str) -> Run:
    """The run ``from_run`` names, checked: a succeeded run with a LoRA adapter, on the same base."""
    if init_adapter:
        raise ValueError("pass from_run or init_adapter, not both")
    if method != "lora":
        raise ValueError("from_run continues a LoRA adapter: it needs method=lora")
    with project.connect() as con:
        src = runs_store.get(con, ref)
    if src.kind in runs_store.TRAINED_KINDS and src.status not in runs_store.TERMINAL:
        src = sync_run(project, src.id)
    if src.status != RunStatus.succeeded.value:
        raise ValueError(f"from_run {src.id} is {src.status}; only a succeeded run has an adapter to start from")
    if not src.adapter_path or not (Path(src.adapter_path) / "adapter_config.json").exists():
        raise ValueError(f"from_run {src.id} has no LoRA adapter (a method=lora run has one)")
    if base_model and base_model != src.base_model:
        raise ValueError(f"from_run {src.id} was trained on base {src.base_model!r}, not {base_model!r}")
    return src


def preference_rows(project: Project, cfg: TrainConfig, rows: list[dict[str, Any]],
                    train_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The preference pairs a dpo/orpo run trains on, frozen for the run folder (see
    training/preference.py): those of the slice's train pairs (``preference_pairs=slice``) or every
    one in the project (``all``). A pair the slice holds gets its prompt as a conversation
    (``prompt_messages``, rendered by the trainer with the model's chat template, as for SFT);
    another keeps the prompt text its prediction was made with. A pair whose chosen and rejected
    answers are the same teaches nothing and is left out. Raises ValueError when none is left."""
    from store import errors as errors_store
    from training.formatting import prompt_and_reference

    pair_ids = None if cfg.preference_pairs == "all" else [str(r["pair_id"]) for r in train_rows]
    with project.connect() as con:
        prefs = errors_store.preference_pairs(con, pair_ids)
    by_pair = {str(r["pair_id"]): r for r in rows}
    out = [{"id": p.id, "pair_id": p.pair_id, "category_id": p.category_id,
            "prompt_messages": prompt_and_reference(by_pair[p.pair_id], cfg.system_prompt)[0]
            if p.pair_id in by_pair else None,
            "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
           for p in prefs if p.chosen.strip() != p.rejected.strip()]
    if not out:
        where = "in the project" if cfg.preference_pairs == "all" else "for the slice's train pairs"
        raise ValueError(f"objective={cfg.objective} needs preference pairs, and there are none {where}; "
                         "correct predictions first (`tuneloop errors correct`, or the Errors page)")
    return out


def _when(epoch: Any) -> datetime:
    """A run folder's time (epoch seconds) as the store's naive UTC timestamp; now when missing."""
    return datetime.fromtimestamp(float(epoch or time.time()), UTC).replace(tzinfo=None)


def sync_run(project: Project, run_id: str) -> Run:
    """Copy the run folder's status, new events and new metrics into the store; returns the stored run."""
    _reap()
    with project.connect() as con:
        run = runs_store.get(con, run_id)
    if run.kind not in runs_store.TRAINED_KINDS or not run.run_dir:
        return run
    folder = RunFolder(run.run_dir)
    if not folder.status_file.exists():  # a folder gone (or not mounted here) tells nothing: keep what we know
        return run
    # Events before status.json: the status read below is never older than the last event read.
    events_offset = folder.path / ".synced_events"
    events_done = int(events_offset.read_text()) if events_offset.exists() else 0
    events = folder.events()
    st = folder.status()
    status = st.get("status", "queued")
    error = st.get("error")
    # A process that died without saying so (killed, OOM, machine restart) is a failed run.
    if status in ("queued", "running") and st.get("pid") and not pid_alive(st.get("pid")) \
            and time.time() - float(st.get("updated_at", 0)) > STALE_AFTER_S:
        status, error = "failed", error or "the training process exited unexpectedly; `tuneloop runs resume` continues it"
        folder.update_status(status="failed", error=error, finished_at=time.time())
    offset_file = folder.path / ".synced_metrics"
    done = int(offset_file.read_text()) if offset_file.exists() else 0
    rows = folder.metrics()
    new: list[tuple[int, str, float]] = []
    for r in rows[done:]:
        step = int(r.get("step", 0))
        new += [(step, k, float(v)) for k, v in r.items() if k != "step" and isinstance(v, int | float)]
    summary = dict(st.get("summary") or {})
    for k in ("step", "total_steps", "model", "data", "world_size", "device"):
        if st.get(k) is not None:
            summary.setdefault(k, st[k])
    with project.connect() as con:
        if new:
            runs_store.add_metrics(con, run_id, new)
        current = run.status
        for ev in events[events_done:]:
            # A failed or cancelled run whose trainer started again (launched by hand from its
            # folder: torchrun / accelerate launch) is open again, as after `runs resume`.
            if current in _REOPENABLE and ev.get("status") in ("queued", "running"):
                runs_store.reopen(con, run_id, message=str(ev.get("message") or "") or
                                  f"launched again from its run folder after it was {current}",
                                  at=_when(ev.get("time")) - timedelta(microseconds=1))  # just before it
                current = RunStatus.queued
            # Replay each change once: a change this store already has (written by whoever
            # made it, e.g. cancel_run or a resume) is not a new event.
            if ev.get("status") not in _STATUSES or ev["status"] == current or current in runs_store.TERMINAL:
                continue
            runs_store.set_status(con, run_id, ev["status"], message=str(ev.get("message") or ""),
                                  at=_when(ev.get("time")))
            current = ev["status"]
        if status != run.status or status == "running" or len(events) > events_done:
            runs_store.set_status(con, run_id, status, error=error, adapter_path=st.get("adapter_path"),
                                  summary=summary or None, at=_when(st.get("finished_at") or st.get("updated_at")))
        run = runs_store.get(con, run_id)
    offset_file.write_text(str(len(rows)))
    events_offset.write_text(str(len(events)))
    if run.status in runs_store.TERMINAL:
        sync_dynamics(project, run_id, folder)
    return run


def sync_dynamics(project: Project, run_id: str, folder: RunFolder) -> int:
    """Load an ended run's training dynamics (dynamics.jsonl) into the store once; returns the rows
    added. Only an ended run: a resumed run rewrites the rows after its checkpoint, the last wins."""
    marker = folder.path / ".synced_dynamics"
    size = folder.dynamics_file.stat().st_size if folder.dynamics_file.exists() else 0
    if not size or (marker.exists() and marker.read_text() == str(size)):
        return 0
    with project.connect() as con:
        added = dynamics_store.save(con, run_id, folder.dynamics())
    marker.write_text(str(size))
    return added


def sync_live(project: Project) -> dict[str, str]:
    """Sync every run the store still has as queued or running (its folder may have moved on since
    anybody looked); returns {run id: status after the sync} of those runs."""
    with project.connect() as con:
        live = [r.id for s in (RunStatus.queued, RunStatus.running) for r in runs_store.list_runs(con, status=s.value)]
    return {rid: sync_run(project, rid).status for rid in live}


def progress_of(project: Project, run_id: str) -> dict[str, Any]:
    """The live state of a run from its folder (cheap; no database)."""
    with project.connect() as con:
        run = runs_store.get(con, run_id)
    return RunFolder(run.run_dir).status() if run.run_dir else {}


def after_of(run_dir: str | Path, st: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The step after training of a succeeded run, as it reports itself in status.json ``after``
    (``state``: pending, running, done, skipped or failed; ``message``; ``done``/``total``...), or None
    when the run has no such step or did not succeed. A step whose launcher is gone without a final
    word is failed. ``st``: status.json as already read."""
    folder = RunFolder(run_dir)
    st = folder.status() if st is None else st
    if st.get("status") != RunStatus.succeeded.value or not folder.job().get("after"):
        return None
    after = dict(st.get("after") or {"state": "pending", "message": "waiting for the step after training"})
    if after.get("state") not in AFTER_FINAL and not pid_alive(st.get("launcher_pid")):
        _reap()
        if not pid_alive(st.get("launcher_pid")):
            after.update(state="failed", message=f"the step after training stopped without a word; see {folder.log_file}")
    return after


def _after_pending(folder: RunFolder, st: dict[str, Any]) -> bool:
    after = after_of(folder.path, st)
    return after is not None and after.get("state") not in AFTER_FINAL


def wait_run(project: Project, run_id: str, *, poll_s: float = 0.5, timeout_s: float | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Block until the run ends, and its step after training too, syncing it into the store;
    returns the final run. While only the step after training goes on, the store is left alone
    (that step writes to it)."""
    with project.connect() as con:
        run = runs_store.get(con, run_id)
    folder = RunFolder(run.run_dir)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_sync = 0.0
    while True:
        _reap()
        st = folder.status()
        if progress:
            progress(st)
        if run.status in runs_store.TERMINAL:
            if not _after_pending(folder, st):
                return run
        else:
            ended = st.get("status") in runs_store.TERMINAL
            dead = bool(st.get("pid")) and not pid_alive(st.get("pid"))
            if ended or dead or time.monotonic() - last_sync > 5.0:
                if dead and not ended:  # give a crashed run's heartbeat time to go stale
                    time.sleep(STALE_AFTER_S + 0.2)
                run = sync_run(project, run_id)
                last_sync = time.monotonic()
                if run.status in runs_store.TERMINAL and not _after_pending(folder, folder.status()):
                    return run
        if deadline and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {st.get('status')} after {timeout_s} s")
        time.sleep(poll_s)


def cancel_run(project: Project, run_id: str) -> Run:
    """Ask a run to stop: it saves a checkpoint and ends as cancelled (resumable)."""
    run = sync_run(project, run_id)
    if run.status in runs_store.TERMINAL:
        return run
    folder = RunFolder(run.run_dir)
    folder.cancel_file.touch()
    st = folder.status()
    if not pid_alive(st.get("pid")):
        folder.update_status(status="cancelled", finished_at=time.time())
        with project.connect() as con:
            runs_store.set_status(con, run_id, RunStatus.cancelled, message="cancelled before it ran")
    return sync_run(project, run_id)


def resume_run(project: Project, run_id: str, *, wait: bool = False,
               progress: Callable[[dict[str, Any]], None] | None = None) -> str:
    """Relaunch a failed, cancelled or killed run; it continues from its last checkpoint."""
    run = sync_run(project, run_id)
    folder = RunFolder(run.run_dir)
    st = folder.status()
    if run.status == RunStatus.succeeded.value:
        raise ValueError(f"run {run_id} already succeeded")
    if st.get("status") in ("queued", "running") and pid_alive(st.get("pid")):
        raise ValueError(f"run {run_id} is still running (pid {st.get('pid')})")
    step = st.get("step") or 0
    with project.connect() as con:
        runs_store.reopen(con, run_id, message=f"resumed from step {step}")
    folder.update_status(status="queued", error=None, traceback=None, finished_at=None)
    launch(folder)
    if wait:
        wait_run(project, run_id, progress=progress)
    return run_id
