"""Who may use the app: local admin on loopback only, the first account is an admin, the last admin
stays, sessions follow the accounts on every rerun, sign-in failures are rate-limited, annotators
see only their own progress; the `tuneloop users` commands; `tuneloop ui` on an exposed address.

Real parts throughout: a DuckDB project in tmp_path, the app through Streamlit's AppTest, the CLI
through typer's runner, and one real `tuneloop ui` process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from store import pairs as pairs_store
from store import users as users_store
from store.db import Project
from store.pairs import now
from store.records import NewPair, PairContent
from tuneloop.cli import app as cli_app

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def proj(project, monkeypatch) -> Project:
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    return project


def open_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def sign_in(at: AppTest, name: str, password: str) -> AppTest:
    assert at.title[0].value == "Sign in to tuneloop"
    at.text_input(key="si_name").set_value(name)
    at.text_input(key="si_pw").set_value(password)
    at.button(key="si_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def session(at: AppTest, key: str):
    return at.session_state.get(key)


def add_accounts(p: Project, *accounts: tuple[str, str]) -> None:
    with p.connect() as con:
        for name, role in accounts:
            users_store.create_user(con, name, role, f"{name}-password")


def cli(*args: str, input: str | None = None):
    return runner.invoke(cli_app, list(args), input=input)


# ---------------------------------------------------------------- loopback, exposure, local admin


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LocalHost", True), ("0.0.0.0", False), ("::", False), ("", False), (None, False),
    ("192.168.1.20", False), ("10.0.0.1", False), ("example.com", False), ("localhost.example.com", False),
])
def test_is_loopback(address, loopback):
    assert users_store.is_loopback(address) is loopback


def test_loopback_without_accounts_opens_as_local_admin(proj):
    at = open_app()
    assert at.title[0].value == "Overview"
    assert session(at, "local_admin") is True and session(at, "role") == "admin"


@pytest.fixture
def server_address():
    """Set Streamlit's ``server.address`` for one test (None: unset, Streamlit binds every interface)."""
    before = st_config.get_option("server.address")
    yield lambda value: st_config.set_option("server.address", value)
    st_config.set_option("server.address", before)


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.20", None])  # None: no address, every interface
def test_exposed_without_accounts_gives_nobody_admin(proj, monkeypatch, server_address, address):
    monkeypatch.delenv("TUNELOOP_BIND_ADDRESS")  # a bare `streamlit run`, told nothing by `tuneloop ui`
    server_address(address)
    at = open_app()
    assert at.title[0].value == "tuneloop needs an admin account"
    assert "tuneloop users add NAME --role admin" in at.error[0].value
    assert session(at, "user") is None and session(at, "local_admin") is None
    assert not at.text_input  # no form where the first visitor could make themselves admin


def test_exposed_setup_token_creates_the_first_admin_once(proj, monkeypatch):
    monkeypatch.setenv("TUNELOOP_BIND_ADDRESS", "0.0.0.0")
    monkeypatch.setenv("TUNELOOP_SETUP_TOKEN_SHA256", users_store.setup_token_digest("the-real-token"))
    at = open_app()
    assert at.title[0].value == "Create the first admin account"
    at.text_input(key="fa_token").set_value("a-guess")
    at.text_input(key="fa_name").set_value("mallory")
    at.text_input(key="fa_pw").set_value("mallory-password")
    at.button(key="fa_create").click().run()
    assert at.error and "not the setup token" in at.error[0].value
    with proj.connect() as con:
        assert users_store.count_users(con) == 0

    at.text_input(key="fa_token").set_value("the-real-token")
    at.text_input(key="fa_name").set_value("root")
    at.text_input(key="fa_pw").set_value("root-password")
    at.button(key="fa_create").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Overview"
    assert session(at, "role") == "admin" and not session(at, "local_admin")
    with proj.connect() as con:
        assert users_store.get_user(con, "root").role == "admin"
        with pytest.raises(ValueError, match="admin account already"):  # the token made one admin, once
            users_store.create_first_admin(con, "mallory", "mallory-password")
    assert open_app().title[0].value == "Sign in to tuneloop"  # the token form is gone for the next visitor


