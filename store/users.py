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
  decision on a pair is their latest *decision* row for it (``_DECISION``: the log also gets a
  row for every text edit, which keeps the status and is no judgement). Cohen's kappa compares
  two reviewers on the pairs both decided; Fleiss' kappa and the per-label kappa cover every pair
  decided by two or more reviewers (the formulas are in scoring/agreement.py).
- Overlap: ``assign`` gives a seeded ``fraction`` of the pairs to ``overlap`` reviewers each, the
  rest to one, round-robin so the load stays balanced.
- Blind overlap: on a pair assigned to two or more reviewers, an assignee who has not decided
  it yet sees no one's decision (``is_blind``, ``visible_reviews``; the Review page shows the
  status as "awaiting your decision"), so the second opinion is independent of the first. Every
  decision is its own review row and the pair's status is the latest decision, as for any pair;
  a blind reviewer's decision is recorded even though the pair is no longer pending (``decide``).
  Settling a disagreement is a later decision by someone who sees all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from scoring.agreement import FleissResult, cohen_kappa, fleiss
from store.db import ConflictError, atomic, one, scalar
from store.pairs import now, reviews, set_status, set_status_many
from store.records import Review, Status

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


def session_key(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """What a sign-in token of ``name`` is bound to (store/sessions.py): its password hash, new with every
    ``set_password``; None for no such account or one without a password (OIDC)."""
    row = one(con, "SELECT password_hash FROM users WHERE name = ?", [name])
    return row[0] if row and row[0] else None


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


def plan_assignments(pair_ids: Sequence[str], user_names: Sequence[str], *, overlap: int = 1,
                     fraction: float = 1.0, seed: int = 0) -> list[tuple[str, str]]:
    """(pair id, user) rows: ``round(fraction * len(pair_ids))`` pairs, drawn with ``seed``, go to
    ``overlap`` users each (capped at the number of users), the others to one. Users are taken in a
    seeded cyclic order, each pair from where the last stopped, so everyone gets the same load (±1)."""
    users = sorted(set(user_names))
    pair_ids = list(dict.fromkeys(pair_ids))
    if not users or not pair_ids:
        return []
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the overlap fraction must be between 0 and 1, not {fraction}")
    overlap = max(1, min(overlap, len(users)))
    rng = random.Random(seed)
    order = list(users)
    rng.shuffle(order)
    shared = set(rng.sample(range(len(pair_ids)), round(fraction * len(pair_ids))))
    rows, cursor = [], 0
    for i, pid in enumerate(pair_ids):
        for _ in range(overlap if i in shared else 1):
            rows.append((pid, order[cursor % len(order)]))
            cursor += 1
    return rows


def assign(
    con: duckdb.DuckDBPyConnection, pair_ids: Sequence[str], user_names: Sequence[str], *, overlap: int = 1,
    fraction: float = 1.0, seed: int = 0,
) -> int:
    """Assign pairs as ``plan_assignments`` says; returns the rows added (an existing assignment is kept).

    ``overlap`` >= 2 with ``fraction`` > 0 gives pairs labelled by several people: blind to each other
    (``is_blind``) and what agreement is computed on.
    """
    rows = plan_assignments(pair_ids, user_names, overlap=overlap, fraction=fraction, seed=seed)
    if not rows:
        return 0
    tbl = pa.table({"pair_id": [p for p, _ in rows], "user_name": [u for _, u in rows]})
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


# A review row that is a judgement. pairs.append_revision also logs every text edit in ``reviews``,
# with the status unchanged, the revision it made, its author and its time: that row is not one.
_DECISION = """NOT (v.status IS NOT DISTINCT FROM v.previous_status AND EXISTS (
    SELECT 1 FROM pair_revisions r
    WHERE r.id = v.revision_id AND r.author = v.author AND r.created_at = v.created_at))"""


def _latest(where: str = "") -> str:
    """SQL of (pair_id, author, status, ts): each reviewer's latest decision on each pair. ``where`` is a
    constant condition on the review row ``v`` (values bound by the caller)."""
    return f"""SELECT v.pair_id, v.author, arg_max(v.status, v.created_at) AS status, max(v.created_at) AS ts
               FROM reviews v WHERE {_DECISION} {where} GROUP BY v.pair_id, v.author"""


def assigned_pair_ids(con: duckdb.DuckDBPyConnection, user_name: str, *, open_only: bool = True,
                      limit: int = 50, offset: int = 0) -> list[str]:
    """A user's assigned pairs, those they have not decided yet first (``open_only`` hides decided ones)."""
    cond = f"""AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.pair_id = a.pair_id AND v.author = a.user_name
                                  AND {_DECISION})""" if open_only else ""
    rows = con.execute(
        f"""SELECT a.pair_id FROM assignments a WHERE a.user_name = ? {cond}
            ORDER BY a.created_at, a.pair_id LIMIT ? OFFSET ?""",
        [user_name, int(limit), int(offset)],
    ).fetchall()
    return [r[0] for r in rows]


# ---------------------------------------------------------------- blind overlap


def is_blind(con: duckdb.DuckDBPyConnection, pair_id: str, viewer: str) -> bool:
    """Whether ``viewer`` must not see the decisions on ``pair_id`` yet: the pair is assigned to two or
    more reviewers, ``viewer`` among them, and ``viewer`` has not decided it."""
    return bool(scalar(
        con,
        f"""SELECT count(*) >= 2 AND bool_or(user_name = ?) AND NOT EXISTS (
                SELECT 1 FROM reviews v WHERE v.pair_id = ? AND v.author = ? AND {_DECISION})
            FROM assignments WHERE pair_id = ?""",
        [viewer, pair_id, viewer, pair_id],
    ))


def visible_reviews(con: duckdb.DuckDBPyConnection, pair_id: str, viewer: str) -> list[Review]:
    """The review log of ``pair_id`` as ``viewer`` may see it: none of it while they are blind (even their
    own edit rows carry the status someone else set), all of it otherwise."""
    return [] if is_blind(con, pair_id, viewer) else reviews(con, pair_id)


def decide(
    con: duckdb.DuckDBPyConnection, pair_id: str, status: Status | str, *, author: str,
    expected_version: int | None = None, seen_revision_id: str | None = None, **decision: Any,
) -> int:
    """``pairs.set_status`` for a reviewer who saw the pair at ``expected_version`` / ``seen_revision_id``;
    returns the new version. ``decision`` goes to ``set_status`` as is (``comment``, ...).

    A blind reviewer decides independently of the others, so another reviewer's decision since they
    opened the pair (it moves the version) is no conflict and theirs is recorded too; only a new text
    (``seen_revision_id`` is no longer the head) is, as they would be judging a text they have not seen.
    """
    with atomic(con):
        if is_blind(con, pair_id, author):
            head = one(con, "SELECT head_revision_id FROM pairs WHERE id = ?", [pair_id])
            if head and seen_revision_id and head[0] != seen_revision_id:
                raise ConflictError(f"The text of pair {pair_id} changed since you opened it; read it again "
                                    "and decide.")
            expected_version = None
        return set_status(con, pair_id, status, author=author, expected_version=expected_version, **decision)


def decide_many(con: duckdb.DuckDBPyConnection, pair_ids: Sequence[str], status: Status | str, *, author: str,
                comment: str = "") -> int:
    """``pairs.set_status_many`` (which leaves a pair already in ``status`` alone), except that a pair
    ``author`` is blind on gets their decision whatever its status: theirs is a rating of its own."""
    with atomic(con):
        blind = [pid for pid in dict.fromkeys(pair_ids) if is_blind(con, pid, author)]
        for pid in blind:
            set_status(con, pid, status, author=author, comment=comment)
        decided = set(blind)
        rest = [pid for pid in pair_ids if pid not in decided]
        return len(blind) + set_status_many(con, rest, status, author=author, comment=comment)


# ---------------------------------------------------------------- progress and agreement


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
    rows = con.execute(  # one person's row reads only their reviews: the Review page asks on every rerun
        f"""WITH latest AS ({_latest("AND (?::VARCHAR IS NULL OR v.author = ?)")}),
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
           ORDER BY people.u""", [user_name, user_name, user_name, user_name]
    ).fetchall()
    return [Progress(*r) for r in rows]


def paired_decisions(con: duckdb.DuckDBPyConnection, user_a: str, user_b: str) -> list[tuple[str, str, str]]:
    """(pair id, A's latest decision, B's latest decision) for pairs both reviewers decided."""
    rows = con.execute(
        f"""WITH latest AS ({_latest("AND v.author IN (?, ?)")})
            SELECT a.pair_id, a.status, b.status FROM latest a JOIN latest b ON a.pair_id = b.pair_id
            WHERE a.author = ? AND b.author = ? ORDER BY a.pair_id""",
        [user_a, user_b, user_a, user_b],
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _shared_decisions(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """pair id -> {reviewer: latest decision} for the pairs two or more reviewers decided."""
    rows = con.execute(
        f"""WITH latest AS ({_latest("AND v.author NOT IN ('import', 'sample')")})
            SELECT pair_id, author, status FROM latest
            WHERE pair_id IN (SELECT pair_id FROM latest GROUP BY pair_id HAVING count(*) >= 2)
            ORDER BY pair_id, author"""
    ).fetchall()
    out: dict[str, dict[str, str]] = {}
    for pid, author, status in rows:
        out.setdefault(pid, {})[author] = status
    return out


def agreement(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int, float | None]]:
    """(reviewer A, reviewer B, pairs both decided, Cohen's kappa) for every two reviewers who share pairs."""
    shared: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for by in _shared_decisions(con).values():
        names = sorted(by)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                la, lb = shared.setdefault((a, b), ([], []))
                la.append(by[a])
                lb.append(by[b])
    return [(a, b, len(la), cohen_kappa(la, lb)) for (a, b), (la, lb) in sorted(shared.items())]


def group_agreement(con: duckdb.DuckDBPyConnection) -> tuple[FleissResult, int]:
    """Fleiss' kappa (overall and per label) over the pairs two or more reviewers decided, and how many
    reviewers took part."""
    shared = _shared_decisions(con)
    raters = {name for by in shared.values() for name in by}
    return fleiss([list(by.values()) for by in shared.values()]), len(raters)
