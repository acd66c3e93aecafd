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


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Point every home/config variable at a tmp dir so tests never touch the user's files."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("TUNELOOP_USER", "tester")
    monkeypatch.delenv("TUNELOOP_PROJECT", raising=False)
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("TUNELOOP_CACHE", str(REPO / ".tuneloop" / "cache"))


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
