"""Review: a queue of pairs with accept / reject / needs-fix / edit / tag, keyboard shortcuts,
the next items prefetched, the source span highlighted beside the pair, and the revision history."""

from __future__ import annotations

import streamlit as st

from app import components as ui
from app import jobs, state
from store import curation, error_pages, pair_pages
from store import documents as docs_store
from store import errors as errors_store
from store import guidelines as guidelines_store
from store import pairs as pairs_store
from store import ratings as ratings_store
from store import runs as runs_store
from store import users as users_store
from store.db import ConflictError
from store.records import Pair, PairRevision, SliceFilter, Status

BUFFER = 20  # items fetched ahead, so the next one shows without a query

st.title("Review")
ordered_ids: list[str] | None = None


# ---------------------------------------------------------------- the guideline (admins edit it here)
def save_guideline(key: str) -> None:
    with state.db() as con:
        g = guidelines_store.save(con, state.get(key) or "", author=state.user())
    state.flash(f"Guideline saved (version {g.version}).")


with state.db() as con:
    guideline = guidelines_store.latest(con)
if guideline is not None and guideline.text.strip():
    # open the first time this session shows this version, collapsed after that
    with st.expander("Guidelines", expanded=state.get("rv_guideline_seen") != guideline.version,
                     icon=":material/menu_book:"):
        st.markdown(state.safe_markdown(guideline.text))
        st.caption(f"Version {guideline.version} by {ui.esc(guideline.author)}"
                   + (f" · {guideline.created_at:%Y-%m-%d %H:%M}" if guideline.created_at else ""))
    state.put("rv_guideline_seen", guideline.version)
if state.can("manage"):
    with st.expander("Edit guideline", icon=":material/edit_note:"):
        gkey = f"rv_guideline_text_{guideline.version if guideline else 0}"  # a new version is a fresh form
        with st.form("rv_guideline_form"):
            st.text_area("Guideline (Markdown)", guideline.text if guideline else "", key=gkey, height=260,
                         help="Headings, emphasis, lists, code and tables show as written; links show as text "
                              "(their address in code), images as their alt text, HTML as text. Every save is "
                              "kept as a version.")
            st.form_submit_button("Save guideline", on_click=save_guideline, args=(gkey,), key="rv_guideline_save")


@st.cache_data(ttl=60, show_spinner="Ranking the run's errors…", max_entries=8)
def weakest_pairs(run_id: str, version: int) -> list[str]:
    """Pairs ordered by where the model is weakest (the error-analysis review priority)."""
    from workflows import errors as workflow

    q = workflow.review_queue(state.project(), run_id, limit=500)
    return list(dict.fromkeys(q["pair_id"].to_list())) if q.height else []

facets = state.facets()
annotator = state.role() == "annotator"

# ---------------------------------------------------------------- the queue
QUEUES = ["Assigned to me"] if annotator else [
    "Pending", "Flagged by a signal", "By cluster", "By model weakness", "Needs fix", "Assigned to me", "All pairs"]
c1, c2, c3 = st.columns([2, 2, 3])
queue = c1.selectbox("Queue", QUEUES, key="rv_queue")
flagged_names = [n for n, k in facets["signals"] if k > 0]
extra: dict = {}
if queue == "Flagged by a signal":
    sig = c2.selectbox("Signal", ["any signal", *flagged_names], key="rv_signal",
                       help="Pairs flagged by a quality signal (`tuneloop signals`).")
    extra["signals_flagged"] = flagged_names if sig == "any signal" else [sig]
    if not flagged_names:
        st.info("No pair is flagged yet: run `tuneloop signals` (or wait for it to finish).")
elif queue == "By cluster":
    clusters = facets["clusters"]
    if clusters:
        cl = c2.selectbox("Cluster", clusters, key="rv_cluster", format_func=lambda c: f"{c[0]} · {c[1]} ({c[2]})")
        extra["cluster_ids"] = [cl[0]]
    else:
        st.info("No topic clusters yet: run `tuneloop embed` and `tuneloop cluster`.")
        extra["cluster_ids"] = [-1]
