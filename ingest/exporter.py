"""Export a frozen slice to a training format, with provenance columns and the split.

alpaca / messages / prompt-completion are JSONL (TRL, LLaMA-Factory and axolotl read them);
parquet carries the alpaca columns plus provenance. Every format carries, beside the provenance
columns, the exported revision's rating: ``rating`` (the mean of its reviewers' latest 1-5
ratings, null when nobody rated it) and ``n_ratings`` (how many reviewers rated it). The file is written to a temporary name
and renamed, so a failed export never leaves a half-written file behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from ingest.datasets import export_record, write_jsonl
from store import ratings, slices
from store.db import Project

EXPORT_FORMATS = ("alpaca", "messages", "prompt-completion", "parquet")


def export_slice(project: Project, slice_ref: str, fmt: str, out: str | os.PathLike[str], split: str | None = None) -> int:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    with project.connect() as con:
        s = slices.get(con, slice_ref)
        frame = slices.examples(con, s.id, split)
        scores = ratings.scores(con, frame["revision_id"].to_list())
    frame = frame.join(scores, on="revision_id", how="left", maintain_order="left").with_columns(
        pl.col("n_ratings").fill_null(0))
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    records = (export_record(fmt, row) for row in frame.iter_rows(named=True))
    if fmt == "parquet":
        pl.DataFrame(list(records), infer_schema_length=None).write_parquet(tmp)
        n = frame.height
    else:
        with tmp.open("wb") as f:
            n = write_jsonl(records, f)
    os.replace(tmp, out_path)
    return n
