"""Leak-free splits: no document and no duplicate cluster ever straddles train and eval; the
cross-split report finds planted leaks in a frozen slice."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis import splits
from analysis.curate import DedupeConfig, dedupe, leak_free_slice, splits_check
from store import curation as cur
from store import pairs as pairs_store
from store import slices as slices_store
from store.records import NewPair, PairContent, Provenance, SliceFilter, Status


def test_units_join_documents_and_clusters():
    pairs = pl.DataFrame({"pair_id": ["p_a", "p_b", "p_c", "p_d", "p_e"],
                          "document_unit": ["d_1", "d_1", "d_2", "d_3", "p_e"]})
    members = pl.DataFrame({"cluster_id": ["c1", "c1"], "pair_id": ["p_b", "p_c"]})  # links d_1 and d_2
    u = dict(splits.leak_free_units(pairs, members).iter_rows())
    assert u["p_a"] == u["p_b"] == u["p_c"] == "p_a"
    assert u["p_d"] == "p_d" and u["p_e"] == "p_e"


@pytest.mark.parametrize("seed", range(8))
def test_assignment_never_splits_a_document_or_cluster(seed):
    rng = np.random.default_rng(seed)
    n = 400
    docs = [f"d_{x}" for x in rng.integers(0, 60, n)]
    pairs = pl.DataFrame({"pair_id": [f"p_{i:04d}" for i in range(n)], "document_unit": docs})
    a, b = rng.integers(0, n, 40), rng.integers(0, n, 40)
    members = pl.DataFrame({"cluster_id": [f"c{i}" for i in range(40)] * 2,
                            "pair_id": [f"p_{i:04d}" for i in np.concatenate([a, b])]})
    out = splits.assign(splits.leak_free_units(pairs, members), 0.2, seed).join(pairs, on="pair_id")
    assert out.group_by("document_unit").agg(pl.col("split").n_unique())["split"].max() == 1
    clustered = members.join(out.select("pair_id", "split"), on="pair_id")
    assert clustered.group_by("cluster_id").agg(pl.col("split").n_unique())["split"].max() == 1
    n_eval = (out["split"] == "eval").sum()
    assert 0 < n_eval < n
    # deterministic for the same seed
    again = splits.assign(splits.leak_free_units(pairs, members), 0.2, seed).join(pairs, on="pair_id")
    assert again["split"].to_list() == out["split"].to_list()


def test_eval_fraction_is_close_with_many_small_units():
    pairs = pl.DataFrame({"pair_id": [f"p_{i:04d}" for i in range(1000)], "document_unit": [f"p_{i:04d}" for i in range(1000)]})
    out = splits.assign(splits.leak_free_units(pairs), 0.1, 0)
    assert (out["split"] == "eval").sum() == 100


def test_cross_split_report_finds_planted_leaks():
    items = pl.DataFrame({
        "pair_id": ["p_1", "p_2", "p_3", "p_4", "p_5", "p_6"],
        "split": ["train", "eval", "train", "eval", "train", "eval"],
        "document_unit": ["d_1", "d_1", "d_2", "d_3", "p_5", "p_6"],
        "instruction": ["a", "b", "Reset my password!", "reset my  password", "x", "y"],
        "input": [""] * 6, "response": ["1", "2", "ok", "OK", "z", "w"],
    })
    members = pl.DataFrame({"cluster_id": ["c1", "c1", "c2", "c2"], "kind": ["near_lexical"] * 2 + ["exact_full"] * 2,
                            "pair_id": ["p_5", "p_6", "p_1", "p_3"]})
    rep = splits.cross_split_report(items, members)
    assert rep["documents"]["document_unit"].to_list() == ["d_1"]
    assert rep["clusters"]["cluster_id"].to_list() == ["c1"]
    assert rep["exact_prompt"]["train_pairs"].to_list() == [["p_3"]]
    assert rep["exact_full"]["eval_pairs"].to_list() == [["p_4"]]


def _add(con, text, doc, response="r"):
    return pairs_store.add_pairs(con, [NewPair(content=PairContent(instruction=text, response=response),
                                               provenance=Provenance(document_id=doc), status=Status.accepted)])[0]


TOPIC = ["weather", "budget", "history"]
SHELF = ["amber", "birch", "cedar", "dune", "ember", "fjord", "grove", "heath", "inlet", "jetty", "knoll", "lagoon"]


def test_leak_free_slice_and_check_end_to_end(project):
    with project.connect() as con:
        # rows differ in at least two words: a one-word change of a short prompt is a near duplicate
        for d in range(12):
            for j in range(3):
                _add(con, f"question {j} {TOPIC[j]} about the contents of document number {d} {SHELF[d]} in the "
                     "archive", f"d_{d:02d}")
        # a near duplicate in another document ties d_00 and d_01 together
        _add(con, f"question 0 {TOPIC[0]} about the contents of document number 0 {SHELF[0]} in the archives", "d_01")
    dedupe(project, DedupeConfig(near=True, near_threshold=0.7), author="t")
    with project.connect() as con:
        near = cur.duplicate_members(con, ["near_lexical"])
    assert near.height == 2  # the planted cross-document near duplicate
    s = leak_free_slice(project, "lf", SliceFilter(status=[Status.accepted]), eval_fraction=0.3, seed=3)
    assert s.split_by == "document+cluster" and s.n_eval > 0 and s.n_train > 0
    rep = splits_check(project, "lf")
    assert all(df.height == 0 for df in rep.values()), {k: v.height for k, v in rep.items()}
    # a slice split by pair leaks documents, and the report says so
    with project.connect() as con:
        slices_store.create(con, "leaky", SliceFilter(status=[Status.accepted]), eval_fraction=0.3, seed=1, split_by="pair")
    rep = splits_check(project, "leaky")
    assert rep["documents"].height > 0