# ---------------------------------------------------------------- the first and the last admin


def test_first_account_is_always_admin_in_the_store(project):
    with project.connect() as con:
        assert users_store.create_user(con, "ann", "annotator", "ann-password").role == "admin"
        assert users_store.create_user(con, "ben", "annotator", "ben-password").role == "annotator"


def test_first_account_made_in_the_app_is_admin(proj):
    at = open_app()
    at.switch_page("views/users.py")
    at.run()
    at.text_input(key="us_name").set_value("ann")
    at.selectbox(key="us_role").set_value("annotator")
    at.button(key="us_add_btn").click().run()  # no password: nobody could sign in afterwards
    assert "needs a password" in at.error[0].value
    with proj.connect() as con:
        assert users_store.count_users(con) == 0
    at.text_input(key="us_name").set_value("ann")
    at.selectbox(key="us_role").set_value("annotator")
    at.text_input(key="us_pw").set_value("ann-password")
    at.button(key="us_add_btn").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "always an admin" in at.success[0].value
    with proj.connect() as con:
        assert users_store.get_user(con, "ann").role == "admin"


def test_first_account_made_with_the_cli_is_admin(project):
    res = cli("users", "add", "ann", "--role", "annotator", "--password-stdin", "--project", str(project.root),
              input="ann-password\n")
    assert res.exit_code == 0, res.output
    assert "always an admin" in res.output
    res = cli("users", "list", "--json", "--project", str(project.root))
    assert res.exit_code == 0, res.output
    assert [(u["name"], u["role"]) for u in json.loads(res.stdout)] == [("ann", "admin")]


def test_last_admin_cannot_be_demoted_or_removed_in_the_store(project):
    add_accounts(project, ("root", "admin"), ("bob", "reviewer"))
    with project.connect() as con:
        with pytest.raises(ValueError, match="last admin"):
            users_store.set_role(con, "root", "reviewer")
        with pytest.raises(ValueError, match="last admin"):
            users_store.remove_user(con, "root")
        with pytest.raises(KeyError):
            users_store.set_role(con, "nobody", "admin")
        assert users_store.get_user(con, "root").role == "admin"
        users_store.set_role(con, "bob", "admin")  # with a second admin, either may go
        users_store.remove_user(con, "root")
        with pytest.raises(ValueError, match="last admin"):
            users_store.set_role(con, "bob", "annotator")
        assert [(u.name, u.role) for u in users_store.list_users(con)] == [("bob", "admin")]


def test_last_admin_cannot_be_demoted_or_removed_with_the_cli(project):
    add_accounts(project, ("root", "admin"), ("bob", "reviewer"))
    res = cli("users", "role", "root", "reviewer", "--project", str(project.root))
    assert res.exit_code == 2 and "last admin" in res.output
    res = cli("users", "remove", "root", "--yes", "--project", str(project.root))
    assert res.exit_code == 2 and "last admin" in res.output
    with project.connect() as con:
        assert users_store.get_user(con, "root").role == "admin"


