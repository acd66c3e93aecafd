"""The `tuneloop` CLI: every command documents an example; the foundation commands work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tuneloop.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def all_commands() -> list[list[str]]:
    root = typer.main.get_command(app)
    out: list[list[str]] = []

    def walk(cmd, path: list[str]) -> None:
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click classes)
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out.append(path)

    walk(root, [])
    assert len(out) > 10
    return out


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p))
def test_every_command_has_help_with_example(path):
    res = runner.invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Example" in res.output, f"`tuneloop {' '.join(path)} --help` shows no example"


def run(*args: str, project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneloop.cli", *args, "--project", str(project)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_foundation_commands_end_to_end(tmp_path):
    proj = tmp_path / "proj"
    assert runner.invoke(app, ["init", str(proj)]).exit_code == 0
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(10)))
    res = runner.invoke(app, ["import", str(data), "--project", str(proj)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["stats", "--json", "--project", str(proj)])
    stats = json.loads(res.output)
    for key in ("documents", "pairs_by_status", "revisions", "slices", "runs", "predictions", "error_labels"):
        assert key in stats
    assert stats["pairs"] == 10 and stats["pairs_by_status"]["pending"] == 10

    res = runner.invoke(app, ["pairs", "list", "--where", "text=q3", "--project", str(proj)])
    assert "q3" in res.output
    from store import pairs as ps
    from store.db import Project

    with Project(proj).connect() as con:
        target = ps.query(con, limit=1)[0].id
    assert runner.invoke(app, ["pairs", "accept", target, "--project", str(proj)]).exit_code == 0
    res = runner.invoke(app, ["pairs", "edit", target, "--response", "fixed", "--reason", "typo", "--project", str(proj)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["pairs", "show", target, "--project", str(proj)])
    assert "r2" in res.output and "typo" in res.output and "pending -> accepted" in res.output

    res = runner.invoke(app, ["slice", "create", "v1", "--where", "status=accepted", "--split", "1.0",
                              "--project", str(proj)])
    assert res.exit_code == 0, res.output
    assert "1 items" in res.output
    res = runner.invoke(app, ["slice", "list", "--project", str(proj)])
    assert "v1" in res.output
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["export", "--slice", "v1", "--format", "alpaca", "--out", str(out), "--project", str(proj)])
    assert res.exit_code == 0 and json.loads(out.read_text())["output"] == "fixed"


def test_import_exit_codes_and_clean_errors(tmp_path):
    proj = tmp_path / "p"
    good = tmp_path / "good.jsonl"
    good.write_text('{"instruction": "a", "output": "b"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a2", "output": "b"}\n{"instruction": 1}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = run("import", str(good), project=proj)
    assert r.returncode == 0, r.stderr
    r = run("import", str(bad), str(empty), project=proj)
    assert r.returncode == 1
    assert "bad.jsonl:2: field 'instruction'" in r.stderr
    assert "empty.jsonl: the file is empty" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    r = run("import", str(good), "--format", "yaml", project=proj)
    assert r.returncode == 2 and "unknown format 'yaml'" in r.stderr
    r = run("slice", "show", "nope", project=proj)
    assert r.returncode == 2 and "no slice named 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "tuneloop.cli", "stats", "--project", str(tmp_path / "missing")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "No tuneloop project" in r.stderr


def test_init_without_a_folder_uses_project_then_tuneloop_project_then_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNELOOP_PROJECT", str(tmp_path / "from-env"))
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert (tmp_path / "from-env" / "tuneloop.duckdb").exists()
    assert runner.invoke(app, ["init", "--project", str(tmp_path / "from-option")]).exit_code == 0
    assert (tmp_path / "from-option" / "tuneloop.duckdb").exists()
    assert runner.invoke(app, ["init", str(tmp_path / "from-argument")]).exit_code == 0
    assert (tmp_path / "from-argument" / "tuneloop.duckdb").exists()
    monkeypatch.delenv("TUNELOOP_PROJECT")
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert (tmp_path / "tuneloop.duckdb").exists()


def test_ui_opens_only_an_existing_project(tmp_path):
    missing = tmp_path / "typo"
    res = runner.invoke(app, ["ui", "--project", str(missing)])
    assert isinstance(res.exception, FileNotFoundError) and "tuneloop init" in str(res.exception)
    assert not missing.exists()


def test_importing_the_cli_module_loads_no_command():
    """multiprocessing imports the main module again in each process it starts (the parser
    workers of ``tuneloop ingest``): the CLI's module must not import the commands and their
    libraries at its top, or every worker pays them (~0.3 s each) before its first file."""
    code = ("import sys, tuneloop.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'duckdb', 'polars', 'torch', 'store')"
            " or m.startswith('tuneloop.commands')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    from tuneloop import cli

    assert cli.app is app and "ingest" in [c.name for c in app.registered_commands]  # built once, on first use
