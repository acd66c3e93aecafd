"""The ANN index of semantic search (analysis/ann.py) against exact search (analysis/search.top_k).

One real project is seeded once per module through the store's own functions (bulk pair insert,
``save_embeddings``): 60,000 pairs x 384-d vectors, above ``ann.MIN_ROWS`` so that ``search``
goes through the index, 55,000 accepted and 5,000 pending. The vectors are seeded clusters of
unit vectors (like sentence embeddings, unlike i.i.d. noise, whose neighbours are all equally far
in 384-d and make any nearest-neighbour list arbitrary); the pending pairs form clusters of their
own, so a filter on ``accepted`` can leave too few index candidates and must fall back to exact.
Tests that change the project work on a copy.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import ann
from analysis import curate as curate_jobs
from analysis.search import top_k
from models.embeddings import model_id
from store import curation as cur
from store import pairs as pairs_store
from store.db import Project, atomic
from store.ids import pair_content
from store.records import SliceFilter, Status

N, PENDING, DIM, FIELD = 60_000, 5_000, 384, "prompt"
ACCEPTED = SliceFilter(status=[Status.accepted], exclude_duplicates=False)


def clustered(n: int, seed: int, centres: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, DIM)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def add(project: Project, start: int, vectors: np.ndarray, status: str = "accepted") -> list[str]:
    """Pairs ``start``.. with these vectors, through the store's bulk insert and save_embeddings."""
    rows = [pairs_store.batch_row(pair_content(f"question {i}", response=f"answer {i}"), status=status)
            for i in range(start, start + len(vectors))]
    with project.connect() as con:
        with atomic(con):
            pairs_store.insert_rows(con, pairs_store.rows_to_arrow(rows))
        cur.save_embeddings(con, model_id(), FIELD, [r["revision_id"] for r in rows], vectors)
    return [r["pair_id"] for r in rows]


@pytest.fixture(scope="module")
def big(template_project, tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("ann") / "proj"
    shutil.copytree(template_project, root)
    p = Project(root)
    add(p, 0, clustered(N - PENDING - 1, seed=1, centres=2_000))
    pending = clustered(PENDING + 1, seed=2, centres=20)
    add(p, N - PENDING - 1, pending[:PENDING], status="pending")
    add(p, N - 1, pending[PENDING:])  # the bridge: accepted, inside a pending cluster
    ann.ensure_index(p, model_id(), FIELD)
    return p


@pytest.fixture
def big_copy(big, tmp_path) -> Project:
    root = tmp_path / "copy"
    shutil.copytree(big.root, root)
    return Project(root)


def big_bridge(project: Project) -> str:
    """The head revision of the bridge pair (the last one added)."""
    with project.connect() as con:
        return pairs_store.get(con, pairs_store.batch_row(pair_content(f"question {N - 1}", response=f"answer {N - 1}"))["pair_id"]
                               ).head_revision_id


def exact(project: Project, query: np.ndarray, k: int = 10, flt: SliceFilter | None = None) -> list[str]:
    with project.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), FIELD, flt)
    idx, _ = top_k(mat, query, k)
    return rows["pair_id"][idx.tolist()].to_list()


def queries(project: Project, n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    with project.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), FIELD, ACCEPTED)
    pick = np.random.default_rng(seed).choice(rows.height, n, replace=False)
    return [(rows["pair_id"][int(i)], mat[int(i)]) for i in pick]


def test_index_recall_at_10_against_exact_search(big):
    state = ann.ensure_index(big, model_id(), FIELD)
    assert state.count == N and state.added == 0 and not state.rebuilt
    with big.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), FIELD)
    rid_to_pair = dict(zip(rows["revision_id"], rows["pair_id"], strict=True))
    rng = np.random.default_rng(7)
    hits = 0
    for _, v in queries(big, 50, seed=3):
        q = v + 0.02 * rng.standard_normal(DIM).astype(np.float32)
        got = [rid_to_pair[r] for r in ann.search(state, q, 10)]
        hits += len(set(got) & set(exact(big, q)))
    assert hits / 500 >= 0.95


def test_search_through_the_index_matches_exact_search(big):
    """search(pair_id=...) on 60K vectors goes through the index (the folder exists) and returns
    the exact top 10 (the pair itself excluded) with exact cosines."""
    found = 0
    for pid, v in queries(big, 20, seed=4):
        res = curate_jobs.search(big, pair_id=pid, k=10, embed_missing=False)
        want = [p for p in exact(big, v, 11) if p != pid][:10]
        found += len(set(res["pair_id"]) & set(want))
        sims = res["similarity"].to_numpy()
        assert list(sims) == sorted(sims, reverse=True) and sims[0] <= 1.0 + 1e-6
    assert found / 200 >= 0.95
    assert (ann.index_folder(big, model_id(), FIELD) / "meta.json").exists()


