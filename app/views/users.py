"""Reviewers: accounts and roles, overlap assignments, per-reviewer progress and agreement."""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import state
from store import pair_pages
from store import users as users_store
from store.records import SliceFilter, Status

st.title("Reviewers")
with state.db() as con:
    people = users_store.list_users(con)
    progress = users_store.progress(con)
    agreement = users_store.agreement(con)

if state.is_local_admin():
    st.info("This project has no accounts yet, so everyone runs as the local admin. Add an admin account "
            "below to require sign-in.", icon=":material/lock_open:")

st.subheader("Progress")
rows = [p for p in progress if p.decisions or p.assigned]
if rows:
    df = pl.DataFrame({"reviewer": [p.user_name for p in rows],
                       "assigned": [p.assigned for p in rows], "done of assigned": [p.done_assigned for p in rows],
                       "decisions": [p.decisions for p in rows], "accepted": [p.accepted for p in rows],
                       "rejected": [p.rejected for p in rows], "needs fix": [p.needs_fix for p in rows],
                       "last decision": [p.last_at for p in rows]})
    st.bar_chart(df.select("reviewer", "accepted", "rejected", "needs fix").unpivot(
        index="reviewer", variable_name="decision", value_name="pairs"), x="reviewer", y="pairs", color="decision",
        horizontal=True, height=60 + 36 * len(rows))
    st.dataframe(df, hide_index=True, width="stretch")
else:
    st.caption("No review decisions yet.")

st.subheader("Agreement (Cohen's kappa on pairs two reviewers both decided)")
if agreement:
    st.dataframe(pl.DataFrame({"reviewer A": [a for a, _, _, _ in agreement], "reviewer B": [b for _, b, _, _ in agreement],
                               "shared pairs": [n for _, _, n, _ in agreement],
                               "kappa": [k for _, _, _, k in agreement]}), hide_index=True, width="stretch",
                 column_config={"kappa": st.column_config.NumberColumn(format="%.2f")})
else:
    st.caption("No pair has been decided by two reviewers yet: assign with an overlap of 2 or more below.")

if not state.can("manage"):
    st.stop()

st.subheader("Accounts")
if people:
    st.dataframe(pl.DataFrame({"name": [u.name for u in people], "role": [u.role for u in people],
                               "password": ["set" if u.has_password else "OIDC" for u in people]}),
                 hide_index=True, width="stretch")
with st.form("us_add", clear_on_submit=True):
    c = st.columns(3)
    name = c[0].text_input("User name", key="us_name")
    role = c[1].selectbox("Role", users_store.ROLES, key="us_role")
    pw = c[2].text_input("Password (8+ characters)", type="password", key="us_pw")
    add = st.form_submit_button("Add account", key="us_add_btn")
if add:
    try:
        with state.db() as con:
            u = users_store.create_user(con, name, role, pw or None)
        st.success(f"Account {u.name} ({u.role}) created.")
    except ValueError as exc:
        st.error(str(exc))

st.subheader("Assign pending pairs")
names = [u.name for u in people]
if not names:
    st.caption("Add accounts first.")
else:
    with st.form("us_assign"):
        who = st.multiselect("Reviewers", names, key="us_who")
        n_col, overlap_col = st.columns(2)
        n = n_col.number_input("Pairs to assign", 1, 100_000, 100, key="us_n")
        overlap = overlap_col.number_input("Reviewers per pair (overlap)", 1, 5, 2, key="us_overlap")
        go = st.form_submit_button("Assign", key="us_assign_btn")
    if go and who:
        with state.db() as con:
            ids = pair_pages.page_ids(con, SliceFilter(status=[Status.pending]), limit=int(n))
            added = users_store.assign(con, ids, who, overlap=int(overlap))
        st.success(f"{added:,} assignments added ({len(ids):,} pairs × up to {int(overlap)} reviewers).")