elif queue == "By model weakness":
    with state.db() as con:
        runs = runs_store.runs_with_predictions(con)
    if not runs:
        st.info("No run has predictions yet: train and predict first (Train page).")
        extra["pair_ids"] = ["-"]
    else:
        run = c2.selectbox("Run", runs, key="rv_run", format_func=lambda r: f"{r[1] or r[0]} · {r[2]}")
        with state.db() as con:
            categorised = run[4] <= jobs.INLINE_MAX_PREDICTIONS or errors_store.labelled_sets(con, run[3]) > 0
        if categorised:
            weak = weakest_pairs(run[0], state.bump_count())
        else:
            st.info("This run's predictions are not categorised yet.")
            ui.job_button("Categorise its errors", "categorise", {"run_ref": run[0]}, key="rv_auto")
            weak = []
        extra["pair_ids"] = weak or ["-"]
        ordered_ids = weak
text = c3.text_input("Search text", key="rv_text", placeholder="words in the instruction, input or response")

status = {"Pending": [Status.pending], "Flagged by a signal": [Status.pending, Status.needs_fix],
          "By cluster": [Status.pending], "Needs fix": [Status.needs_fix]}.get(queue)
if queue == "Assigned to me":
    with state.db() as con:
        extra["pair_ids"] = users_store.assigned_pair_ids(con, state.user(), limit=500) or ["-"]
doc = state.get("rv_document")
if doc:
    extra["document_ids"] = [doc]
    d1, d2 = st.columns([4, 1])
    d1.caption(f"Only pairs of document `{doc}`")
    d2.button("Show all documents", key="rv_doc_clear", on_click=state.pop, args=("rv_document",), type="tertiary")
picked = state.get("rv_selection")
if picked:  # pairs selected on the Explore map
    extra["pair_ids"] = sorted(set(picked) & set(extra["pair_ids"])) or ["-"] if extra.get("pair_ids") else picked
    s1, s2 = st.columns([4, 1])
    s1.caption(f"Only the {len(picked):,} pairs selected on the Explore map")
    s2.button("Show all pairs", key="rv_sel_clear", on_click=state.pop, args=("rv_selection",), type="tertiary")
flt = SliceFilter(status=status, text=text or None, **extra)
# The assigned queue's ids shrink with every decision, but it is still the same queue: its buffer, what was
# seen and "Back" stay (a decided pair leaves it by the refill below, which reads the open ids afresh).
signature = (flt.model_dump_json(exclude={"pair_ids"}) + repr(picked) if queue == "Assigned to me"
             else flt.model_dump_json())

if state.get("rv_sig") != signature:
    state.put("rv_sig", signature)
    state.put("rv_buf", [])
    state.put("rv_seen", [])
    state.put("rv_prev", [])

buf: list[Pair] = state.get("rv_buf")
seen: list[str] = state.get("rv_seen")
with state.db() as con:
    total = pair_pages.count(con, flt)
    if len(buf) < 3:
        have = {p.id for p in buf} | set(seen)
        if ordered_ids is not None:  # the run's priority order, narrowed by the other filters (text, status)
            keep = set(pair_pages.page_ids(con, flt, limit=len(ordered_ids) + 1))
            source = [i for i in ordered_ids if i in keep]
        else:
            source = pair_pages.page_ids(con, flt, limit=BUFFER + len(have))
        ids = [i for i in source if i not in have][:BUFFER]
        buf.extend(pair_pages.pairs_by_ids(con, ids))
    pair = buf[0] if buf else None
    if pair is not None:
        ctx = docs_store.source_context(con, pair)
        also_in = pairs_store.sources(con, pair.id)[1:]  # the first is the pair's own provenance, shown above
        signals = curation.pair_signals(con, pair)
        dups = curation.pair_duplicates(con, pair.id)
        history = pairs_store.history(con, pair.id)
        blind = users_store.is_blind(con, pair.id, state.user())  # others' decisions hidden until theirs
        reviews = users_store.visible_reviews(con, pair.id, state.user())
        open_conflicts = pairs_store.unresolved_conflicts(history)
        suggestion = error_pages.pair_suggestion(con, pair.id)
        rates = ratings_store.current(con, pair.head_revision_id)
        rating = ratings_store.scores(con, [pair.head_revision_id]).rows()  # [(revision, mean, n)] or []
    mine = next(iter(users_store.progress(con, state.user())), None)