def test_incremental_add_adds_only_the_new_vectors(big_copy):
    before = ann.ensure_index(big_copy, model_id(), FIELD)
    new = clustered(1_000, seed=9, centres=50)
    new_pairs = add(big_copy, N, new)
    after = ann.ensure_index(big_copy, model_id(), FIELD)
    assert (after.count, after.added, after.rebuilt, after.rebuilds) == (N + 1_000, 1_000, False, before.rebuilds)
    assert after.token != before.token
    assert not before.index_path.exists()  # the old generation is gone, the new one is whole
    with big_copy.connect() as con:
        rows, _ = cur.load_embeddings(con, model_id(), FIELD, among=ann.search(after, new[123], 1))
    assert rows["pair_id"].to_list() == [new_pairs[123]]
    again = ann.ensure_index(big_copy, model_id(), FIELD)
    assert (again.token, again.added) == (after.token, 0)


def test_a_new_process_restores_the_index_and_gives_the_same_results(big):
    state = ann.ensure_index(big, model_id(), FIELD)
    q = queries(big, 1, seed=5)[0][1]
    np.save(big.root / "q.npy", q)
    code = (
        "import sys\nfrom pathlib import Path\nimport numpy as np\n"
        "from analysis import ann\nfrom models.embeddings import model_id\nfrom store.db import Project\n"
        "p = Project(Path(sys.argv[1])); s = ann.ensure_index(p, model_id(), 'prompt')\n"
        "print(s.token, s.added, s.rebuilt); print(*ann.search(s, np.load(p.root / 'q.npy'), 10))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(big.root)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.splitlines()
    assert out[0] == f"{state.token} 0 False"
    assert out[1].split() == ann.search(state, q, 10)


def test_a_filter_keeps_only_allowed_rows_and_falls_back_to_exact(big):
    # a common filter: candidates from the index, all accepted, equal to exact search of the set
    pid, v = queries(big, 1, seed=6)[0]
    res = curate_jobs.search(big, pair_id=pid, k=10, flt=ACCEPTED, embed_missing=False)
    assert set(res["status"]) == {"accepted"}
    assert res["pair_id"].to_list() == [p for p in exact(big, v, 11, ACCEPTED) if p != pid][:10]
    # the bridge pair is accepted but sits in a pending cluster: every index candidate but itself
    # is pending, none survives the filter, and search falls back to exact search of the set
    state = ann.ensure_index(big, model_id(), FIELD)
    with big.connect() as con:
        bridge, bmat = cur.load_embeddings(con, model_id(), FIELD, ACCEPTED, among=[big_bridge(big)])
        survivors, _ = cur.load_embeddings(con, model_id(), FIELD, ACCEPTED, among=ann.search(state, bmat[0], 88))
    assert survivors["revision_id"].to_list() == bridge["revision_id"].to_list()
    res = curate_jobs.search(big, pair_id=bridge["pair_id"][0], k=10, flt=ACCEPTED, embed_missing=False)
    assert set(res["status"]) == {"accepted"}
    assert res["pair_id"].to_list() == [p for p in exact(big, bmat[0], 11, ACCEPTED) if p != bridge["pair_id"][0]][:10]


def test_a_small_set_gets_exactly_the_exact_results(project):
    pids = add(project, 0, clustered(300, seed=11, centres=10))
    with project.connect() as con:
        rows, mat = cur.load_embeddings(con, model_id(), FIELD)
    for i in (0, 17, 299):
        res = curate_jobs.search(project, pair_id=pids[i], k=10, embed_missing=False)
        i_row = rows["pair_id"].to_list().index(pids[i])
        idx, sims = top_k(mat, mat[i_row], 10, np.array([i_row]))
        assert res["pair_id"].to_list() == rows["pair_id"][idx.tolist()].to_list()
        assert res["similarity"].to_list() == sims.astype(np.float64).tolist()
        assert res.columns == ["pair_id", "similarity", "status", "instruction", "input", "response"]
    assert not (project.cache_dir / "ann").exists()


def test_a_corrupt_or_missing_index_is_rebuilt_with_a_log_line(big_copy, caplog):
    state = ann.ensure_index(big_copy, model_id(), FIELD)
    state.index_path.write_bytes(b"not an index")
    with caplog.at_level(logging.WARNING, logger="analysis.ann"):
        again = ann.ensure_index(big_copy, model_id(), FIELD)
    assert again.rebuilt and again.count == N and again.token != state.token
    assert "unreadable" in caplog.text and str(state.folder) in caplog.text
    shutil.rmtree(again.folder)
    fresh = ann.ensure_index(big_copy, model_id(), FIELD)
    assert fresh.rebuilt and fresh.count == N
    q = queries(big_copy, 1, seed=8)[0][1]
    assert len(ann.search(fresh, q, 10)) == 10
