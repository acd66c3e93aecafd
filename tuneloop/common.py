"""Shared CLI pieces: the --project option, consoles, and turning errors into one clean line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from store.db import Project, open_project

# Telemetry of dependencies off, and no model-hub traffic, before anything heavy is imported.
for _k, _v in {
    "DO_NOT_TRACK": "true", "SCARF_NO_ANALYTICS": "true", "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

console = Console()
err = Console(stderr=True)

ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-p", envvar="TUNELOOP_PROJECT", help="Project folder (default: $TUNELOOP_PROJECT, else the current folder)."),
]
AuthorOpt = Annotated[str, typer.Option("--author", envvar="TUNELOOP_USER", help="Who is acting (recorded on every change).")]


def project(path: Path | None, create: bool = False) -> Project:
    return open_project(path, create=create)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def default_author() -> str:
    return os.environ.get("TUNELOOP_USER") or os.environ.get("USER") or "cli"
