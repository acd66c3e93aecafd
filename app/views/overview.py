"""Overview: the project at a glance, as charts."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import signals as sig
from analysis.pair_kinds import ALL_KINDS
from app import components as ui
from app import state
from store import curation, error_pages
from store import settings as settings_store
from store import users as users_store
from store.stats import loop_facts, project_stats
from workflows.next_steps import next_steps

st.title("Overview")
with state.db() as con:
    s = project_stats(con)
    dup_kinds = curation.duplicate_kinds(con)
    funnel = error_pages.error_funnel(con)
    progress = users_store.progress(con, None if state.can("oversee") else state.user())  # annotators: their own
    # only steps on pages this role has (the router shows ingest/curate/model pages by right)
    rights = {"ingest": "ingest", "review": "review", "duplicates": "curate", "explore": "curate", "slices": "curate",
              "train": "analyse", "errors": "analyse", "compare": "analyse"}
    steps = [x for x in next_steps(loop_facts(con), limit=10) if state.can(rights.get(x.page, "manage"))][:3]

cols = st.columns(6)
cols[0].metric("Documents", f"{s['documents']:,}")
cols[1].metric("Pairs", f"{s['pairs']:,}")
cols[2].metric("Accepted", f"{s['pairs_by_status'].get('accepted', 0):,}")
cols[3].metric("Slices", s["slices"])
cols[4].metric("Runs", s["runs"])
cols[5].metric("Error labels", f"{s['error_labels']:,}")

if steps:
    st.subheader("Next steps")
    for step in steps:
        link, why = st.columns([2, 3], vertical_alignment="center")
        link.page_link(f"views/{step.page}.py", label=ui.esc(step.title), icon=":material/arrow_forward:")
        why.caption(ui.esc(step.why))
        why.code(step.command, language="bash", wrap_lines=True)  # copied as typed: no Markdown escapes in it



def _open_status(status: str) -> None:
    ui.open_filtered(ex_status=[status], ex_dups=status == "duplicate")


def _signal_switches() -> None:
    """The project's switched-off quality signals: the setting ``signals`` that
    `tuneloop signals --disable/--enable` writes, through the same ``signals.toggled``."""
    with st.expander("Signals in use"):
        with state.db() as con:
            off = set(sig.disabled(settings_store.get(con, "signals", {})))
        with st.form("ov_signals_form", border=False):
            on: dict[str, bool] = {}
            for d in sig.DETECTORS.values():
                on[d.name] = st.toggle(ui.esc(d.name), value=d.name not in off, key=f"ov_sig_{d.name}")
                kinds = "every pair kind" if d.kinds >= ALL_KINDS else ", ".join(sorted(d.kinds))
                st.caption(f"{ui.esc(d.description)} · applies to: {ui.esc(kinds)}")
            save = st.form_submit_button("Save", key="ov_sig_save", icon=":material/save:")
        st.caption("A switched-off signal is skipped, and its flags cleared, the next time the signals run.")
        ui.job_button("Run the signals now", "signals", key="ov_sig_run",
                      help="`tuneloop signals` in the background")
    if save:
        with state.db() as con:
            value = sig.toggled(settings_store.get(con, "signals", {}),
                                disable=[n for n, v in on.items() if not v], enable=[n for n, v in on.items() if v])
            changed = settings_store.put(con, "signals", value, author=state.user())
        state.bump()
        state.flash(f"Signals switched off: {ui.esc(', '.join(value['disabled']) or 'none')}. "
                    "Run the signals to clear their flags." if changed else "No change to the signals in use.")
        st.rerun()


if state.can("curate"):
    st.caption("Click a bar to open the pairs it counts.")
left, right = st.columns(2)
with left:
    st.subheader("Pairs by status")
    ui.bar_chart(pl.DataFrame({"status": list(s["pairs_by_status"]), "pairs": list(s["pairs_by_status"].values())},
                              schema={"status": pl.String, "pairs": pl.Int64}),
                 category="status", value="pairs", empty="import or ingest pairs (**Ingest**, `tuneloop import`).",
                 key="ov_status", on_pick=_open_status)
    st.subheader("Quality signals flagged")
    ui.bar_chart(pl.DataFrame({"signal": list(s["signals_flagged"]), "pairs": list(s["signals_flagged"].values())},
                              schema={"signal": pl.String, "pairs": pl.Int64}),
                 category="signal", value="pairs", empty="compute quality signals (`tuneloop signals`).",
                 key="ov_signals", on_pick=lambda name: ui.open_filtered(ex_flagged=[name]))
    if state.can("curate"):
        _signal_switches()
with right:
    st.subheader("Duplicate clusters")
    ui.bar_chart(pl.DataFrame({"kind": [k for k, _ in dup_kinds], "clusters": [n for _, n in dup_kinds]},
                              schema={"kind": pl.String, "clusters": pl.Int64}),
                 category="kind", value="clusters", empty="find duplicates (**Duplicates**, `tuneloop dedupe`).",
                 key="ov_dups", on_pick=lambda kind: ui.open_filtered("duplicates", du_kind=kind))
    if dup_kinds:
        st.caption(f"{s['duplicates_marked']:,} pairs marked as duplicates")
    st.subheader("Error funnel")
    ui.bar_chart(pl.DataFrame({"stage": list(funnel), "count": list(funnel.values())}), category="stage",
                 value="count", empty="train a run and predict on its eval split (**Train**), then categorise its "
                                      "errors (**Errors**).",
                 key="ov_funnel", on_pick=lambda _stage: ui.open_filtered("errors"))
    if s["runs_by_status"]:
        st.subheader("Runs")
        ui.bar_chart(pl.DataFrame({"status": list(s["runs_by_status"]), "runs": list(s["runs_by_status"].values())}),
                     category="status", value="runs", empty="start a run on the **Train** page.")

people = [p for p in progress if p.decisions or p.assigned]
if people:
    st.subheader("Review progress")
    ui.bar_chart(
        pl.DataFrame({"reviewer": [p.user_name for p in people] * 3,
                      "decision": ["accepted"] * len(people) + ["rejected"] * len(people) + ["needs fix"] * len(people),
                      "pairs": [p.accepted for p in people] + [p.rejected for p in people] + [p.needs_fix for p in people]}),
        category="reviewer", value="pairs", color="decision",
        empty="no one has accepted, rejected or sent back a pair yet (**Review**).")
st.caption(f"Project: {ui.esc(str(state.project().root))}")
