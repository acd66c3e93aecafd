"""Small render helpers shared by pages (no state, no SQL).

Text from documents, users and the store is always passed through ``esc`` (one line) or
``esc_block`` (keeps line breaks) before it reaches anything Streamlit renders as Markdown:
``st.markdown``/``caption``/``toast``/``info``/``success``/``warning``/``error``/``subheader``, the
labels of buttons, checkboxes, expanders, tabs and metrics, metric values, progress text, and the
options of ``radio``/``pills``/``segmented_control``. ``selectbox``/``multiselect`` options and
dataframes are plain text: they get the raw string. The source span is highlighted with
Streamlit's own ``:orange-background[...]`` directive, never with HTML; the word diff marks removed
and added words the same way (``:red-background[...]``/``:green-background[...]`` around escaped
text; no ``~~``, which data could also write).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import altair as alt
import orjson
import polars as pl
import streamlit as st
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from store.documents import SourceContext
from store.records import Message, Pair, PairRevision, Slice

if TYPE_CHECKING:
    from app.jobs import Job

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


# ---------------------------------------------------------------- a safe subset of Markdown (the guideline)

_SAFE_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
HEADING_SHIFT = 2  # a guideline's "# Title" renders as ### under the page title, inside its expander
_ALIGN = {"text-align:left": ":--", "text-align:center": ":-:", "text-align:right": "--:"}


def safe_markdown(text: str) -> str:
    """Markdown written by a person (the guideline an admin writes) re-emitted as a safe subset.

    ``text`` is parsed with markdown-it-py (CommonMark plus GFM tables and strikethrough) and written
    back from the syntax tree: headings (``HEADING_SHIFT`` levels down), paragraphs, emphasis, strong,
    strikethrough, lists, block quotes, rules, code spans and blocks, and tables keep their structure;
    every text run goes through ``esc``, so nothing in it forms Markdown or a Streamlit directive
    (``:red[…]``, ``:material/…:``, ``$math$``, autolinks). A link becomes its text followed by its
    address in a code span (readable and copyable, never clickable), an image its alt text, raw HTML
    escaped text. The result holds no link, image or HTML whatever ``text`` says.
    """
    root = SyntaxTreeNode(_SAFE_MD.parse(text or ""))
    return "\n\n".join(b for b in (_md_block(n) for n in root.children) if b)


def _md_block(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind == "paragraph":
        return _md_text(node)
    if kind == "heading":
        return "#" * min(6, int(node.tag[1]) + HEADING_SHIFT) + " " + " ".join(_md_text(node).split("\n"))
    if kind in ("fence", "code_block"):
        code = node.content if node.content.endswith("\n") else node.content + "\n"
        fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", code)), default=0))
        lang = re.sub(r"[^\w+#-]", "", (node.info or "").split(" ")[0]) if kind == "fence" else ""
        return f"{fence}{lang}\n{code}{fence}"
    if kind == "hr":
        return "---"
    if kind == "blockquote":
        inner = "\n\n".join(b for b in (_md_block(c) for c in node.children) if b)
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
    if kind in ("bullet_list", "ordered_list"):
        return _md_list(node)
    if kind == "table":
        return _md_table(node)
    return esc_block(node.content.rstrip("\n"))  # html_block and anything unforeseen: plain text


def _md_list(node: SyntaxTreeNode) -> str:
    tight = all(p.hidden for item in node.children for p in item.children if p.type == "paragraph")
    sep = "\n" if tight else "\n\n"
    start = int(node.attrs.get("start", 1)) if node.type == "ordered_list" else 0
    items = []
    for i, item in enumerate(node.children):
        marker = f"{start + i}." if node.type == "ordered_list" else "-"
        body = sep.join(b for b in (_md_block(c) for c in item.children) if b)
        lines = body.split("\n")
        pad = " " * (len(marker) + 1)
        items.append("\n".join([f"{marker} {lines[0]}".rstrip()] + [pad + ln if ln else "" for ln in lines[1:]]))
    return sep.join(items)


def _md_table(node: SyntaxTreeNode) -> str:
    rows: list[list[str]] = []
    align: list[str] = []
    for section in node.children:
        for tr in section.children:
            cells = [" ".join(_md_text(cell, in_table=True).split("\n")) for cell in tr.children]
            if not align:
                align = [_ALIGN.get(str(cell.attrs.get("style", "")), "---") for cell in tr.children]
            rows.append(cells)
    if not rows:
        return ""
    out = ["| " + " | ".join(rows[0]) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def _md_text(node: SyntaxTreeNode, *, in_table: bool = False) -> str:
    """The inline content of a paragraph, heading or table cell (its ``inline`` child) as safe Markdown."""
    return "".join(_md_inline(c, in_table=in_table) for inline in node.children for c in inline.children)


def _code_span(code: str, *, in_table: bool = False) -> str:
    fence = "`" * (1 + max((len(r) for r in re.findall(r"`+", code)), default=0))
    pad = " " if code[:1] in ("`", " ") or code[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{code.replace('|', chr(92) + '|') if in_table else code}{pad}{fence}"


def _plain(node: SyntaxTreeNode) -> str:
    """The text of an inline node and its children, no markup (an image's alt text, a link's label)."""
    if node.type in ("text", "code_inline", "html_inline"):
        return node.content
    if node.type in ("softbreak", "hardbreak"):
        return " "
    return "".join(_plain(c) for c in node.children)


def _md_inline(node: SyntaxTreeNode, *, in_table: bool = False) -> str:
    kind = node.type

    def inner() -> str:
        return "".join(_md_inline(c, in_table=in_table) for c in node.children)

    if kind == "text":
        return esc(node.content)
    if kind == "softbreak":
        return "\n"
    if kind == "hardbreak":
        return "  \n"
    if kind == "code_inline":
        return _code_span(node.content, in_table=in_table)
    if kind in ("em", "strong", "s"):
        mark = {"em": "*", "strong": "**", "s": "~~"}[kind]
        return f"{mark}{inner()}{mark}"
    if kind == "link":
        href = str(node.attrs.get("href", ""))
        label = _plain(node)
        if node.markup in ("autolink", "linkify") or not href or href.removeprefix("mailto:") == label:
            return _code_span(label or href, in_table=in_table)
        return f"{inner()} ({_code_span(href, in_table=in_table)})"
    if kind == "image":
        return esc(_plain(node))
    return esc(_plain(node))  # html_inline and anything unforeseen: plain text


def highlighted(before: str, span: str, after: str) -> str:
    """Markdown of ``before`` + highlighted ``span`` + ``after``, everything escaped."""
    parts = []
    for i, line in enumerate(span.split("\n")):
        if i:
            parts.append("  \n")
        if line.strip():
            parts.append(f":orange-background[{esc(line)}]")
    return esc_block(before) + "".join(parts) + esc_block(after)


SOURCE_ABOVE = 240  # context shown above the span: the span starts near the top of the box, in view
SOURCE_BELOW = 600
_WORD_EDGE = 40  # how far a window edge moves to land between words


def source_window(before: str, after: str, *, above: int = SOURCE_ABOVE,
                  below: int = SOURCE_BELOW) -> tuple[str, str, str, str]:
    """The context around a span cut to a window (pure): (hidden above, shown before, shown after,
    hidden below). At most ``above`` characters before the span and ``below`` after it are shown,
    each edge moved (at most ``_WORD_EDGE`` characters) to fall between words, so the span is in
    view at the top of the source box however far into the document it starts."""
    cut = max(0, len(before) - max(0, above))
    if cut:
        gap = re.search(r"\s", before[cut:cut + _WORD_EDGE])
        cut = cut + gap.end() if gap else cut
    end = min(len(after), max(0, below))
    if end < len(after):
        gap = re.search(r"\s\S*$", after[max(0, end - _WORD_EDGE):end])
        end = max(0, end - _WORD_EDGE) + gap.start() + 1 if gap else end
    return before[:cut], before[cut:], after[:end], after[end:]


def source_panel(ctx: SourceContext | None, pair: Pair) -> None:
    """The pair's source: a window of the document with the span highlighted, never scrolled out
    of view (see ``source_window``); the rest of the fetched context opens in expanders."""
    pv = pair.provenance
    if ctx is None:
        where = pv.source_uri or "imported data"
        line = f", line {pv.source_line}" if pv.source_line else ""
        st.caption(f"Source: {esc(where)}{line} (no document span)")
        return
    page = f" · page {ctx.page}" if ctx.page else ""
    made = f" · {esc(pv.generator)}" if pv.generator else ""
    if pv.grounding is not None:  # a model-written answer: how much of it the span supports
        made += f" · grounding {pv.grounding:.2f}"
    st.caption(f"Source: **{esc(ctx.name)}**{page} · characters {pv.char_start}–{pv.char_end}{made}")
    hidden_above, before, after, hidden_below = source_window(ctx.before, ctx.after)
    span_end = ctx.before_start + len(ctx.before) + len(ctx.span)
    unloaded_below = max(0, ctx.doc_chars - span_end - len(ctx.after))
    if hidden_above:
        with st.expander(f"… {len(hidden_above):,} more characters above"):
            if ctx.before_start:
                st.caption(f"… {ctx.before_start:,} characters before these")
            st.markdown(esc_block(hidden_above))
    with st.container(border=True):
        st.markdown(("… " if hidden_above or ctx.before_start else "") + highlighted(before, ctx.span, after)
                    + (" …" if hidden_below or unloaded_below else ""))
    if hidden_below:
        with st.expander(f"… {len(hidden_below):,} more characters below"):
            st.markdown(esc_block(hidden_below))
            if unloaded_below:
                st.caption(f"… {unloaded_below:,} characters after these")


def pretty_json(value: Any) -> str:
    """JSON text (or a value) indented for reading; text that is not JSON comes back as it is."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def conversation_turn(m: Message) -> None:
    """One turn of a conversation. Tool calls (function name and arguments) and tool results are
    shown as code blocks: data, never Markdown."""
    with st.chat_message(m.role if m.role in ("user", "assistant", "tool") else "ai"):
        if m.weight is not None and m.weight != 1:
            st.caption("weight 0: not trained on" if m.weight == 0 else f"weight {m.weight:g}")
        if m.role == "tool":
            about = " · ".join(x for x in (m.name or "", m.tool_call_id or "") if x)
            st.caption(f"Tool result{' · ' + esc(about) if about else ''}")
            st.code(pretty_json(m.content), language=None)
            return
        if m.content or not m.tool_calls:
            st.markdown(esc_block(m.content))
        for c in m.tool_calls or []:
            fn = c.get("function") or {}
            call_id = f" · {esc(str(c['id']))}" if c.get("id") else ""
            st.caption(f"Calls **{esc(str(fn.get('name', '')))}**{call_id}")
            st.code(pretty_json(fn.get("arguments", "")), language="json")


