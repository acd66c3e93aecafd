"""Signed sign-in tokens: a named-account sign-in survives a reload, a new tab and another app URL.

The app keeps the token in a browser cookie; this module makes, checks and revokes tokens.

- Token: ``v1.<name>.<expires>.<nonce>.<mac>``: the account name base64url-encoded, the expiry in
  Unix seconds, 16 random bytes in hex, and HMAC-SHA256 (base64url) with the project's secret over
  ``v1|<name>|expires|nonce|account key``. Every part is cookie-safe text.
- The secret: 32 random bytes in ``<project>/.session-secret`` (mode 0600), made on first use and
  linked into place whole, so two app processes starting at once agree on one. It is not in the
  database, so a copy of the database (a backup) cannot forge a session; deleting the file signs
  everybody out.
- The account key is the account's password hash (``users.session_key``; a fresh salt on every
  ``set_password``): changing the password, or removing the account (even re-adding it under the
  same name), leaves no earlier token valid. OIDC accounts have no password hash and get no token
  (``st.login`` keeps their session). The role is not bound: the app re-reads it on every rerun.
- Sign-out is per token: its nonce goes into ``signed_out_sessions`` until its expiry, and only a
  token that verifies is recorded, so the table holds only tokens that could otherwise still be used
  (expired rows are pruned on every sign-out). Other browsers of the same account stay signed in;
  a password change ends all of them.
- Lifetime: ``TUNELOOP_SESSION_HOURS`` (default 12) from the sign-in, never renewed; 0 issues no
  token (a sign-in then lasts only as long as the open tab).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from store import users
from store.db import Project, atomic, one

VERSION = "v1"
SECRET_FILE = ".session-secret"
HOURS_ENV = "TUNELOOP_SESSION_HOURS"
DEFAULT_HOURS = 12.0


@dataclass(frozen=True)
class Token:
    name: str
    expires: int  # Unix seconds
    nonce: str
    mac: str


def session_hours() -> float:
    """``TUNELOOP_SESSION_HOURS`` (default 12); 0 means no lasting sign-in. Anything else is a ValueError."""
    raw = os.environ.get(HOURS_ENV, "").strip()
    if not raw:
        return DEFAULT_HOURS
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not math.isfinite(hours) or hours < 0:
        raise ValueError(f"{HOURS_ENV} must be a number of hours (0 or more), not {raw!r}")
    return hours


def project_secret(project: Project) -> bytes:
    """The project's session secret, made on first use (see the module notes)."""
    path = project.root / SECRET_FILE
    if not path.exists():
        # Written whole under a private name, then linked into place: the link fails when another
        # process got there first, so every process reads the one complete secret that won.
        tmp = path.with_name(f"{SECRET_FILE}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    data = path.read_bytes()
    if len(data) < 32:
        raise RuntimeError(f"{path} holds no session secret: delete it (everybody signs in again)")
    return data


def cookie_name(secret: bytes) -> str:
    """The cookie of this project's sessions: cookies are per host, not per port, so two projects
    served from one machine must not overwrite each other's."""
    return "tuneloop_session_" + hmac.new(secret, b"cookie name", hashlib.sha256).hexdigest()[:10]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _mac(secret: bytes, name: str, expires: int, nonce: str, account_key: str) -> str:
    msg = "|".join([VERSION, _b64(name.encode()), str(expires), nonce, account_key]).encode()  # no "|" inside a part
    return _b64(hmac.new(secret, msg, hashlib.sha256).digest())


def make_token(secret: bytes, name: str, account_key: str, *, expires: int, nonce: str | None = None) -> str:
    nonce = nonce or secrets.token_hex(16)
    return ".".join([VERSION, _b64(name.encode()), str(expires), nonce, _mac(secret, name, expires, nonce, account_key)])


def parse(token: str) -> Token | None:
    """The token's parts if it has the right shape (nothing is verified); None otherwise."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != VERSION or not parts[2].isdigit() or len(parts[3]) != 32:
        return None
    try:
        name = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
        int(parts[3], 16)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return Token(name, int(parts[2]), parts[3], parts[4])


def verify(secret: bytes, token: Token, account_key: str | None, *, at: int) -> bool:
    """Whether ``token`` was made with ``secret`` for the account as it is now, and is unexpired at ``at``."""
    if account_key is None or token.expires <= at:
        return False
    return hmac.compare_digest(_mac(secret, token.name, token.expires, token.nonce, account_key), token.mac)


def _unix(at: datetime | None) -> int:
    if at is None:
        at = datetime.now(UTC)
    elif at.tzinfo is None:  # naive means UTC, as everywhere in the store (``store.pairs.now``)
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp())


def issue(con: duckdb.DuckDBPyConnection, secret: bytes, name: str, *, at: datetime | None = None,
          hours: float | None = None) -> tuple[str, int] | None:
    """(token, lifetime in seconds) for a session of ``name`` from ``at``; None when it gets none
    (no such account, no password (OIDC), or a lifetime of 0)."""
    hours = session_hours() if hours is None else hours
    key = users.session_key(con, name)
    seconds = int(hours * 3600)
    if key is None or seconds <= 0:
        return None
    return make_token(secret, name, key, expires=_unix(at) + seconds), seconds


def _checked(con: duckdb.DuckDBPyConnection, secret: bytes, token: str, at: int) -> Token | None:
    t = parse(token)
    if t is None or not verify(secret, t, users.session_key(con, t.name), at=at):
        return None
    return t


def signed_in_name(con: duckdb.DuckDBPyConnection, secret: bytes, token: str, *,
                   at: datetime | None = None) -> str | None:
    """The account ``token`` signs in, or None: malformed, forged, from another project, expired,
    made before the account's password changed, of a removed account, or signed out."""
    t = _checked(con, secret, token, _unix(at))
    if t is None or one(con, "SELECT 1 FROM signed_out_sessions WHERE nonce = ?", [t.nonce]):
        return None
    return t.name


def sign_out(con: duckdb.DuckDBPyConnection, secret: bytes, token: str, *, at: datetime | None = None) -> None:
    """Revoke ``token`` (a token that does not verify is ignored), and forget revocations that expired."""
    now_s = _unix(at)
    t = _checked(con, secret, token, now_s)
    with atomic(con):
        con.execute("DELETE FROM signed_out_sessions WHERE expires_at <= ?", [_naive(now_s)])
        if t is not None:
            con.execute("INSERT INTO signed_out_sessions VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                        [t.nonce, t.name, _naive(t.expires)])


def _naive(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC).replace(tzinfo=None)  # TIMESTAMP columns hold naive UTC