def test_cli_users_add_list_passwd_role_remove(project):
    root = str(project.root)
    res = cli("users", "add", "root", "--role", "admin", "--project", root, input="first-password\nfirst-password\n")
    assert res.exit_code == 0, res.output
    res = cli("users", "add", "bob", "--project", root, input="short\nshort\n")  # too short: refused, nothing made
    assert res.exit_code == 2 and "8 characters" in res.output
    assert cli("users", "add", "bob", "--password-stdin", "--project", root, input="bob-password\n").exit_code == 0
    res = cli("users", "add", "bob", "--password-stdin", "--project", root, input="bob-password\n")
    assert res.exit_code == 2 and "already exists" in res.output
    assert cli("users", "passwd", "bob", "--password-stdin", "--project", root, input="new-bob-password\n").exit_code == 0
    assert cli("users", "role", "bob", "annotator", "--project", root).exit_code == 0
    with project.connect() as con:
        assert users_store.authenticate(con, "root", "first-password").role == "admin"
        assert users_store.authenticate(con, "bob", "bob-password") is None
        assert users_store.authenticate(con, "bob", "new-bob-password").role == "annotator"
    res = cli("users", "list", "--project", root)
    assert res.exit_code == 0 and "bob" in res.output and "annotator" in res.output
    assert cli("users", "remove", "bob", "--project", root, input="n\n").exit_code == 1  # not confirmed
    assert cli("users", "remove", "bob", "--project", root, input="y\n").exit_code == 0
    res = cli("users", "passwd", "bob", "--password-stdin", "--project", root, input="whatever-pass\n")
    assert res.exit_code == 2 and "no account" in res.output
    res = cli("users", "list", "--json", "--project", root)
    assert [u["name"] for u in json.loads(res.stdout)] == ["root"]


# ---------------------------------------------------------------- sessions follow the accounts


def test_session_follows_role_change_and_removal(proj):
    add_accounts(proj, ("root", "admin"), ("bob", "admin"))
    at = sign_in(open_app(), "bob", "bob-password")
    at.switch_page("views/users.py")
    at.run()
    assert at.button(key="us_add_btn")  # an admin manages accounts
    with proj.connect() as con:  # another admin (or `tuneloop users role`) demotes bob
        users_store.set_role(con, "bob", "annotator")
    at.run()
    assert session(at, "role") == "annotator"
    assert not [b for b in at.button if b.key == "us_add_btn"]
    with proj.connect() as con:
        users_store.remove_user(con, "bob")
    at.run()
    assert at.title[0].value == "Sign in to tuneloop"
    assert session(at, "user") is None and "no longer exists" in at.info[0].value


def test_local_admin_session_ends_when_the_first_account_appears(proj):
    at = open_app()
    assert session(at, "local_admin") is True
    add_accounts(proj, ("root", "admin"))  # e.g. `tuneloop users add` from a terminal
    at.run()
    assert at.title[0].value == "Sign in to tuneloop"
    assert session(at, "user") is None and session(at, "role") is None and not session(at, "local_admin")


def test_local_admin_session_ends_when_the_app_becomes_exposed(proj, monkeypatch):
    at = open_app()
    assert session(at, "local_admin") is True
    monkeypatch.setenv("TUNELOOP_BIND_ADDRESS", "0.0.0.0")
    at.run()
    assert session(at, "local_admin") is None and at.title[0].value == "tuneloop needs an admin account"


# ---------------------------------------------------------------- rate limit


def test_failed_sign_ins_lock_that_account_and_address(project):
    add_accounts(project, ("root", "admin"), ("bob", "reviewer"))
    t0 = now()
    with project.connect() as con:
        for i in range(users_store.MAX_FAILURES):
            assert users_store.attempt_sign_in(con, "bob", "guess", "203.0.113.9", at=t0 + timedelta(seconds=i)) is None
        with pytest.raises(users_store.SignInLocked, match="try again in 15 minutes"):
            users_store.attempt_sign_in(con, "bob", "bob-password", "203.0.113.9", at=t0 + timedelta(seconds=10))
        # the lock is per (account, address): bob elsewhere and root from that address still sign in
        assert users_store.attempt_sign_in(con, "bob", "bob-password", "198.51.100.7", at=t0).name == "bob"
        assert users_store.attempt_sign_in(con, "root", "root-password", "203.0.113.9", at=t0).name == "root"
        # refused attempts are not counted: the wait ends FAILURE_WINDOW after the last failure
        later = t0 + timedelta(seconds=users_store.MAX_FAILURES - 1) + users_store.FAILURE_WINDOW
        with pytest.raises(users_store.SignInLocked):
            users_store.attempt_sign_in(con, "bob", "bob-password", "203.0.113.9", at=later - timedelta(seconds=1))
        assert users_store.attempt_sign_in(con, "bob", "bob-password", "203.0.113.9", at=later).name == "bob"
        # a success clears the count: one more failure does not lock again
        assert users_store.attempt_sign_in(con, "bob", "guess", "203.0.113.9", at=later) is None
        assert users_store.locked_for(con, "bob", "203.0.113.9", at=later) is None


