"""A shareable report of a run's errors, optionally against a second run.

``markdown`` and ``html`` render the same content: accuracy, per-category error rates with
Wilson intervals, (with a second run) the per-category deltas with Newcombe intervals and
the fixed/broken examples, slices of the data (documents, tags) and, for label-like tasks,
the most confused label pairs. Charts are matplotlib PNGs (Agg backend, no display, no
network): inlined as base64 in the HTML so one file is the whole report, and returned as
bytes for the Markdown so the caller writes them beside it.
"""

from __future__ import annotations

import base64
import html as html_mod
import io
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from analysis.errors.metrics import ANY


@dataclass
class ReportInput:
    title: str
    run_a: str
    metrics_a: Any  # workflow.RunMetrics
    run_b: str | None = None
    metrics_b: Any | None = None
    comparison: Any | None = None  # compare.Comparison
    max_examples: int = 15
    notes: list[str] = field(default_factory=list)
    evaluation: list[str] = field(default_factory=list)  # Markdown lines (``evaluation_markdown``), after the comparison


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(lo: float, hi: float) -> str:
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _signed(x: float) -> str:
    return f"{100 * x:+.1f} pt"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return out


def _short(s: str, n: int = 80) -> str:
    s = (s or "").replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


# ------------------------------------------------------------------ charts


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def chart_rates(inp: ReportInput) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = inp.metrics_a.overall
    if a.height == 0:
        return None
    cats = a["category"].to_list()
    series = [(inp.run_a, a)]
    if inp.metrics_b is not None:
        b = inp.metrics_b.overall
        cats += [c for c in b["category"].to_list() if c not in cats]
        series.append((inp.run_b or "B", b))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(cats) + 1.2))
    h = 0.8 / len(series)
    for s, (name, df) in enumerate(series):
        d = {r["category"]: r for r in df.iter_rows(named=True)}
        ys = [i + s * h for i in range(len(cats))]
        rate = [d[c]["rate"] if c in d else 0.0 for c in cats]
        lo = [d[c]["rate"] - d[c]["lo"] if c in d else 0.0 for c in cats]
        hi = [d[c]["hi"] - d[c]["rate"] if c in d else 0.0 for c in cats]
        ax.barh(ys, rate, height=h, xerr=[lo, hi], capsize=2, label=name)
    ax.set_yticks([i + h * (len(series) - 1) / 2 for i in range(len(cats))], cats)
    ax.invert_yaxis()
    ax.set_xlabel("error rate (95% Wilson interval)")
    ax.legend(loc="lower right")
    return _fig_png(fig)


def chart_deltas(inp: ReportInput) -> bytes | None:
    if inp.comparison is None or inp.comparison.table.height == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = inp.comparison.table
    fig, ax = plt.subplots(figsize=(7, 0.45 * t.height + 1.2))
    ys = list(range(t.height))
    d = t["delta"].to_list()
    colors = ["#2a9d55" if x < 0 else "#c0392b" if x > 0 else "#888888" for x in d]
    ax.barh(ys, d, color=colors, xerr=[[x - lo for x, lo in zip(d, t["delta_lo"].to_list())],
                                        [hi - x for x, hi in zip(d, t["delta_hi"].to_list())]], capsize=2)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ys, t["category"].to_list())
    ax.invert_yaxis()
    ax.set_xlabel(f"change in error rate, {inp.run_b} - {inp.run_a} (95% Newcombe interval); left is better")
    return _fig_png(fig)


def charts(inp: ReportInput) -> dict[str, bytes]:
    out = {}
    for name, fn in (("error_rates.png", chart_rates), ("deltas.png", chart_deltas)):
        png = fn(inp)
        if png:
            out[name] = png
    return out


# ------------------------------------------------------------------ markdown


def _acc_line(name: str, m) -> str:
    a = m.accuracy
    return f"- **{name}**: accuracy {_pct(a['accuracy'])} {_ci(a['lo'], a['hi'])} ({a['k']}/{a['n']}), task: {m.task}"


