"""Approximate nearest-neighbour index (usearch HNSW) for semantic search over large projects.

Design note. The ``embeddings`` table is the source of truth; this index is derived data under
``<project>/cache/ann/<model>-<field>/`` and may be deleted at any time (the next search rebuilds
it). One folder holds one *generation*: ``index-<token>.usearch`` (f16 vectors + graph),
``ids-<token>.npy`` (the revision id of key ``i`` at row ``i``: keys are positions, assigned in
the order vectors were added, so a key never changes meaning) and ``meta.json`` naming the
current token. A new generation is written under a fresh token (temp file + rename) and
``meta.json`` is replaced last, so a crash at any point leaves the previous generation whole and
named; two writers never share file names.

``ensure_index`` adds only the head revisions not yet indexed (incremental). Revisions that are no
longer a head (an edited pair) stay in the graph; search results are checked against the current
searched set in the database, and the index is rebuilt once such stale keys exceed
``STALE_REBUILD`` of it. Searching memory-maps the index (``Index.restore(view=True)``) and the id
array (``np.load(mmap_mode="r")``): a query touches the graph pages it walks, never all vectors.
usearch was chosen over faiss-cpu and hnswlib: maintained, a 2 MB wheel, save/load/memory-map
views, incremental ``add`` and f16/i8 storage in one small API (hnswlib is unmaintained;
faiss-cpu is a ~30 MB wheel whose HNSW cannot memory-map).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def _shared_libstdcxx_first() -> None:
    """Load the system's C++ runtime (libstdc++) into the process's global scope before usearch.

    usearch's extension links its own copy of libstdc++ statically and exports that copy's locale
    facet ids. Loaded first, they win over the shared library's, and a library loaded later that
    uses the shared one gets mismatched facets: Ray's ``ray.init`` then aborted the whole process
    ("std::regex_error: Invalid range in brace expression") in a process that had searched first.
    With the shared runtime loaded first, both use its ids. Other systems than glibc's: nothing to do."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)


_shared_libstdcxx_first()

from usearch.index import Index  # noqa: E402 - after the C++ runtime above

from store import curation as cur  # noqa: E402
from store.db import Project  # noqa: E402

log = logging.getLogger(__name__)

MIN_ROWS = 50_000  # searched sets smaller than this use exact search (analysis/search.top_k)
STALE_REBUILD = 0.25  # rebuild once this share of the indexed keys is no longer a head revision
CONNECTIVITY = 16
EXPANSION_ADD = 64
# The search's beam. Measured over 1M clustered vectors (tests/bench/bench_ann.py, 80 candidates
# re-ranked exactly, as semantic search fetches for k=10): 128 gave recall@10 0.84 (p95 3.4 ms),
# 512 0.94 (10 ms), 1024 0.965 (18.6 ms), 2048 0.987 (32 ms); exact search p95 ~90 ms.
EXPANSION_SEARCH = 1024
DTYPE = "f16"  # half the size of f32; results are re-ranked with the exact float32 vectors
CHUNK = 100_000  # vectors read from the database per step while building
FORMAT = 1


@dataclass(frozen=True)
class IndexState:
    """One generation of the index of (model, field) after ``ensure_index``."""

    folder: Path
    token: str
    count: int  # keys in the index (stale ones included)
    added: int  # keys added by this call (0: it was up to date)
    rebuilt: bool  # this call built it from scratch
    rebuilds: int  # full builds over the folder's life
    stale: int  # keys whose revision is no longer a head revision (when last updated)

    @property
    def index_path(self) -> Path:
        return self.folder / f"index-{self.token}.usearch"

    @property
    def ids_path(self) -> Path:
        return self.folder / f"ids-{self.token}.npy"


