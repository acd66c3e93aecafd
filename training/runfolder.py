"""The run folder: how a training process and the rest of tuneloop talk (files only).

Only one process may hold the project's DuckDB file, so a training process never opens it.
It reads its inputs from, and writes its progress to, ``runs/<run_id>/``:

    job.json         what to train: run id, base model, slice id/hash, init adapter (written once)
    config.json      the resolved TrainConfig (written once); config.toml the same as TOML
    data/train.jsonl, data/eval.jsonl   the frozen slice rows (written once by the launcher)
    data/preference.jsonl  objective=dpo/orpo: the frozen preference pairs (training/preference.py)
    status.json      status, step/total, pid, heartbeat, error, summary (rewritten atomically)
    events.jsonl     one JSON object per status change: {"time": t, "status": ..., "message": ...}
                     (append only, written by ``update_status``, so no change is lost between two
                     looks at status.json, however fast a run goes from queued to succeeded)
    metrics.jsonl    one JSON object per step: {"step": n, "loss": ..., "lr": ...} (append only)
    dynamics.jsonl   training dynamics: one object per train example per epoch, {"epoch", "step",
                     "pair_id", "revision_id", "loss", "confidence"}, the loss the step computed anyway
                     (append only; a resumed run repeats the rows after its checkpoint: the last wins)
    checkpoints/last/  state to resume from; checkpoints/best/ the best val-loss weights
                     (dpo/orpo: TRL's checkpoints/trl/checkpoint-N)
    adapter/         the PEFT adapter (method=lora) or model/ (full, top_k) when it succeeded
    CANCEL           flag file: the trainer saves a checkpoint and stops with status cancelled
    train.log        the process's stdout/stderr

``sync_run`` (training.runner) copies status.json into the store, and replays the events and
metrics lines it has not recorded yet.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class RunFolder:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    # paths
    @property
    def job_file(self) -> Path:
        return self.path / "job.json"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def dynamics_file(self) -> Path:
        return self.path / "dynamics.jsonl"

    @property
    def events_file(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def cancel_file(self) -> Path:
        return self.path / "CANCEL"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def data_file(self, split: str) -> Path:
        return self.path / "data" / f"{split}.jsonl"

    # json helpers
    def write_json(self, path: Path, obj: Any) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)

    def read_json(self, path: Path, default: Any = None) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return default

    def job(self) -> dict[str, Any]:
        return self.read_json(self.job_file, {}) or {}

    def status(self) -> dict[str, Any]:
        return self.read_json(self.status_file, {}) or {}

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into status.json; a new ``status`` is also appended to events.jsonl."""
        st = self.status()
        changed = "status" in fields and fields["status"] != st.get("status")
        st.update(fields)
        st["updated_at"] = time.time()
        if changed:
            self._append(self.events_file, {"time": st["updated_at"], "status": st["status"],
                                            "message": str(fields.get("error") or fields.get("message") or "")})
        self.write_json(self.status_file, st)
        return st

    def _append(self, path: Path, row: dict[str, Any]) -> None:
        # One write of one whole line on an O_APPEND file: readers see whole lines or none.
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")

    def _lines(self, path: Path) -> list[dict[str, Any]]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # a line being written right now: read it next time
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({})  # keep line numbers (sync offsets count lines)
        return out

    def append_metrics(self, row: dict[str, Any]) -> None:
        self._append(self.metrics_file, row)

    def metrics(self) -> list[dict[str, Any]]:
        return self._lines(self.metrics_file)

    def append_dynamics(self, rows: list[dict[str, Any]]) -> None:
        if rows:  # one write of whole lines (see ``_append``)
            with self.dynamics_file.open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, default=str) + "\n" for r in rows))

    def dynamics(self) -> list[dict[str, Any]]:
        """The training-dynamics rows written so far (see the module docstring)."""
        return [r for r in self._lines(self.dynamics_file) if r]

    def events(self) -> list[dict[str, Any]]:
        """Every status change of the run, oldest first (see the module docstring)."""
        return self._lines(self.events_file)

    def read_rows(self, split: str) -> list[dict[str, Any]]:
        p = self.data_file(split)
        if not p.exists():
            return []
        return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]

    def write_rows(self, split: str, rows: list[dict[str, Any]]) -> None:
        p = self.data_file(split)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")

    def cancel_requested(self) -> bool:
        return self.cancel_file.exists()

    def artifact(self) -> Path | None:
        """The trained result: adapter/ (LoRA) or model/ (full, top_k), if present."""
        for d in (self.adapter_dir, self.model_dir):
            if (d / "config.json").exists() or (d / "adapter_config.json").exists():
                return d
        return None
