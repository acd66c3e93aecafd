"""Curation report on banking77: exact and near duplicates and label-noise flags.

    python -m tests.bench.report_banking77 [--near-threshold 0.8] [--project DIR]

Imports ../shared/data/banking77/train.csv (text -> instruction, category -> response) into
a fresh temporary project (or --project), runs ``dedupe --exact --near`` and label noise
on a slice of every pair, and prints counts and 10 examples of each. Skips cleanly when
the data set is absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import polars as pl

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77" / "train.csv"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--near-threshold", type=float, default=0.8)
    ap.add_argument("--project", type=Path, default=None)
    ap.add_argument("--examples", type=int, default=10)
    a = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} is not present")
        return 0
    from analysis.curate import DedupeConfig, dedupe, label_noise
    from ingest.importer import import_file
    from store import curation as cur
    from store import slices as slices_store
    from store.db import Project
    from store.records import SliceFilter

    root = a.project or Path(tempfile.mkdtemp(prefix="b77-")) / "proj"
    p = Project(root).init()
    import_file(p, DATA, "csv", mapping={"instruction": "text", "response": "category"}, author="report")
    rep = dedupe(p, DedupeConfig(exact=True, prompt=True, near=True, near_threshold=a.near_threshold), author="report")
    with p.connect() as con:
        n = rep["pairs"]
        members = cur.duplicate_members(con)
        text = cur.curation_frame(con).select("pair_id", "instruction", "response", "status")
    print(f"# banking77 curation report ({n} pairs, project {root})\n")
    for kind in ("exact_full", "conflict", "near_lexical"):
        r = rep[kind]
        print(f"- {kind}: {r['clusters']} clusters, {r['members']} pairs"
              + (f", {r['duplicates']} marked duplicate" if kind == "exact_full" else "")
              + (", same text with different labels" if kind == "conflict" else "")
              + (f", min Jaccard {r['min_similarity']}" if kind == "near_lexical" else ""))
    print(f"- pairs marked duplicate by this run: {rep['marked_now']}\n")
    for kind in ("conflict", "near_lexical"):
        m = members.filter(pl.col("kind") == kind).join(text, on="pair_id")
        if kind == "conflict":  # the interesting exact ones: same text, different label
            labels = m.group_by("cluster_id").agg(pl.col("response").n_unique().alias("k"))
            m = m.join(labels, on="cluster_id").sort("k", "cluster_id", "is_kept", descending=[True, False, True])
        print(f"## {kind}: first {a.examples} clusters\n")
        for cid in m["cluster_id"].unique(maintain_order=True).head(a.examples):
            g = m.filter(pl.col("cluster_id") == cid)
            print("- " + "  |  ".join(f"{r['instruction']!r} -> {r['response']} ({r['similarity']:.2f})"
                                      for r in g.iter_rows(named=True)))
        print()
    with p.connect() as con:
        s = slices_store.create(con, "banking77-all", SliceFilter(), eval_fraction=0.0, split_by="pair", author="report")
    flagged = label_noise(p, s.id)
    print(f"## label noise: {flagged.height} of {s.n_items} pairs flagged "
          f"({100 * flagged.height / s.n_items:.1f}%), top {a.examples}\n")
    print("| text | given | suggested | p(given) | p(suggested) |\n|---|---|---|---|---|")
    for r in flagged.head(a.examples).iter_rows(named=True):
        print(f"| {r['instruction']} | {r['given']} | {r['suggested']} | {r['p_given']:.3f} | {r['p_suggested']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
