"""A sign-in survives a reload: signed, expiring session tokens kept in a cookie (store/sessions.py).

Tokens are checked against a real project (its secret file, its accounts, its sign-outs); the app
through AppTest, which cannot send cookies, so the one function that reads the request's cookie
(``app.state._request_cookie``, the browser boundary) is replaced there; and one real browser
signs in, reloads, opens other app URLs and signs out.
"""

from __future__ import annotations

import re
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from store import sessions
from store import users as users_store
from store.db import Project
from store.pairs import now

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")


@pytest.fixture
def proj(project, monkeypatch) -> Project:
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    monkeypatch.delenv(sessions.HOURS_ENV, raising=False)
    with project.connect() as con:
        users_store.create_user(con, "root", "admin", "root-password")
        users_store.create_user(con, "bob", "reviewer", "bob-password")
    return project


def token_for(p: Project, name: str, **kw) -> str:
    with p.connect() as con:
        issued = sessions.issue(con, sessions.project_secret(p), name, **kw)
    assert issued is not None
    return issued[0]


def who(p: Project, token: str, **kw) -> str | None:
    with p.connect() as con:
        return sessions.signed_in_name(con, sessions.project_secret(p), token, **kw)


# ---------------------------------------------------------------- tokens


def test_a_fresh_token_signs_its_account_in_until_it_expires(proj):
    t0 = now()
    token = token_for(proj, "bob", at=t0, hours=2)
    assert re.fullmatch(r"v1\.[A-Za-z0-9_-]+\.\d+\.[0-9a-f]{32}\.[A-Za-z0-9_-]+", token)
    assert "bob-password" not in token and "scrypt" not in token
    assert who(proj, token, at=t0) == "bob"
    assert who(proj, token, at=t0 + timedelta(hours=2) - timedelta(seconds=1)) == "bob"
    assert who(proj, token, at=t0 + timedelta(hours=2)) is None  # expired


def _flip(s: str) -> str:
    return s[:-1] + ("A" if s[-1] != "A" else "B")


@pytest.mark.parametrize("tamper", [
    _flip,  # the signature
    lambda t: t.replace(t.split(".")[1], "cm9vdA"),  # "root" (base64url): another account, bob's signature
    lambda t: t.replace(t.split(".")[2], str(int(t.split(".")[2]) + 86400)),  # a later expiry
    lambda t: t.replace(t.split(".")[3], "0" * 32),  # another nonce
    lambda t: "v2" + t[2:],
    lambda t: t + ".x",
    lambda t: "",
    lambda t: "garbage",
    lambda t: "v1.%%%.1.2.3",
])
def test_a_tampered_token_is_refused(proj, tamper):
    assert who(proj, tamper(token_for(proj, "bob"))) is None


def test_a_token_of_another_project_is_refused(proj, tmp_path):
    other = Project(tmp_path / "other").init()
    with other.connect() as con:
        users_store.create_user(con, "bob", "admin", "bob-password")
    token = token_for(other, "bob")
    assert who(other, token) == "bob"
    assert who(proj, token) is None  # same name, another secret
    assert sessions.cookie_name(sessions.project_secret(other)) != sessions.cookie_name(sessions.project_secret(proj))


def test_changing_the_password_or_removing_the_account_ends_its_tokens(proj):
    bob, root = token_for(proj, "bob"), token_for(proj, "root")
    with proj.connect() as con:
        users_store.set_password(con, "bob", "bob-password")  # even the same password: a new salt
    assert who(proj, bob) is None and who(proj, root) == "root"
    bob = token_for(proj, "bob")
    with proj.connect() as con:
        users_store.set_role(con, "bob", "annotator")  # a role is re-read by the app, not bound
    assert who(proj, bob) == "bob"
    with proj.connect() as con:
        users_store.remove_user(con, "bob")
        assert sessions.issue(con, sessions.project_secret(proj), "bob") is None
        users_store.create_user(con, "bob", "reviewer", "bob-password")  # a new account under the old name
    assert who(proj, bob) is None


def test_signing_out_revokes_that_token_only_until_it_expires(proj):
    t0 = now()
    first, second = token_for(proj, "bob", at=t0, hours=1), token_for(proj, "bob", at=t0, hours=1)
    secret = sessions.project_secret(proj)
    with proj.connect() as con:
        sessions.sign_out(con, secret, first, at=t0)
        sessions.sign_out(con, secret, first, at=t0)  # twice: no error
        sessions.sign_out(con, secret, _flip(second), at=t0)  # a forged token records nothing
        assert con.execute("SELECT user_name FROM signed_out_sessions").fetchall() == [("bob",)]
    assert who(proj, first, at=t0) is None
    assert who(proj, second, at=t0) == "bob"  # another browser of bob stays signed in
    with proj.connect() as con:  # a later sign-out prunes revocations of tokens that expired anyway
        sessions.sign_out(con, secret, token_for(proj, "root"), at=t0 + timedelta(hours=1))
        assert con.execute("SELECT user_name FROM signed_out_sessions").fetchall() == [("root",)]