# Decisions only (accept, reject, needs fix): an edit, a rating or a skip is no decision. Counted per pair
# for the whole session, whichever queue it was decided in (the store's progress is the lasting count).
decided: list[str] = state.get("rv_decided") or []
st.caption(f"{total:,} pairs in this queue · {len(decided):,} decided this session"
           + (f" · {mine.decisions:,} decided by you in all" if mine else "")
           + (f" ({mine.done_assigned:,} of the {mine.assigned:,} assigned to you)" if mine and mine.assigned else ""))
if pair is None:
    st.success("Nothing left in this queue.", icon=":material/task_alt:")
    st.stop()


# ---------------------------------------------------------------- actions (callbacks run before the rerun)
def _advance() -> None:
    done = buf.pop(0)
    seen.append(done.id)
    state.get("rv_prev").append(done.id)
    state.pop("rv_editing")
    state.bump()


def _reload_head() -> None:
    with state.db() as con:
        buf[0] = pairs_store.get(con, buf[0].id)


def decide(new_status: Status) -> None:
    cur = buf[0]
    try:
        with state.db() as con:
            users_store.decide(con, cur.id, new_status, author=state.user(), expected_version=cur.version,
                               seen_revision_id=cur.head_revision_id, comment=state.get("rv_comment") or "")
        state.flash(f"{new_status.value.replace('_', ' ')}: {ui.esc(ui.short(cur.instruction, 50))}")
        state.put("rv_comment", "")
        done = state.get("rv_decided") or []
        if cur.id not in done:
            state.put("rv_decided", [*done, cur.id])
        _advance()
    except ConflictError as exc:
        state.flash(ui.esc(str(exc)), "warning")
        _reload_head()


def rate(pid: str, rid: str, key: str) -> None:
    """Save the stars picked for revision ``rid`` as this reviewer's rating (none picked: withdrawn)."""
    picked = state.get(key)
    value = None if picked is None else int(picked) + 1
    with state.db() as con:
        ratings_store.rate(con, pid, value, author=state.user(), revision_id=rid)
    state.flash("rating withdrawn" if value is None else f"rated {value} of 5")


def skip() -> None:
    _advance()


def back() -> None:
    prev = state.get("rv_prev")
    if not prev:
        return
    pid = prev.pop()
    with state.db() as con:
        buf.insert(0, pairs_store.get(con, pid))
    if pid in seen:
        seen.remove(pid)


def _revise(done: str, base: str | None = None, **changes) -> None:
    """Save an edit of the shown pair, based on ``base`` (default: the revision shown; a conflict if the
    head moved meanwhile)."""
    cur = buf[0]
    try:
        with state.db() as con:
            pairs_store.revise(con, cur.id, base_revision_id=base or cur.head_revision_id, author=state.user(),
                               **changes)
        state.flash(done)
    except ConflictError as exc:
        state.flash(ui.esc(str(exc)), "warning")
    state.bump()
    _reload_head()


def take_revision(r: PairRevision) -> None:
    """Settle an open conflict with the text of the conflicting revision ``r``."""
    _revise(f"revision {r.revision_no} is now the text", reason=f"took revision {r.revision_no} over a conflict",
            instruction=r.instruction, input=r.input, response=r.response, system=r.system,
            messages=[m.model_dump() for m in r.messages], tags=r.tags)