def _group_rows(df: pl.DataFrame, top: int = 12) -> list[list[str]]:
    anyrows = df.filter(pl.col("category_id") == ANY).sort(["rate", "n"], descending=[True, True]).head(top)
    out = []
    for r in anyrows.iter_rows(named=True):
        cats = df.filter((pl.col("group") == r["group"]) & (pl.col("category_id") != ANY) & (pl.col("k") > 0))
        top_c = ", ".join(f"{c['category']} {c['k']}" for c in cats.head(3).iter_rows(named=True))
        out.append([_short(str(r["group"]), 50), str(r["n"]), _pct(r["rate"]), _ci(r["lo"], r["hi"]), top_c])
    return out


def markdown(inp: ReportInput, chart_paths: dict[str, str] | None = None) -> str:
    chart_paths = chart_paths or {}
    L = [f"# {inp.title}", ""]
    L.append(_acc_line(inp.run_a, inp.metrics_a))
    if inp.metrics_b is not None:
        L.append(_acc_line(inp.run_b or "B", inp.metrics_b))
    L += [f"- {n}" for n in inp.notes]
    L.append("")
    if inp.comparison is not None:
        c = inp.comparison
        L += [f"## Per category: {inp.run_a} vs {inp.run_b}", "",
              f"{c.n_common} eval pairs in common; **{c.fixed.height} fixed**, **{c.broken.height} broken**.", ""]
        L += [f"_{n}_" for n in c.notes]
        rows = [[r["category"], f"{_pct(r['rate_a'])} {_ci(r['lo_a'], r['hi_a'])}",
                 f"{_pct(r['rate_b'])} {_ci(r['lo_b'], r['hi_b'])}",
                 f"{_signed(r['delta'])} [{100 * r['delta_lo']:+.1f}, {100 * r['delta_hi']:+.1f}]",
                 f"{r['k_a']} → {r['k_b']}"] for r in c.table.iter_rows(named=True)]
        L += _table(["category", f"error rate {inp.run_a}", f"error rate {inp.run_b}", "delta (95% CI)", "count"], rows)
        L.append("")
        if "deltas.png" in chart_paths:
            L += [f"![per-category deltas]({chart_paths['deltas.png']})", ""]
        for title, df, side in (("Fixed (wrong in A, right in B)", c.fixed, "categories_a"),
                                ("Broken (right in A, wrong in B)", c.broken, "categories_b")):
            L += [f"### {title}: {df.height}", ""]
            if df.height:
                L += _table(["pair", "A said", "B said", "reference", "categories"],
                            [[r["pair_id"][:14], _short(r["output_a"], 60), _short(r["output_b"], 60),
                              _short(r["reference"], 60), r[side]] for r in df.head(inp.max_examples).iter_rows(named=True)])
                if df.height > inp.max_examples:
                    L.append(f"\n… and {df.height - inp.max_examples} more")
                L.append("")
    L += inp.evaluation
    L += ["## Error rate by category", ""]
    for name, m in ((inp.run_a, inp.metrics_a), (inp.run_b, inp.metrics_b)):
        if m is None:
            continue
        L += [f"### {name}", ""]
        L += _table(["category", "count", "n", "rate", "95% CI"],
                    [[r["category"], str(r["k"]), str(r["n"]), _pct(r["rate"]), _ci(r["lo"], r["hi"])]
                     for r in m.overall.iter_rows(named=True)])
        L.append("")
    if "error_rates.png" in chart_paths:
        L += [f"![error rates]({chart_paths['error_rates.png']})", ""]
    m = inp.metrics_b if inp.metrics_b is not None else inp.metrics_a
    which = inp.run_b if inp.metrics_b is not None else inp.run_a
    for title, df in (("source document", m.by_document), ("tag", m.by_tag), ("slice", m.by_slice)):
        if df.height and df["group"].n_unique() > 1 or title == "source document" and df.height:
            L += [f"## By {title} ({which}), weakest first", ""]
            L += _table([title, "n", "error rate", "95% CI", "top categories"], _group_rows(df))
            L.append("")
    if m.most_confused is not None and m.most_confused.height:
        L += [f"## Most confused labels ({which})", ""]
        L += _table(["label a", "label b", "a predicted as b", "b predicted as a", "total"],
                    [[r["a"], r["b"], str(r["a_as_b"]), str(r["b_as_a"]), str(r["n"])]
                     for r in m.most_confused.iter_rows(named=True)])
        L.append("")
    return "\n".join(L).rstrip() + "\n"


