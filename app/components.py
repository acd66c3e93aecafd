"""Small render helpers shared by pages (no state, no SQL).

Text from documents and users is always escaped before it reaches ``st.markdown``; the
source span is highlighted with Streamlit's own ``:orange-background[...]`` directive, never
with HTML.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

import streamlit as st

from store.documents import SourceContext
from store.records import Pair, PairRevision

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>$~:=^])")

STATUS_ICON = {
    "pending": ":material/hourglass_empty:",
    "accepted": ":material/check_circle:",
    "rejected": ":material/cancel:",
    "needs_fix": ":material/build:",
    "duplicate": ":material/content_copy:",
}


def esc(text: str) -> str:
    """Escape Markdown (and HTML-ish) syntax so user text renders literally."""
    return _MD_SPECIAL.sub(r"\\\1", text or "")


def esc_block(text: str) -> str:
    """Escaped text keeping paragraph breaks (Markdown joins single newlines)."""
    return "  \n".join(esc(line) for line in (text or "").split("\n"))


def highlighted(before: str, span: str, after: str) -> str:
    """Markdown of ``before`` + highlighted ``span`` + ``after``, everything escaped."""
    parts = []
    for i, line in enumerate(span.split("\n")):
        if i:
            parts.append("  \n")
        if line.strip():
            parts.append(f":orange-background[{esc(line)}]")
    return esc_block(before) + "".join(parts) + esc_block(after)


def source_panel(ctx: SourceContext | None, pair: Pair) -> None:
    pv = pair.provenance
    if ctx is None:
        where = pv.source_uri or "imported data"
        line = f", line {pv.source_line}" if pv.source_line else ""
        st.caption(f"Source: {where}{line} (no document span)")
        return
    page = f" · page {ctx.page}" if ctx.page else ""
    st.caption(f"Source: **{esc(ctx.name)}**{page} · characters {pv.char_start}–{pv.char_end}")
    with st.container(border=True, height=360):
        st.markdown(("… " if ctx.before else "") + highlighted(ctx.before, ctx.span, ctx.after)
                    + (" …" if ctx.after else ""))


def pair_body(pair: Pair) -> None:
    if pair.system:
        st.caption("System")
        st.text(pair.system)
    st.caption("Instruction")
    st.markdown(esc_block(pair.instruction))
    if pair.input:
        st.caption("Input")
        st.markdown(esc_block(pair.input))
    if pair.messages:
        st.caption("Conversation")
        for m in pair.messages:
            with st.chat_message(m.role if m.role in ("user", "assistant") else "ai"):
                st.markdown(esc_block(m.content))
    st.caption("Response")
    with st.container(border=True):
        st.markdown(esc_block(pair.response) or "_(empty)_")


def revision_text(r: PairRevision) -> list[str]:
    lines = [f"instruction: {r.instruction}"]
    if r.input:
        lines.append(f"input: {r.input}")
    if r.system:
        lines.append(f"system: {r.system}")
    lines.append(f"response: {r.response}")
    lines.append(f"tags: {', '.join(r.tags)}")
    return "\n".join(lines).splitlines()


def history_diff(revisions: Sequence[PairRevision]) -> str:
    """Unified diffs between consecutive revisions (oldest first)."""
    out: list[str] = []
    for prev, cur in zip(revisions, revisions[1:]):
        out.append(f"# revision {cur.revision_no} by {cur.author}"
                   f"{' (' + cur.reason + ')' if cur.reason else ''}{' [conflict]' if not cur.is_head and cur.parent_id != prev.id else ''}")
        out.extend(difflib.unified_diff(revision_text(prev), revision_text(cur), f"rev {prev.revision_no}",
                                        f"rev {cur.revision_no}", lineterm="", n=1))
    return "\n".join(out)


def short(text: str, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


BULK_CAP = 50_000


def bulk_status(flt, total: int, *, key: str) -> None:
    """Set the status of every pair matching ``flt`` (capped), after an explicit confirmation."""
    from app import state
    from store import pair_pages
    from store import pairs as pairs_store
    from store.records import Status

    n = min(total, BULK_CAP)
    c1, c2 = st.columns([2, 3])
    target = c1.selectbox("Set status to", [s.value for s in Status if s != Status.duplicate], key=f"{key}_status")
    if total > BULK_CAP:
        c2.warning(f"Only the first {BULK_CAP:,} of {total:,} pairs are changed per action; narrow the filter "
                   "or repeat.")
    confirm = c2.checkbox(f"Yes, set {n:,} pairs to {target}", key=f"{key}_confirm")
    if st.button(f"Apply to {n:,} pairs", key=f"{key}_apply", disabled=not confirm or n == 0, type="primary"):
        with state.db() as con:
            ids = pair_pages.page_ids(con, flt, limit=BULK_CAP)
            changed = pairs_store.set_status_many(con, ids, target, author=state.user(), comment="bulk action")
        state.bump()
        state.flash(f"{changed:,} pairs set to {target} ({n - changed:,} already were)")
        state.pop(f"{key}_confirm")
        state.pop("rv_buf")
        state.pop("rv_sig")
        st.rerun()


def job_button(label: str, workflow: str, kwargs: dict | None = None, *, key: str, help: str | None = None) -> None:
    """A button that runs the workflow function ``workflow`` (``workflows.job.JOBS``) as a background
    job, and the job's live status."""
    from app import jobs, state

    if st.button(label, key=key, help=help, icon=":material/play_circle:"):
        job = jobs.start_workflow(state.project(), workflow, kwargs, title=label, author=state.user())
        state.put(f"{key}_job", job.id)
    job_id = state.get(f"{key}_job")
    if job_id:
        job_status(job_id, key=f"{key}_status")


def job_status(job_id: str, *, key: str) -> None:
    from app import jobs, state

    @st.fragment(run_every=2)
    def _panel() -> None:
        job = jobs.get(state.project(), job_id)
        if job is None:
            return
        st.caption(f"{job.title}: **{job.status}**")
        if job.status != "succeeded":
            st.code(job.log(2000) or "(starting…)", language=None)
        if job.status != "running" and state.get(f"{key}_seen") != job_id:
            state.put(f"{key}_seen", job_id)
            state.bump()
            st.rerun()  # the whole page shows what the job wrote

    _panel()