def index_folder(project: Project, model: str, field: str) -> Path:
    """``<cache>/ann/<readable model>-<field>-<hash>``: one folder per (model, field)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model}-{field}")[-60:]
    digest = hashlib.sha256(f"{model}\x1f{field}".encode()).hexdigest()[:8]
    return project.cache_dir / "ann" / f"{slug}-{digest}"


def _read_meta(folder: Path) -> dict[str, Any] | None:
    """The current generation's metadata, or None when there is none or it is unusable."""
    path = folder / "meta.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        token = str(meta["token"])
        count = int(meta["count"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        for name in (f"index-{token}.usearch", f"ids-{token}.npy"):
            if not (folder / name).exists():
                raise FileNotFoundError(f"{folder / name} is missing")
        ids = np.load(folder / f"ids-{token}.npy", mmap_mode="r")
        if len(ids) != count:
            raise ValueError(f"{len(ids)} ids for {count} keys")
        index = Index.restore(str(folder / f"index-{token}.usearch"), view=True)
        if index is None or len(index) != count:
            raise ValueError(f"index holds {None if index is None else len(index)} keys, meta says {count}")
        return meta  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - any damage means: rebuild from the embeddings table
        log.warning("ANN index in %s is unreadable (%s); rebuilding it from the embeddings table", folder, exc)
        return None


def _atomic(path: Path, write: Any) -> None:
    """Write ``path`` through a temp file in its folder and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_index(ndim: int) -> Index:
    return Index(ndim=ndim, metric="cos", dtype=DTYPE, connectivity=CONNECTIVITY,
                 expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)


def ensure_index(project: Project, model: str, field: str) -> IndexState:
    """Bring the index of (model, field) up to date with the embeddings table and return it.

    Cheap when nothing changed (one count query). Otherwise adds the head revisions not yet in
    it, or rebuilds it when it is missing, unreadable or mostly stale, and saves a new generation.
    """
    folder = index_folder(project, model, field)
    folder.mkdir(parents=True, exist_ok=True)
    meta = _read_meta(folder)
    with project.connect() as con:
        seen = cur.embedding_counts(con).get(f"{model} / {field}", 0)
        if meta is not None and int(meta["seen"]) == seen:
            return IndexState(folder, str(meta["token"]), int(meta["count"]), 0, False,
                              int(meta["rebuilds"]), int(meta["stale"]))
        heads = cur.embedded_heads(con, model, field)
    old_ids: list[str] = []
    if meta is not None:
        old_ids = [b.decode() for b in np.load(folder / f"ids-{meta['token']}.npy", mmap_mode="r")]
    known = set(old_ids)
    head_set = set(heads)
    stale = sum(1 for r in old_ids if r not in head_set)
    rebuild = meta is None or stale > STALE_REBUILD * max(len(old_ids), 1)
    new = heads if rebuild else [r for r in heads if r not in known]
    ids = new if rebuild else old_ids + new
    if rebuild:
        stale = 0
        index = None
    else:
        assert meta is not None
        index = Index.restore(str(folder / f"index-{meta['token']}.usearch"))  # loaded: a view is read-only
    start = 0 if rebuild else len(old_ids)
    for s in range(0, len(new), CHUNK):
        part = new[s:s + CHUNK]
        with project.connect() as con:
            vec = cur.embedding_vectors(con, model, field, part)
        if index is None:
            index = _new_index(vec.shape[1])
        index.add(np.arange(start + s, start + s + len(part), dtype=np.uint64), vec)
    rebuilds = (int(meta["rebuilds"]) if meta else 0) + int(rebuild)
    if index is None:  # nothing embedded yet: no generation to write
        return IndexState(folder, "", 0, 0, rebuild, rebuilds, 0)
    token = uuid.uuid4().hex[:12]
    width = max((len(r) for r in ids), default=1)
    _atomic(folder / f"index-{token}.usearch", lambda tmp: index.save(tmp))

    def write_ids(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a path
            np.save(f, np.array([r.encode() for r in ids], dtype=f"S{width}"))

    _atomic(folder / f"ids-{token}.npy", write_ids)
    new_meta = {"format": FORMAT, "token": token, "model": model, "field": field, "count": len(ids),
                "seen": seen, "stale": stale, "rebuilds": rebuilds, "ndim": int(index.ndim)}
    _atomic(folder / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(new_meta), encoding="utf-8"))
    for old in folder.iterdir():  # earlier generations and leftovers of interrupted writes
        if token not in old.name and old.name != "meta.json":
            old.unlink(missing_ok=True)
    _views.pop(str(folder), None)
    return IndexState(folder, token, len(ids), len(new), rebuild, rebuilds, stale)


_views: dict[str, tuple[str, Index, np.ndarray]] = {}


def search(state: IndexState, query: np.ndarray, count: int) -> list[str]:
    """Revision ids of the ``count`` approximate nearest keys of ``query``, nearest first.

    The index and the id array are memory-mapped once per generation and reused."""
    if state.count == 0 or count <= 0:
        return []
    cached = _views.get(str(state.folder))
    if cached is None or cached[0] != state.token:
        index = Index.restore(str(state.index_path), view=True)
        if index is None:
            raise RuntimeError(f"{state.index_path} is not a usearch index; delete {state.folder} and search again")
        cached = (state.token, index, np.load(state.ids_path, mmap_mode="r"))
        _views[str(state.folder)] = cached
    _, index, ids = cached
    index.expansion_search = max(EXPANSION_SEARCH, count)  # type: ignore[misc]  # has a setter; the stub lacks it
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    keys = np.asarray(index.search(q, min(count, state.count)).keys, dtype=np.int64)
    return [ids[int(k)].decode() for k in keys]
