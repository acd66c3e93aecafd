"""Ingest: upload files or a zip, choose the generators and their options, live progress per file,
per-file errors with their reasons, and the pairs made, each linked to its source span. Content that
failed to parse before (remembered in the project setting ``ingest.failed_content``) is listed with its
reason and time, and skipped by an ingest unless "Retry files that failed before" is ticked.

The generator choice (generators, their options, the chunk size) is the project's setting
``ingest.generators`` (store/settings.py): saved when it changes, and what the page starts from in
every session, after a page switch and after an ingest.

Dataset files of pairs (the formats of ``tuneloop import``) are imported by a background job
(``app.import_job``), optionally repairing mojibake; each file shows as ok, partial or failed."""

from __future__ import annotations

import json
import os

import polars as pl
import streamlit as st

from app import components as ui
from app import jobs, state
from ingest.datasets import FORMATS
from ingest.documents import FAILED_SETTING
from ingest.filetypes import SUPPORTED
from ingest.generators import available as generators_available
from ingest.generators import option_defaults, options_from_text
from store import documents as docs_store
from store import settings as settings_store

MAX_UPLOAD_MB = int(os.environ.get("TUNELOOP_MAX_UPLOAD_MB", "200"))
CHOICE = "ingest.generators"  # the project setting: {"generators", "options", "chunk_max"}
CHUNK_RANGE = (300, 20000)

st.title("Ingest")
gens = generators_available()


def options_of(g: str) -> tuple[dict[str, str], str | None]:
    """The options typed for generator ``g``, and what is wrong with them (None: nothing)."""
    try:
        return options_from_text(g, state.get(f"ing_opt_{g}") or ""), None
    except ValueError as exc:
        return {}, str(exc)


def remember() -> None:
    """Save the choice on the page as the project's (options that do not parse are not saved)."""
    options = {g: o for g in gens for o, problem in [options_of(g)] if o and not problem}
    with state.db() as con:
        settings_store.put(con, CHOICE, {"generators": list(state.get("ing_gens") or []), "options": options,
                                         "chunk_max": int(state.get("ing_chunk") or 1500)}, author=state.user())


if state.get("ing_gens") is None:  # a new session, or back from another page: start from the saved choice
    with state.db() as con:
        saved_choice = settings_store.get(con, CHOICE)
    saved_choice = saved_choice if isinstance(saved_choice, dict) else {}
    named = saved_choice.get("generators")
    chosen_before = [g for g in named if g in gens] if isinstance(named, list) else []
    state.put("ing_gens", chosen_before or (["auto"] if "auto" in gens else gens[:1]))
    saved_options = saved_choice.get("options")
    saved_options = saved_options if isinstance(saved_options, dict) else {}
    for g in gens:
        opts = saved_options.get(g)
        state.put(f"ing_opt_{g}", "\n".join(f"{k}={v}" for k, v in opts.items()) if isinstance(opts, dict) else "")
    chunk = saved_choice.get("chunk_max")
    state.put("ing_chunk", min(max(chunk, CHUNK_RANGE[0]), CHUNK_RANGE[1]) if isinstance(chunk, int) else 1500)

c1, c2 = st.columns([3, 1])
chosen = c1.multiselect("Pair generators", gens, key="ing_gens", on_change=remember,
                        help="sections: heading → instruction, section text → response; qa: explicit questions "
                             "and answers; model: a chat model writes instructions. Remembered for the project.")
chunk_max = c2.number_input("Max characters per chunk", *CHUNK_RANGE, step=100, key="ing_chunk", on_change=remember)
bad_options: list[str] = []
if chosen:
    with st.expander("Generator options"):
        for g in chosen:
            hint = "\n".join(f"{k}={' '.join(str(v).split())}" for k, v in option_defaults(g).items())
            st.text_area(f"{ui.esc(g)}: one key=value per line; empty for the defaults", key=f"ing_opt_{g}",
                         on_change=remember, height=100, placeholder=hint)
            if problem := options_of(g)[1]:
                st.error(ui.esc(problem))
                bad_options.append(g)

with state.db() as con:  # content that failed to parse before: skipped by an ingest unless retried
    failed_before = settings_store.get(con, FAILED_SETTING, {})
