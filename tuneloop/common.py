"""Shared CLI pieces: the --project option, consoles, and turning errors into one clean line.

Output for scripts: ``--json`` writes plain JSON to stdout and nothing else goes there
(progress, notes and errors go to stderr); tables never cut an id (``id_column``), and every
id a command takes may be an unambiguous prefix (``lookup`` turns a missing or ambiguous one
into one error line).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from store.db import Project, open_project

# Telemetry of dependencies off, and no model-hub traffic, before anything heavy is imported.
for _k, _v in {
    "DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

# soft_wrap: a message is one line however long its paths are (the terminal wraps it, scripts can
# grep it); tables still fit the width.
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-p", envvar="TUNELOOP_PROJECT", help="Project folder (default: $TUNELOOP_PROJECT, else the current folder)."),
]
AuthorOpt = Annotated[str, typer.Option("--author", envvar="TUNELOOP_USER", help="Who is acting (recorded on every change).")]


EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="Where the heavy work runs: local (this machine's processes) or ray (default: the project's "
                     "engine setting, else local).")]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="An existing Ray cluster (head:6379 or ray://head:10001; default: $RAY_ADDRESS, else the "
                          "project setting, else a local Ray runtime with this machine's cores).")]


def project(path: Path | None, create: bool = False) -> Project:
    return open_project(path, create=create)


def engine_for(p: Project, kind: str | None, address: str | None):  # -> scale.engine.Engine
    """The engine a command runs on (``scale.engine.for_project``); a wrong choice is one clear error."""
    from scale.engine import EngineError, for_project

    try:
        eng = for_project(p, kind, address)
    except EngineError as exc:
        raise fail(str(exc)) from None
    if eng.is_ray:
        err.print(f"engine: {eng.describe()}", highlight=False, markup=False)
    return eng


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def default_author() -> str:
    return os.environ.get("TUNELOOP_USER") or os.environ.get("USER") or "cli"


T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout (nothing else goes there).")]


def emit_json(data: Any) -> None:
    """``data`` as JSON on stdout: plain text (no colour, no wrapping), one trailing newline."""
    sys.stdout.write(json.dumps(data, indent=1, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def id_column(table: Table, header: str, **kw: Any) -> None:
    """A table column for ids: never cut or ellipsised; at worst folded onto a second line."""
    table.add_column(header, no_wrap=True, overflow="fold", min_width=kw.pop("min_width", 10), **kw)


def lookup(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Call a store lookup; a missing or ambiguous id becomes one error line and exit code 2."""
    try:
        return fn(*args, **kw)
    except KeyError as exc:
        raise fail(str(exc.args[0]) if exc.args else str(exc)) from None
