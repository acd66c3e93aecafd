"""Train, then predict: a run that ends with its predictions stored, scored and categorised.

``train`` starts ``training.runner.start_run`` with a step after training: the run's launcher
process runs ``python -m workflows.train PROJECT RUN_DIR`` once the trainer succeeded, so the
predictions are made in the run's own processes, with or without the CLI or the app attached,
never inside a Streamlit rerun. That step, ``predict_after``, calls
``workflows.predict.predict_and_categorise`` (the function behind ``tuneloop predict``) on the
split ``predict_split`` (default eval) of the run's slice, reports its progress in the run
folder (status.json ``after``: state, done/total, message, prediction set id), and logs its
start and its outcome in the run's history in the store (``store.runs.note``). First it maps the
run's training dynamics and flags hard-to-learn and ambiguous pairs (``workflows.dynamics``).

- ``predict_after = false`` in the run's config turns the step off (it says so and does nothing).
- A slice with no item on that split gets no predictions; the step says why and how to predict
  another split. The run stays succeeded whatever the step does: its model is fine, and
  predictions can be made later ("Predict on…" in the app, ``tuneloop predict``).

The CLI ``train`` and ``retrain``, the app's Train page and its Retrain action all start runs
through ``train``; ``training.runner.start_run`` alone trains without the step.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

from store import runs as runs_store
from store.db import Project, open_project
from training.runfolder import RunFolder


def train(project: Project, slice_ref: str | None, **options: Any) -> str:
    """``training.runner.start_run(project, slice_ref, **options)`` (same options: base_model,
    config_path, overrides, parent_run_id, init_adapter, name, author, wait, progress; same
    errors) with the step after training chained (see the module docstring); returns the run id.
    ``wait=True`` blocks until the run and its predictions are done."""
    from training.runner import start_run

    return start_run(project, slice_ref, after=[sys.executable, "-m", "workflows.train", str(project.root)], **options)


def predict_after(project: Project, run_id: str) -> dict[str, Any]:
    """The step after a run succeeded: predict its ``predict_split`` unless ``predict_after`` is off
    or the split is empty. Returns the final ``after`` report (also in status.json); a failure is
    reported there and in the run's history, then raised."""
    from workflows.predict import predict_and_categorise

    with project.connect() as con:
        run = runs_store.get(con, run_id)
    folder = RunFolder(run.run_dir)
    cfg = {**run.config, **(folder.read_json(folder.config_file, {}) or {})}
    split = str(cfg.get("predict_split") or "eval")

    def report(state: str, message: str = "", **fields: Any) -> dict[str, Any]:
        after = {"step": "predict", "state": state, "split": split, "message": message, **fields,
                 "updated_at": time.time()}
        folder.update_status(after=after)
        return after

    def note(message: str) -> None:
        with project.connect() as con:
            runs_store.note(con, run.id, message)

    # dpo/orpo runs (training/preference.py) record no training dynamics: nothing to map
    if cfg.get("record_dynamics", True) and cfg.get("objective", "sft") == "sft":
        from workflows.dynamics import map_run

        try:  # the data map is a by-product: a failure is noted, the predictions still run
            m = map_run(project, run.id)
            note(f"training dynamics mapped: {m.counts.get('hard-to-learn', 0)} hard-to-learn, "
                 f"{m.counts.get('ambiguous', 0)} ambiguous pairs flagged")
        except Exception as exc:  # noqa: BLE001
            note(f"training dynamics not mapped: {type(exc).__name__}: {exc}")
    if not cfg.get("predict_after", True):
        note("no predictions after training: predict_after = false")
        return report("skipped", "predict_after = false: no predictions after training")
    n = len(folder.read_rows(split))
    if not n:
        msg = (f"no predictions: the slice has no {split} split; predict another split or slice with "
               f"\"Predict on\" (Train page) or `tuneloop predict --run {run.id} --split "
               f"{'train' if split == 'eval' else 'eval'}`")
        note(msg)
        return report("skipped", msg)
    note(f"predicting the {split} split ({n} pairs)")
    report("running", f"predicting the {split} split", done=0, total=n)
    last = [0.0]

    def tick(done: int, total: int) -> None:
        if done >= total or time.monotonic() - last[0] > 0.5:  # status.json is rewritten, not appended
            last[0] = time.monotonic()
            report("running", f"predicting the {split} split", done=done, total=total)

    device = cfg.get("device")
    try:
        res = predict_and_categorise(project, run.id, split=split, progress=tick,
                                     device=None if device in (None, "auto") else str(device))
    except Exception as exc:
        msg = f"predictions failed: {type(exc).__name__}: {exc}"
        report("failed", msg, done=0, total=n)
        note(msg)
        raise
    c = res.categorised or {}
    msg = (f"{n} predictions on the {split} split (set {res.prediction_set_id}), errors categorised: "
           f"{c.get('proposals', 0)} proposals")
    note(msg)
    return report("done", msg, done=n, total=n, prediction_set_id=res.prediction_set_id)


def main(argv: list[str] | None = None) -> int:
    """``python -m workflows.train PROJECT RUN_DIR``: the step after training of the run in RUN_DIR."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m workflows.train PROJECT RUN_DIR", file=sys.stderr)
        return 2
    folder = RunFolder(argv[1])
    threads = (folder.read_json(folder.config_file, {}) or {}).get("threads")
    if threads:  # as many CPU threads as the trainer was given (models.lm reads this)
        os.environ.setdefault("TUNELOOP_THREADS", str(threads))
    run_id = str(folder.job().get("run_id") or "")
    try:
        after = predict_after(open_project(argv[0]), run_id)
    except Exception:
        traceback.print_exc()
        return 1
    print(f"[after] {after['state']}: {after['message']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
