"""Errors: a run's errors by category, drill into a category, prediction vs reference vs source,
confirm / change categories, correct the answer (a new revision and a preference pair)."""

from __future__ import annotations

import streamlit as st

from app import components as ui
from app import jobs, state
from store import documents as docs_store
from store import error_pages
from store import errors as errors_store
from store import pairs as pairs_store
from store import runs as runs_store
from store import slices as slices_store
from store.db import ConflictError
from store.records import Status

PAGE_SIZE = 25
# The judge filter's choices: (criterion, highest score shown), from the judge's rubric (analysis/judge.py).
JUDGE_FILTERS = [(c, 2) for c in ("faithful", "correct", "complete", "concise")]

st.title("Errors")
with state.db() as con:
    runs = runs_store.runs_with_predictions(con)
    if not runs:
        to_predict = runs_store.runs_to_predict(con)
        all_slices = slices_store.list_slices(con)
if not runs:
    st.info("No run has predictions yet. A run predicts its slice's eval split when it finishes training "
            "(**Train** page); a finished run without predictions can predict here.")
    if to_predict and state.can("analyse"):
        pick = st.selectbox("Run", to_predict, key="er_predict_run", format_func=lambda r: r.name or r.id)
        ui.predict_on(pick.id, pick.name or pick.id, all_slices, own_slice_id=pick.slice_id,
                      key=f"er_predict_{pick.id}")
    st.stop()

run = st.selectbox("Run", runs, key="er_run", format_func=lambda r: f"{r[1] or r[0]} · {r[2]} · {r[4]:,} predictions")
run_id, psid = run[0], run[3]

with state.db() as con:
    counts, n_preds, n_err = state.error_overview(con, psid)
    cats = errors_store.categories(con, include_inactive=False)
    accuracy = runs_store.overall_metric(con, psid, "accuracy")

if counts.is_empty():
    st.info("The predictions of this run have not been categorised yet.")
    if state.can("analyse"):  # the page redraws with the categories when the job ends
        ui.job_button("Categorise errors now (tuneloop errors auto)", "categorise", {"run_ref": run_id},
                      key=ui.key_for("er_auto", run_id))
    st.stop()

c = st.columns(4)
c[0].metric("Predictions", f"{n_preds:,}")
c[1].metric("Accuracy", "—" if accuracy is None else f"{accuracy:.1%}",
            help="Share of correct predictions (scoring: the label matches, or free text matches the reference); "
                 "the same number as `tuneloop metrics`, `compare` and the report.")
c[2].metric("With an error", f"{n_err:,}", f"{n_err / max(n_preds, 1):.0%}", delta_color="off")
c[3].metric("Confirmed by reviewers", f"{int(counts['confirmed'].sum()):,}")

chart = counts.select("category", "confirmed", "proposed").unpivot(
    index="category", variable_name="label", value_name="predictions")
_cat_ids = dict(zip(counts["category"], counts["category_id"]))
ui.bar_chart(chart, category="category", value="predictions", color="label",
             empty="every error label of this run was rejected (Label state **rejected** lists them).",
             key="er_by_cat", on_pick=lambda name: ui.open_filtered("errors", er_cat=_cat_ids.get(name)))

names = dict(zip(counts["category_id"], counts["category"]))
n_errors = dict(zip(counts["category_id"], counts["errors"]))  # a category no longer in the counts has none
left, mid, right = st.columns([2, 1, 1])
cat = left.selectbox("Category", [None, *counts["category_id"].to_list()], key="er_cat",
                     format_func=lambda c: "all errors" if c is None else f"{names.get(c, c)} ({n_errors.get(c, 0):,})")
label_state = right.segmented_control("Label state", ["open", "proposed", "confirmed", "rejected"], default="open",
                                      key="er_state")
st_filter = None if label_state in (None, "open") else label_state
judge_pick = mid.selectbox("LLM judge", [None, *JUDGE_FILTERS], key="er_judge",
                           format_func=lambda j: "any score" if j is None else f"{j[0]} at most {j[1]} of 5",
                           help="Only predictions an LLM judge (`tuneloop judge --run RUN`) scored this low.")

