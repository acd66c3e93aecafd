"""Ingest: upload files or a zip, choose the generator, live progress per file, per-file errors
with their reasons, and the pairs made, each linked to its source span."""

from __future__ import annotations

import os

import polars as pl
import streamlit as st

from app import components as ui
from app import jobs, state
from ingest.filetypes import SUPPORTED
from ingest.generators import available as generators_available
from store import documents as docs_store

MAX_UPLOAD_MB = int(os.environ.get("TUNELOOP_MAX_UPLOAD_MB", "200"))

st.title("Ingest")

with st.form("ing_form", clear_on_submit=True):
    files = st.file_uploader(
        f"Documents, or a .zip of them (at most {MAX_UPLOAD_MB} MB each)", accept_multiple_files=True,
        type=[*SUPPORTED, "zip"], key="ing_files")
    c1, c2 = st.columns(2)
    gens = generators_available()
    generator = c1.selectbox("Pair generator", gens, index=gens.index("sections") if "sections" in gens else 0,
                             key="ing_gen", help="sections: heading → instruction, section text → response; "
                             "qa: explicit questions and answers; model: a chat model writes instructions")
    chunk_max = c2.number_input("Max characters per chunk", 300, 20000, 1500, 100, key="ing_chunk")
    go = st.form_submit_button("Ingest", type="primary", key="ing_go", icon=":material/upload:")

if go and files:
    saved, refused = [], []
    for f in files:
        try:
            saved.append(str(jobs.save_upload(state.project(), f.name, f.getvalue(),
                                               max_bytes=MAX_UPLOAD_MB * 1024 * 1024)))
        except ValueError as exc:
            refused.append(str(exc))
    for msg in refused:
        st.error(ui.esc(msg))
    if saved:
        job = jobs.start(state.project(), "ingest", [generator, str(int(chunk_max)), *saved],
                         title=f"ingest {len(saved)} file(s) with {generator}", author=state.user(),
                         module="app.ingest_job")
        state.put("ing_job", job.id)
elif go:
    st.warning("Choose at least one file first.")

recent = jobs.recent(state.project(), kind="ingest", limit=10)
job_id = state.get("ing_job") or (recent[0].id if recent else None)


@st.fragment(run_every=1.5)
def progress_panel(jid: str) -> None:
    job = jobs.get(state.project(), jid)
    if job is None:
        return
    ev = job.events()
    start = next((e for e in ev if e.get("event") == "start"), None)
    end = next((e for e in ev if e.get("event") == "end"), None)
    done = [e for e in ev if e.get("event") == "file"]
    n = start["files"] if start else 0
    st.subheader(ui.esc(job.title))
    if job.status == "running" and not end:
        st.progress(len(done) / n if n else 0.0,
                    text=f"{len(done)} of {n or '?'} files · {sum(e['pairs_new'] for e in done)} new pairs")
    elif end:
        (st.success if not end["failed"] else st.warning)(
            f"Done in {end['seconds']:.1f} s: {end['pairs_new']} new pairs, {end['failed']} file(s) failed.")
    elif job.status != "running":
        st.error(f"The ingest job ended ({job.status}) before finishing; its log:")
        st.code(job.log(3000) or "(empty)", language=None)
    if done:
        df = pl.DataFrame([{"file": e["uri"], "status": e["status"], "pages": e["n_pages"], "chunks": e["n_chunks"],
                            "new pairs": e["pairs_new"], "error": e["error_kind"] or "", "reason": e["error"] or "",
                            "seconds": round(e["seconds"], 2)} for e in done])
        st.dataframe(df, hide_index=True, width="stretch",
                     column_config={"reason": st.column_config.TextColumn(width="large")})
    if job.status != "running" and state.get("ing_seen_end") != jid:
        state.put("ing_seen_end", jid)
        state.bump()
        st.rerun()  # the whole page: the document list below now has the new pairs


if job_id:
    progress_panel(job_id)

st.divider()
st.subheader("Documents and the pairs made from them")
with state.db() as con:
    docs = docs_store.list_frame(con, limit=200)
if docs.is_empty():
    st.caption("No documents yet.")
    st.stop()
doc_id = st.selectbox("Document", docs["id"].to_list(), key="ing_doc",
                      format_func=lambda i: next(f"{r['uri']} · {r['n_pairs']} pairs · {r['filetype']}"
                                                 for r in docs.iter_rows(named=True) if r["id"] == i))
with state.db() as con:
    made = docs_store.pairs_frame(con, doc_id)
st.caption(f"{made.height} pairs; each keeps its document span (characters and page) and the elements it came from.")
st.dataframe(made.select("id", "status", "generator", "page", "char_start", "char_end", "instruction", "response"),
             hide_index=True, width="stretch")
if made.height and st.button("Review the pending pairs of this document", key="ing_review",
                             icon=":material/rate_review:"):
    state.put("rv_document", doc_id)
    st.switch_page("views/review.py")