def pair_body(pair: Pair) -> None:
    if pair.system:
        st.caption("System")
        st.text(pair.system)
    st.caption("Instruction")
    st.markdown(esc_block(pair.instruction))
    if pair.input:
        st.caption("Input")
        st.markdown(esc_block(pair.input))
    if pair.tools:
        with st.expander(f"Tools offered ({len(pair.tools)})"):
            st.code(pretty_json(pair.tools), language="json")
    if pair.messages:
        st.caption("Conversation")
        for m in pair.messages:
            conversation_turn(m)
    st.caption("Response")
    with st.container(border=True):
        st.markdown(esc_block(pair.response) or "_(empty)_")


_WORD = re.compile(r"(\S+)(\s*)")
REMOVED, ADDED = "red-background", "green-background"


def _marked(tokens: Sequence[tuple[str, str]], mark: str | None) -> str:
    """Markdown of consecutive (word, following space) tokens, escaped; each line of a marked run
    wrapped in ``:mark[…]``. Spaces become one space, line breaks stay line breaks."""
    out: list[str] = []
    line: list[str] = []

    def flush() -> None:
        if line:
            text = esc(" ".join(line))
            out.append(f":{mark}[{text}]" if mark else text)
            line.clear()

    for i, (word, space) in enumerate(tokens):
        line.append(word)
        last = i == len(tokens) - 1
        if "\n" in space or last:
            flush()
            out.append("  \n" * space.count("\n") if "\n" in space else (" " if space else ""))
    return "".join(out)


