"""Opening the database and transactions: ``atomic`` commits, rolls back and nests by joining;
``Project.hold_warm`` keeps an instance open and lets go of it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from store import pairs as pairs_store
from store import runs as runs_store
from store.db import Project, atomic, release_warm
from store.records import NewPair, PairContent, Status


def _pair(con, text: str) -> str:
    return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=text, response="r"))])[0]


def _run(con, name: str) -> str:
    return runs_store.create(con, base_model="tiny", config={}, run_dir="/tmp/none", name=name).id


def test_atomic_commits_at_the_end_and_rolls_back_on_error(project: Project):
    with project.connect() as con:
        with atomic(con):
            kept = _pair(con, "kept")
        with pytest.raises(RuntimeError), atomic(con):
            _pair(con, "lost")
            raise RuntimeError("boom")
        assert [p.instruction for p in pairs_store.query(con)] == ["kept"]
        assert pairs_store.get(con, kept).instruction == "kept"


def test_a_store_function_inside_a_caller_transaction_joins_it(project: Project):
    """Functions that are atomic on their own (set_status, runs.create) compose: the outer block
    alone commits, or rolls back everything they wrote."""
    with project.connect() as con:
        pid = _pair(con, "q")
        with pytest.raises(RuntimeError), atomic(con):
            pairs_store.set_status(con, pid, Status.accepted, author="a")  # its own atomic joins
            _run(con, "joined")
            raise RuntimeError("the caller's unit fails after the inner writes")
        assert pairs_store.get(con, pid).status == Status.pending
        assert pairs_store.reviews(con, pid) == []
        assert runs_store.list_runs(con) == []

        with atomic(con):
            pairs_store.set_status(con, pid, Status.accepted, author="a")
            _run(con, "joined")
        assert pairs_store.get(con, pid).status == Status.accepted
        assert [r.name for r in runs_store.list_runs(con)] == ["joined"]

        # after the outer block the connection is outside a transaction again: a later call commits alone
        pairs_store.set_status(con, pid, Status.rejected, author="b")
    with project.connect() as con:
        assert pairs_store.get(con, pid).status == Status.rejected


def test_project_transaction_is_atomic_and_nests(project: Project):
    with pytest.raises(ValueError), project.transaction() as con:
        _run(con, "outer")
        with atomic(con):
            _run(con, "inner")
        raise ValueError("roll both back")
    with project.transaction() as con:
        assert runs_store.list_runs(con) == []


def test_each_connection_has_its_own_transaction(project: Project):
    """A second connection (a cursor per script run) is not inside the first one's block."""
    with project.connect() as a, project.connect() as b:
        with atomic(a):
            _run(a, "a")
            with atomic(b):
                _run(b, "b")
            # b committed on its own while a is still open
        assert sorted(r.name for r in runs_store.list_runs(b)) == ["a", "b"]


def test_hold_warm_keeps_and_releases_the_instance(project: Project):
    try:
        assert not project.is_warm()
        assert project.hold_warm(idle_s=60)
        assert project.is_warm()
        assert project.hold_warm(idle_s=60)  # a repeat only refreshes the idle clock
        with project.connect() as con:  # connections share the warm instance
            _pair(con, "while warm")
        release_warm(project)
        assert not project.is_warm()
        # released: another process can take the file
        code = "import duckdb, sys; duckdb.connect(sys.argv[1]).close(); print('ok')"
        out = subprocess.run([sys.executable, "-c", code, str(project.db_path)], capture_output=True, text=True,
                             timeout=60)
        assert out.stdout.strip() == "ok", out.stderr
    finally:
        release_warm(project)


def test_hold_warm_holds_nothing_while_another_process_has_the_file(project: Project):
    code = ("import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
            "sys.stdin.readline(); c.close()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(project.db_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert project.hold_warm(idle_s=60) is False
        assert not project.is_warm()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
        release_warm(project)