def test_unknown_names_are_limited_like_real_ones(project):
    add_accounts(project, ("root", "admin"))
    with project.connect() as con:
        for _ in range(users_store.MAX_FAILURES):
            users_store.attempt_sign_in(con, "nobody", "guess", "203.0.113.9")
        with pytest.raises(users_store.SignInLocked):
            users_store.attempt_sign_in(con, "nobody", "guess", "203.0.113.9")


def test_app_refuses_a_correct_password_after_too_many_failures(proj):
    add_accounts(proj, ("root", "admin"))
    at = open_app()
    for _ in range(users_store.MAX_FAILURES):
        sign_in(at, "root", "wrong password")
        assert "wrong password" in at.error[0].value
    sign_in(at, "root", "root-password")
    assert at.title[0].value == "Sign in to tuneloop"
    assert "Too many failed sign-ins" in at.error[0].value.replace("\\", "")
    assert session(at, "user") is None


# ---------------------------------------------------------------- progress


def test_annotator_sees_only_own_progress(proj):
    add_accounts(proj, ("root", "admin"), ("ann", "annotator"), ("ben", "annotator"), ("rita", "reviewer"))
    with proj.transaction() as con:
        ids = pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=f"q{i}", response="a"))
                                          for i in range(4)])
    with proj.connect() as con:
        users_store.assign(con, ids, ["ann", "ben"], overlap=2)
        for pid in ids:
            pairs_store.set_status(con, pid, "accepted", author="ann")
            pairs_store.set_status(con, pid, "rejected", author="ben")
        assert [p.user_name for p in users_store.progress(con, "ann")] == ["ann"]

    def reviewers_page(name: str) -> AppTest:
        at = sign_in(open_app(), name, f"{name}-password")
        at.switch_page("views/users.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    ann = reviewers_page("ann")
    assert list(ann.dataframe[0].value["reviewer"]) == ["ann"]
    assert len(ann.dataframe) == 1  # no agreement table naming the others
    assert "ben" not in " ".join(m.value for m in ann.markdown)
    rita = reviewers_page("rita")
    assert list(rita.dataframe[0].value["reviewer"]) == ["ann", "ben"]


# ---------------------------------------------------------------- the real `tuneloop ui`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(project: Project, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "ui", "--project", str(project.root), "--port", str(free_port()),
         *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "COLUMNS": "200"})


def stop(proc: subprocess.Popen) -> None:
    """Kill the command and the Streamlit server it started (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_ui_on_all_interfaces_refuses_without_an_admin(project):
    proc = start_ui(project, "--address", "0.0.0.0")
    try:
        out, errs = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 2, out + errs
    assert "no admin account" in errs and "tuneloop users add NAME --role admin" in errs
    assert "setup token" not in out


def test_ui_with_setup_token_prints_a_token_and_serves(project):
    proc = start_ui(project, "--address", "0.0.0.0", "--setup-token")
    try:
        token_line = proc.stdout.readline() + proc.stdout.readline()
        assert "one-time setup token" in token_line, token_line
        token = token_line.split("one-time setup token for the first admin account:")[1].split()[0]
        assert len(token) >= 24
        port = proc.args[proc.args.index("--port") + 1]
        deadline = time.monotonic() + 90
        while True:  # an upper bound only: the test waits for the server, never on its speed
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the app did not come up"
                time.sleep(0.3)
    finally:
        stop(proc)
