"""Overview: the project at a glance, as charts."""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import state
from store import curation, error_pages
from store import users as users_store
from store.stats import project_stats

st.title("Overview")
with state.db() as con:
    s = project_stats(con)
    dup_kinds = curation.duplicate_kinds(con)
    funnel = error_pages.error_funnel(con)
    progress = users_store.progress(con)

cols = st.columns(6)
cols[0].metric("Documents", f"{s['documents']:,}")
cols[1].metric("Pairs", f"{s['pairs']:,}")
cols[2].metric("Accepted", f"{s['pairs_by_status'].get('accepted', 0):,}")
cols[3].metric("Slices", s["slices"])
cols[4].metric("Runs", s["runs"])
cols[5].metric("Error labels", f"{s['error_labels']:,}")

left, right = st.columns(2)
with left:
    st.subheader("Pairs by status")
    st.bar_chart(pl.DataFrame({"status": list(s["pairs_by_status"]), "pairs": list(s["pairs_by_status"].values())}),
                 x="status", y="pairs", horizontal=True, height=220)
    st.subheader("Quality signals flagged")
    if s["signals_flagged"]:
        st.bar_chart(pl.DataFrame({"signal": list(s["signals_flagged"]), "pairs": list(s["signals_flagged"].values())}),
                     x="signal", y="pairs", horizontal=True, height=260)
    else:
        st.caption("No signals computed yet (`tuneloop signals`).")
with right:
    st.subheader("Duplicate clusters")
    if dup_kinds:
        st.bar_chart(pl.DataFrame({"kind": [k for k, _ in dup_kinds], "clusters": [n for _, n in dup_kinds]}),
                     x="kind", y="clusters", horizontal=True, height=220)
        st.caption(f"{s['duplicates_marked']:,} pairs marked as duplicates")
    else:
        st.caption("No duplicate detection run yet (`tuneloop dedupe`).")
    st.subheader("Error funnel")
    st.bar_chart(pl.DataFrame({"stage": list(funnel), "count": list(funnel.values())}), x="stage", y="count",
                 horizontal=True, height=220, sort=False)
    if s["runs_by_status"]:
        st.subheader("Runs")
        st.bar_chart(pl.DataFrame({"status": list(s["runs_by_status"]), "runs": list(s["runs_by_status"].values())}),
                     x="status", y="runs", horizontal=True, height=180)

people = [p for p in progress if p.decisions or p.assigned]
if people:
    st.subheader("Review progress")
    st.bar_chart(
        pl.DataFrame({"reviewer": [p.user_name for p in people] * 3,
                      "decision": ["accepted"] * len(people) + ["rejected"] * len(people) + ["needs fix"] * len(people),
                      "pairs": [p.accepted for p in people] + [p.rejected for p in people] + [p.needs_fix for p in people]}),
        x="reviewer", y="pairs", color="decision", horizontal=True, height=60 + 40 * len(people))
st.caption(f"Project: {state.project().root}")
