"""Account commands: `tuneloop users add/list/passwd/role/remove`, and `assign` / `agreement` for overlap review.

The way to make the first admin of a project that the app will serve beyond this machine
(`tuneloop ui --address 0.0.0.0` refuses to start without one). The rules live in
store/users.py: the first account is always an admin, the last admin cannot be demoted or
removed. Passwords are prompted (hidden, twice) or read from stdin, never taken as an argument,
so they stay out of shell history and process lists.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from store import users as users_store
from tuneloop.common import JsonOpt, ProjectOpt, console, emit_json, fail, id_column, project

users_app = typer.Typer(help="Accounts of the app (add, list, passwd, role, remove), assignments and agreement.",
                        no_args_is_help=True)


class Role(StrEnum):
    admin = "admin"
    reviewer = "reviewer"
    annotator = "annotator"


NameArg = Annotated[str, typer.Argument(help="Account (user) name.")]
PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of stdin instead of prompting.")]


@contextmanager
def _refusals() -> Iterator[None]:
    """A missing account (KeyError) or a refused change (ValueError) becomes one error line and exit code 2."""
    try:
        yield
    except (KeyError, ValueError) as exc:
        raise fail(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)) from None


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password (8+ characters)", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def add(
    name: NameArg,
    role: Annotated[Role, typer.Option(help="Role; the project's first account is always admin.")] = Role.reviewer,
    display_name: Annotated[str, typer.Option(help="Name shown in the app (default: the user name).")] = "",
    password_stdin: PasswordStdin = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Add an account with a password; the project's first account is always an admin.

    Example: tuneloop users add alice --role admin
    """
    p = project(project_dir)
    with p.connect() as con:
        if users_store.get_user(con, name.strip()) is not None:
            raise fail(f"user {name.strip()!r} already exists")
    password = _password(password_stdin)
    with _refusals(), p.connect() as con:
        u = users_store.create_user(con, name, role.value, password, display_name)
    note = " (the first account of a project is always an admin)" if u.role != role.value else ""
    console.print(f"account [bold]{escape(u.name)}[/] ({u.role}) added{note}", highlight=False)


@users_app.command("list")
def list_cmd(as_json: JsonOpt = False, project_dir: ProjectOpt = None) -> None:
    """List the accounts with their roles.

    Example: tuneloop users list --json
    """
    with project(project_dir).connect() as con:
        people = users_store.list_users(con)
    if as_json:
        emit_json([{"name": u.name, "display_name": u.display_name, "role": u.role,
                    "password": "set" if u.has_password else "OIDC", "created_at": u.created_at} for u in people])
        return
    if not people:
        console.print("no accounts: the app runs as the local admin on loopback only "
                      "(`tuneloop users add NAME --role admin` makes the first admin)", highlight=False)
        return
    t = Table(title="accounts")
    id_column(t, "name")
    for c in ("display name", "role", "password", "created"):
        t.add_column(c)
    for u in people:
        t.add_row(escape(u.name), escape(u.display_name), u.role, "set" if u.has_password else "OIDC",
                  str(u.created_at or ""))
    console.print(t)


@users_app.command("passwd")
def passwd(name: NameArg, password_stdin: PasswordStdin = False, project_dir: ProjectOpt = None) -> None:
    """Set an account's password (sessions signed in already stay signed in).

    Example: tuneloop users passwd alice
    """
    p = project(project_dir)
    with p.connect() as con:
        if users_store.get_user(con, name) is None:
            raise fail(f"no account named {name!r}")
    password = _password(password_stdin)
    with _refusals(), p.connect() as con:
        users_store.set_password(con, name, password)
    console.print(f"password of [bold]{escape(name)}[/] changed", highlight=False)


@users_app.command("role")
def role_cmd(
    name: NameArg,
    role: Annotated[Role, typer.Argument(help="The new role.")],
    project_dir: ProjectOpt = None,
) -> None:
    """Change an account's role (applies to its open sessions on their next click); never demotes the last admin.

    Example: tuneloop users role alice reviewer
    """
    with _refusals(), project(project_dir).connect() as con:
        users_store.set_role(con, name, role.value)
    console.print(f"[bold]{escape(name)}[/] is now {role.value}", highlight=False)


