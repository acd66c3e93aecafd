"""Scratch folders in a project's ``cache/``, each owned by the process that made it.

Import stages a file's rows, and ingest extracts archives, in a folder named
``<prefix><pid>-<random>`` (``import-4242-k3j9x0ab``, ``tuneloop-ingest-4242-...``) holding an
owner marker (``.tuneloop-scratch``: pid and host). A normal exit removes the folder; a killed
run cannot, so making a new scratch folder first removes the stale ones: a folder is removed
only when its name has that shape, its marker names the same pid and this host, and that
process is gone. Nothing else in ``cache/`` is ever touched: a folder without the marker
(a user's), of another host (a shared drive), or of a live process stays. A pid the system
has reused for another process keeps its folder until that process ends too (never the
other way round).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = ".tuneloop-scratch"
_NAME = re.compile(r"^[a-z][a-z-]*-(\d+)-[a-z0-9_]+$")


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as dead.
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _stale(folder: Path) -> bool:
    m = _NAME.match(folder.name)
    if not m or not folder.is_dir() or folder.is_symlink():
        return False
    try:
        owner = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(owner, dict) and owner.get("pid") == int(m.group(1))
            and owner.get("host") == socket.gethostname() and not pid_alive(owner["pid"]))


def sweep(cache: Path) -> list[Path]:
    """Remove the scratch folders of processes that are gone; return what was removed."""
    removed: list[Path] = []
    try:
        entries = list(cache.iterdir())
    except OSError:
        return removed
    for folder in entries:
        if _stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextmanager
def scratch_dir(cache: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder ``cache/<prefix><pid>-<random>`` owned by this process, removed on exit.

    Stale folders of dead processes are swept first (see the module docstring)."""
    if not re.fullmatch(r"[a-z][a-z-]*-", prefix):
        raise ValueError(f"scratch prefix {prefix!r}: expected lowercase words joined by '-', ending in '-'")
    cache.mkdir(parents=True, exist_ok=True)
    sweep(cache)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f"{prefix}{os.getpid()}-", ignore_cleanup_errors=True) as tmp:
        folder = Path(tmp)
        (folder / MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}),
                                     encoding="utf-8")
        yield folder
