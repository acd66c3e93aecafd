"""Duplicates: clusters side by side with their similarity; keep one, or say "not duplicates"."""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import components as ui
from app import state
from store import curation
from store import pairs as pairs_store
from store.records import Status

PAGE_SIZE = 5
MAX_SIDE_BY_SIDE = 4

st.title("Duplicates")
with state.db() as con:
    kinds = curation.duplicate_kinds(con)
if state.can("curate"):
    ui.job_button("Find duplicates (exact and near)", "dedupe", {"exact": True, "near": True, "author": state.user()}, key="du_run",
                  help="`tuneloop dedupe --exact --near` in the background")
if not kinds:
    st.info("No duplicate clusters yet: find them with the button above (or `tuneloop dedupe`).")
    st.stop()

ui.bar_chart(pl.DataFrame({"kind": [k for k, _ in kinds], "clusters": [n for _, n in kinds]}), category="kind",
             value="clusters", empty="no duplicate clusters.")
c1, c2 = st.columns(2)
kind = c1.selectbox("Kind", [None, *[k for k, _ in kinds]], key="du_kind",
                    format_func=lambda k: "all kinds" if k is None else k)
resolution = c2.segmented_control("Verdict", ["auto", "confirmed", "not_duplicates"], default="auto",
                                  key="du_resolution", help="auto = not reviewed yet")

with state.db() as con:
    total = curation.cluster_count(con, kind, resolution)
    n_pages = max(1, -(-total // PAGE_SIZE))
    page_key, pg = state.pager("du_page", (kind, resolution))
    pg = min(pg, n_pages)
    page = curation.clusters_page(con, kind=kind, resolution=resolution, limit=PAGE_SIZE,
                                         offset=(pg - 1) * PAGE_SIZE)
    members = {cid: curation.cluster_members(con, cid, limit=MAX_SIDE_BY_SIDE * 5) for cid in page["id"]}
st.caption(f"{total:,} clusters")


def keep(cluster_id: str, kept: str) -> None:
    m = members[cluster_id]
    others = m.filter(pl.col("pair_id") != kept)
    with state.db() as con:
        if m.filter(pl.col("pair_id") == kept)["status"][0] == Status.duplicate.value:
            pairs_store.set_status(con, kept, Status.pending, author=state.user(), comment="kept from duplicates")
        curation.mark_duplicates(con, pl.DataFrame({"pair_id": others["pair_id"],
                                                    "duplicate_of": [kept] * others.height}),
                                 author=state.user(), comment=f"duplicate of {kept} (cluster {cluster_id})")
        curation.resolve_cluster(con, cluster_id, "confirmed")
    state.bump()
    state.flash(f"kept 1, marked {others.height} as duplicates")


def not_duplicates(cluster_id: str) -> None:
    m = members[cluster_id]
    marked = m.filter(pl.col("status") == Status.duplicate.value)["pair_id"].to_list()
    with state.db() as con:
        if marked:
            pairs_store.set_status_many(con, marked, Status.pending, author=state.user(),
                                        comment=f"not duplicates (cluster {cluster_id})")
        curation.resolve_cluster(con, cluster_id, "not_duplicates")
    state.bump()
    state.flash("cluster marked as not duplicates")


for row in page.iter_rows(named=True):
    cid = row["id"]
    m = members[cid]
    with st.container(border=True):
        st.markdown(f"**{ui.esc(row['kind'])}** · {row['size']} pairs · verdict: {ui.esc(row['resolution'])} · "
                    f"`{cid}`")
        shown = m.head(MAX_SIDE_BY_SIDE)
        cols = st.columns(max(1, shown.height))
        for col, mem in zip(cols, shown.iter_rows(named=True)):
            with col:
                st.caption(("kept · " if mem["is_kept"] else "") + f"similarity {mem['similarity']:.2f} · "
                           f"{mem['status']} · {ui.esc(ui.short(mem['source'], 40))}")
                st.markdown(f"**{ui.esc(ui.short(mem['instruction'], 200))}**")
                if mem["input"]:
                    st.markdown(ui.esc(ui.short(mem["input"], 200)))
                st.markdown(ui.esc(ui.short(mem["response"], 400)))
                st.button("Keep this one", key=f"du_keep_{cid}_{mem['pair_id']}", on_click=keep,
                          args=(cid, mem["pair_id"]), type="primary" if mem["is_kept"] else "secondary")
        if m.height > MAX_SIDE_BY_SIDE:
            st.caption(f"+ {m.height - MAX_SIDE_BY_SIDE} more members")
        st.button("Not duplicates", key=f"du_not_{cid}", on_click=not_duplicates, args=(cid,),
                  icon=":material/call_split:")
st.pagination(n_pages, key=page_key)
