"""Small render helpers shared by pages (no state, no SQL).

Text from documents, users and the store is always passed through ``esc`` (one line) or
``esc_block`` (keeps line breaks) before it reaches anything Streamlit renders as Markdown:
``st.markdown``/``caption``/``toast``/``info``/``success``/``warning``/``error``/``subheader``, the
labels of buttons, checkboxes, expanders, tabs and metrics, metric values, progress text, and the
options of ``radio``/``pills``/``segmented_control``. ``selectbox``/``multiselect`` options and
dataframes are plain text: they get the raw string. The source span is highlighted with
Streamlit's own ``:orange-background[...]`` directive, never with HTML.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

import altair as alt
import polars as pl
import streamlit as st

from store.documents import SourceContext
from store.records import Pair, PairRevision, Slice

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>$~:=^&])")
# Streamlit's renderer rewrites plain text *after* Markdown escapes are resolved: GFM autolinks
# (``http://…``, ``www.…``, ``a@b.c``), ``:emoji:``/``:material/icon:``/``:streamlit:`` and
# typographic arrows (``->``). An invisible word joiner inside each trigger keeps the text
# literal: after a colon that starts a word or ``//``, after ``www`` before its dot, after an
# ``@``, and inside a free-standing arrow.
_WJ = "\u2060"
_REWRITTEN = re.compile(r"""
    (?<=:)(?=[\w+/-])                        # :smile: :material/x: :streamlit: http://
    | (?i:(?<=www)(?=\.))                     # www.host
    | (?<=@)                                  # name@host
    | (?:(?<=^[<>~-])|(?<=\s[<>~-]))(?=(?:->|[->=])(?:\s|$))  # a free-standing -> <- <-> -- >= <= ~=
    """, re.M | re.X)

STATUS_ICON = {
    "pending": ":material/hourglass_empty:",
    "accepted": ":material/check_circle:",
    "rejected": ":material/cancel:",
    "needs_fix": ":material/build:",
    "duplicate": ":material/content_copy:",
}


def esc(text: str) -> str:
    """``text`` as Markdown that Streamlit renders literally: every Markdown/HTML-significant
    character backslash-escaped (no link, image, HTML, LaTeX, ``:color[…]`` or heading can
    form), and a word joiner (U+2060, invisible) breaking what Streamlit rewrites after parsing."""
    return _MD_SPECIAL.sub(r"\\\1", _REWRITTEN.sub(_WJ, text or ""))


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
        st.caption(f"Source: {esc(where)}{line} (no document span)")
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
    """Unified diffs of each revision against its parent, the one its writer edited (oldest first);
    a conflict (saved against a revision that was no longer the head) is marked CONFLICT."""
    out: list[str] = []
    by_id = {r.id: r for r in revisions}
    for prev, cur in zip(revisions, revisions[1:]):
        base = by_id.get(cur.parent_id or "", prev)
        conflict = f" [CONFLICT: edited rev {base.revision_no}, no longer the head]" if cur.conflict else ""
        out.append(f"# revision {cur.revision_no} by {cur.author}{' (' + cur.reason + ')' if cur.reason else ''}"
                   f"{conflict}{' [head]' if cur.is_head else ''}")
        out.extend(difflib.unified_diff(revision_text(base), revision_text(cur), f"rev {base.revision_no}",
                                        f"rev {cur.revision_no}", lineterm="", n=1))
    return "\n".join(out)


def short(text: str, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


BAR_PX = 28  # height of one bar (band) in pixels: a name per band never overlaps the next


def bar_spec(frame: pl.DataFrame, *, category: str, value: str, color: str | None = None) -> alt.Chart | None:
    """A horizontal bar chart of counts: one bar per ``category`` (stacked by ``color``), or None when
    there is nothing to draw (no rows, or every count is zero).

    Sized by its data, not by a guessed total height: the plot area is ``BAR_PX`` per category and
    the axes and legend are added around it (``autosize: fit-x``). A fixed total height that the
    legend and axis already fill leaves the bands zero pixels tall, so every name is drawn at the
    same spot with no bars. Categories and stack parts keep the frame's order; the count axis has
    integer ticks only (an all-zero domain would otherwise print ``0.000000``).
    """
    if frame.is_empty() or not (frame[value].fill_null(0) != 0).any():
        return None
    frame = frame.with_columns(pl.col(c).cast(pl.String).fill_null("(none)") for c in (category, color) if c)
    order = frame[category].unique(maintain_order=True).to_list()
    y = alt.Y(category, type="nominal", sort=order, title=None,
              axis=alt.Axis(labelLimit=180, labelOverlap=False, grid=False))
    x = alt.X(value, type="quantitative", title=value, stack="zero" if color else None,
              axis=alt.Axis(format="d", tickMinStep=1, grid=True))
    tooltip = [alt.Tooltip(category, type="nominal"), alt.Tooltip(value, type="quantitative", format=",d")]
    enc: dict = {"y": y, "x": x}
    if color:
        parts = frame[color].unique(maintain_order=True).to_list()
        enc["color"] = alt.Color(color, type="nominal", sort=parts, scale=alt.Scale(domain=parts),
                                 legend=alt.Legend(orient="bottom", title=color))
        tooltip.insert(1, alt.Tooltip(color, type="nominal"))
    return (alt.Chart(frame.to_pandas()).mark_bar().encode(**enc, tooltip=tooltip)
            .properties(height=BAR_PX * len(order), autosize=alt.AutoSizeParams(type="fit-x", contains="padding")))


def bar_chart(frame: pl.DataFrame, *, category: str, value: str, color: str | None = None, empty: str) -> None:
    """Render ``bar_spec`` across the container, or the caption "Nothing yet — ``empty``" when it has
    nothing to draw. ``empty`` is our own Markdown (say what produces the data, e.g. a command);
    names in ``frame`` are drawn by Vega as plain text and need no escaping."""
    chart = bar_spec(frame, category=category, value=value, color=color)
    if chart is None:
        st.caption(f"Nothing yet — {empty}")
    else:
        st.altair_chart(chart, width="stretch")


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
    """A button that runs the workflow function ``workflows.job.JOBS``[``workflow``] as a background
    job, and the job's live status. ``label`` is plain text (it may hold a run name); it is also the
    job's title."""
    from app import jobs, state

    if st.button(esc(label), key=key, help=help, icon=":material/play_circle:"):
        job = jobs.start_workflow(state.project(), workflow, kwargs, title=label, author=state.user())
        state.put(f"{key}_job", job.id)
    job_id = state.get(f"{key}_job")
    if job_id:
        job_status(job_id, key=f"{key}_status")