# The edit form is opened for (pair id, revision id) and its widgets are keyed by both: another pair, or
# the same pair at another revision, is a fresh form with that text, and a save writes the pair it was
# opened for, based on the revision it was opened at.
def save_edit(pid: str, rid: str) -> None:
    ek = f"{pid}_{rid}"
    if buf[0].id != pid:
        state.flash("Not saved: the pair shown is no longer the one this edit was opened for.", "warning")
        return
    state.pop("rv_editing")
    _revise("edit saved as a new revision", base=rid, reason=state.get(f"rv_reason_{ek}") or "edited in review",
            instruction=state.get(f"rv_e_instruction_{ek}"), input=state.get(f"rv_e_input_{ek}"),
            response=state.get(f"rv_e_response_{ek}"), tags=state.get(f"rv_e_tags_{ek}"))


def start_edit() -> None:
    state.put("rv_editing", (buf[0].id, buf[0].head_revision_id))


def use_suggestion(pid: str, rid: str, text: str) -> None:
    """Open the edit of the pair shown with the model's suggestion as its response (saved like any edit)."""
    state.put("rv_editing", (pid, rid))
    state.put(f"rv_e_response_{pid}_{rid}", text)


# ---------------------------------------------------------------- the item
left, right = st.columns([3, 2], gap="large")
with left:
    # blind: neither the status nor the version (each decision moves it) tells what the others decided
    shown = (f"{ui.STATUS_ICON['pending']} **awaiting your decision** · `{pair.id}`" if blind else
             f"{ui.STATUS_ICON.get(pair.status, '')} **{pair.status.replace('_', ' ')}** · `{pair.id}` · "
             f"v{pair.version}")
    st.markdown(f"{shown} · by {ui.esc(pair.author)}"
                + (f" · tags: {', '.join(ui.esc(t) for t in pair.tags)}" if pair.tags else ""))
    if open_conflicts:
        st.warning(f"**Unresolved conflict:** {len(open_conflicts)} edit(s) were saved against an older text and "
                   "kept beside this one. Keep this text, take theirs, or edit and save the text that should "
                   "stand.", icon=":material/call_split:")
        for c in open_conflicts:
            with st.container(border=True):
                st.caption(f"CONFLICT · revision {c.revision_no} by {ui.esc(c.author)}"
                           + (f" · {c.created_at:%Y-%m-%d %H:%M}" if c.created_at else "")
                           + (f" ({ui.esc(c.reason)})" if c.reason else ""))
                if c.instruction != pair.instruction:
                    st.markdown(ui.esc_block(c.instruction))
                st.markdown(ui.esc_block(c.response) or "_(empty)_")
                st.button(f"Take revision {c.revision_no}", key=f"rv_take_{c.revision_no}", on_click=take_revision,
                          args=(c,))
        st.button("Keep this text", key="rv_keep_head", on_click=_revise, args=("kept the current text",),
                  kwargs={"reason": "kept the current text over a conflicting edit"})
    editing = state.get("rv_editing")
    if editing and editing[0] == pair.id:
        ek = f"{editing[0]}_{editing[1]}"
        with st.form(f"rv_edit_{ek}"):
            st.text_area("Instruction", pair.instruction, key=f"rv_e_instruction_{ek}", height=90)
            st.text_area("Input", pair.input, key=f"rv_e_input_{ek}", height=70)
            # a response put there by "Use suggestion" is the value, not the default
            st.text_area("Response", None if state.get(f"rv_e_response_{ek}") is not None else pair.response,
                         key=f"rv_e_response_{ek}", height=200)
            st.multiselect("Tags", sorted(set(facets["tags"]) | set(pair.tags)), default=pair.tags,
                           key=f"rv_e_tags_{ek}", accept_new_options=True)
            st.text_input("Reason", key=f"rv_reason_{ek}", placeholder="why this change (kept in the history)")
            st.form_submit_button("Save revision", type="primary", on_click=save_edit, args=editing, key="rv_save")
        st.button("Cancel edit", on_click=state.pop, args=("rv_editing",))
    else:
        ui.pair_body(pair)
    if suggestion is not None:
        with st.container(border=True):
            st.caption(f"Model suggestion · run {ui.esc(suggestion['run_name'])} · score (token F1 vs the "
                       f"reference) {suggestion['token_f1']:.2f}"
                       + (f" · {ui.esc(', '.join(suggestion['categories']))}" if suggestion["categories"] else "")
                       + ("" if suggestion["revision_id"] == pair.head_revision_id else " · made on an older revision"))
            st.text(suggestion["output"] or "(empty)")
            st.button("Use suggestion", key=f"rv_use_{pair.id}", on_click=use_suggestion, icon=":material/input:",
                      args=(pair.id, pair.head_revision_id, suggestion["output"]),
                      disabled=not suggestion["output"].strip() or suggestion["output"] == pair.response)
    st.text_input("Comment (optional, saved with the decision)", key="rv_comment")
    own = next((r.value for r in rates if r.author == state.user()), None)
    r1, r2 = st.columns([1, 3], vertical_alignment="center")
    with r1:
        rkey = f"rv_rating_{pair.id}_{pair.head_revision_id}"  # a rating belongs to the text shown
        st.feedback("stars", key=rkey, default=None if own is None else own - 1, on_change=rate,
                    args=(pair.id, pair.head_revision_id, rkey))
    r2.caption("Rating of this text, 1-5 (not a decision)"
               + ("" if blind or not rating else  # blind: no one's judgement shows before yours
                  f" · {rating[0][1]:.2f} on average from {rating[0][2]} reviewer{'s' * (rating[0][2] > 1)}"))
    b = st.columns(3)
    b[0].button("Accept", type="primary", shortcut="A", on_click=decide, args=(Status.accepted,), key="rv_accept",
                icon=":material/check:", width="stretch")
    b[1].button("Reject", shortcut="X", on_click=decide, args=(Status.rejected,), key="rv_reject",
                icon=":material/close:", width="stretch")
    b[2].button("Needs fix", shortcut="F", on_click=decide, args=(Status.needs_fix,), key="rv_fix",
                icon=":material/build:", width="stretch")
    n = st.columns(3)
    n[0].button("Edit", shortcut="E", on_click=start_edit, key="rv_edit", icon=":material/edit:", width="stretch")
    n[1].button("Back", shortcut="K", on_click=back, key="rv_back", icon=":material/undo:",
                disabled=not state.get("rv_prev"), width="stretch")
    n[2].button("Skip", shortcut="J", on_click=skip, key="rv_skip", icon=":material/skip_next:", width="stretch")
    st.caption("Keys: **A** accept · **X** reject · **F** needs fix · **E** edit · **J** skip · **K** back. "
               f"{len(buf) - 1} more loaded.")