def test_oidc_accounts_and_a_zero_lifetime_get_no_token(proj):
    with proj.connect() as con:
        users_store.ensure_oidc_user(con, "carol@example.com")
        secret = sessions.project_secret(proj)
        assert sessions.issue(con, secret, "carol@example.com") is None
        assert sessions.issue(con, secret, "nobody") is None
        assert sessions.issue(con, secret, "bob", hours=0) is None


@pytest.mark.parametrize(("value", "hours"), [(None, 12.0), ("", 12.0), ("0.5", 0.5), ("0", 0.0), ("48", 48.0)])
def test_session_hours(monkeypatch, value, hours):
    if value is None:
        monkeypatch.delenv(sessions.HOURS_ENV, raising=False)
    else:
        monkeypatch.setenv(sessions.HOURS_ENV, value)
    assert sessions.session_hours() == hours


@pytest.mark.parametrize("value", ["twelve", "-1", "nan", "inf"])
def test_session_hours_refuses_nonsense(monkeypatch, value):
    monkeypatch.setenv(sessions.HOURS_ENV, value)
    with pytest.raises(ValueError, match="TUNELOOP_SESSION_HOURS"):
        sessions.session_hours()


def test_the_secret_is_made_once_private_to_its_owner(project):
    path = project.root / sessions.SECRET_FILE
    assert not path.exists()  # made on first use, never by `init` (nor in a template copied around)
    secret = sessions.project_secret(project)
    assert len(secret) == 32 and sessions.project_secret(project) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---------------------------------------------------------------- the app (AppTest)


def cookie_scripts(at: AppTest) -> list[str]:
    return [h.value for h in at.html if "document.cookie" in h.value]


@pytest.fixture
def browser_cookies(monkeypatch):
    """The cookies the "browser" sent with the request that opened the session (AppTest sends none)."""
    from app import state

    jar: dict[str, str] = {}
    monkeypatch.setattr(state, "_request_cookie", jar.get)
    return jar


