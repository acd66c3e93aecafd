"""The `tuneloop` command: one thin CLI over the library functions every stage exposes.

Importing this module is cheap on purpose: the commands (and typer, DuckDB, polars...) load when
the app is first used (``build_app``, or ``tuneloop.cli.app``). A process that multiprocessing
starts (the parser workers of ``tuneloop ingest``, forked from their forkserver) imports the
command's main module again before it runs; with every command imported at the top that was
~0.3 s per worker, and on the forkserver's readiness check that every worker waited for.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any


@functools.cache
def build_app() -> Any:
    """The typer app with every command registered (built once per process)."""
    import typer

    from tuneloop.commands import (
        analysis_cmds,
        data_cmds,
        dynamics_cmds,
        errors_cmds,
        guideline_cmds,
        ingest_cmds,
        judge_cmds,
        training_cmds,
        users_cmds,
    )

    app = typer.Typer(
        name="tuneloop",
        help="Data-centric annotation and error analysis for fine-tuning LLMs.\n\n"
        "Example: tuneloop init ./proj && tuneloop import data.jsonl --project ./proj && tuneloop stats --project ./proj",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="rich",
    )
    for module in (data_cmds, ingest_cmds, analysis_cmds, training_cmds, dynamics_cmds, errors_cmds, users_cmds,
                   guideline_cmds, judge_cmds):
        module.register(app)
    return app


def __getattr__(name: str) -> Any:  # ``from tuneloop.cli import app`` (PEP 562)
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Run the CLI; expected failures print one line, anything else one line plus a hint."""
    from store.config import ConfigError
    from store.db import ConflictError, StoreBusyError
    from tuneloop.common import err

    try:
        build_app()()
    except (StoreBusyError, ConfigError, ConflictError, FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # a bug: still one clean line unless debugging is asked for
        if os.environ.get("TUNELOOP_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
        err.print("[dim](set TUNELOOP_DEBUG=1 for the traceback)[/]")
        sys.exit(3)


if __name__ == "__main__":
    main()
