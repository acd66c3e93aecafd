"""Blind A/B: people compare two runs' answers to the same prompt without knowing which run wrote
which: run names hidden while voting, the two answers in a seeded random order per item, a choice
(1 better / 2 better / tie / both bad) and a reason. Results: win rate with a 95 % interval, overall
and per error category; a vote with a winner is also a preference pair (DPO trains on them).

All logic is in ``workflows.ab``; texts from data are shown as plain text (``st.code``) or escaped.
"""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from app import components as ui
from app import state
from store import runs as runs_store
from workflows import ab as workflow

st.title("Blind A/B")
if not state.can("analyse"):
    st.info("Blind A/B votes are for reviewers and admins.")
    st.stop()

with state.db() as con:
    runs = runs_store.runs_with_predictions(con)
if len(runs) < 2:
    st.info("A blind A/B comparison needs two runs with predictions on the same eval pairs. A run predicts its "
            "slice's eval split when it finishes training; the Errors page predicts with a finished run.")
    st.stop()

name = {r[0]: r[1] or r[0] for r in runs}
ids = [r[0] for r in runs]


def run_name(run_id: str) -> str:
    return name.get(run_id, run_id)


def cast_vote(item: workflow.AbItem, screen: str, reason_key: str) -> None:
    """The buttons' callback: record the choice on the item the buttons were drawn for."""
    try:
        workflow.vote(state.project(), item, screen, author=state.user(), reason=str(state.get(reason_key) or ""))
    except (ValueError, KeyError) as exc:
        state.flash(f"The vote was not saved: {exc}", "error")
        return
    state.bump()
    state.flash("Vote saved.")


def results(run_x: str, run_y: str) -> None:
    table = workflow.win_rates(state.project(), run_x, run_y)
    overall = table.row(0, named=True)
    if overall["n"] + overall["both_bad"] == 0:
        st.caption("No votes on these two runs yet.")
        return
    st.subheader(f"Win rate of {ui.esc(run_name(run_x))} over {ui.esc(run_name(run_y))}")
    c = st.columns(4)
    c[0].metric("Win rate (ties count half)", "—" if overall["win_rate"] is None else f"{overall['win_rate']:.0%}",
                help="(wins + ties / 2) / (wins + losses + ties); 'both bad' votes are left out of the rate.")
    c[1].metric("95 % interval", f"{overall['lo']:.0%} – {overall['hi']:.0%}", help="Wilson score interval")
    c[2].metric("Wins / losses / ties", f"{overall['a']} / {overall['b']} / {overall['tie']}")
    c[3].metric("Both bad", f"{overall['both_bad']}")
    shown = table.filter(pl.col("win_rate").is_not_null())
    if shown.height:
        df = shown.to_pandas()
        base = alt.Chart(df).encode(y=alt.Y("category:N", sort=None, title=None))
        bars = base.mark_bar().encode(
            x=alt.X("win_rate:Q", title=f"win rate of {run_name(run_x)} (95 % interval)",
                    scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.condition("datum.win_rate >= 0.5", alt.value("#16a34a"), alt.value("#dc2626")),
            tooltip=["category", alt.Tooltip("win_rate", format=".0%"), alt.Tooltip("lo", format=".0%"),
                     alt.Tooltip("hi", format=".0%"), "a", "b", "tie", "both_bad", "n"])
        rules = base.mark_rule().encode(x="lo:Q", x2="hi:Q")
        even = alt.Chart(pl.DataFrame({"x": [0.5]}).to_pandas()).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
        st.altair_chart((bars + rules + even).properties(height=ui.BAR_PX * shown.height), width="stretch")
    st.caption("Per error category: an item counts under every category either answer has ('no error' when "
               "neither has one), so categories overlap.")
    st.dataframe(table.rename({"a": f"wins of {run_name(run_x)}", "b": f"wins of {run_name(run_y)}"}),
                 hide_index=True, width="stretch",
                 column_config={"win_rate": st.column_config.NumberColumn(format="percent"),
                                "lo": st.column_config.NumberColumn(format="percent"),
                                "hi": st.column_config.NumberColumn(format="percent")})


pair = state.get("ab_pair")
if pair is None or any(r not in name for r in pair):
    c1, c2 = st.columns(2)
    run_x = c1.selectbox("Run A", ids, index=1, key="ab_run_a", format_func=run_name)
    run_y = c2.selectbox("Run B", ids, index=0, key="ab_run_b", format_func=run_name)
    if run_x is None or run_y is None or run_x == run_y:
        st.warning("Pick two different runs.")
        st.stop()
    st.caption("While you vote the run names are hidden, and each prompt's two answers appear in a random order "
               "(the same for you on every visit). A vote for one answer is also a preference pair for DPO.")
    if st.button("Start blind voting", key="ab_start", type="primary", icon=":material/visibility_off:"):
        state.put("ab_pair", (run_x, run_y))
        st.rerun()
    results(run_x, run_y)
    st.stop()

run_x, run_y = pair
if st.button("Stop and choose other runs", key="ab_stop", type="tertiary"):
    state.pop("ab_pair")
    st.rerun()
try:
    item = workflow.next_item(state.project(), run_x, run_y, state.user())
except ValueError as exc:
    st.error(ui.esc(str(exc)))
    st.stop()

if item is None:
    voted, total = workflow.progress(state.project(), run_x, run_y, state.user())
    st.progress(1.0, text=f"{voted:,} voted of {total:,}")
    st.success("You have voted on every prompt both runs answered.")
else:
    st.progress(item.n_voted / max(item.n_items, 1), text=f"{item.n_voted:,} voted of {item.n_items:,}")
    st.caption("Prompt")
    st.code(item.prompt, language=None, wrap_lines=True)
    left, right = st.columns(2)
    with left:
        st.markdown("**Answer 1**")
        st.code(item.answer_1, language=None, wrap_lines=True)
    with right:
        st.markdown("**Answer 2**")
        st.code(item.answer_2, language=None, wrap_lines=True)
    if item.reference:
        with st.expander("Reference answer"):
            st.code(item.reference, language=None, wrap_lines=True)
    reason_key = ui.key_for("ab_reason", item.key)
    st.text_input("Reason", key=reason_key, placeholder="why (optional): e.g. 2 invents a date")
    b = st.columns(4)
    for col, (screen, label) in zip(b, (("1", "1 is better"), ("2", "2 is better"), ("tie", "Tie"),
                                        ("both_bad", "Both bad")), strict=True):
        col.button(label, key=f"ab_{screen}", width="stretch", on_click=cast_vote, args=(item, screen, reason_key),
                   type="primary" if screen in ("1", "2") else "secondary")

st.divider()
if st.toggle("Show the results so far (shows the run names)", key="ab_show_results"):
    results(run_x, run_y)
