"""The annotation guideline: `tuneloop guideline show|set|history`.

The guideline is Markdown shown to every reviewer on the Review page (store/guidelines.py keeps
every saved version; the latest is the guideline). `show` prints the saved text exactly, so
`tuneloop guideline show > g.md`, an edit, and `tuneloop guideline set --file g.md` round-trip.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from store import guidelines as guidelines_store
from tuneloop.common import (
    AuthorOpt,
    JsonOpt,
    ProjectOpt,
    console,
    default_author,
    emit_json,
    err,
    fail,
    project,
)

guideline_app = typer.Typer(help="The annotation guideline shown on the Review page: show, set, history.",
                            no_args_is_help=True)


@guideline_app.command("show")
def show(project_dir: ProjectOpt = None) -> None:
    """Print the current guideline (its Markdown as saved) to stdout.

    Example: tuneloop guideline show > guideline.md
    """
    with project(project_dir).connect() as con:
        g = guidelines_store.latest(con)
    if g is None or not g.text:
        err.print("no guideline yet: write one in Markdown and `tuneloop guideline set --file FILE`")
        return
    sys.stdout.write(g.text if g.text.endswith("\n") else g.text + "\n")
    err.print(f"(version {g.version} by {g.author}, {str(g.created_at)[:16]})", highlight=False, markup=False)


@guideline_app.command("set")
def set_cmd(
    file: Annotated[Path, typer.Option("--file", "-f", help="Markdown file with the new guideline ('-': stdin).",
                                       allow_dash=True)],
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Save a new version of the guideline (the older versions stay in its history).

    Headings, emphasis, lists, code and tables show on the Review page as written; links show as text
    with their address, images as their alt text, HTML as text.

    Example: tuneloop guideline set --file guideline.md
    """
    if str(file) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"cannot read {file}: {exc}") from None
    with project(project_dir).connect() as con:
        before = guidelines_store.latest(con)
        g = guidelines_store.save(con, text, author=author or default_author())
    if before is not None and before.version == g.version:
        console.print(f"guideline unchanged (version {g.version})")
    else:
        console.print(f"guideline version {g.version} saved by {g.author} ({len(text):,} characters)",
                      highlight=False, markup=False)


@guideline_app.command("history")
def history(limit: int = 20, as_json: JsonOpt = False, project_dir: ProjectOpt = None) -> None:
    """List the saved versions, newest first.

    Example: tuneloop guideline history --json
    """
    with project(project_dir).connect() as con:
        versions = guidelines_store.history(con, limit=limit)
    if as_json:
        emit_json([g.model_dump(mode="json") for g in versions])
        return
    t = Table(title=f"{len(versions)} guideline versions")
    for c in ("version", "author", "saved", "characters"):
        t.add_column(c)
    for g in versions:
        t.add_row(str(g.version), g.author, str(g.created_at)[:16], f"{len(g.text):,}")
    console.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(guideline_app, name="guideline")
