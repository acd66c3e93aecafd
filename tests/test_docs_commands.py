"""Every `tuneloop ...` command line the README, docs/*.md and the Makefile show really parses.

A reader copies these lines; one that names a command or an option that does not exist (the
README's loop once said `train --wait` before there was one) fails here. Each line is parsed by
the real click command behind the typer app (``make_context``: command path, option names,
value types, required values), without running it. Placeholders such as RUN or p_... are fine;
``[--option value]`` marks an optional part and is parsed as if given. Inline code in prose
(`tuneloop train`) must name a real command and real options; lines in code blocks must be
complete (required options given, values of the right type).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.exceptions import TyperException

from tuneloop.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```[^\n]*\n(.*?)^\s*```", re.S | re.M)
INLINE = re.compile(r"`(tuneloop [^`\n]+)`")
SEPARATORS = {";", "&&", "||", "|", "&"}


def _commands(line: str) -> list[list[str]]:
    """The argument lists of every `tuneloop` command in one shell line (after `&&`, `;`, `|` too)."""
    line = line.strip().removeprefix("$ ")
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    tokens = list(lex)
    out: list[list[str]] = []
    current: list[str] = []
    for tok in [*tokens, ";"]:
        if tok in SEPARATORS:
            if current and Path(current[0]).name == "tuneloop" and not current[0].endswith("/"):
                out.append([t.strip("[]") for t in current[1:] if t.strip("[]")])
            current = []
        else:
            current.append(tok)
    return out


def documented() -> list[tuple[str, list[str]]]:
    """(where, args) for every tuneloop command in code blocks and inline code of the docs and the Makefile."""
    found: list[tuple[str, list[str]]] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            first = text.count("\n", 0, block.start(1)) + 1
            for i, line in enumerate(block.group(1).replace("\\\n", " \n").splitlines()):
                found += [(f"{doc.name}:{first + i}", args) for args in _commands(line)]
        for m in INLINE.finditer(FENCE.sub("", text)):
            found += [(f"{doc.name}:`{m.group(1)[:40]}`", args) for args in _commands(m.group(1))]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for n, line in enumerate(makefile.splitlines(), 1):
        if "tuneloop " in line and line.startswith("\t"):
            found += [(f"Makefile:{n}", args) for args in _commands(re.sub(r"\$\(\w+\)", "1", line))]
    return found


COMMANDS = documented()


def test_the_docs_show_the_loop():
    where = {w.split(":")[0] for w, _ in COMMANDS}
    assert {"README.md", "Makefile"} <= where and len(COMMANDS) > 40
    assert any(args[:1] == ["train"] and "--wait" in args for _, args in COMMANDS)


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_line_parses(where, args):
    cmd = typer.main.get_command(app)  # typer's own (vendored) click classes: a group has .commands
    path = ["tuneloop"]
    rest = list(args)
    while hasattr(cmd, "commands") and rest and rest[0] in cmd.commands:
        path.append(rest[0])
        cmd = cmd.commands[rest.pop(0)]
    assert not hasattr(cmd, "commands"), f"{where}: `{' '.join(path + rest)}` names no command"
    if "`" in where:  # inline code in prose names a command and its options (`tuneloop train`)
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        unknown = [t.split("=")[0] for t in rest if t.startswith("-") and t.split("=")[0] not in known]
        assert not unknown, f"{where}: `{' '.join(path)}` has no option {', '.join(unknown)}"
        return
    try:
        ctx = cmd.make_context(" ".join(path), rest)
    except TyperException as exc:  # click's usage errors (no such option, bad value, missing argument)
        pytest.fail(f"{where}: `{' '.join(path + rest)}`: {exc.format_message()}")
    # `key=value` overrides swallow any stray word; each must at least look like one.
    bad = [v for v in ctx.params.get("overrides") or [] if "=" not in v]
    assert not bad, f"{where}: `{' '.join(path + rest)}`: {bad} are not key=value overrides (an unknown option?)"
