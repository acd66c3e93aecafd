"""Reviewers: accounts and roles, overlap assignments, per-reviewer progress and agreement.

Annotators see only their own progress and no agreement; reviewers and admins (``oversee``) see everyone's,
with Cohen's kappa per two reviewers, Fleiss' kappa overall and per decision (store/users.py reads them).
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from app import components as ui
from app import state
from store import pair_pages
from store import users as users_store
from store.records import SliceFilter, Status

st.title("Reviewers")
oversee = state.can("oversee")
with state.db() as con:
    people = users_store.list_users(con) if state.can("manage") else []
    progress = users_store.progress(con, None if oversee else state.user())
    agreement = users_store.agreement(con) if oversee else []
    group, n_raters = users_store.group_agreement(con) if oversee else (None, 0)

if state.is_local_admin():
    st.info("This project has no accounts yet, so this computer runs as the local admin. The first account you "
            "add is an admin; from then on everyone signs in.", icon=":material/lock_open:")

st.subheader("Progress")
rows = [p for p in progress if p.decisions or p.assigned]
if rows:
    df = pl.DataFrame({"reviewer": [p.user_name for p in rows],
                       "assigned": [p.assigned for p in rows], "done of assigned": [p.done_assigned for p in rows],
                       "decisions": [p.decisions for p in rows], "accepted": [p.accepted for p in rows],
                       "rejected": [p.rejected for p in rows], "needs fix": [p.needs_fix for p in rows],
                       "last decision": [p.last_at for p in rows]})
    ui.bar_chart(df.select("reviewer", "accepted", "rejected", "needs fix").unpivot(
        index="reviewer", variable_name="decision", value_name="pairs"), category="reviewer", value="pairs",
        color="decision", empty="no one has accepted, rejected or sent back a pair yet (**Review**).")
    st.dataframe(df, hide_index=True, width="stretch")
else:
    st.caption("No review decisions yet.")

if not oversee:
    st.stop()

st.subheader("Agreement")
if agreement and group is not None:
    st.caption("Kappa is agreement beyond chance on the pairs several reviewers decided (each reviewer's latest "
               "decision): 1 is full agreement, 0 no more than chance, below 0 less. Empty where it is undefined "
               "(everyone gave one and the same label).")
    k1, k2 = st.columns([1, 3])
    k1.metric("Fleiss' kappa", "–" if group.kappa is None else f"{group.kappa:.2f}")
    raters = (f"{group.min_raters}" if group.min_raters == group.max_raters
              else f"{group.min_raters}–{group.max_raters}")
    k2.caption(f"Fleiss' kappa over {group.items:,} pairs decided by {raters} reviewers each "
               f"({n_raters} reviewers in all).")
    st.markdown("**Cohen's kappa per two reviewers**")
    st.dataframe(pl.DataFrame({"reviewer A": [a for a, _, _, _ in agreement], "reviewer B": [b for _, b, _, _ in agreement],
                               "shared pairs": [n for _, _, n, _ in agreement],
                               "Cohen's kappa": [k for _, _, _, k in agreement]}), hide_index=True, width="stretch",
                 column_config={"Cohen's kappa": st.column_config.NumberColumn(format="%.2f")})
    st.markdown("**Per decision** (Fleiss' per-label kappa: agreement on \"this label or not\")")
    defined = {k: v for k, v in group.per_label.items() if v is not None}
    ui.bar_chart(pl.DataFrame({"decision": [k.replace("_", " ") for k in defined], "kappa": list(defined.values())},
                              schema={"decision": pl.String, "kappa": pl.Float64}),
                 category="decision", value="kappa", number_format=".2f",
                 empty="no decision has a defined per-label kappa yet.")
else:
    st.caption("No pair has been decided by two reviewers yet: assign with an overlap below (blind: a reviewer "
               "sees the others' decisions on a shared pair only after making theirs).")

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
if add and not pw and not people:
    st.error("The first account needs a password: without one nobody could sign in to manage accounts.")
elif add:
    try:
        with state.db() as con:
            u = users_store.create_user(con, name, role, pw or None)
        st.success(f"Account {ui.esc(u.name)} ({u.role}) created."
                   + (" The first account is always an admin." if u.role != role else "")
                   + (" Sign in with it now." if state.is_local_admin() else ""))
    except ValueError as exc:
        st.error(ui.esc(str(exc)))

if people:
    with st.form("us_change"):
        left, right = st.columns(2)
        who_acc = left.selectbox("Account", [u.name for u in people], key="us_acc")
        new_role = right.selectbox("New role", users_store.ROLES, key="us_new_role")
        b = st.columns(2)
        change = b[0].form_submit_button("Change role", key="us_role_btn")
        remove = b[1].form_submit_button("Remove account", key="us_remove_btn")
    if change or remove:
        try:
            with state.db() as con:
                if change:
                    users_store.set_role(con, who_acc, new_role)
                else:
                    users_store.remove_user(con, who_acc)
            st.success(f"{ui.esc(who_acc)}: role is now {new_role}." if change else f"Account {ui.esc(who_acc)} removed.")
        except (KeyError, ValueError) as exc:
            st.error(ui.esc(str(exc.args[0]) if exc.args else str(exc)))

st.subheader("Assign pending pairs")
names = [u.name for u in people]
if not names:
    st.caption("Add accounts first.")
else:
    with st.form("us_assign"):
        who = st.multiselect("Reviewers", names, key="us_who")
        n_col, fraction_col, overlap_col, seed_col = st.columns(4)
        n = n_col.number_input("Pairs to assign", 1, 100_000, 100, key="us_n")
        fraction = fraction_col.number_input(
            "Overlap (share of pairs)", 0.0, 1.0, 0.2, 0.05, key="us_fraction",
            help="This share of the pairs goes to several reviewers (blind to each other's decisions until "
                 "they have decided); agreement is measured on them. The rest go to one reviewer each.")
        overlap = overlap_col.number_input("Reviewers per shared pair", 2, 5, 2, key="us_overlap")
        seed = seed_col.number_input("Seed", 0, 2**31 - 1, 0, key="us_seed")
        go = st.form_submit_button("Assign", key="us_assign_btn")
    if go and who:
        with state.db() as con:
            ids = pair_pages.page_ids(con, SliceFilter(status=[Status.pending]), limit=int(n))
            added = users_store.assign(con, ids, who, overlap=int(overlap), fraction=float(fraction), seed=int(seed))
        st.success(f"{added:,} assignments added ({len(ids):,} pairs; {float(fraction):.0%} of them to up to "
                   f"{int(overlap)} reviewers each).")
