"""Shared fixtures: real DuckDB project folders in tmp dirs, no network, no mocks of our code.

A template project is migrated once per session and copied per test (``project`` fixture),
so each test starts from a fresh, fully migrated database in well under a second.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from store.db import Project  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_report_header(config):
    names = ["duckdb", "polars", "torch", "transformers", "peft", "streamlit", "unstructured", "sentence-transformers"]
    out = []
    for n in names:
        try:
            out.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            out.append(f"{n} (missing)")
    return "tuneloop deps: " + ", ".join(out)


@pytest.fixture(scope="session")
def _session_home(tmp_path_factory) -> Path:
    """HOME for the whole session (tools keep their caches there), and the model cache: the
    tiny models are built once per session in pytest's tmp folder."""
    return tmp_path_factory.mktemp("session-home")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch, _session_home):
    """Point every home/config/project variable at a tmp dir so tests never touch the user's
    files nor the repository's own folders (``.tuneloop/``): code that falls back to
    ``TUNELOOP_PROJECT`` lands in a tmp folder that is not a project."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("TUNELOOP_USER", "tester")
    monkeypatch.setenv("TUNELOOP_PROJECT", str(home / "no-project"))
    # AppTest has no server address: run the app as `tuneloop ui` does by default (loopback).
    monkeypatch.setenv("TUNELOOP_BIND_ADDRESS", "127.0.0.1")
    monkeypatch.setenv("HOME", str(_session_home))
    for var, sub in (("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share")):
        monkeypatch.setenv(var, str(_session_home / sub))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("TUNELOOP_CACHE", str(_session_home / "tuneloop-cache"))


@pytest.fixture(scope="session", autouse=True)
def _repository_stays_clean():
    """The suite creates nothing in the repository's ``.tuneloop/`` (where `make run` keeps the
    sample project): a test that does fails the session at teardown, naming what appeared."""
    own = REPO / ".tuneloop"

    def entries() -> set[Path]:
        return {own, *own.iterdir()} if own.is_dir() else set()

    before = entries()
    yield
    new = sorted(str(p) for p in entries() - before)
    assert not new, f"the test suite created {', '.join(new)}; tests must write under tmp_path only"


@pytest.fixture(scope="session")
def template_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template") / "proj"
    Project(root).init()
    return root


@pytest.fixture
def project(template_project, tmp_path) -> Project:
    root = tmp_path / "proj"
    shutil.copytree(template_project, root)
    return Project(root)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not present")
    return SHARED
