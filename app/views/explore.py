"""Explore: filter on every signal, tag, status, source and cluster; text and semantic search;
the embedding map; save the current filter as a frozen slice; bulk actions on the filtered set."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from app import components as ui
from app import jobs, state
from store import pair_pages
from store import pairs as pairs_store
from store import slices as slices_store
from store.records import SliceFilter, Status

INLINE_EMBED_LIMIT = 2_000  # pairs embedded inside a rerun (~5 s on 2 CPU cores); more go to a job

PAGE_SIZE = 50



st.title("Explore")
f = state.facets()

# ---------------------------------------------------------------- filters
with st.container(border=True):
    c = st.columns(4)
    status = c[0].multiselect("Status", [s.value for s in Status], key="ex_status")
    tags = c[1].multiselect("Tags (any)", f["tags"], key="ex_tags")
    gens = c[2].multiselect("Source generator", f["generators"], key="ex_gens")
    splits = c[3].multiselect("Split", f["splits"], key="ex_splits")
    c = st.columns(4)
    sig_names = [n for n, _ in f["signals"]]
    flagged = c[0].multiselect("Flagged by", sig_names, key="ex_flagged",
                               format_func=lambda n: f"{n} ({dict(f['signals'])[n]:,})")
    clean = c[1].multiselect("Clean of", sig_names, key="ex_clean")
    clusters = c[2].multiselect("Cluster", f["clusters"], key="ex_clusters",
                                format_func=lambda t: f"{t[0]} · {t[1]} ({t[2]:,})")
    docs = c[3].multiselect("Document", f["documents"], key="ex_docs", format_func=lambda d: d[1])
    text_col, dups_col = st.columns([3, 1])
    text = text_col.text_input("Text search", key="ex_text", placeholder="words in the instruction, input or response")
    include_dups = dups_col.toggle("Include duplicates", key="ex_dups")

flt = SliceFilter(
    status=[Status(s) for s in status] or None, tags_any=tags or None, generators=gens or None, splits=splits or None,
    signals_flagged=flagged or None, signals_clean=clean or None,
    cluster_ids=[t[0] for t in clusters] or None, document_ids=[d[0] for d in docs] or None,
    text=text or None, exclude_duplicates=not include_dups, pair_ids=state.get("ex_map_ids") or None,
)

if text:
    with state.db() as con:
        backlog = pair_pages.search_index_missing(con)
    if backlog > pair_pages.INLINE_INDEX_MAX:
        running = [j for j in jobs.recent(state.project(), kind="search-index", limit=1) if j.running]
        if not running:
            jobs.start(state.project(), "search-index", [], title="build the text-search index",
                       author=state.user(), module="app.search_index_job")
        st.caption(f"Indexing {backlog:,} new revisions for text search in the background; until it is done a "
                   "search scans the text (slower, same results).")
page_key, pg = state.pager("ex_page", flt.model_dump_json())
with state.db() as con:
    summary = pair_pages.explore_summary(con, flt, limit=PAGE_SIZE, offset=(pg - 1) * PAGE_SIZE)
total, by_status, table = summary.total, summary.by_status, summary.table
n_pages = max(1, -(-total // PAGE_SIZE))

m1, m2 = st.columns([1, 3])
m1.metric("Matching pairs", f"{total:,}")
if by_status:
    with m2:
        ui.bar_chart(pl.DataFrame({"status": list(by_status), "pairs": list(by_status.values())}), category="status",
                     value="pairs", empty="no pair matches.", key="ex_by_status",
                     on_pick=lambda s: ui.open_filtered(
                         **{k: state.get(k, v) for k, v in ui.EXPLORE_FILTERS.items()},
                         ex_status=[s], ex_dups=s == "duplicate" or include_dups))

tab_list, tab_map, tab_dyn, tab_semantic, tab_slice, tab_bulk = st.tabs(
    ["Pairs", "Embedding map", "Data map", "Semantic search", "Save as slice", "Bulk action"])
if state.can("curate") and not f["signals"]:
    ui.job_button("Compute quality signals", "signals", key="ex_signals",
                  help="`tuneloop signals`: empty or placeholder responses, PII, truncation, language, …")

with tab_list:
    # keyed by the list it shows: a row picked on one page or filter never selects a row of another
    picked = ui.text_table(table, long=["instruction", "response"], on_select="rerun", selection_mode="single-row",
                           key=ui.key_for("ex_table", flt.model_dump_json(), pg),
                           column_config={"pair_id": st.column_config.TextColumn("pair", width="small")})
    st.pagination(n_pages, key=page_key)
    st.caption(f"Page {pg} of {n_pages:,} · {PAGE_SIZE} per page · filtered and paged in the database · "
               "select a row to read the whole pair")
    rows = [i for i in (picked.selection.rows if picked is not None else []) if 0 <= i < table.height]
    if rows:
        with state.db() as con:
            pair = pairs_store.get(con, table["pair_id"][rows[0]])
        with st.container(border=True):
            ui.pair_body(pair)

with tab_map:
    color = st.segmented_control("Colour by", ["topic", "status", "flagged"], default="topic", key="ex_color")
    with state.db() as con:
        pts = pair_pages.map_points(con, flt, limit=5000)
    if pts.is_empty():
        st.info("No map yet: compute embeddings and topic clusters (Semantic search tab, or `tuneloop cluster`).")
    else:
        brush = alt.selection_interval(name="brush")
        chart = alt.Chart(pts.to_pandas()).mark_circle(size=18, opacity=0.7).encode(
            x=alt.X("x", axis=None), y=alt.Y("y", axis=None), color=alt.Color(f"{color or 'topic'}:N"),
            tooltip=["instruction", "topic", "status", "pair_id"]).add_params(brush)
        event = st.altair_chart(chart, width="stretch", on_select="rerun", selection_mode="brush", key="ex_map")
        st.caption(f"{pts.height:,} points (a fixed sample when more match). Drag a box over points to select them.")
        picked = ui.points_in_box(pts, event)
        if picked:
            a, b, c3 = st.columns([2, 1, 1], vertical_alignment="center")
            a.write(f"{len(picked):,} pairs selected on the map")
            if b.button("Review them", key="ex_map_review", type="primary"):
                state.put("rv_selection", picked)
                st.switch_page("views/review.py")
            if c3.button("Freeze them as a slice", key="ex_map_slice",
                         help="Opens the Save as slice tab's form with the selection as the filter"):
                state.put("ex_map_ids", picked)
                st.rerun()
if state.get("ex_map_ids"):
    st.info(f"The filter is limited to the {len(state.get('ex_map_ids')):,} pairs selected on the map.")
    st.button("Clear the map selection", key="ex_map_clear", on_click=state.pop, args=("ex_map_ids",))

with tab_dyn:
    from store import dynamics as dynamics_store
    from workflows import dynamics as dynamics_flow

    with state.db() as con:
        dyn_runs = dynamics_store.runs_with_dynamics(con)
    if not dyn_runs:
        st.info("No run has training dynamics yet: every training run records each train pair's loss and "
                "confidence per epoch; train one (Train page) and its data map shows here.")
    else:
        dyn_run = st.selectbox("Run", dyn_runs, key="ex_dyn_run",
                               format_func=lambda r: f"{r[1] or r[0]} · {r[2]:,} pairs · {r[3]} epochs")
        dm = dynamics_flow.map_run(state.project(), dyn_run[0], flag=False, text=True)
        pts = dm.pairs.filter(pl.col("region").is_not_null())
        st.caption(" · ".join(f"{k}: {v:,}" for k, v in dm.counts.items()) + " · x: variability (std of confidence "
                   "across epochs), y: mean confidence of the pair's target tokens")
        if pts.is_empty():
            st.info("This run trained fewer than two epochs: a data map needs at least two.")
        else:
            pts = pts.sample(5000, seed=0) if pts.height > 5000 else pts
            chart = alt.Chart(pts.select("pair_id", "instruction", "confidence", "variability", "epochs", "region")
                              .to_pandas()).mark_circle(size=22, opacity=0.7).encode(
                x=alt.X("variability:Q", title="variability"), y=alt.Y("confidence:Q", title="mean confidence"),
                color=alt.Color("region:N", scale=alt.Scale(domain=["easy-to-learn", "ambiguous", "hard-to-learn"])),
                tooltip=["pair_id", "instruction", "region", alt.Tooltip("confidence:Q", format=".3f"),
                         alt.Tooltip("variability:Q", format=".3f"), "epochs"])
            st.altair_chart(chart, width="stretch", key="ex_dyn_chart")
        if state.can("curate") and st.button("Flag hard-to-learn and ambiguous pairs", key="ex_dyn_flag",
                                             help="`tuneloop dynamics RUN`: stores the signals hard_to_learn and "
                                                  "ambiguous (Flagged by filter, review queue)"):
            n_flags = dynamics_flow.map_run(state.project(), dyn_run[0]).flagged
            state.bump()
            st.success(f"{n_flags:,} flags stored.")

with tab_semantic:
    from analysis import curate
    from store import curation

    with state.db() as con:
        n_emb = sum(curation.embedding_counts(con).values())
    st.caption(f"{n_emb:,} embeddings stored. A search first embeds the matching pairs that have none "
               "(incremental); for a large project compute them in the background first.")
    ui.job_button("Compute embeddings and topic clusters", "cluster", key="ex_embed",
                  help="`tuneloop cluster` (embeds what is missing, then clusters and lays out the map)")
    q = st.text_input("Find pairs similar in meaning to", key="ex_sem_q")
    if q and st.button("Search by meaning", key="ex_sem_go"):
        # Embedding is heavy: only a small backlog is embedded inside this rerun; a larger one
        # goes to a background job while the search covers the pairs embedded so far.
        missing = curate.missing_count(state.project(), flt=flt)
        inline = missing <= INLINE_EMBED_LIMIT
        if not inline:
            jobs.start_workflow(state.project(), "embed", title="embed the new pairs", author=state.user())
            st.info(f"{missing:,} matching pairs have no embedding yet; they are being embedded in the "
                    f"background. This search covers the {n_emb:,} pairs embedded so far.")
        with st.spinner("Embedding and searching…" if inline else "Searching…"):
            hits = curate.search(state.project(), text=q, k=25, flt=flt, embed_missing=inline)
        ui.text_table(hits, long=["instruction", "input", "response"],
                      column_config={"similarity": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0,
                                                                                   format="%.2f")})

with tab_slice:
    if not state.can("curate"):
        st.caption("Your role cannot create slices.")
    else:
        with st.form("ex_slice"):
            c = st.columns(4)
            name = c[0].text_input("Slice name", key="ex_slice_name")
            eval_fraction = c[1].number_input("Eval fraction", 0.0, 0.9, 0.1, 0.05, key="ex_slice_eval")
            seed = c[2].number_input("Seed", 0, 2**31 - 1, 0, key="ex_slice_seed")
            split_by = c[3].selectbox("Keep together", ["document", "cluster", "pair", "existing"],
                                      key="ex_slice_split", help="The unit never split across train and eval "
                                      "(leak-free: pairs of one document, or near-duplicates, stay on one side).")
            desc = st.text_input("Description", key="ex_slice_desc")
            save = st.form_submit_button(f"Freeze {total:,} pairs as a slice", type="primary", key="ex_slice_save")
        if save:
            try:
                with state.db() as con:
                    sl = slices_store.create(con, name.strip(), flt, seed=int(seed), eval_fraction=float(eval_fraction),
                                             split_by=split_by, description=desc, author=state.user())
                state.bump()
                st.success(f"Slice **{ui.esc(sl.name)}** v{sl.version}: {sl.n_train:,} train / {sl.n_eval:,} eval "
                           f"(hash `{sl.content_hash[:16]}`)")
            except ValueError as exc:
                st.error(ui.esc(str(exc)))

with tab_bulk:
    if state.can("curate"):
        ui.bulk_status(flt, total, key="ex_bulk")
