"""The only module that touches ``st.session_state`` and Streamlit caches.

- ``project()`` is the project of this session: the folder picked in it, else the server's
  ``TUNELOOP_PROJECT``; opened once. The app never creates a project: with none configured
  (``has_project()`` is False) the router shows how to make or pick one.
- ``db()`` hands a page a *short-lived* connection for one action. DuckDB admits one
  process per file, so while a CLI command (ingest, a training sync) holds the file the
  page shows "busy, retrying" and waits, then offers a retry, never a raw lock error.
- ``user()``/``role()`` are the signed-in account: OIDC through ``st.login`` when
  ``[auth]`` is configured in secrets, else named accounts (store/users.py); a project
  without accounts runs as a local admin so ``make run`` opens straight into the app, but
  only while the app is bound to loopback (``exposed()`` is False). Exposed, it needs an
  admin account (or the setup token ``tuneloop ui --setup-token`` printed, to make the
  first one). Every rerun re-reads the session's account: removed means signed out, a new
  role applies at once, and a local-admin session ends when the first account appears.
- A named-account sign-in lasts across reloads, new tabs and typed app URLs: the browser keeps a
  signed, expiring token (store/sessions.py) in a cookie, written by a one-off script after the
  sign-in (a ``streamlit run`` script cannot set response headers; so it is not HttpOnly) and read from
  the request that opened the session (``st.context.cookies``). The session holds its token and
  re-verifies it on every rerun, so a password change, an expiry or a sign-out in another tab of the
  browser ends it too; signing out revokes the token and deletes the cookie.
- Cached aggregates are keyed on a data version that every write in this session bumps.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from store import error_pages, pair_pages
from store import sessions as sessions_store
from store import users as users_store
from store.db import DB_NAME, Project, StoreBusyError, open_project, resolve_project_dir

BUSY_TIMEOUT_S = float(os.environ.get("TUNELOOP_APP_BUSY_TIMEOUT", "20"))
WARM_IDLE_S = float(os.environ.get("TUNELOOP_APP_WARM_S", "3"))


@st.cache_resource(show_spinner=False)
def _project(root: str) -> Project:
    return open_project(root)  # never create=True: only a user's command makes a project


def project_root() -> str | None:
    """The folder this session works on: the one picked in it, else ``TUNELOOP_PROJECT``; None if neither."""
    return st.session_state.get("project_root") or os.environ.get("TUNELOOP_PROJECT") or None


def has_project() -> bool:
    """Whether ``project_root()`` names an existing tuneloop project."""
    root = project_root()
    return root is not None and Project(resolve_project_dir(root)).exists()


def choose_project(folder: str) -> str | None:
    """Work on the existing project ``folder`` in this session; returns why not, or None when done."""
    if not folder.strip():
        return "Enter the path of a project folder."
    root = resolve_project_dir(folder.strip())
    if not Project(root).exists():
        return (f"{root} is not a tuneloop project (it has no {DB_NAME}). Create one with "
                f"tuneloop init or tuneloop sample --project, then open it.")
    st.session_state["project_root"] = str(root)
    return None


def project() -> Project:
    root = project_root()
    if root is None:
        raise FileNotFoundError("no tuneloop project is configured (TUNELOOP_PROJECT) or picked in this session")
    st.session_state["project_root"] = root
    return _project(root)


@contextmanager
def db(warm: bool = True) -> Iterator[Any]:
    """A connection for one action; waits politely while another process writes the project.

    ``warm``: keep the database instance open a few seconds after this user action
    (``Project.hold_warm``), so the next rerun does not re-read it from disk; the hold ends at once
    when another process waits for the file, so clicks never keep a CLI command out. Polling
    fragments pass ``warm=False`` so an open page never keeps the file from CLI commands.
    """
    p = project()
    if warm:
        p.hold_warm(idle_s=WARM_IDLE_S)
    try:
        cm = p.connect(timeout=0.25)
        con = cm.__enter__()
    except StoreBusyError:
        try:
            with st.spinner("The project is busy (another tuneloop command is writing to it); retrying…"):
                cm = p.connect(timeout=BUSY_TIMEOUT_S)
                con = cm.__enter__()
        except StoreBusyError:
            st.warning(
                "The project is still busy: another tuneloop command (an ingest or a training sync) holds the "
                "database. Your work is safe; try again in a moment.", icon=":material/hourglass_top:")
            st.button("Retry", key=f"busy_retry_{bump_count()}")
            st.stop()
            raise
    try:
        yield con
    except BaseException as exc:
        cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    else:
        cm.__exit__(None, None, None)


# ---------------------------------------------------------------- generic per-session values


def get(key: str, default: Any = None) -> Any:
    return st.session_state.get(key, default)


def put(key: str, value: Any) -> None:
    st.session_state[key] = value


def pop(key: str) -> Any:
    return st.session_state.pop(key, None)


def flash(message: str, kind: str = "success") -> None:
    """A message shown once on the next run (after an action's rerun)."""
    st.session_state.setdefault("_flash", []).append((kind, message))


def show_flash() -> None:
    for kind, message in st.session_state.pop("_flash", []):
        st.toast(message, icon={"success": ":material/check_circle:", "warning": ":material/warning:",
                                "error": ":material/error:"}.get(kind))


def bump_count() -> int:
    return int(st.session_state.get("_data_version", 0))


def bump() -> None:
    """Invalidate this session's cached aggregates after a write."""
    st.session_state["_data_version"] = bump_count() + 1


# ---------------------------------------------------------------- cached aggregates


@st.cache_data(ttl=30, show_spinner=False, max_entries=64)
def _facets(root: str, version: int) -> dict[str, Any]:
    with _project(root).connect() as con:
        return pair_pages.facets(con)


def facets() -> dict[str, Any]:
    project()
    return _facets(st.session_state["project_root"], bump_count())


@st.cache_data(show_spinner=False, max_entries=8)
def safe_markdown(text: str) -> str:
    """``components.safe_markdown`` of ``text``, cached: the guideline shows on every Review rerun and a long
    one takes a tenth of a second to parse."""
    from app import components

    return components.safe_markdown(text)


# Error aggregates are keyed on ``error_pages.labels_version`` (row counts of the append-only
# label and taxonomy tables), so a label written by any process (a CLI `errors auto`, another
# session) recomputes them, and a rerun with nothing new is answered from the cache.
@st.cache_data(show_spinner=False, max_entries=64)
def _error_overview(_con: Any, root: str, psid: str, version: tuple) -> tuple[Any, int, int]:
    return error_pages.error_overview(_con, psid)


def error_overview(con: Any, psid: str) -> tuple[Any, int, int]:
    """``store.error_pages.error_overview``, cached while the project's labels stay the same."""
    project()
    return _error_overview(con, st.session_state["project_root"], psid, error_pages.labels_version(con))


@st.cache_data(show_spinner=False, max_entries=64)
def _error_examples(_con: Any, root: str, psid: str, version: tuple, **kw: Any) -> Any:
    return error_pages.error_examples(_con, psid, **kw)


def error_examples(con: Any, psid: str, **kw: Any) -> Any:
    """``store.error_pages.error_examples``, cached while the project's labels stay the same."""
    project()
    return _error_examples(con, st.session_state["project_root"], psid, error_pages.labels_version(con), **kw)


# ---------------------------------------------------------------- identity


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def _bind_addresses() -> list[str]:
    """What the server was told to bind: ``TUNELOOP_BIND_ADDRESS`` (set by `tuneloop ui`) and Streamlit's option."""
    try:
        option = st.get_option("server.address")
    except Exception:  # outside a configured Streamlit
        option = None
    return [str(a) for a in (os.environ.get("TUNELOOP_BIND_ADDRESS"), option) if a]


def client_address() -> str | None:
    """The browser's IP address; None for a loopback client (Streamlit reports none then) or outside a server."""
    try:
        ip = st.context.ip_address
    except Exception:
        return None
    return ip if isinstance(ip, str) and ip else None


def exposed() -> bool:
    """Whether other machines may reach the app: bound to a non-loopback address, to every interface
    (Streamlit's default when no address is given), or serving a client that is not this machine."""
    bound = _bind_addresses()
    client = client_address()
    return (not bound or not all(users_store.is_loopback(a) for a in bound)
            or (client is not None and not users_store.is_loopback(client)))


def _forget(reason: str | None = None) -> None:
    for k in ("user", "role", "local_admin"):
        st.session_state.pop(k, None)
    if st.session_state.pop("_session_token", None):
        st.session_state["_cookie_update"] = ("", 0)  # the browser's token is dead too: delete it
    if reason:
        st.session_state["_auth_notice"] = reason


def _secret() -> bytes:
    return sessions_store.project_secret(project())


def _start_session(con: Any, account: users_store.User) -> None:
    """Sign this session in as ``account`` and have the browser keep a token of it for reloads."""
    st.session_state.update(user=account.name, role=account.role)
    issued = sessions_store.issue(con, _secret(), account.name)
    if issued is not None:
        st.session_state["_session_token"] = issued[0]
        st.session_state["_cookie_update"] = issued


def _write_cookie(signed_in: bool) -> None:
    """Set or delete the browser's session cookie when a sign-in or sign-out asked for it.

    A script in the page does it (``st.html`` runs it in the app's own document, not in an iframe):
    SameSite=Strict, Path=/, Max-Age = the token's lifetime, Secure when the page came over HTTPS.
    The value is the token, whose characters (base64url, digits, dots) need no quoting. Signed in, the
    script goes into the sidebar, where its empty block does not push the page down.
    """
    update = st.session_state.pop("_cookie_update", None)
    if update is None:
        return
    value, max_age = update
    name = sessions_store.cookie_name(_secret())
    (st.sidebar if signed_in else st).html(
        "<script>(() => { const secure = location.protocol === 'https:' ? '; Secure' : ''; "
        f"document.cookie = {json.dumps(f'{name}={value}; Max-Age={int(max_age)}; Path=/; SameSite=Strict')} "
        "+ secure; })();</script>", unsafe_allow_javascript=True)


def _request_cookie(name: str) -> str | None:
    """A cookie of the request that opened this session (a reload or a typed URL opens a new session)."""
    try:
        value = st.context.cookies.get(name)
    except Exception:  # no server (AppTest), no client
        return None
    return value or None


def _resume_from_cookie() -> bool:
    """Sign in with the browser's session cookie, if it holds a token that still verifies."""
    secret = _secret()
    token = _request_cookie(sessions_store.cookie_name(secret))
    if not token or st.session_state.get("_cookie_refused") == token:
        return False
    with db() as con:
        name = sessions_store.signed_in_name(con, secret, token)
        account = users_store.get_user(con, name) if name else None
    if account is None:  # this session's request keeps sending it: refuse it once, then ignore it
        st.session_state["_cookie_refused"] = token
        st.session_state["_cookie_update"] = ("", 0)
        return False
    st.session_state.update(user=account.name, role=account.role, _session_token=token)
    return True


def _session_still_valid() -> bool:
    """Re-read the session's account (each rerun): gone means signed out; a changed role applies now; a
    session with a token also ends when the token no longer verifies (password changed, expired, signed out)."""
    with db() as con:
        if st.session_state.get("local_admin"):
            if users_store.count_users(con) == 0 and not exposed():
                return True
            _forget("This project now has accounts: sign in with yours.")
            return False
        account = users_store.get_user(con, str(st.session_state.get("user")))
        token = st.session_state.get("_session_token")
        if account is not None and token and sessions_store.signed_in_name(con, _secret(), token) != account.name:
            _forget("Your sign-in has ended (it expired, you signed out, or the password changed): sign in again.")
            return False
    if account is None:
        _forget("Your account no longer exists.")
        return False
    st.session_state["role"] = account.role
    return True


def _first_admin_form(digest: str) -> bool:
    """The exposed app's one way to make the first admin: the setup token from the server console."""
    st.title("Create the first admin account")
    st.caption("This app is reachable from other machines and the project has no admin account yet. Enter the "
               "one-time setup token that `tuneloop ui --setup-token` printed on the server's console.")
    with st.form("first_admin"):
        token = st.text_input("Setup token", type="password", key="fa_token")
        name = st.text_input("User name", key="fa_name")
        password = st.text_input("Password (8+ characters)", type="password", key="fa_pw")
        ok = st.form_submit_button("Create admin account", type="primary", key="fa_create")
    if ok:
        if not users_store.setup_token_matches(token, digest):
            st.error("That is not the setup token this server printed.")
            return False
        try:
            with db() as con:
                _start_session(con, users_store.create_first_admin(con, name, password))
        except ValueError as exc:
            from app.components import esc  # components imports this module

            st.error(esc(str(exc)))
            return False
        st.rerun()
    return False


def sign_in() -> bool:
    """Resolve the signed-in user; render a sign-in form and return False when nobody is."""
    signed_in = _resolve_user()
    _write_cookie(signed_in)  # after: resolving may have started or ended a session (a rerun leaves it for the next run)
    return signed_in


def _resolve_user() -> bool:
    if st.session_state.get("user") and _session_still_valid():
        return True
    if _oidc_configured():
        if not st.user.is_logged_in:
            st.title("tuneloop")
            st.button("Sign in", on_click=st.login, type="primary")
            return False
        name = str(st.user.get("email") or st.user.get("name") or "user")
        with db() as con:
            u = users_store.ensure_oidc_user(con, name, str(st.user.get("name") or name))
        st.session_state.update(user=u.name, role=u.role)
        return True
    with db() as con:
        n_users = users_store.count_users(con)
        n_admins = users_store.count_admins(con)
    if n_users == 0 and not exposed():
        st.session_state.update(user=os.environ.get("TUNELOOP_USER") or "admin", role="admin", local_admin=True)
        return True
    if n_admins == 0 and exposed():
        digest = os.environ.get("TUNELOOP_SETUP_TOKEN_SHA256", "")
        if digest:
            return _first_admin_form(digest)
        st.title("tuneloop needs an admin account")
        st.error("This app is reachable from other machines and the project has no admin account, so nobody can "
                 "sign in. On the server run `tuneloop users add NAME --role admin --project PROJECT`, then reload.")
        return False
    if _resume_from_cookie():
        return True
    st.title("Sign in to tuneloop")
    if notice := st.session_state.pop("_auth_notice", None):
        st.info(notice)
    if n_admins == 0:
        st.caption("This project has no admin account: `tuneloop users role NAME admin` on the server makes one.")
    with st.form("sign_in"):
        name = st.text_input("User name", key="si_name")
        password = st.text_input("Password", type="password", key="si_pw")
        ok = st.form_submit_button("Sign in", type="primary", key="si_submit")
    if ok:
        try:
            with db() as con:
                account = users_store.attempt_sign_in(con, name, password, client_address() or "local")
        except users_store.SignInLocked as exc:
            from app.components import esc  # components imports this module

            st.error(esc(str(exc)))
            return False
        if account is None:
            st.error("Unknown user name or wrong password.")
        else:
            with db() as con:
                _start_session(con, account)
            st.rerun()
    return False


def sign_out() -> None:
    if token := st.session_state.get("_session_token"):
        with db() as con:
            sessions_store.sign_out(con, _secret(), token)
    _forget()
    if _oidc_configured() and st.user.is_logged_in:
        st.logout()


def user() -> str:
    return st.session_state.get("user") or os.environ.get("TUNELOOP_USER") or "reviewer"


def role() -> str:
    return st.session_state.get("role") or ""  # nobody signed in: no rights


def is_local_admin() -> bool:
    return bool(st.session_state.get("local_admin"))


def can(action: str) -> bool:
    """Role rules: annotators review (and see only their own progress); reviewers also curate, analyse and
    oversee everyone's progress and agreement; admins also train and manage accounts."""
    allowed = {
        "annotator": {"review"},
        "reviewer": {"review", "curate", "analyse", "ingest", "oversee"},
        "admin": {"review", "curate", "analyse", "ingest", "oversee", "train", "manage"},
    }
    return action in allowed.get(role(), set())


# ---------------------------------------------------------------- paging


def pager(base: str, signature: Any) -> tuple[str, int]:
    """(widget key, 1-based page) for an ``st.pagination``; a new ``signature`` (filter) starts at page 1."""
    key = f"{base}_{hashlib.sha1(repr(signature).encode()).hexdigest()[:12]}"
    return key, max(1, int(st.session_state.get(key) or 1))