failed_before = {k: v for k, v in failed_before.items() if isinstance(v, dict)} if isinstance(failed_before, dict) else {}
if failed_before:
    with st.expander(f"Files that failed before ({len(failed_before)}): skipped unless retried"):
        st.caption("Their content (the same bytes, under any name) is skipped by an ingest instead of paying the "
                   "parser's time limit again. Tick “Retry files that failed before” below and upload them again "
                   "to parse them anew.")
        ui.text_table(pl.DataFrame(
            [{"file": str(v.get("uri") or ""), "error": str(v.get("kind") or ""), "reason": str(v.get("error") or ""),
              "when": str(v.get("at") or "")}
             for v in reversed(list(failed_before.values()))],  # newest first
            schema={"file": pl.String, "error": pl.String, "reason": pl.String, "when": pl.String}),
            long=["reason"], key="ing_failed_table")

with st.form("ing_form", clear_on_submit=True):
    files = st.file_uploader(
        f"Documents, or a .zip of them (at most {MAX_UPLOAD_MB} MB each)", accept_multiple_files=True,
        type=[*SUPPORTED, "zip"], key="ing_files")
    retry_failed = st.checkbox(
        "Retry files that failed before", key="ing_retry",
        help="Parse again the files whose content failed to parse in an earlier ingest (listed above); "
             "otherwise they are skipped.")
    go = st.form_submit_button("Ingest", type="primary", key="ing_go", icon=":material/upload:")

if go and files and not chosen:
    st.warning("Choose at least one pair generator first.")
elif go and files and bad_options:
    st.warning(f"Fix the options of {ui.esc(', '.join(bad_options))} first.")
elif go and files:
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
        remember()
        spec = {"generators": chosen, "options": {g: o for g in chosen if (o := options_of(g)[0])},
                "chunk_max": int(chunk_max), "retry_failed": bool(retry_failed)}
        job = jobs.start(state.project(), "ingest", [json.dumps(spec), *saved],
                         title=f"ingest {len(saved)} file(s) with {', '.join(chosen)}"
                               + (", retrying failed ones" if retry_failed else ""), author=state.user(),
                         module="app.ingest_job")
        state.put("ing_job", job.id)
elif go:
    st.warning("Choose at least one file first.")

recent = jobs.recent(state.project(), kind="ingest", limit=10)
job_id = state.get("ing_job") or (recent[0].id if recent else None)


def progress_panel(job: jobs.Job) -> None:
    """The job's live progress (``ui.live_job`` redraws it and, when it ends, the page)."""
    ev = job.events()
    start = next((e for e in ev if e.get("event") == "start"), None)
    end = next((e for e in ev if e.get("event") == "end"), None)
    done = [e for e in ev if e.get("event") == "file"]
    finished = {e["uri"] for e in done}
    now = next((e for e in reversed(ev) if e.get("event") == "parsing" and e["uri"] not in finished), None)
    n = start["files"] if start else 0
    engine = f" · engine: {start['engine']}" if start and start.get("engine") else ""
    st.subheader(ui.esc(job.title))
    if job.status == "running" and not end:
        doing = ("starting the parser…" if now is None else
                 f"{'loading the parser for ' if now.get('loading') else 'parsing '}{now['uri']}…")
        st.progress(len(done) / n if n else 0.0,
                    text=ui.esc(f"{len(done)} of {n or '?'} files · {sum(e['pairs_new'] for e in done)} new pairs · "
                                f"{doing}{engine}"))
    elif end:
        (st.success if not end["failed"] else st.warning)(
            ui.esc(f"Done in {end['seconds']:.1f} s: {end['pairs_new']} new pairs, {end['failed']} file(s) failed"
                   f"{engine}."))
    elif job.status != "running":
        st.error(f"The ingest job ended ({job.status}) before finishing; its log:")
        st.code(job.log(3000) or "(empty)", language=None)
    if done:
        ui.text_table(pl.DataFrame([{"file": e["uri"], "status": e["status"], "pages": e["n_pages"],
                                     "chunks": e["n_chunks"], "new pairs": e["pairs_new"],
                                     "error": e["error_kind"] or "", "reason": e["error"] or "",
                                     "seconds": round(e["seconds"], 2)} for e in done]), long=["reason"])
        if any(e["error_kind"] == "failed_before" for e in done):
            st.caption("Files marked failed_before were skipped: their content failed before. Tick “Retry files "
                       "that failed before” and upload them again to parse them anew.")
    if job.status != "running" and state.get("ing_seen_end") != job.id:
        state.put("ing_seen_end", job.id)
        made_docs = [e["document_id"] for e in done if e.get("document_id")]
        if made_docs:  # the list below shows a document of this job, not the one picked before it
            state.put("ing_pick", made_docs[0])


