"""Slices: the frozen, seeded datasets; their split, lineage, items, runs and export."""

from __future__ import annotations

import json

import polars as pl
import streamlit as st

from app import components as ui
from app import jobs, state
from ingest.exporter import EXPORT_FORMATS, export_slice
from store import runs as runs_store
from store import slices as slices_store

PAGE_SIZE = 50

st.title("Slices")
with state.db() as con:
    all_slices = slices_store.list_slices(con)
if not all_slices:
    st.info("No slice yet. Filter pairs on the **Explore** page and save the filter as a slice, or run "
            "`tuneloop slice create NAME --where status=accepted`.")
    st.stop()

newest_first = sorted(all_slices, key=lambda s: s.created_at or 0, reverse=True)
_top = newest_first[:20]
ui.bar_chart(pl.DataFrame({"slice": [f"{s.name}@{s.version}" for s in _top] * 2,
                           "split": ["train"] * len(_top) + ["eval"] * len(_top),
                           "pairs": [s.n_train for s in _top] + [s.n_eval for s in _top]}),
             category="slice", value="pairs", color="split", empty="every slice is empty.")

sel = st.selectbox("Slice", newest_first, key="sl_pick", format_func=lambda s: f"{s.name}@{s.version} · {s.n_items:,} pairs")
with state.db() as con:
    lineage = slices_store.lineage(con, sel.id)
    breakdown = slices_store.breakdown(con, sel.id)
    runs = runs_store.runs_of_slice(con, sel.id)

c = st.columns(4)
c[0].metric("Pairs", f"{sel.n_items:,}")
c[1].metric("Train", f"{sel.n_train:,}")
c[2].metric("Eval", f"{sel.n_eval:,}")
c[3].metric("Kept together", ui.esc(sel.split_by))
st.caption(f"Seed {sel.seed} · eval fraction {sel.eval_fraction} · hash `{sel.content_hash[:16]}` · "
           f"by {ui.esc(sel.author or '?')}" + (f" · {ui.esc(sel.description)}" if sel.description else ""))
if len(lineage) > 1:
    st.caption("Lineage: " + " ← ".join(f"{ui.esc(s.name)}@{s.version}" for s in lineage))
if runs:
    st.caption("Runs trained on it: " + ", ".join(f"{ui.esc(n or rid)} ({status})" for rid, n, status in runs))

left, right = st.columns([1, 2])
with left:
    st.caption("Pairs by split and source")
    ui.bar_chart(breakdown, category="split", value="pairs", color="source", empty="this slice holds no pairs.")
    with st.expander("Filter that chose it"):
        st.code(json.dumps(sel.filter, indent=2), language="json")
    st.caption("Export")
    fmt = st.selectbox("Format", list(EXPORT_FORMATS), key="sl_fmt")
    if st.button("Export to the project's exports folder", key="sl_export"):
        # the slice name is free text: the file name is made safe so it stays in exports/
        out = state.project().exports_dir / jobs.safe_name(
            f"{sel.name}-v{sel.version}.{'parquet' if fmt == 'parquet' else 'jsonl'}")
        n = export_slice(state.project(), sel.id, fmt, out)
        st.success(f"{n:,} examples written to {ui.esc(str(out))}")
        st.download_button("Download", out.read_bytes(), file_name=out.name, key="sl_download")
with right:
    split = st.segmented_control("Split", ["all", "train", "eval"], default="all", key="sl_split")
    n = {"all": sel.n_items, "train": sel.n_train, "eval": sel.n_eval}[split or "all"]
    n_pages = max(1, -(-n // PAGE_SIZE))
    page_key, pg = state.pager("sl_page", (sel.id, split))
    pg = min(pg, n_pages)
    with state.db() as con:
        items = slices_store.items_page(con, sel.id, split=None if split in (None, "all") else split,
                                       limit=PAGE_SIZE, offset=(pg - 1) * PAGE_SIZE)
    ui.text_table(items, long=["instruction"])
    st.pagination(n_pages, key=page_key)
