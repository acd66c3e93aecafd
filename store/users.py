"""Reviewer accounts, roles, overlap assignments, per-reviewer progress and agreement.

- Passwords are stored as ``scrypt$n$r$p$salt$hash`` (stdlib ``hashlib.scrypt``, a random
  16-byte salt per user); the clear text never reaches the database. Users signed in through
  OIDC have no password hash.
- Roles: ``admin`` (everything, including accounts and training), ``reviewer`` (review,
  slices, errors) and ``annotator`` (review only the items assigned to them).
- A project never loses its last admin: the first account is always created as ``admin``
  (whatever role was asked), and demoting or removing the last admin is refused. Otherwise an
  annotator made first would lock everyone out of account management.
- Sign-in failures are counted per (account name, client address) in ``sign_in_failures``
  (in the project, so every app process serving it shares the count and a restart does not
  reset it): after ``MAX_FAILURES`` within ``FAILURE_WINDOW`` that pair is refused, even with the
  right password, until ``FAILURE_WINDOW`` after the last failure. Unknown names are counted
  like known ones, so the limit says nothing about which accounts exist.
- "Local admin" (no account, every right) is only for an app bound to a loopback address
  (``is_loopback``); an exposed app needs an admin account, made with `tuneloop users add`
  or with the one-time setup token `tuneloop ui --setup-token` prints (``setup_token_digest``).
- Progress and agreement are read from the append-only ``reviews`` log: a reviewer's
  decision on a pair is their latest review row for it. Cohen's kappa compares two
  reviewers on the pairs both decided.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa

from store.db import atomic, one, scalar
from store.pairs import now

ROLES = ("admin", "reviewer", "annotator")
_N, _R, _P = 2**14, 8, 1
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class User:
    name: str
    display_name: str
    role: str
    has_password: bool
    created_at: datetime | None = None


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(bytes.fromhex(digest)))
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def _validate(name: str, role: str) -> None:
    if not name or not name.strip() or len(name) > 64:
        raise ValueError("a user name must be 1-64 characters")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def create_user(
    con: duckdb.DuckDBPyConnection, name: str, role: str, password: str | None = None, display_name: str = ""
) -> User:
    """A new account; the project's first account is always an ``admin`` (see the module notes)."""
    name = name.strip()
    _validate(name, role)
    if password is not None and len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    with atomic(con):
        if one(con, "SELECT 1 FROM users WHERE name = ?", [name]):
            raise ValueError(f"user {name!r} already exists")
        if count_users(con) == 0:
            role = "admin"
        con.execute(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
            [name, display_name or name, role, hash_password(password) if password else None, now()],
        )
    return get_user(con, name)  # type: ignore[return-value]


def create_first_admin(con: duckdb.DuckDBPyConnection, name: str, password: str) -> User:
    """An admin account, only while the project has none (the setup-token form: one use)."""
    with atomic(con):
        if count_admins(con):
            raise ValueError("this project has an admin account already: sign in with it")
        return create_user(con, name, "admin", password)


def get_user(con: duckdb.DuckDBPyConnection, name: str) -> User | None:
    row = one(con, "SELECT name, display_name, role, password_hash IS NOT NULL, created_at FROM users WHERE name = ?",
              [name])
    return User(*row) if row else None


def list_users(con: duckdb.DuckDBPyConnection) -> list[User]:
    rows = con.execute(
        "SELECT name, display_name, role, password_hash IS NOT NULL, created_at FROM users ORDER BY name"
    ).fetchall()
    return [User(*r) for r in rows]


def count_users(con: duckdb.DuckDBPyConnection) -> int:
    return int(scalar(con, "SELECT count(*) FROM users"))


def count_admins(con: duckdb.DuckDBPyConnection) -> int:
    return int(scalar(con, "SELECT count(*) FROM users WHERE role = 'admin'"))


def authenticate(con: duckdb.DuckDBPyConnection, name: str, password: str) -> User | None:
    """The user if ``password`` matches; None otherwise (same answer for unknown names)."""
    row = one(con, "SELECT password_hash FROM users WHERE name = ?", [name.strip()])
    if row is None:
        verify_password(password, hash_password("timing-equaliser"))
        return None
    return get_user(con, name.strip()) if verify_password(password, row[0]) else None


def _existing(con: duckdb.DuckDBPyConnection, name: str) -> User:
    u = get_user(con, name)
    if u is None:
        raise KeyError(f"no account named {name!r}")
    return u


def _keep_an_admin(con: duckdb.DuckDBPyConnection, u: User, what: str) -> None:
    if u.role == "admin" and count_admins(con) <= 1:
        raise ValueError(f"{u.name} is the last admin and cannot be {what}: make another account admin first")


def set_role(con: duckdb.DuckDBPyConnection, name: str, role: str) -> None:
    """Change an account's role; demoting the last admin is refused (ValueError), a missing name is a KeyError."""
    _validate(name, role)
    with atomic(con):
        u = _existing(con, name)
        if role != "admin":
            _keep_an_admin(con, u, "demoted")
        con.execute("UPDATE users SET role = ? WHERE name = ?", [role, name])


