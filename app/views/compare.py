"""Compare: two runs on the same eval pairs; per-category deltas with intervals, fixed and broken
examples, a per-example diff, and "retrain on the corrected slice"."""

from __future__ import annotations

import altair as alt
import streamlit as st

from app import components as ui
from app import evaluation, jobs, state
from store import errors as errors_store
from store import runs as runs_store
from store import slices as slices_store
from workflows import errors as workflow

st.title("Compare")

with state.db() as con:
    runs = runs_store.runs_with_predictions(con)
if len(runs) < 2:
    st.info("Comparing needs two runs with predictions (e.g. a run and its retrained successor). A run predicts "
            "its slice's eval split when it finishes training; a finished run without predictions can predict here.")
    if runs:
        st.caption(f"Only {ui.esc(runs[0][1] or runs[0][0])} has predictions so far.")
    with state.db() as con:
        to_predict = runs_store.runs_to_predict(con)
        all_slices = slices_store.list_slices(con)
    if to_predict and state.can("analyse"):
        pick = st.selectbox("Run to predict", to_predict, key="cmp_predict_run", format_func=lambda r: r.name or r.id)
        ui.predict_on(pick.id, pick.name or pick.id, all_slices, own_slice_id=pick.slice_id,
                      key=f"cmp_predict_{pick.id}")
else:
    label = {r[0]: f"{r[1] or r[0]} · {r[2]}" for r in runs}
    ids = [r[0] for r in runs]

    def run_label(run_id: str) -> str:
        return label[run_id]

    c1, c2 = st.columns(2)
    run_a = c1.selectbox("Run A (before)", ids, index=1, key="cmp_a", format_func=run_label)
    run_b = c2.selectbox("Run B (after)", ids, index=0, key="cmp_b", format_func=run_label)

    @st.cache_data(ttl=60, show_spinner="Comparing…", max_entries=8)
    def _compare(root: str, a: str, b: str, version: int):
        cmp = workflow.compare_runs(state.project(), a, b)
        return cmp.table, cmp.fixed, cmp.broken, cmp.n_common, cmp.notes

    psets = {r[0]: (r[3], r[4]) for r in runs}
    with state.db() as con:  # small sets are categorised inline by the comparison; large ones in the background
        uncategorised = [r for r in (run_a, run_b) if r is not None
                         and psets[r][1] > jobs.INLINE_MAX_PREDICTIONS and errors_store.labelled_sets(con, psets[r][0]) == 0]
    if run_a is None or run_b is None:
        st.warning("Pick two runs to compare.")
    elif run_a == run_b:
        st.warning("Pick two different runs.")
    elif uncategorised:
        st.info("Categorise both runs' errors first: " + ", ".join(ui.esc(label[r]) for r in uncategorised))
        for r in uncategorised:
            ui.job_button(f"Categorise {label[r]}", "categorise", {"run_ref": r}, key=f"cmp_auto_{r}")
    else:
        table, fixed, broken, n_common, notes = _compare(str(state.project().root), run_a, run_b, state.bump_count())
        for n in notes:
            st.caption(ui.esc(n))
        c = st.columns(4)
        any_row = table.row(0, named=True) if table.height else None
        c[0].metric("Common eval pairs", f"{n_common:,}")
        if any_row:
            c[1].metric("Error rate A", f"{any_row['rate_a']:.1%}")
            moved = round(any_row["delta"], 3) != 0  # "+0.0 %" is no change: no coloured arrow
            c[2].metric("Error rate B", f"{any_row['rate_b']:.1%}", f"{any_row['delta']:+.1%}",
                        delta_color="inverse" if moved else "off", delta_arrow="auto" if moved else "off")
        c[3].metric("Fixed / broken", f"{fixed.height:,} / {broken.height:,}")
        if table.height:
            st.subheader("Per-category error rate, A → B")
            df = table.select("category", "rate_a", "rate_b", "delta", "delta_lo", "delta_hi").to_pandas()
            base = alt.Chart(df).encode(y=alt.Y("category:N", sort=None, title=None))
            bars = base.mark_bar().encode(
                x=alt.X("delta:Q", title="change in error rate (B − A), 95 % interval", axis=alt.Axis(format="%")),
                color=alt.condition("datum.delta <= 0", alt.value("#16a34a"), alt.value("#dc2626")),
                tooltip=["category", alt.Tooltip("rate_a", format=".1%"), alt.Tooltip("rate_b", format=".1%"),
                         alt.Tooltip("delta", format="+.1%")])
            rules = base.mark_rule().encode(x="delta_lo:Q", x2="delta_hi:Q")
            st.altair_chart(bars + rules, width="stretch")
        tab_fixed, tab_broken, tab_table = st.tabs([f"Fixed ({fixed.height:,})", f"Broken ({broken.height:,})",
                                                    "Table"])
        for tab, frame_, key in ((tab_fixed, fixed, "fixed"), (tab_broken, broken, "broken")):
            with tab:
                if frame_.is_empty():
                    st.caption("None.")
                    continue
                shown = frame_.head(500)
                ev = ui.text_table(shown, long=["output_a", "output_b", "reference"], on_select="rerun",
                                   selection_mode="single-row", key=f"cmp_{key}")
                rows = ev.selection.rows if ev is not None else []
                r = shown.row(rows[0] if rows else 0, named=True)
                st.caption(f"Pair `{r['pair_id']}`: output A → output B")
                ui.render_word_diff(r["output_a"] or "", r["output_b"] or "", labels=("Run A", "Run B"))
                st.caption("Reference")
                st.markdown(ui.esc_block(r["reference"] or ""))
        with tab_table:
            st.dataframe(table, hide_index=True, width="stretch")
        evaluation.beside_errors(run_a, run_b, run_label, {r: psets[r][0] for r in (run_a, run_b)})
        if st.button("Build the report (HTML)", key="cmp_report", icon=":material/description:",
                     help="Accuracy and per-category errors of both runs with intervals, fixed and broken examples, "
                          "and each run's evaluation (benchmarks, judge, blind A/B) in one self-contained file."):
            from analysis.errors import report

            with st.spinner("Building the report…"):
                inp = workflow.report_input(state.project(), run_a, run_b)
                state.put("cmp_report_html", (run_a, run_b, report.html(inp, report.charts(inp))))
        built = state.get("cmp_report_html")
        if built and tuple(built[:2]) == (run_a, run_b):
            st.download_button("Download the report", built[2], file_name="tuneloop-report.html", mime="text/html",
                               key="cmp_report_dl", icon=":material/download:")

