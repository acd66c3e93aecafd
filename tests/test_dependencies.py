"""`pip install .` brings everything the shipped packages import.

Every third-party top-level import in the packages pyproject.toml ships (an ``ast`` walk, so
imports inside functions count too: they are the lazy heavy ones) is mapped to the distribution
that provides it (``importlib.metadata.packages_distributions``) and must be in the requirement
closure of ``[project].dependencies``: declared, or required by something declared (with its
extras and markers). A module imported but missing from the metadata fails `tuneloop predict`
(rouge-score, sacrebleu) or `tuneloop sample` (reportlab) on a fresh install, not here. A
module of an optional extra (``[project.optional-dependencies]``, e.g. liger-kernel in ``gpu``)
that is not installed is allowed: the code imports it only after checking that it is there.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = [p.rstrip("*").rstrip(".") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files importing it, over every shipped package."""
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def requirement_closure(requirements: list[str]) -> set[str]:
    """Canonical names of the declared distributions and everything they require, recursively."""
    extras_of: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in extras_of and set(req.extras) <= extras_of[name]:
            continue
        extras = extras_of.setdefault(name, set())
        extras.update(req.extras)
        try:
            needs = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue  # declared but not installed here: nothing to expand
        for spec in needs:
            sub = Requirement(spec)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append(sub)
    return set(extras_of)


def test_the_scan_sees_the_packages_and_their_imports():
    imports = third_party_imports()
    assert {"store", "training", "tuneloop", "app"} <= set(PACKAGES)
    assert {"duckdb", "torch", "streamlit", "typer"} <= set(imports)


def test_every_third_party_import_is_a_declared_dependency():
    closure = requirement_closure(PYPROJECT["project"]["dependencies"])
    # optional extras (`pip install 'tuneloop[gpu]'`): imported only where installed, behind a check
    extras = {canonicalize_name(Requirement(r).name)
              for reqs in PYPROJECT["project"].get("optional-dependencies", {}).values() for r in reqs}
    providers = md.packages_distributions()
    unprovided, undeclared = [], []
    for module, files in sorted(third_party_imports().items()):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        where = ", ".join(sorted(files)[:3])
        if not dists and canonicalize_name(module) in extras:
            continue  # an optional extra that is not installed here
        if not dists:
            unprovided.append(f"{module} ({where})")
        elif not dists & closure:
            undeclared.append(f"{module} from {'/'.join(sorted(dists))} ({where})")
    assert not unprovided, f"imported, but no installed distribution provides: {unprovided}"
    assert not undeclared, f"imported, but not in [project].dependencies nor required by them: {undeclared}"