def remove_user(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Delete an account (its reviews and assignments stay, under its name); never the last admin."""
    with atomic(con):
        _keep_an_admin(con, _existing(con, name), "removed")
        con.execute("DELETE FROM users WHERE name = ?", [name])


def set_password(con: duckdb.DuckDBPyConnection, name: str, password: str) -> None:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    with atomic(con):
        _existing(con, name)
        con.execute("UPDATE users SET password_hash = ? WHERE name = ?", [hash_password(password), name])


# ---------------------------------------------------------------- exposure and sign-in limits


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (a bind or client address) is this machine only: 127.0.0.0/8, ::1, localhost.

    None and "" (Streamlit binds every interface then) and host names other than localhost are not.
    """
    if not address:
        return False
    host = address.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setup_token_digest(token: str) -> str:
    """What the app is given for a setup token: its SHA-256, so the clear token is only on the console."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


def setup_token_matches(token: str, digest: str) -> bool:
    return bool(digest) and hmac.compare_digest(setup_token_digest(token), digest)


class SignInLocked(Exception):
    """Too many failed sign-ins for this (account, address); ``retry_after`` is how long to wait."""

    def __init__(self, retry_after: timedelta):
        minutes = max(1, -(-int(retry_after.total_seconds()) // 60))
        super().__init__(f"Too many failed sign-ins for this account from your address: try again in "
                         f"{minutes} minute{'s' if minutes != 1 else ''}.")
        self.retry_after = retry_after


def locked_for(con: duckdb.DuckDBPyConnection, name: str, address: str, *,
               at: datetime | None = None) -> timedelta | None:
    """How long (account, address) is still refused, or None when it may try.

    Refused: its last ``MAX_FAILURES`` failures fell within ``FAILURE_WINDOW`` of each other, and the
    latest is less than ``FAILURE_WINDOW`` old.
    """
    at = at or now()
    times = [r[0] for r in con.execute(
        """SELECT failed_at FROM sign_in_failures WHERE user_name = ? AND address = ?
           ORDER BY failed_at DESC LIMIT ?""", [name.strip(), address, MAX_FAILURES]).fetchall()]
    if len(times) < MAX_FAILURES or times[0] - times[-1] >= FAILURE_WINDOW or times[0] + FAILURE_WINDOW <= at:
        return None
    return times[0] + FAILURE_WINDOW - at


def attempt_sign_in(con: duckdb.DuckDBPyConnection, name: str, password: str, address: str, *,
                    at: datetime | None = None) -> User | None:
    """``authenticate`` behind the per-(account, address) limit; raises ``SignInLocked`` while refused.

    A refused attempt checks no password and is not counted, so it neither extends the wait nor grows the
    table; a failure is recorded, a success clears that pair's failures.
    """
    at = at or now()
    name = name.strip()
    wait = locked_for(con, name, address, at=at)
    if wait is not None:
        raise SignInLocked(wait)
    account = authenticate(con, name, password)
    with atomic(con):
        if account is None:
            con.execute("DELETE FROM sign_in_failures WHERE failed_at < ?", [at - timedelta(days=1)])
            con.execute("INSERT INTO sign_in_failures VALUES (?, ?, ?)", [name, address, at])
        else:
            con.execute("DELETE FROM sign_in_failures WHERE user_name = ? AND address = ?", [name, address])
    return account


def ensure_oidc_user(con: duckdb.DuckDBPyConnection, name: str, display_name: str = "") -> User:
    """An OIDC identity's account (created as ``reviewer`` on first sign-in; the first user is admin)."""
    u = get_user(con, name)
    if u is not None:
        return u
    role = "admin" if count_users(con) == 0 else "reviewer"
    return create_user(con, name, role, None, display_name)


# ---------------------------------------------------------------- assignments


def assign(
    con: duckdb.DuckDBPyConnection, pair_ids: Sequence[str], user_names: Sequence[str], *, overlap: int = 1,
    seed: int = 0,
) -> int:
    """Assign each pair to ``overlap`` of the users (seeded, balanced round-robin); returns rows added.

    ``overlap`` >= 2 gives items labelled by several people, which agreement is computed on.
    """
    users = sorted(set(user_names))
    if not users or not pair_ids:
        return 0
    overlap = max(1, min(overlap, len(users)))
    order = list(users)
    random.Random(seed).shuffle(order)
    rows_p, rows_u = [], []
    for i, pid in enumerate(pair_ids):
        for k in range(overlap):
            rows_p.append(pid)
            rows_u.append(order[(i + k) % len(order)])
    tbl = pa.table({"pair_id": rows_p, "user_name": rows_u})
    con.register("_asg", tbl)
    try:
        before = int(scalar(con, "SELECT count(*) FROM assignments"))
        con.execute(
            """INSERT INTO assignments SELECT DISTINCT pair_id, user_name, ? FROM _asg a
               WHERE NOT EXISTS (SELECT 1 FROM assignments x WHERE x.pair_id = a.pair_id AND x.user_name = a.user_name)""",
            [now()],
        )
        return int(scalar(con, "SELECT count(*) FROM assignments")) - before
    finally:
        con.unregister("_asg")


def assigned_pair_ids(con: duckdb.DuckDBPyConnection, user_name: str, *, open_only: bool = True,
                      limit: int = 50, offset: int = 0) -> list[str]:
    """A user's assigned pairs, those they have not decided yet first (``open_only`` hides decided ones)."""
    cond = "AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.pair_id = a.pair_id AND v.author = a.user_name)" \
        if open_only else ""
    rows = con.execute(
        f"""SELECT a.pair_id FROM assignments a WHERE a.user_name = ? {cond}
            ORDER BY a.created_at, a.pair_id LIMIT ? OFFSET ?""",
        [user_name, int(limit), int(offset)],
    ).fetchall()
    return [r[0] for r in rows]


@dataclass(frozen=True)
class Progress:
    user_name: str
    assigned: int
    done_assigned: int
    decisions: int
    accepted: int
    rejected: int
    needs_fix: int
    last_at: datetime | None


def progress(con: duckdb.DuckDBPyConnection, user_name: str | None = None) -> list[Progress]:
    """Per reviewer: assigned items, how many of them they decided, and all their decisions.

    ``user_name``: only that person's row (what an annotator may see); None: everyone's.
    """
    rows = con.execute(
        """WITH latest AS (
               SELECT pair_id, author, arg_max(status, created_at) AS status, max(created_at) AS ts
               FROM reviews GROUP BY pair_id, author),
           dec AS (
               SELECT author AS u, count(*) AS n, count(*) FILTER (WHERE status = 'accepted') AS acc,
                      count(*) FILTER (WHERE status = 'rejected') AS rej,
                      count(*) FILTER (WHERE status = 'needs_fix') AS fix, max(ts) AS last_ts
               FROM latest GROUP BY author),
           asg AS (
               SELECT a.user_name AS u, count(*) AS n, count(l.pair_id) AS done
               FROM assignments a LEFT JOIN latest l ON l.pair_id = a.pair_id AND l.author = a.user_name
               GROUP BY a.user_name),
           people AS (SELECT name AS u FROM users UNION SELECT u FROM dec UNION SELECT u FROM asg)
           SELECT people.u, coalesce(asg.n, 0), coalesce(asg.done, 0), coalesce(dec.n, 0), coalesce(dec.acc, 0),
                  coalesce(dec.rej, 0), coalesce(dec.fix, 0), dec.last_ts
           FROM people LEFT JOIN dec ON dec.u = people.u LEFT JOIN asg ON asg.u = people.u
           WHERE ?::VARCHAR IS NULL OR people.u = ?
           ORDER BY people.u""", [user_name, user_name]
    ).fetchall()
    return [Progress(*r) for r in rows]


def paired_decisions(con: duckdb.DuckDBPyConnection, user_a: str, user_b: str) -> list[tuple[str, str, str]]:
    """(pair id, A's latest decision, B's latest decision) for pairs both reviewers decided."""
    rows = con.execute(
        """WITH latest AS (SELECT pair_id, author, arg_max(status, created_at) AS status FROM reviews
                           WHERE author IN (?, ?) GROUP BY pair_id, author)
           SELECT a.pair_id, a.status, b.status FROM latest a JOIN latest b ON a.pair_id = b.pair_id
           WHERE a.author = ? AND b.author = ? ORDER BY a.pair_id""",
        [user_a, user_b, user_a, user_b],
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def cohen_kappa(labels_a: Sequence[str], labels_b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters over the same items; None when undefined (no items)."""
    n = len(labels_a)
    if n == 0 or n != len(labels_b):
        return None
    p_o = sum(a == b for a, b in zip(labels_a, labels_b)) / n
    ca, cb = Counter(labels_a), Counter(labels_b)
    p_e = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if p_e >= 1.0:
        return 1.0 if p_o >= 1.0 else 0.0
    return (p_o - p_e) / (1 - p_e)


def agreement(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int, float | None]]:
    """(reviewer A, reviewer B, items both decided, kappa) for every pair of reviewers with overlap."""
    authors = [r[0] for r in con.execute(
        """SELECT author FROM reviews WHERE author NOT IN ('import', 'sample') GROUP BY author
           HAVING count(DISTINCT pair_id) > 0 ORDER BY author"""
    ).fetchall()]
    out = []
    for i, a in enumerate(authors):
        for b in authors[i + 1:]:
            rows = paired_decisions(con, a, b)
            if rows:
                out.append((a, b, len(rows), cohen_kappa([r[1] for r in rows], [r[2] for r in rows])))
    return out