@users_app.command("remove")
def remove(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project_dir: ProjectOpt = None,
) -> None:
    """Remove an account (its reviews stay, under its name); never the last admin.

    Example: tuneloop users remove bob --yes
    """
    p = project(project_dir)
    if not yes and not typer.confirm(f"Remove the account {name!r}?"):
        raise typer.Exit(1)
    with _refusals(), p.connect() as con:
        users_store.remove_user(con, name)
    console.print(f"account [bold]{escape(name)}[/] removed", highlight=False)


@users_app.command("assign")
def assign_cmd(
    to: Annotated[str, typer.Option("--to", help="Accounts to assign to, comma-separated: a,b,c.")],
    where: Annotated[str, typer.Option(help="Which pairs (as in `slice create --where`; limit=N caps them).")]
    = "status=pending",
    overlap: Annotated[float, typer.Option(min=0.0, max=1.0, help=(
        "Share of the pairs that go to several reviewers (blind to each other until each has decided); "
        "agreement is measured on them. The rest go to one reviewer each."))] = 0.2,
    raters: Annotated[int, typer.Option(min=2, help="Reviewers per shared pair.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of which pairs are shared and of the reviewers' order.")] = 0,
    project_dir: ProjectOpt = None,
) -> None:
    """Assign the matching pairs to reviewers, a seeded share of them to several (blind overlap).

    Example: tuneloop users assign --where "status=pending and limit=500" --to ann,ben,cy --overlap 0.2 --seed 0
    """
    from store import pair_pages
    from store.filters import parse_where

    names = [n.strip() for n in to.split(",") if n.strip()]
    try:
        flt = parse_where(where)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with project(project_dir).connect() as con:
        unknown = [n for n in names if users_store.get_user(con, n) is None]
        if not names or unknown:
            raise fail(f"no account named {', '.join(map(repr, unknown))}" if unknown else "--to names no account")
        ids = pair_pages.page_ids(con, flt, limit=flt.limit or max(1, pair_pages.count(con, flt)))
        added = users_store.assign(con, ids, names, overlap=raters, fraction=overlap, seed=seed)
    console.print(f"{added:,} assignments added: {len(ids):,} pairs, {round(overlap * len(ids)):,} of them to "
                  f"{min(raters, len(set(names)))} reviewers each", highlight=False)


@users_app.command("agreement")
def agreement_cmd(as_json: JsonOpt = False, project_dir: ProjectOpt = None) -> None:
    """Agreement on the pairs several reviewers decided: Cohen's kappa per two, Fleiss' overall and per decision.

    Example: tuneloop users agreement --json
    """
    with project(project_dir).connect() as con:
        pairs = users_store.agreement(con)
        group, n_raters = users_store.group_agreement(con)
    if as_json:
        emit_json({"cohen": [{"reviewer_a": a, "reviewer_b": b, "pairs": n, "kappa": k} for a, b, n, k in pairs],
                   "fleiss": {"kappa": group.kappa, "pairs": group.items, "reviewers": n_raters,
                              "min_raters": group.min_raters, "max_raters": group.max_raters,
                              "per_label": group.per_label}})
        return
    if not group.items:
        console.print("no pair has been decided by two reviewers yet (`tuneloop users assign --overlap 0.2`)",
                      highlight=False)
        return

    def fmt(k: float | None) -> str:
        return "-" if k is None else f"{k:.2f}"

    console.print(f"Fleiss' kappa {fmt(group.kappa)} over {group.items:,} pairs, {n_raters} reviewers "
                  f"({group.min_raters}-{group.max_raters} per pair)", highlight=False)
    t = Table(title="Cohen's kappa per two reviewers")
    for c in ("reviewer A", "reviewer B", "pairs", "kappa"):
        t.add_column(c)
    for a, b, n, k in pairs:
        t.add_row(escape(a), escape(b), str(n), fmt(k))
    console.print(t)
    t = Table(title="per decision (Fleiss' per-label kappa)")
    t.add_column("decision")
    t.add_column("kappa")
    for label, k in group.per_label.items():
        t.add_row(escape(label), fmt(k))
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
