"""kill -9 at seeded random points of every writing stage: the store opens, what was written is
all-or-nothing per file or transaction, re-running completes the work, and the killed command
leaves no process and no cache folder behind.

Each stage is run once cleanly on a copy of its starting project (its duration D and its final
counts are the reference), then ROUNDS times on fresh copies, killed (SIGKILL to the command's own
process, as `kill -9 PID` does) after a seeded random fraction of D, checked, and re-run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from store.db import Project
from tests.reliability.harness import (
    ROUNDS,
    SEED,
    TALLY,
    kill9,
    leftover_cache,
    orphans_after,
    run_cli,
    spawn,
    unclear_lines,
)

Counts = dict[str, int]


def _counts(root: Path, sql: str) -> Counts:
    with Project(root).connect(timeout=60) as con:
        return {str(k): int(v) for k, v in con.execute(sql).fetchall()}


@dataclass
class Stage:
    name: str
    prepare: Callable[[Path, Path], list[str]]  # (base project, work dir) -> CLI arguments
    groups: str  # SQL: (key, count) rows; each key is written by one transaction
    monotone: bool = False  # several transactions per key (batches): count may stop in between


def _rows(n: int, tag: str) -> list[dict]:
    """Pairs with exact and near duplicates and a few PII-looking strings, so every curation stage writes."""
    out: list[dict] = []
    for i in range(n):
        if i % 10 == 9:  # the row before again, in other case and spacing (an exact duplicate once normalised)
            out.append({"instruction": out[-1]["instruction"].upper() + "  ", "output": " " + out[-1]["output"]})
            continue
        base = f"{tag} question {i % (n // 3 or 1)} about the refund policy of order {i // 7}"
        out.append({"instruction": base if i % 5 else base + " please", "output": f"answer {i % 11}: see section {i % 4}"
                    + (" mail me at jo.doe@fastmail.fm" if i % 13 == 0 else "")})
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _imported(base: Path, work: Path) -> None:
    f = _write_jsonl(work / "seed.jsonl", _rows(1500, "seed"))
    r = run_cli(base, "import", str(f))
    assert r.returncode == 0, r.stdout + r.stderr


def prep_import(base: Path, work: Path) -> list[str]:
    files = [_write_jsonl(work / f"part{k}.jsonl", _rows(n, f"p{k}")) for k, n in enumerate((30000, 20000, 10000))]
    return ["import", *map(str, files)]


def prep_ingest(base: Path, work: Path) -> list[str]:
    docs = work / "docs"
    docs.mkdir()
    for d in range(5):
        sections = "\n\n".join(
            f"## Section {s} of handbook {d}\n\n" + " ".join(
                f"Rule {s}.{k}: employees of unit {d} file expense reports within {k + 3} days of travel." for k in range(12))
            for s in range(8))
        (docs / f"handbook-{d}.md").write_text(f"# Handbook {d}\n\n{sections}\n", encoding="utf-8")
    return ["ingest", str(docs), "--workers", "1"]


def prep_dedupe(base: Path, work: Path) -> list[str]:
    _imported(base, work)
    return ["dedupe", "--exact", "--near"]


def prep_signals(base: Path, work: Path) -> list[str]:
    _imported(base, work)
    return ["signals"]


def prep_embed(base: Path, work: Path) -> list[str]:
    _imported(base, work)
    return ["embed"]


def prep_slice(base: Path, work: Path) -> list[str]:
    _imported(base, work)
    return ["slice", "create", "everything", "--where", "status=pending", "--split-by", "pair"]


def prep_correction(base: Path, work: Path) -> list[str]:
    from tests.errors_fixtures import add_intent_pairs, make_run, make_slice, store_predictions

    with Project(base).connect() as con:
        ids = add_intent_pairs(con)
        sl = make_slice(con, ids, ids[4:])
    run_id = make_run(Project(base), sl.id)
    store_predictions(Project(base), run_id, {pid: "card_arrival" for pid in ids[4:]}, slice_id=sl.id)
    with Project(base).connect() as con:
        pred = con.execute("SELECT id FROM predictions ORDER BY id LIMIT 1").fetchone()[0]
    return ["errors", "correct", pred, "--response", "top_up_transfer", "--reason", "reliability"]


STAGES = [
    Stage("import", prep_import, "SELECT source_uri, count(*) FROM pairs GROUP BY ALL"),
    Stage("ingest", prep_ingest,
          "SELECT d.uri, count(p.id) FROM documents d LEFT JOIN pairs p ON p.document_id = d.id GROUP BY ALL"),
    Stage("dedupe", prep_dedupe,
          "SELECT 'clusters:' || kind, count(*) FROM duplicate_clusters GROUP BY ALL "
          "UNION ALL SELECT 'status:' || status, count(*) FROM pairs GROUP BY ALL"),
    Stage("signals", prep_signals, "SELECT name, count(*) FROM quality_signals GROUP BY ALL"),
    Stage("embed", prep_embed, "SELECT model || '/' || field, count(*) FROM embeddings GROUP BY ALL", monotone=True),
    Stage("slice create", prep_slice,
          "SELECT 'slices', count(*) FROM slices UNION ALL SELECT 'items', count(*) FROM slice_items"),
    Stage("correction", prep_correction,
          "SELECT 'revisions', count(*) FROM pair_revisions UNION ALL SELECT 'preferences', count(*) "
          "FROM preference_pairs UNION ALL SELECT 'reviews', count(*) FROM reviews"),
]


def _check_partial(stage: Stage, before: Counts, clean: Counts, now: Counts) -> list[str]:
    """Keys whose count is neither the count before the command nor the count after a clean run."""
    bad = []
    for key in set(before) | set(clean) | set(now):
        b, c, n = before.get(key, 0), clean.get(key, 0), now.get(key, 0)
        ok = (min(b, c) <= n <= max(b, c)) if stage.monotone else n in (b, c)
        if not ok:
            bad.append(f"{key}: {n} (before {b}, complete {c})")
    return bad


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_kill9_then_rerun(stage: Stage, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}/{stage.name}")
    base = tmp_path / "base"
    Project(base).init()
    args = stage.prepare(base, tmp_path)
    before = _counts(base, stage.groups)

    clean_root = tmp_path / "clean"
    shutil.copytree(base, clean_root)
    t0 = time.monotonic()
    proc = spawn(clean_root, *args, log=tmp_path / "clean.log")
    proc.wait(timeout=900)
    duration = time.monotonic() - t0
    clean_out = (tmp_path / "clean.log").read_text()
    assert proc.returncode == 0, clean_out[-3000:]
    clean = _counts(clean_root, stage.groups)
    t0 = time.monotonic()
    run_cli(clean_root, "stats")  # start-up and opening the store: before that nothing can be written
    startup = min(time.monotonic() - t0, duration * 0.5)
    assert clean != before, f"{stage.name}: the clean run wrote nothing, so a kill could prove nothing"
    TALLY.add(f"kill -9 {stage.name}", operations=1)

    for k in range(ROUNDS):
        root = tmp_path / f"round{k}"
        shutil.copytree(base, root)
        at = startup + (duration - startup) * rng.uniform(0.0, 0.9)
        proc = spawn(root, *args, log=tmp_path / f"round{k}.log")
        try:
            proc.wait(timeout=at)
            killed = False  # finished before the kill point
        except Exception:
            kill9(proc)
            killed = True
        left = orphans_after(proc.pid)
        now = _counts(root, stage.groups)  # the store opens after the kill
        partial = _check_partial(stage, before, clean, now)
        rerun = run_cli(root, *args)
        after = _counts(root, stage.groups)
        out = rerun.stdout + rerun.stderr
        cache = leftover_cache(root)
        lost = len(partial) + sum(1 for key in clean if after.get(key, 0) != clean[key])
        TALLY.add(f"kill -9 {stage.name}", operations=2, kills=int(killed), lost=lost,
                  unclear=len(unclear_lines(out)))
        where = f"{stage.name} round {k} (seed {SEED}, killed at {at:.1f}s of {duration:.1f}s: {killed})"
        print(where)
        assert not left, f"{where}: processes left behind: {left}"
        assert not partial, f"{where}: half-written: {partial}"
        assert rerun.returncode == 0, f"{where}: re-run failed: {out[-3000:]}"
        assert after == clean, f"{where}: re-run did not complete the work: {after} != {clean}"
        assert not cache, f"{where}: cache folders left behind: {cache}"
        assert not unclear_lines(out), f"{where}: unclear output: {unclear_lines(out)}"


def _run_status(root: Path, name: str) -> dict:
    r = run_cli(root, "runs", "list", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return next(x for x in json.loads(r.stdout) if x["name"] == name)


def _trainer_pid(root: Path, run_id: str, deadline_s: float = 300) -> int | None:
    status = root / "runs" / run_id / "status.json"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            st = json.loads(status.read_text())
            if st.get("status") == "running" and st.get("pid"):
                return int(st["pid"])
            if st.get("status") in ("succeeded", "failed", "cancelled"):
                return None
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never started running")


def test_kill9_training_then_resume(tmp_path: Path) -> None:
    """kill -9 of the training process at a random step: the run is marked failed (not running forever),
    the store opens, `runs resume` finishes it from its checkpoint, and nothing is left running."""
    from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir

    rng = random.Random(f"{SEED}/training")
    root = tmp_path / "proj"
    Project(root).init()
    make_slice(Project(root), "memo", MEMO_PAIRS, eval_pairs=MEMO_PAIRS[:2])
    args = ["train", "--slice", "memo", "--base", str(tiny_model_dir()), "max_steps=40", "save_every=5", "threads=1",
            "predict_after=false"]
    t0 = time.monotonic()
    clean = run_cli(root, *args, "--name", "clean", "--wait")
    duration = time.monotonic() - t0
    assert clean.returncode == 0, clean.stdout + clean.stderr
    TALLY.add("kill -9 training", operations=1)
    for k in range(ROUNDS):
        name = f"killed-{k}"
        r = run_cli(root, *args, "--name", name, "--detach")
        assert r.returncode == 0, r.stdout + r.stderr
        run_id = _run_status(root, name)["id"]
        pid = _trainer_pid(root, run_id)
        killed = False
        if pid is not None:
            time.sleep(duration * rng.uniform(0.0, 0.5))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed = True
        end = time.monotonic() + 120
        while (st := _run_status(root, name))["status"] in ("queued", "running") and time.monotonic() < end:
            time.sleep(0.5)
        where = f"training round {k} (seed {SEED}, killed: {killed})"
        assert st["status"] in ("failed", "succeeded"), f"{where}: the killed run stays {st['status']}"
        if st["status"] == "failed":
            res = run_cli(root, "runs", "resume", name)
            assert res.returncode == 0, f"{where}: resume failed: {res.stdout + res.stderr}"
            st = _run_status(root, name)
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and run_id in _cmdline(p)]
        TALLY.add("kill -9 training", operations=2, kills=int(killed), lost=int(st["status"] != "succeeded"),
                  unclear=len(unclear_lines(r.stdout + r.stderr)))
        assert st["status"] == "succeeded", f"{where}: after resume the run is {st['status']}"
        assert not left, f"{where}: processes of the run left: {left}"


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
