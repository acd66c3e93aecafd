"""Overview: the project at a glance."""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import state
from store.stats import project_stats

st.title("Overview")
p = state.project()
with p.connect() as con:
    s = project_stats(con)
cols = st.columns(5)
cols[0].metric("Documents", s["documents"])
cols[1].metric("Pairs", s["pairs"])
cols[2].metric("Slices", s["slices"])
cols[3].metric("Runs", s["runs"])
cols[4].metric("Error labels", s["error_labels"])
st.subheader("Pairs by status")
by_status = pl.DataFrame({"status": list(s["pairs_by_status"]), "pairs": list(s["pairs_by_status"].values())})
st.bar_chart(by_status, x="status", y="pairs", horizontal=True)
st.caption(f"Project: {p.root}")