def word_diff(old: str, new: str) -> tuple[str, str]:
    """Two Markdown texts, ``old`` and ``new`` side by side (pure): words compared with
    ``difflib.SequenceMatcher``; removed words on the old side ``:red-background[…]``, added words
    on the new side ``:green-background[…]``, every word escaped with ``esc``. Nothing is cut: long
    lines wrap where the text is shown."""
    a, b = _WORD.findall(old or ""), _WORD.findall(new or "")
    matcher = difflib.SequenceMatcher(None, [w for w, _ in a], [w for w, _ in b], autojunk=False)
    left: list[str] = []
    right: list[str] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        left.append(_marked(a[i1:i2], None if tag == "equal" else REMOVED))
        right.append(_marked(b[j1:j2], None if tag == "equal" else ADDED))
    return "".join(left), "".join(right)


def render_word_diff(old: str, new: str, *, labels: tuple[str, str] = ("Before", "After")) -> None:
    """``word_diff`` in two columns; ``labels`` are our own Markdown (escape data in them)."""
    left, right = word_diff(old, new)
    c1, c2 = st.columns(2)
    c1.caption(labels[0])
    c1.markdown(left or "_(empty)_")
    c2.caption(labels[1])
    c2.markdown(right or "_(empty)_")


def _revision_fields(r: PairRevision) -> dict[str, str]:
    return {"instruction": r.instruction, "input": r.input, "system": r.system,
            "conversation": "\n".join(f"{m.role}: {m.content}" for m in r.messages),
            "response": r.response, "tags": ", ".join(r.tags)}