def open_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_signing_in_asks_the_browser_to_keep_a_token(proj, browser_cookies):
    at = open_app()
    assert at.title[0].value == "Sign in to tuneloop" and not cookie_scripts(at)
    at.text_input(key="si_name").set_value("bob")
    at.text_input(key="si_pw").set_value("bob-password")
    at.button(key="si_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Overview"
    token = at.session_state["_session_token"]
    assert who(proj, token) == "bob"
    [script] = cookie_scripts(at)
    name = sessions.cookie_name(sessions.project_secret(proj))
    assert f"{name}={token}; Max-Age=43200; Path=/; SameSite=Strict" in script
    assert "Secure" in script  # added when the page came over https
    at.run()
    assert not cookie_scripts(at)  # written once


def test_a_valid_cookie_signs_in_without_the_form(proj, browser_cookies):
    browser_cookies[sessions.cookie_name(sessions.project_secret(proj))] = token_for(proj, "bob")
    at = open_app()
    assert at.title[0].value == "Overview"
    assert at.session_state["user"] == "bob" and at.session_state["role"] == "reviewer"
    assert not at.text_input and not cookie_scripts(at)
    with proj.connect() as con:  # `tuneloop users passwd bob` from a terminal
        users_store.set_password(con, "bob", "new-bob-password")
    at.run()
    assert at.title[0].value == "Sign in to tuneloop" and "sign in again" in at.info[0].value
    assert "Max-Age=0" in cookie_scripts(at)[0]  # the dead cookie is deleted
    assert "user" not in at.session_state


@pytest.mark.parametrize("bad", ["tampered", "expired", "other project"])
def test_a_bad_cookie_shows_the_form_and_is_deleted(proj, browser_cookies, tmp_path, bad):
    name = sessions.cookie_name(sessions.project_secret(proj))
    if bad == "tampered":
        token = _flip(token_for(proj, "bob"))
    elif bad == "expired":
        token = token_for(proj, "bob", at=now() - timedelta(hours=13))
    else:
        other = Project(tmp_path / "other").init()
        with other.connect() as con:
            users_store.create_user(con, "bob", "admin", "bob-password")
        token = token_for(other, "bob")
    browser_cookies[name] = token
    at = open_app()
    assert at.title[0].value == "Sign in to tuneloop" and "user" not in at.session_state
    assert f"{name}=; Max-Age=0" in cookie_scripts(at)[0]


def test_signing_out_revokes_the_token_and_deletes_the_cookie(proj, browser_cookies):
    token = token_for(proj, "root")
    browser_cookies[sessions.cookie_name(sessions.project_secret(proj))] = token
    at, other_tab = open_app(), open_app()
    assert at.title[0].value == other_tab.title[0].value == "Overview"
    at.button(key="sign_out").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Sign in to tuneloop"  # although this session's request still sends the cookie
    assert "Max-Age=0" in cookie_scripts(at)[0]
    assert who(proj, token) is None
    assert open_app().title[0].value == "Sign in to tuneloop"  # a reload with the old cookie
    other_tab.run()  # another tab of the same browser, on its next click
    assert other_tab.title[0].value == "Sign in to tuneloop" and "user" not in other_tab.session_state


def test_local_admin_sets_no_cookie(project, browser_cookies, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    at = open_app()
    assert at.session_state["local_admin"] is True and not cookie_scripts(at)
    assert not (project.root / sessions.SECRET_FILE).exists()


def test_zero_hours_sets_no_cookie(proj, browser_cookies, monkeypatch):
    monkeypatch.setenv(sessions.HOURS_ENV, "0")
    at = open_app()
    at.text_input(key="si_name").set_value("bob")
    at.text_input(key="si_pw").set_value("bob-password")
    at.button(key="si_submit").click().run()
    assert at.title[0].value == "Overview" and not cookie_scripts(at)
    assert "_session_token" not in at.session_state


def test_with_oidc_configured_a_named_account_cookie_is_not_used(proj, browser_cookies):
    browser_cookies[sessions.cookie_name(sessions.project_secret(proj))] = token_for(proj, "bob")
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                          "client_id": "id", "client_secret": "secret",
                          "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "tuneloop" and at.button[0].label == "Sign in"  # st.login's button
    assert "user" not in at.session_state and not cookie_scripts(at)
    at.user = {"is_logged_in": True, "email": "carol@example.com", "name": "Carol"}
    at.run()  # the provider signed carol in: st.login's own cookie keeps her session, no token of ours
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Overview" and at.session_state["user"] == "carol@example.com"
    assert "_session_token" not in at.session_state and not cookie_scripts(at)


# ---------------------------------------------------------------- a real browser


@pytest.mark.browser
def test_sign_in_survives_reloads_and_other_urls_in_a_real_browser(proj, tmp_path):
    from tests.test_browser import ARGS, CHROMIUM, needs_a_browser, running_app

    needs_a_browser()
    from playwright.sync_api import expect, sync_playwright

    signed_in_page = {"/": "Overview", "/review": "Review", "/explore": "Explore"}
    with running_app(proj, tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        expect.set_options(timeout=60_000)
        ctx = browser.new_context()
        page = ctx.new_page()
        page.set_default_timeout(60_000)

        def shows(heading: str, at: str | None = None) -> None:
            if at is not None:
                page.goto(url + at)
            expect(page.get_by_role("heading", name=heading)).to_be_visible()

        shows("Sign in to tuneloop", "/")
        page.get_by_role("textbox", name="User name").fill("root")
        page.get_by_role("textbox", name="Password").fill("root-password")
        page.get_by_role("button", name="Sign in").click()
        shows("Overview")
        name = sessions.cookie_name(sessions.project_secret(proj))
        expect(page.get_by_text("Signed in as")).to_be_visible()
        page.wait_for_function(f"document.cookie.includes('{name}=')")
        [cookie] = [c for c in ctx.cookies() if c["name"] == name]
        assert cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert 11 * 3600 < cookie["expires"] - time.time() <= 12 * 3600  # Max-Age: the token's 12 hours
        assert who(proj, cookie["value"]) == "root"

        page.reload()  # F5
        shows("Overview")
        for at, heading in signed_in_page.items():  # typed URLs: each opens a new session
            shows(heading, at)
        expect(page.get_by_role("heading", name="Sign in to tuneloop")).to_have_count(0)
        second = ctx.new_page()  # another tab
        second.goto(url + "/review")
        expect(second.get_by_role("heading", name="Review")).to_be_visible()
        second.close()

        for bad in (_flip(cookie["value"]), token_for(proj, "root", at=now() - timedelta(hours=13))):
            other = browser.new_context()  # tampered, then expired: a fresh browser profile
            other.add_cookies([{"name": name, "value": bad, "url": url}])
            p2 = other.new_page()
            p2.goto(url + "/review")
            expect(p2.get_by_role("heading", name="Sign in to tuneloop")).to_be_visible()
            other.close()

        page.get_by_role("button", name="Sign out").click()
        shows("Sign in to tuneloop")
        page.wait_for_function(f"!document.cookie.includes('{name}=')")
        page.reload()
        shows("Sign in to tuneloop")
        ctx.add_cookies([{"name": name, "value": cookie["value"], "url": url}])  # the old token, revoked
        shows("Sign in to tuneloop", "/review")
        browser.close()

