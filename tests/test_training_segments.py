"""A run trained in several segments (cancel, resume): its summary counts every segment's time,
and the trainer re-chooses its CPU threads when a segment starts and when the load changes.

The trainer runs in this process on a run folder written here (no database, no subprocess), so
the tests control the one external input that matters: the machine's load average.
"""

from __future__ import annotations

import os

import pytest

from models.lm import auto_threads
from tests.training_fixtures import MEMO_PAIRS, tiny_model_dir
from training import train as train_mod
from training.config import TrainConfig
from training.runfolder import RunFolder


def _folder(tmp_path, **cfg) -> RunFolder:
    f = RunFolder(tmp_path / "run")
    f.path.mkdir(parents=True)
    f.write_json(f.job_file, {"run_id": "run_test", "base_model": str(tiny_model_dir())})
    f.write_json(f.config_file, TrainConfig(**{"max_steps": 3, "eval_every": 0, "save_every": 0, **cfg}).model_dump(mode="json"))
    rows = [{"pair_id": f"p{i}", "revision_id": f"r{i}", "split": "train", "weight": 1.0, "instruction": q, "input": "",
             "response": a, "system": "", "messages": None} for i, (q, a) in enumerate(MEMO_PAIRS)]
    f.write_rows("train", rows)
    f.write_rows("eval", [])
    return f


@pytest.fixture
def restore_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_resumed_run_counts_every_segment(tmp_path, restore_threads):
    f = _folder(tmp_path, threads=1)
    f.cancel_file.touch()  # the first segment stops at once, with a checkpoint
    assert train_mod.run(f.path) == 0
    first = f.status()
    assert first["status"] == "cancelled" and first["segments"] == 1 and first["train_seconds"] > 0
    f.cancel_file.unlink()
    assert train_mod.run(f.path) == 0
    st = f.status()
    s = st["summary"]
    assert st["status"] == "succeeded" and st["resumed"] is True and s["steps"] == 3
    assert s["segments"] == 2
    assert s["train_seconds"] == pytest.approx(first["train_seconds"] + s["segment_seconds"])
    assert s["train_seconds"] > s["segment_seconds"]


@pytest.mark.parametrize(("load", "cores", "default", "own", "expected"), [
    (None, 2, 2, 0, 2),   # load unknown: torch's choice
    (0.1, 2, 2, 0, 2),    # idle box
    (3.0, 2, 2, 0, 1),    # others fill the box: one thread
    (1.0, 2, 2, 0, 1),    # one core free
    (2.1, 2, 2, 2, 2),    # the load is our own two threads
    (4.0, 2, 2, 2, 1),    # someone else started two threads beside ours
    (1.2, 2, 2, 1, 2),    # we run one, the others left: back to two
    (4.0, 16, 16, 0, 12),
])
def test_auto_threads_use_the_cores_others_leave_free(load, cores, default, own, expected):
    assert auto_threads(load, cores, default, own) == expected


def test_trainer_rechooses_threads_when_the_load_changes(tmp_path, monkeypatch, restore_threads):
    import torch

    from models import lm

    f = _folder(tmp_path, threads=0, max_steps=4)

    def loadavg() -> tuple[float, float, float]:
        # quiet while the segment starts; once it has trained a step, someone else takes every core
        busy = f.status().get("step", 0) >= 1
        return (64.0, 64.0, 64.0) if busy else (0.0, 0.0, 0.0)

    monkeypatch.setattr(os, "getloadavg", loadavg)
    monkeypatch.setattr(lm, "_default_threads", 2)  # torch's own choice on a 2-core machine
    monkeypatch.setattr(train_mod, "THREAD_CHECK_STEPS", 2)
    monkeypatch.setattr(train_mod, "THREAD_CHECK_MIN_S", 0.0)
    monkeypatch.delenv("TUNELOOP_THREADS", raising=False)
    torch.set_num_threads(1)  # what an earlier, busier moment chose: the start re-chooses 2
    assert train_mod.run(f.path) == 0
    changes = [r for r in f.metrics() if "threads" in r]
    assert changes == [{"step": 0, "threads": 2.0}, {"step": 2, "threads": 1.0}]
    assert torch.get_num_threads() == 1 and f.status()["threads"] == 1

    # an explicit count is never changed
    torch.set_num_threads(2)
    g = _folder(tmp_path / "explicit", threads=2, max_steps=4)
    assert train_mod.run(g.path) == 0
    assert not [r for r in g.metrics() if "threads" in r] and torch.get_num_threads() == 2