def predict_on(run_id: str, run_label: str, slices: Sequence[Slice], *, own_slice_id: str | None, key: str) -> None:
    """"Predict on…" for a finished run: its slice's eval or train split, or a split of another slice,
    as a background job of ``workflows.predict.predict_and_categorise`` (what `tuneloop predict`
    runs: stored, scored, categorised), with the job's live status. ``run_label`` is plain text."""
    others = [s for s in slices if s.id != own_slice_id]
    choices = ["eval split", "train split", *(["another slice"] if others else [])]
    where = st.segmented_control("Predict on", choices, default="eval split", key=f"{key}_where") or "eval split"
    kwargs: dict = {"run_ref": run_id, "split": "train" if where == "train split" else "eval"}
    target = f"its {kwargs['split']} split"
    if where == "another slice":
        c = st.columns(2)
        sl = c[0].selectbox("Slice", others, key=f"{key}_slice",
                            format_func=lambda s: f"{s.name}@{s.version} · {s.n_train:,} train / {s.n_eval:,} eval")
        split = c[1].segmented_control("Split", ["eval", "train"], default="eval", key=f"{key}_split") or "eval"
        kwargs.update(slice_ref=sl.id, split=split)
        target = f"the {split} split of {sl.name}@{sl.version}"
    job_button(f"Predict {run_label} on {target}", "predict", kwargs, key=key,
               help="Runs in the background; the predictions are stored, scored and their errors categorised.")


def job_status(job_id: str, *, key: str) -> None:
    from app import jobs, state

    @st.fragment(run_every=2)
    def _panel() -> None:
        job = jobs.get(state.project(), job_id)
        if job is None:
            return
        st.caption(f"{esc(job.title)}: **{job.status}**")
        if job.status != "succeeded":
            st.code(job.log(2000) or "(starting…)", language=None)
        if job.status != "running" and state.get(f"{key}_seen") != job_id:
            state.put(f"{key}_seen", job_id)
            state.bump()
            st.rerun()  # the whole page shows what the job wrote

    _panel()