with state.db() as con:
    if st_filter is None and judge_pick is None:  # the open errors of a category (or all): already counted above
        total = n_err if cat is None else int(n_errors.get(cat, 0))
    else:
        total = error_pages.error_example_count(con, psid, category_id=cat, state=st_filter, judge_low=judge_pick)
    n_pages = max(1, -(-total // PAGE_SIZE))
    page_key, pg = state.pager("er_page", (psid, cat, st_filter, judge_pick))
    pg = min(pg, n_pages)
    examples = state.error_examples(con, psid, category_id=cat, state=st_filter, limit=PAGE_SIZE,
                                    offset=(pg - 1) * PAGE_SIZE, judge_low=judge_pick)

# The table is keyed by the list it shows: another run, category, state or page is a fresh table, so a
# row ticked in one list never selects the row at that position in another.
sel = ui.text_table(examples.drop("pair_id"), long=["instruction", "output", "reference"], on_select="rerun",
                    selection_mode="single-row", key=ui.key_for("er_table", psid, cat, st_filter, judge_pick, pg),
                    column_config={"prediction_id": None, "confidence": st.column_config.ProgressColumn(
                        min_value=0.0, max_value=1.0, format="%.2f")})
st.pagination(n_pages, key=page_key)
st.caption(f"{total:,} predictions · page {pg} of {n_pages:,}")

listed = examples["prediction_id"].to_list()
rows = [i for i in (sel.selection.rows if sel is not None else []) if 0 <= i < len(listed)]  # of this list only
chosen = listed[rows[0]] if rows else state.get("er_pred")
if chosen not in listed:
    chosen = listed[0] if listed else None
state.put("er_pred", chosen)
if chosen is None:
    st.info("Nothing here: no prediction of this run is in this category and label state.")
    st.stop()

if cat is not None:
    with st.expander(f"Accept the model's answers in {ui.esc(names.get(cat, cat))}"):
        st.caption("Where the model was right and the reference wrong: each prediction's output becomes its pair's "
                   "response (a new revision based on the revision it predicted on, and a preference pair), for "
                   "the predictions of this list whose output is not the response yet. Score: token F1 of the "
                   "output against the reference.")
        min_f1 = st.slider("Score at least", 0.0, 1.0, 0.0, 0.05, key=ui.key_for("er_accept_f1", psid, cat, st_filter))
        with state.db() as con:
            todo = error_pages.outputs_to_accept(con, psid, category_id=cat, state=st_filter, min_f1=min_f1)
        to_accept = todo["prediction_id"].to_list()
        if to_accept:
            ui.text_table(todo.select("output", "reference", "token_f1", "confidence"), long=["output", "reference"],
                          rows=3)
        # The tick confirms exactly these predictions: another score, list or label state is an unticked box.
        looked = st.checkbox(f"I have looked at these {len(to_accept):,} predictions",
                             key=ui.key_for("er_accept_ok", to_accept))
        go = st.button(f"Accept the model's answer for the {len(to_accept):,} predictions in "
                       f"{ui.esc(names.get(cat, cat))} (score ≥ {min_f1:.2f})", key="er_accept", type="primary",
                       disabled=not looked or not to_accept)
        if go and looked and to_accept:
            with state.db() as con:
                res = errors_store.accept_outputs(con, to_accept, author=state.user(),
                                                  reason=f"accepted the model's answer ({names.get(cat, cat)}, "
                                                         f"token F1 ≥ {min_f1:.2f})")
            state.bump()
            state.flash(f"{len(res.corrections):,} model answers accepted as new revisions"
                        + (f"; {len(res.conflicts):,} pairs changed since the prediction keep their text, the "
                           "answer is kept beside it as a conflict (Review shows it)" if res.conflicts else ""),
                        "warning" if res.conflicts else "success")
            st.rerun()

with state.db() as con:
    pred = error_pages.prediction_detail(con, chosen)
    if pred is None:  # removed since the table was read (e.g. by another session)
        st.warning(f"Prediction {ui.esc(chosen)} is no longer in the project; pick another one.")
        st.stop()
    labels = error_pages.prediction_labels(con, chosen)
    pair = pairs_store.get(con, pred["pair_id"])
    ctx = docs_store.source_context(con, pair)

st.divider()
st.subheader(ui.esc(ui.short(pair.instruction, 120)))
a, b, s = st.columns(3)
with a:
    st.caption(f"Prediction ({ui.esc(pred['finish_reason'] or '')}, {pred['n_output_tokens']} tokens)")
    with st.container(border=True):
        st.markdown(ui.esc_block(pred["output"]) or "_(empty)_")
with b:
    st.caption("Reference")
    with st.container(border=True):
        st.markdown(ui.esc_block(pred["reference"]) or "_(empty)_")
with s:
    if ctx is not None:
        ui.source_panel(ctx, pair)
    else:
        st.caption("Input / source")
        with st.container(border=True):
            st.markdown(ui.esc_block(pair.input) or "_(no source span)_")


# Every action below is a callback bound to the prediction (and revision) it was drawn for, and every
# widget that holds a value is keyed by them: another row, or the same pair saved meanwhile, is a fresh
# widget with that record's text, and a click acts on the record the user saw, never on a later selection.
def label(prediction_id: str, category_id: str, decision: str) -> None:
    with state.db() as con:
        errors_store.review(con, prediction_id, category_id, decision, author=state.user())
    state.flash(f"{ui.esc(names.get(category_id, category_id))}: {decision}")
    state.bump()


def change(prediction_id: str, old: str) -> None:
    new = state.get(f"er_change_{prediction_id}_{old}")
    if new and new != old:
        with state.db() as con:
            errors_store.change_category(con, prediction_id, old, new, author=state.user())
        state.flash(f"changed {ui.esc(names.get(old, old))} → {ui.esc(new)}")
        state.bump()


def save_correction(prediction_id: str, revision_id: str) -> None:
    """Save the correction form opened for ``prediction_id`` at its pair's revision ``revision_id``: that
    pair only, based on that revision (kept beside the head as a conflict when the head moved since)."""
    fk = f"{prediction_id}_{revision_id}"
    if state.get("er_pred") != prediction_id:
        state.put("er_fix_done", ("error", f"Not saved: this form was opened for prediction `{prediction_id}`, "
                                           "which is no longer the selected row. Check the answer and save again."))
        return
    try:
        with state.db() as con:
            res = errors_store.correct(con, prediction_id, state.get(f"er_fix_text_{fk}") or "", author=state.user(),
                                       category_id=state.get(f"er_fix_cat_{fk}"),
                                       reason=state.get(f"er_fix_reason_{fk}") or "", base_revision_id=revision_id)
        done = ("success", f"Saved: revision `{res.revision_id}` of pair `{res.pair_id}` and preference pair "
                           f"`{res.preference_id}`.")
    except ConflictError as exc:
        done = ("warning", ui.esc(str(exc)))
    except ValueError as exc:
        done = ("error", ui.esc(str(exc)))
    state.put("er_fix_done", done)
    state.bump()


def mark_bad(prediction_id: str, status: Status, category_id: str | None, done: str) -> None:
    with state.db() as con:
        errors_store.mark_bad(con, prediction_id, status, author=state.user(), category_id=category_id)
    state.flash(done)
    state.bump()


st.caption("Categories")
cat_ids = [c.id for c in cats]
for r in labels.iter_rows(named=True):
    cols = st.columns([3, 1, 1, 2])
    badge = {"confirmed": ":green-badge", "rejected": ":gray-badge", "proposed": ":orange-badge"}[r["state"]]
    cols[0].markdown(f"{badge}[{ui.esc(r['category'])}] {r['state']}"
                     + (f" · {r['confidence']:.2f}" if r["confidence"] is not None else "")
                     + (f" · {ui.esc(ui.short(r['evidence'] or '', 80))}" if r["evidence"] else ""))
    cols[1].button("Confirm", key=f"er_ok_{r['category_id']}", on_click=label,
                   args=(chosen, r["category_id"], "confirmed"), disabled=r["state"] == "confirmed")
    cols[2].button("Reject", key=f"er_no_{r['category_id']}", on_click=label,
                   args=(chosen, r["category_id"], "rejected"), disabled=r["state"] == "rejected")
    cols[3].selectbox("Change to", cat_ids, index=None, key=f"er_change_{chosen}_{r['category_id']}",
                      label_visibility="collapsed", placeholder="change to…", on_change=change,
                      args=(chosen, r["category_id"]))
with st.popover("Add a category"):
    new_cat = st.selectbox("Category", cat_ids, key="er_add_cat")
    st.button("Add as confirmed", key="er_add", on_click=label, args=(chosen, new_cat, "confirmed"))

st.caption("Correct the data")
fk = f"{chosen}_{pair.head_revision_id}"  # the prediction and the revision of its pair this form edits
with st.form(f"er_correct_{fk}"):
    st.text_area("The right answer (becomes a new revision of the pair and a preference pair)",
                 value=pair.response, key=f"er_fix_text_{fk}", height=120)
    fc = st.columns(2)
    fc[0].selectbox("Error category", [None, *cat_ids], key=f"er_fix_cat_{fk}",
                    format_func=lambda c: "(none)" if c is None else c)
    fc[1].text_input("Reason", key=f"er_fix_reason_{fk}")
    st.form_submit_button("Save correction", type="primary", key=f"er_fix_save_{fk}", on_click=save_correction,
                          args=(chosen, pair.head_revision_id))
if done := state.pop("er_fix_done"):
    {"success": st.success, "warning": st.warning, "error": st.error}[done[0]](done[1])
bad = st.columns(2)
bad[0].button("Bad data: needs fix", key="er_bad_fix", on_click=mark_bad,
              args=(chosen, Status.needs_fix, cat, "The pair is now in the needs-fix queue of the Review page."))
bad[1].button("Bad data: reject the pair", key="er_bad_reject", on_click=mark_bad,
              args=(chosen, Status.rejected, cat, "The pair is rejected; retraining leaves it out."))

with st.expander("Error clusters: find categories the taxonomy lacks"):
    ui.job_button("Cluster the failing predictions", "discover", {"run_ref": run_id}, key="er_discover")
    job_id = state.get("er_discover_job")
    done = jobs.get(state.project(), job_id) if job_id else None
    clusters = done.result() if done is not None and done.status == "succeeded" else None
    if isinstance(clusters, list):
        if not clusters:
            st.info("No failing predictions to cluster.")
        else:
            for r in clusters[:12]:
                st.markdown(f"**{r['size']}** · {ui.esc(', '.join(r['keywords']))} · categories: "
                            f"{ui.esc(r['categories'] or '(none)')} · {r['uncategorised']} uncategorised")
                for ex in r["examples"][:2]:
                    st.caption(ui.esc(ui.short(ex, 160)))