with right:
    ui.source_panel(ctx, pair)
    if also_in:  # the same pair text came from these sources too (names are data: escaped)
        st.caption("Also in: " + "; ".join(
            ui.esc(s.document_name or s.source_uri or "imported data")
            + (f" (chars {s.char_start}–{s.char_end})" if s.char_start is not None
               else f" (line {s.source_line})" if s.source_line else "")
            for s in also_in))
    if signals:
        st.caption("Quality signals")
        for name, score, flagged, reason in signals:
            if flagged:
                st.markdown(f":red-badge[{ui.esc(name)}] {ui.esc(reason)} (score {score:.2f})")
    for cid, kind, kept, sim in dups:
        st.caption(f"In {ui.esc(kind)} duplicate cluster `{cid}` (similarity {sim:.2f}; kept pair `{kept}`)")
    with st.expander(f"History: {len(history)} revisions, {len(reviews)} decisions"):
        if len(history) > 1:
            ui.history_diffs(history)
        if blind:
            st.caption("Blind overlap: other reviewers are assigned this pair too; their decisions show here "
                       "once you have made yours.")
        for r in reviews:
            st.caption(f"{r.created_at:%Y-%m-%d %H:%M} · {ui.esc(r.author)}: {r.previous_status} → {r.status}"
                       + (f" ({ui.esc(r.comment)})" if r.comment else ""))

# ---------------------------------------------------------------- bulk
if state.can("curate"):
    with st.expander(f"Bulk action on this queue ({total:,} pairs)"):
        ui.bulk_status(flt, total, key="rv_bulk")
