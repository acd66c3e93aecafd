"""Duplicates: clusters side by side with their similarity and a word diff of each member against
the kept one; keep one, or say "not duplicates" (``curation.keep_one``/``not_duplicates``: one
transaction per cluster, asking first when an accepted pair or a pair in a frozen slice would change).
The near-duplicate settings (threshold, compared text, keep rule) are the project's saved defaults;
"Suggest a threshold" draws the similarity histogram of candidate pairs. Conflicts (same prompt,
different responses) are listed for review, never marked automatically. Boilerplate that near dedupe
ignored is shown as plain text."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import curate
from analysis import dedupe as dd
from app import components as ui
from app import state
from store import curation

PAGE_SIZE = 5
MAX_SIDE_BY_SIDE = 4
KEEP_LABELS = {"accepted": "accepted first", "first": "first imported", "longest": "longest",
               "quality": "best quality (fewest flags)"}
KIND_HELP = {"conflict": "same prompt, different responses: keep the right answer, or say not duplicates",
             "near_lexical": "similarity = Jaccard of shingles (boilerplate ignored)",
             "near_semantic": "similarity = cosine of embeddings"}

st.title("Duplicates")
with state.db() as con:
    kinds = curation.duplicate_kinds(con)
saved = curate.dedupe_defaults(state.project())
if state.can("curate"):
    with st.expander("Near-duplicate settings (saved for the project)"):
        c1, c2, c3 = st.columns(3)
        threshold = c1.number_input("Jaccard threshold", min_value=0.3, max_value=1.0, step=0.05, key="du_threshold",
                                    value=float(saved.get("near_threshold", 0.8)))
        field = c2.selectbox("Compare", list(dd.FIELDS), index=dd.FIELDS.index(saved.get("field", "full")), key="du_field")
        keep = c3.selectbox("Keep", list(dd.KEEP_RULES), index=dd.KEEP_RULES.index(saved.get("keep", "accepted")),
                            key="du_keep", format_func=lambda k: KEEP_LABELS.get(k, k))
        ui.job_button("Suggest a threshold", "dedupe_suggest", {"field": field, "author": state.user()},
                      key="du_suggest", help="`tuneloop dedupe --suggest`: histogram of candidate-pair similarities")
        sug = curate.saved_suggestion(state.project())
        if sug:
            ui.bar_chart(pl.DataFrame({"similarity": [f"{lo:.2f}-{hi:.2f}" for lo, hi, _ in sug["bins"]],
                                       "pairs": [int(n) for _, _, n in sug["bins"]]}),
                         category="similarity", value="pairs", empty="no candidate pairs.", key="du_hist")
            st.caption(f"Suggested threshold for {ui.esc(str(sug['field']))}: {sug['suggested']} (the emptiest bin "
                       "between 0.5 and 0.95, after the mode of unrelated pairs); saved as the default.")
    ui.job_button("Find duplicates (exact and near)", "dedupe",
                  {"exact": True, "near": True, "author": state.user(), "near_threshold": float(threshold),
                   "field": field, "keep": keep}, key="du_run",
                  help="`tuneloop dedupe --exact --near` in the background (these settings become the defaults)")
near_report = curate.last_near_report(state.project())
if near_report and (near_report["templates"] or near_report.get("warnings")):
    with st.expander(f"Boilerplate ignored by near dedupe ({len(near_report['templates'])})"):
        for w in near_report.get("warnings", []):
            st.warning(ui.esc(str(w)))
        for t in near_report["templates"]:
            st.caption(f"in {float(t['share']):.0%} of rows ({int(t['rows']):,})")
            st.text(str(t["text"]))
if not kinds:
    st.info("No duplicate clusters yet: find them with the button above (or `tuneloop dedupe`).")
    st.stop()

ui.bar_chart(pl.DataFrame({"kind": [k for k, _ in kinds], "clusters": [n for _, n in kinds]}), category="kind",
             value="clusters", empty="no duplicate clusters.", key="du_by_kind",
             on_pick=lambda k: ui.open_filtered("duplicates", du_kind=k))
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


def _verdict(action: str, cluster_id: str, pair_id: str | None, confirm: bool) -> None:
    """Keep one pair, or say "not duplicates" (``curation.keep_one`` / ``not_duplicates``, one
    transaction each); when accepted or sliced pairs would change, ask first (``du_ask``)."""
    with state.db() as con:
        try:
            if action == "keep":
                assert pair_id is not None
                v = curation.keep_one(con, cluster_id, pair_id, state.user(), confirm_in_slices=confirm)
            else:
                v = curation.not_duplicates(con, cluster_id, state.user(), confirm_in_slices=confirm)
        except curation.NeedsConfirmation as exc:
            state.put("du_ask", {"action": action, "cluster": cluster_id, "pair": pair_id,
                                 "in_slices": exc.in_slices, "accepted": exc.accepted})
            return
    state.pop("du_ask")
    state.bump()
    if action == "keep":
        state.flash(f"kept `{pair_id}`, marked {len(v.marked) + len(v.repointed)} as its duplicates"
                    + (f", {len(v.restored)} restored" if v.restored else ""))
    else:
        state.flash(f"cluster marked as not duplicates ({len(v.restored)} pairs restored)")


def confirmation(cluster_id: str) -> None:
    """The question ``_verdict`` left for this cluster: which pairs, which slices, a checkbox."""
    ask = state.get("du_ask")
    if not ask or ask["cluster"] != cluster_id:
        return
    what = f"Keeping `{ask['pair']}`" if ask["action"] == "keep" else "Saying \"not duplicates\""
    lines = [f"{what} changes the status of pairs that need your confirmation:"]
    lines += [f"- `{pid}` is in frozen slice(s) {', '.join(f'**{ui.esc(n)}**' for n in names)}"
              for pid, names in ask["in_slices"].items()]
    if ask["accepted"]:
        lines.append(f"- accepted pair(s) {', '.join(f'`{p}`' for p in ask['accepted'])} would become duplicates")
    lines.append("\nFrozen slices do not change: they point at the revisions they froze and keep training on "
                 "these pairs. Runs on new slices will leave the duplicates out.")
    st.warning("\n".join(lines), icon=":material/warning:")
    ok = st.checkbox("Yes, change these pairs", key=f"du_ok_{cluster_id}_{ask['pair'] or ''}")
    c1, c2 = st.columns(2)
    c1.button("Confirm", key=f"du_confirm_{cluster_id}", disabled=not ok, type="primary", on_click=_verdict,
              args=(ask["action"], cluster_id, ask["pair"], True))
    c2.button("Cancel", key=f"du_cancel_{cluster_id}", on_click=state.pop, args=("du_ask",))


def differences(m: pl.DataFrame, kind: str) -> None:
    """Why each member matched: its similarity to the kept one, the words they share and the words
    only one has, and a word diff field by field (only fields that differ)."""
    kept = m.filter(pl.col("is_kept"))
    if kept.is_empty():
        return
    k = kept.row(0, named=True)
    measure = {"near_semantic": "cosine", "near_lexical": "Jaccard"}.get(kind, "similarity")
    for mem in m.filter(~pl.col("is_kept")).head(MAX_SIDE_BY_SIDE).iter_rows(named=True):
        fields = [f for f in ("instruction", "input", "response") if (mem[f] or "") != (k[f] or "")]
        if not fields:
            continue
        with st.expander(f"Differences: `{mem['pair_id']}` against the kept `{k['pair_id']}`",
                         expanded=m.height <= MAX_SIDE_BY_SIDE):
            words = dd.explain(" ".join(k[f] or "" for f in fields), " ".join(mem[f] or "" for f in fields))
            st.caption(f"{measure} to the kept pair {mem['similarity']:.2f} · {len(words['shared'])} shared words")
            st.text(f"only in the kept pair: {' '.join(words['only_kept'][:30]) or '-'}\n"
                    f"only in this pair: {' '.join(words['only_this'][:30]) or '-'}")
            for f in fields:
                ui.render_word_diff(k[f] or "", mem[f] or "", labels=(f"{f} · kept", f"{f} · this pair"))


for row in page.iter_rows(named=True):
    cid = row["id"]
    m = members[cid]
    with st.container(border=True):
        st.markdown(f"**{ui.esc(row['kind'])}** · {row['size']} pairs · verdict: {ui.esc(row['resolution'])} · "
                    f"`{cid}`")
        if row["kind"] in KIND_HELP:
            st.caption(KIND_HELP[row["kind"]])
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
                st.button("Keep this one", key=f"du_keep_{cid}_{mem['pair_id']}", on_click=_verdict,
                          args=("keep", cid, mem["pair_id"], False), type="primary" if mem["is_kept"] else "secondary")
        if m.height > MAX_SIDE_BY_SIDE:
            st.caption(f"+ {m.height - MAX_SIDE_BY_SIDE} more members")
        differences(m, row["kind"])
        confirmation(cid)
        st.button("Not duplicates", key=f"du_not_{cid}", on_click=_verdict, args=("not", cid, None, False),
                  icon=":material/call_split:")
st.pagination(n_pages, key=page_key)