if job_id:
    ui.live_job(job_id, key="ing_live", body=progress_panel, every=1.0)

st.divider()
st.subheader("Import a dataset of pairs")
with st.form("imp_form", clear_on_submit=True):
    data_files = st.file_uploader("Alpaca, ShareGPT, chat messages, prompt/completion, self-instruct, CSV or Parquet "
                                  f"(at most {MAX_UPLOAD_MB} MB each)", accept_multiple_files=True,
                                  type=["json", "jsonl", "ndjson", "csv", "tsv", "parquet"], key="imp_files")
    c1, c2 = st.columns(2)
    imp_format = c1.selectbox("Format", ["detect", *FORMATS], key="imp_format")
    fix_text = c2.checkbox("Repair mojibake (ftfy)", key="imp_fix",
                           help="Text decoded with the wrong encoding ('cafÃ©') is repaired; the original is kept "
                                "as the pair's first revision, the repair is the second.")
    imp_go = st.form_submit_button("Import", key="imp_go", icon=":material/upload:")
if imp_go and data_files:
    saved_data = []
    for f in data_files:
        try:
            saved_data.append(str(jobs.save_upload(state.project(), f.name, f.getvalue(),
                                                   max_bytes=MAX_UPLOAD_MB * 1024 * 1024)))
        except ValueError as exc:
            st.error(ui.esc(str(exc)))
    if saved_data:
        spec = {"format": None if imp_format == "detect" else imp_format, "fix_text": bool(fix_text)}
        job = jobs.start(state.project(), "import", [json.dumps(spec), *saved_data],
                         title=f"import {len(saved_data)} dataset file(s)", author=state.user(), module="app.import_job")
        state.put("imp_job", job.id)
elif imp_go:
    st.warning("Choose at least one file first.")


def import_panel(job: jobs.Job) -> None:
    """The import job's status, then one row per file: ok, partial (some rows skipped) or failed."""
    st.caption(f"{ui.esc(job.title)}: **{job.status}**")
    files_done = job.result()
    if not isinstance(files_done, list):
        if job.status not in ("running", "succeeded"):
            st.code(job.log(2000) or "(empty)", language=None)
        return
    ui.text_table(pl.DataFrame([{k: v for k, v in r.items() if k != "errors"} for r in files_done]),
                  long=["problem"])
    for r in files_done:
        if r["result"] == "failed":
            st.error(ui.esc(r["problem"]))
            continue
        for e in r["errors"][:5]:
            st.caption(ui.esc(f"skipped {e}"))
        if r["repaired"]:
            st.caption(ui.esc(f"{r['file']}: repaired mojibake in {r['repaired']} new pair(s); "
                              "their history keeps the original text"))


if state.get("imp_job"):
    ui.live_job(state.get("imp_job"), key="imp_live", body=import_panel)

st.divider()
st.subheader("Documents and the pairs made from them")
with state.db() as con:
    docs = docs_store.list_frame(con, limit=200)
if docs.is_empty():
    st.caption("No documents yet.")
    st.stop()
if state.get("ing_pick") in docs["id"].to_list():
    state.put("ing_doc", state.pop("ing_pick"))
doc_id = st.selectbox("Document", docs["id"].to_list(), key="ing_doc",
                      format_func=lambda i: next(f"{r['uri']} · {r['n_pairs']} pairs · {r['filetype']}"
                                                 for r in docs.iter_rows(named=True) if r["id"] == i))
with state.db() as con:
    made = docs_store.pairs_frame(con, doc_id)
st.caption(f"{made.height} pairs; each keeps its document span (characters and page) and the elements it came from.")
ui.text_table(made.select("id", "status", "generator", "page", "char_start", "char_end", "instruction", "response"),
              long=["instruction", "response"])
if made.height and st.button("Review the pending pairs of this document", key="ing_review",
                             icon=":material/rate_review:"):
    state.put("rv_document", doc_id)
    st.switch_page("views/review.py")