# ------------------------------------------------------------------ html


def _md_to_html(md: str) -> str:
    """The small Markdown subset ``markdown`` emits (headings, lists, tables, images, emphasis)."""
    import re

    def inline(s: str) -> str:
        s = html_mod.escape(s, quote=False)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        return re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"<em>\1</em>", s)

    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in block]
            head, body = cells[0], cells[2:]
            out.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
            continue
        if m := re.match(r"^(#{1,3}) (.*)$", line):
            n = len(m.group(1))
            out.append(f"<h{n}>{inline(m.group(2))}</h{n}>")
        elif m := re.match(r"^!\[(.*?)\]\((.*?)\)$", line):
            out.append(f'<img alt="{html_mod.escape(m.group(1))}" src="{m.group(2)}">')
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}img{max-width:100%}h1{font-size:1.6em}"""


def html(inp: ReportInput, pngs: dict[str, bytes] | None = None) -> str:
    """One self-contained HTML file: charts inlined as base64 PNG, no external resources."""
    pngs = charts(inp) if pngs is None else pngs
    paths = {k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in pngs.items()}
    body = _md_to_html(markdown(inp, paths))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html_mod.escape(inp.title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def evaluation_markdown(run: str, ability: list, judge_scores, *, vs: str | None = None, win_rates=None,
                        judge_win_rates=None) -> list[str]:
    """The report's evaluation of ``run``: benchmark deltas against its base (``AbilityDelta``s),
    the LLM judge's mean rubric scores (``workflows.judge.run_scores``) and, with ``vs``, people's
    and the judge's blind A/B win rates of ``run`` over ``vs`` (``workflows.ab.win_rates``): each
    figure with its 95 % interval and n. Sections without data say how to get it."""
    L = [f"## Evaluation of {run}", "", "### General ability (standard benchmarks, run − base)", ""]
    rows = [d for d in ability if d.delta is not None]
    if rows:
        L += _table(["benchmark", "base", "run", "delta (95% CI)", "n", ""],
                    [[d.benchmark, f"{d.base:.1f}", f"{d.run:.1f}",
                      f"{d.delta:+.1f} pt" + (f" [{d.low:+.1f}, {d.high:+.1f}]" if d.low is not None else ""),
                      str(d.n), "forgetting" if d.forgetting else ""] for d in rows])
    else:
        L.append("No benchmark scores of this run and its base at the same limit (`tuneloop eval --run RUN`).")
    L += ["", "### LLM judge (mean rubric score, 1-5)", ""]
    scored = [r for r in judge_scores.iter_rows(named=True) if r["n"]] if judge_scores is not None else []
    if scored:
        L += _table(["criterion", "mean (95% CI)", "n"],
                    [[r["criterion"], f"{r['mean']:.2f}" + (f" [{r['lo']:.2f}, {r['hi']:.2f}]" if r["lo"] is not None
                                                             else ""), str(r["n"])] for r in scored])
    else:
        L.append("Not judged (`tuneloop judge --run RUN`).")
    if vs is not None:
        for title, wr in ((f"People's blind A/B: {run} over {vs}", win_rates),
                          (f"LLM judge, pairwise in both orders: {run} over {vs}", judge_win_rates)):
            L += ["", f"### {title}", ""]
            if wr is None or not wr.height or not wr.row(0, named=True)["n"]:
                L.append("No votes yet.")
                continue
            L += _table(["items", "won", "lost", "tie", "both bad", "win rate (95% CI)", "n"],
                        [[r["category"], str(r["a"]), str(r["b"]), str(r["tie"]), str(r["both_bad"]),
                          (f"{_pct(r['win_rate'])} {_ci(r['lo'], r['hi'])}" if r["win_rate"] is not None else "-"),
                          str(r["n"])] for r in wr.iter_rows(named=True)])
            L.append("\nTies count half; 'both bad' is left out of the rate.")
    L.append("")
    return L