def history_diffs(revisions: Sequence[PairRevision]) -> None:
    """Each revision against its parent, the one its writer edited (oldest first): a word diff of
    every field that changed. A conflict (saved against a revision that was no longer the head) is
    marked CONFLICT."""
    by_id = {r.id: r for r in revisions}
    for prev, cur in zip(revisions, revisions[1:]):
        base = by_id.get(cur.parent_id or "", prev)
        conflict = f" · **CONFLICT**: edited revision {base.revision_no}, no longer the head" if cur.conflict else ""
        st.caption(f"Revision {cur.revision_no} by {esc(cur.author)}" + (f" ({esc(cur.reason)})" if cur.reason else "")
                   + conflict + (" · head" if cur.is_head else ""))
        old, new = _revision_fields(base), _revision_fields(cur)
        changed = [f for f in old if old[f] != new[f]]
        for f in changed:
            render_word_diff(old[f], new[f], labels=(f"{f} · revision {base.revision_no}",
                                                      f"{f} · revision {cur.revision_no}"))
        if not changed:
            st.caption("(same text)")


def short(text: str, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


LONG_TEXT_CHARS = 60  # a text column with a longer value is shown wide and wrapped
WRAP_ROW_PX = 96  # Streamlit wraps cell text only in rows taller than 4 rem (64 px); 96 px hold about 4 lines
TABLE_HEADER_PX = 38


def long_text_columns(frame: pl.DataFrame, min_chars: int = LONG_TEXT_CHARS) -> list[str]:
    """The text columns of ``frame`` holding a value longer than ``min_chars`` characters (pure)."""
    return [c for c, t in frame.schema.items()
            if t == pl.String and frame.height and (frame[c].str.len_chars().max() or 0) > min_chars]  # type: ignore[operator]


def text_table(frame: pl.DataFrame, *, long: Sequence[str] | None = None, column_config: Mapping[str, Any] | None = None,
               rows: int = 6, **kwargs: Any) -> Any:
    """``st.dataframe`` for results with long texts (every such table of the app goes through here).

    The columns of ``long`` (default: every text column) that hold a long value
    (``long_text_columns``) are wide and their cells wrap over about four lines instead of being
    cut at one; the table then shows ``rows`` rows at a time and scrolls. A text longer still shows
    in full when its cell is clicked, and the pages with a selectable table show the selected row
    in full below it. ``column_config`` adds to (or overrides) the long columns' config;
    ``kwargs`` go to ``st.dataframe`` (key, on_select, selection_mode, …).
    """
    long = [c for c in long_text_columns(frame) if long is None or c in long]
    config: dict[str, Any] = {c: st.column_config.TextColumn(width="large") for c in long}
    config.update(column_config or {})
    if long:
        kwargs.setdefault("row_height", WRAP_ROW_PX)
        kwargs.setdefault("height", TABLE_HEADER_PX + WRAP_ROW_PX * max(1, min(frame.height, rows)))
    return st.dataframe(frame, hide_index=True, width="stretch", column_config=config, **kwargs)


BAR_PX = 28  # height of one bar (band) in pixels: a name per band never overlaps the next


PICK = "pick"  # the name of a bar chart's click selection


def bar_spec(frame: pl.DataFrame, *, category: str, value: str, color: str | None = None,
             number_format: str = "d", pickable: bool = False) -> alt.Chart | None:
    """A horizontal bar chart of counts: one bar per ``category`` (stacked by ``color``), or None when
    there is nothing to draw (no rows, or every count is zero).

    Sized by its data, not by a guessed total height: the plot area is ``BAR_PX`` per category and
    the axes and legend are added around it (``autosize: fit-x``). A fixed total height that the
    legend and axis already fill leaves the bands zero pixels tall, so every name is drawn at the
    same spot with no bars. Categories and stack parts keep the frame's order; the count axis has
    integer ticks only (an all-zero domain would otherwise print ``0.000000``). A value that is not a
    count (a kappa) gives its d3 ``number_format`` instead, e.g. ``".2f"``. ``pickable`` adds a click
    selection named ``PICK`` on the category (read it back with ``picked``).
    """
    if frame.is_empty() or not (frame[value].fill_null(0) != 0).any():
        return None
    frame = frame.with_columns(pl.col(c).cast(pl.String).fill_null("(none)") for c in (category, color) if c)
    order = frame[category].unique(maintain_order=True).to_list()
    y = alt.Y(category, type="nominal", sort=order, title=None,
              axis=alt.Axis(labelLimit=180, labelOverlap=False, grid=False))
    x = alt.X(value, type="quantitative", title=value, stack="zero" if color else None,
              axis=alt.Axis(format=number_format, tickMinStep=1 if number_format == "d" else alt.Undefined, grid=True))
    tooltip = [alt.Tooltip(category, type="nominal"),
               alt.Tooltip(value, type="quantitative", format=",d" if number_format == "d" else number_format)]
    enc: dict = {"y": y, "x": x}
    if color:
        parts = frame[color].unique(maintain_order=True).to_list()
        enc["color"] = alt.Color(color, type="nominal", sort=parts, scale=alt.Scale(domain=parts),
                                 legend=alt.Legend(orient="bottom", title=color))
        tooltip.insert(1, alt.Tooltip(color, type="nominal"))
    chart = (alt.Chart(frame.to_pandas()).mark_bar(cursor="pointer" if pickable else alt.Undefined)
             .encode(**enc, tooltip=tooltip)
             .properties(height=BAR_PX * len(order), autosize=alt.AutoSizeParams(type="fit-x", contains="padding")))
    return chart.add_params(alt.selection_point(name=PICK, fields=[category])) if pickable else chart


def picked(event: Mapping[str, Any] | None, field: str, *, name: str = PICK) -> str | None:
    """The category of the bar clicked on a ``pickable`` chart (Streamlit's selection event lists the
    clicked points' fields), or None when nothing is clicked."""
    points = ((event or {}).get("selection") or {}).get(name) or []
    values = [p[field] for p in points if isinstance(p, Mapping) and p.get(field) is not None]
    return str(values[0]) if values else None


def bar_chart(frame: pl.DataFrame, *, category: str, value: str, color: str | None = None, empty: str,
              number_format: str = "d", on_pick: Callable[[str], None] | None = None, key: str | None = None) -> None:
    """Render ``bar_spec`` across the container, or the caption "Nothing yet — ``empty``" when it has
    nothing to draw. ``empty`` is our own Markdown (say what produces the data, e.g. a command);
    names in ``frame`` are drawn by Vega as plain text and need no escaping.

    With ``on_pick`` (and a ``key``) a click on a bar calls ``on_pick(category)`` before the next run
    (a widget callback, so it may set other widgets' values), typically ``open_filtered``. Each click
    is used once: the next run draws a fresh chart, so clicking the same bar again works and coming back
    to the page does not replay it."""
    chart = bar_spec(frame, category=category, value=value, color=color, number_format=number_format,
                     pickable=on_pick is not None)
    if chart is None:
        st.caption(f"Nothing yet — {empty}")
        return
    if on_pick is None or key is None:
        st.altair_chart(chart, width="stretch")
        return
    from app import state

    n = state.get(f"{key}_clicks", 0)
    chart_key = f"{key}_{n}"

    def clicked() -> None:
        value_picked = picked(state.get(chart_key), category)
        if value_picked is not None:
            state.put(f"{key}_clicks", n + 1)
            on_pick(value_picked)

    st.altair_chart(chart, width="stretch", on_select=clicked, selection_mode=PICK, key=chart_key)
    go_to = state.pop("_open_page")
    if go_to:
        st.switch_page(f"views/{go_to}.py")


EXPLORE_FILTERS: dict[str, Any] = {
    "ex_status": [], "ex_tags": [], "ex_gens": [], "ex_splits": [], "ex_flagged": [], "ex_clean": [],
    "ex_clusters": [], "ex_docs": [], "ex_text": "", "ex_dups": False, "ex_map_ids": None}


def open_filtered(page: str = "explore", **values: Any) -> None:
    """From a chart's click (``bar_chart(on_pick=...)``): open ``page`` showing the list the bar stands
    for: Explore with only the given filters (e.g. ``ex_status=["accepted"]``, every other Explore filter
    cleared), or another page with the given widget values (``er_cat=...``)."""
    if page == "explore":
        values = {**EXPLORE_FILTERS, **values}
    from app import state

    for k, v in values.items():
        state.put(k, v)
    state.put("_open_page", page)


def key_for(base: str, *subject: object) -> str:
    """A widget key naming what the widget acts on (a filter, a target, a set of ids): another subject
    is another widget, so a tick or a typed value never carries over to it."""
    import hashlib

    return f"{base}_{hashlib.sha1(repr(subject).encode()).hexdigest()[:12]}"


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
    # The tick confirms this filter, this count and this status: any other is a fresh, unticked box.
    confirm_key = key_for(f"{key}_confirm", flt.model_dump_json(), n, target)
    confirm = c2.checkbox(f"Yes, set {n:,} pairs to {target}", key=confirm_key)
    apply = st.button(f"Apply to {n:,} pairs", key=f"{key}_apply", disabled=not confirm or n == 0, type="primary")
    if apply and confirm:
        with state.db() as con:
            ids = pair_pages.page_ids(con, flt, limit=BULK_CAP)
            changed = pairs_store.set_status_many(con, ids, target, author=state.user(), comment="bulk action")
        state.bump()
        state.flash(f"{changed:,} pairs set to {target} ({n - changed:,} already were)")
        state.pop(confirm_key)
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
    if st.toggle("Answer within the label set", key=f"{key}_labels",
                 help="For a label task: every label of the slice is scored as the whole answer and the likeliest "
                      "is chosen, so no answer is an invented or cut-off label. Refused when the answers are free text."):
        kwargs["decode"] = "labels"
        target += ", within the label set"
    job_button(f"Predict {run_label} on {target}", "predict", kwargs, key=key,
               help="Runs in the background; the predictions are stored, scored and their errors categorised.")


JOB_POLL_S = 2.0  # how often a running job's panel redraws


def live_job(job_id: str, *, key: str, body: Callable[[Job], None], every: float = JOB_POLL_S) -> None:
    """Draw ``body(job)`` for the background job ``job_id``, from a fragment that redraws every
    ``every`` seconds while the job runs. It reads the job's folder only, never the database, so an
    open page keeps no command out. When the job ends, the whole page reruns once
    (``jobs.page_needs_redraw``) and shows what the job wrote: nobody has to reload. After that
    rerun the fragment has no timer: an ended job is not polled."""
    from app import jobs, state

    def panel() -> None:
        job = jobs.get(state.project(), job_id)
        if job is None:
            return
        body(job)
        if jobs.page_needs_redraw(job, state.get(f"{key}_redrawn")):
            state.put(f"{key}_redrawn", job.id)
            state.bump()  # cached aggregates include what the job wrote
            st.rerun(scope="app")

    first = jobs.get(state.project(), job_id)
    st.fragment(panel, run_every=every if first is not None and first.status == "running" else None)()


def job_status(job_id: str, *, key: str) -> None:
    """A job's title, status and (until it succeeds) the tail of its log, live (``live_job``)."""

    def body(job: Job) -> None:
        st.caption(f"{esc(job.title)}: **{job.status}**")
        if job.status != "succeeded":
            st.code(job.log(2000) or "(starting…)", language=None)

    live_job(job_id, key=key, body=body)


def points_in_box(points: pl.DataFrame, event: Mapping[str, Any] | None, *, name: str = "brush") -> list[str]:
    """Pair ids of the map ``points`` (x, y, pair_id) inside the box dragged on an Altair chart whose
    interval selection is ``name`` (Streamlit's selection event gives the box's x and y ranges)."""
    box = ((event or {}).get("selection") or {}).get(name) or {}
    if not box.get("x") or not box.get("y"):
        return []
    (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
    return points.filter(pl.col("x").is_between(x0, x1) & pl.col("y").is_between(y0, y1))["pair_id"].to_list()
