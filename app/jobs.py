"""Background jobs: workflow functions (``workflows.job``) and ingest/index runners in child
processes, outside any rerun.

A job is a folder ``<project>/jobs/<id>/`` holding ``job.json`` (command, title, who, when,
pid), ``log.txt`` (the command's output) and ``rc`` (its exit status, written when it
ends). Pages start a job and poll the folder from an ``st.fragment(run_every=...)``
(``components.live_job``), which reruns the whole page once when the job ends; the app
never waits on a job and never shares a DuckDB connection with it (the CLI takes the
database for short transactions only; the app retries while it does).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from store.db import Project

_WRAPPER = (
    "import subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(rc))\n"
)


@dataclass(frozen=True)
class Job:
    id: str
    title: str
    kind: str
    args: list[str]
    author: str
    started: float
    pid: int
    folder: Path

    @property
    def rc(self) -> int | None:
        f = self.folder / "rc"
        try:
            return int(f.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        if self.rc is not None:
            return False
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True

    def result(self) -> object | None:
        """What a workflow job returned (``workflows.job`` writes ``result.json``), None until then."""
        try:
            return json.loads((self.folder / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @property
    def status(self) -> str:
        rc = self.rc
        if rc is None:
            return "running" if self.running else "lost"
        return "succeeded" if rc == 0 else "failed"

    def events(self) -> list[dict]:
        """Structured progress lines (``events.jsonl``) written by job runners that emit them."""
        f = self.folder / "events.jsonl"
        if not f.exists():
            return []
        out = []
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line being written right now
        return out

    def log(self, tail_chars: int = 6000) -> str:
        f = self.folder / "log.txt"
        try:
            with f.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - tail_chars))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        # progress bars redraw with carriage returns: keep the latest state of each line
        return "\n".join(line.split("\r")[-1] for line in text.split("\n"))


# A run with at most this many predictions is categorised inside a page action (well under a
# second); larger ones are categorised by a background job with progress.
INLINE_MAX_PREDICTIONS = 500


def jobs_dir(project: Project) -> Path:
    return project.root / "jobs"


def cli_command() -> list[str]:
    return [sys.executable, "-m", "tuneloop.cli"]


def start(project: Project, kind: str, args: list[str], *, title: str, author: str,
          module: str | None = None) -> Job:
    """Start ``tuneloop ARGS --project ROOT`` (or ``python -m MODULE ARGS``) in the background."""
    jid = time.strftime("%Y%m%d-%H%M%S") + f"-{kind}-{os.getpid() % 1000:03d}{int(time.time() * 1000) % 1000:03d}"
    folder = jobs_dir(project) / jid
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [*cli_command(), *args, "--project", str(project.root)] if module is None else \
        [sys.executable, "-m", module, *args]
    env = {**os.environ, "TUNELOOP_PROJECT": str(project.root), "TUNELOOP_USER": author,
           "TUNELOOP_JOB_DIR": str(folder),
           "PYTHONUNBUFFERED": "1", "COLUMNS": "120", "TERM": "dumb"}
    repo = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH", "")) if p)
    with (folder / "log.txt").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRAPPER, str(folder / "rc"), *cmd],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(repo), env=env,
            start_new_session=True,
        )
    meta = {"id": jid, "title": title, "kind": kind, "args": args, "module": module, "author": author,
            "started": time.time(),
            "pid": proc.pid}
    (folder / "job.json").write_text(json.dumps(meta))
    return _load(folder)  # type: ignore[return-value]


def start_workflow(project: Project, name: str, kwargs: dict | None = None, *, title: str, author: str) -> Job:
    """Run the workflow function ``workflows.job.JOBS[name](project, **kwargs)`` in a child process."""
    return start(project, name, [name, json.dumps(kwargs or {})], title=title, author=author, module="workflows.job")


def _load(folder: Path) -> Job | None:
    try:
        m = json.loads((folder / "job.json").read_text())
    except (OSError, ValueError):
        return None
    return Job(id=m["id"], title=m["title"], kind=m["kind"], args=list(m["args"]), author=m.get("author", ""),
               started=float(m["started"]), pid=int(m["pid"]), folder=folder)


def get(project: Project, job_id: str) -> Job | None:
    if not re.fullmatch(r"[\w.-]+", job_id):
        return None
    return _load(jobs_dir(project) / job_id)


def recent(project: Project, kind: str | None = None, limit: int = 10) -> list[Job]:
    d = jobs_dir(project)
    if not d.exists():
        return []
    out = []
    for folder in sorted(d.iterdir(), reverse=True):
        job = _load(folder)
        if job and (kind is None or job.kind == kind):
            out.append(job)
        if len(out) >= limit:
            break
    return out


def page_needs_redraw(job: Job, redrawn_for: str | None) -> bool:
    """Whether a page that polls ``job`` reruns as a whole now: the job has ended (succeeded, failed
    or lost) and the page has not redrawn for it yet (``redrawn_for``: the id of the job the page
    last redrew for). Once per job, so the rerun shows the results and does not repeat."""
    return job.status != "running" and redrawn_for != job.id


def stop(job: Job) -> None:
    """Stop a running job (SIGTERM to its process group: the command and its children)."""
    if job.running:
        with contextlib.suppress(OSError):
            os.killpg(job.pid, signal.SIGTERM)


# ---------------------------------------------------------------- uploads

_SAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def safe_name(name: str) -> str:
    """A file name that cannot leave its folder: no separators, no dot-dot, no control characters."""
    base = name.replace("\\", "/").split("/")[-1]
    base = _SAFE.sub("_", base).strip(" .")
    return (base or "upload")[:120]


def save_upload(project: Project, name: str, data: bytes, *, max_bytes: int) -> Path:
    """Write an uploaded file under ``<project>/uploads/<batch>/``; refuses files over ``max_bytes``."""
    if len(data) > max_bytes:
        raise ValueError(f"{name}: {len(data) / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB upload limit")
    batch = project.uploads_dir / time.strftime("%Y%m%d-%H%M%S")
    batch.mkdir(parents=True, exist_ok=True)
    target = (batch / safe_name(name)).resolve()
    if not target.is_relative_to(project.uploads_dir.resolve()):
        raise ValueError(f"{name}: refused (path outside the project's uploads folder)")
    if target.exists():
        target = target.with_name(f"{target.stem}-{int(time.time() * 1000) % 100000}{target.suffix}")
    target.write_bytes(data)
    return target