st.divider()
st.subheader("Retrain on the corrected slice")
if not runs:
    st.stop()
with state.db() as con:
    cats = [c.name for c in errors_store.categories(con, include_inactive=False)]
r1, r2 = st.columns(2)
src = r1.selectbox("From run", [r[0] for r in runs], key="rt_from",
                   format_func=lambda i: next(f"{r[1] or r[0]} · {r[2]}" for r in runs if r[0] == i))
only = r2.multiselect("Only corrections of these categories (optional)", cats, key="rt_only")
o1, o2 = st.columns(2)
upweight = o1.number_input("Upweight corrected items", 1.0, 10.0, 1.0, 0.5, key="rt_up")
cont = o2.toggle("Continue from the run's adapter", key="rt_cont")
if not state.can("train"):
    st.caption("Only admins start training runs.")
elif st.button("Retrain on corrected slice", type="primary", key="rt_go", icon=":material/replay:"):
    job = jobs.start_workflow(state.project(), "retrain",
                              {"from_run": src, "upweight": float(upweight), "only_categories": list(only) or None,
                               "continue_adapter": bool(cont), "author": state.user()},
                              title=f"retrain from {src}", author=state.user())
    state.put("rt_job", job.id)


def retrain_status(job: jobs.Job) -> None:
    st.caption(f"Job {job.id}: **{job.status}**")
    st.code(job.log(3000) or "(starting…)", language=None)
    if job.status == "succeeded":
        st.success("The corrected slice is frozen and the new run started: follow it on the **Train** page; it "
                   "predicts its eval split when it finishes.")


if job_id := state.get("rt_job"):
    ui.live_job(job_id, key="rt_status", body=retrain_status)
