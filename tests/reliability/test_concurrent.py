"""Concurrent writers on one project for a fixed time: CLI processes (reviews, imports) and a
reviewer clicking in the app (AppTest on the real router). Every write that reported success
is in the store; every failure was reported in one readable line; latencies go to the table."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from store import pair_pages
from store import pairs as pairs_store
from store.db import Project
from store.records import SliceFilter, Status
from tests.reliability.harness import SECONDS, TALLY, run_cli, unclear_lines

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")


def _one_line_failure(out: str) -> bool:
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return 0 < len(lines) <= 3 and not unclear_lines(out)


def test_concurrent_writers_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    Project(root).init()
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps({"instruction": f"How do I reset device {i}?", "output": f"Hold button {i}."})
                            + "\n" for i in range(300)), encoding="utf-8")
    assert run_cli(root, "import", str(seed)).returncode == 0
    with Project(root).connect() as con:
        # the reviewer works from the front of the review queue, the CLI writers from its end
        ids = list(reversed(pair_pages.page_ids(con, SliceFilter(status=[Status.pending]), limit=300)))
    monkeypatch.setenv("TUNELOOP_PROJECT", str(root))
    stop = time.monotonic() + SECONDS
    results: list[tuple[str, str, bool, str, float]] = []  # (writer, target, ok, output, seconds)
    guard = threading.Lock()

    def cli_writer(name: str, make_args) -> None:
        k = 0
        while time.monotonic() < stop:
            target, args = make_args(k)
            t0 = time.monotonic()
            r = run_cli(root, *args)
            with guard:
                results.append((name, target, r.returncode == 0, r.stdout + r.stderr, time.monotonic() - t0))
            k += 1

    def import_args(k: int) -> tuple[str, list[str]]:
        f = tmp_path / f"batch{k}.jsonl"
        f.write_text("".join(json.dumps({"instruction": f"batch {k} item {i}: what is the fee?", "output": f"{i} EUR"})
                             + "\n" for i in range(25)), encoding="utf-8")
        return str(f), ["import", str(f)]

    writers = [
        threading.Thread(target=cli_writer, args=("accept", lambda k: (ids[3 * k], ["pairs", "accept", ids[3 * k]])),
                         daemon=True),
        threading.Thread(target=cli_writer, args=("needs-fix", lambda k: (ids[3 * k + 1],
                                                                          ["pairs", "needs-fix", ids[3 * k + 1]])),
                         daemon=True),
        threading.Thread(target=cli_writer, args=("import", import_args), daemon=True),
    ]
    for w in writers:
        w.start()

    # The reviewer: the Review page of the real app, "Accept" about once a second.
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/review.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    clicks, app_failures = 0, 0
    while time.monotonic() < stop:
        t0 = time.monotonic()
        accept = [b for b in at.button if b.key == "rv_accept"]
        assert accept, f"no Accept button on the Review page: {[m.value for m in at.markdown][:5]}"
        accept[0].click().run()
        TALLY.latency["app accept click"].append(time.monotonic() - t0)
        if at.exception or any("busy" in w.value for w in at.warning):
            app_failures += 1
        else:
            clicks += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    for w in writers:
        w.join(timeout=600)

    lost, unclear = [], []
    with Project(root).connect(timeout=60) as con:
        app_reviews = con.execute("SELECT count(*) FROM reviews WHERE author = 'tester'").fetchone()[0]
        for name, target, ok, out, seconds in results:
            TALLY.latency[f"cli {name}"].append(seconds)
            if not ok:
                if not _one_line_failure(out):
                    unclear.append(f"{name} {target}: {out[-500:]}")
                continue
            if name == "import":
                n = con.execute("SELECT count(*) FROM pairs WHERE source_uri LIKE ?", [f"%{Path(target).name}"]).fetchone()[0]
                if n != 25:
                    lost.append(f"import {target}: {n} of 25 pairs")
            else:
                status = "accepted" if name == "accept" else "needs_fix"
                if not any(r.status == status for r in pairs_store.reviews(con, target)):
                    lost.append(f"{name} {target}: no review")
    if app_reviews != clicks:
        lost.append(f"app: {clicks} accepted clicks, {app_reviews} reviews stored")
    TALLY.add("concurrent writers", operations=len(results) + clicks + app_failures, lost=len(lost),
              unclear=len(unclear))
    print(f"{len(results)} CLI writes ({sum(r[2] for r in results)} ok), {clicks} app clicks ({app_failures} busy)")
    assert results and clicks, "no writes happened"
    assert not lost, lost
    assert not unclear, unclear
