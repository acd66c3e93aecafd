"""Evaluation beside the error analysis on the Compare page: general ability on standard benchmarks
(lm-evaluation-harness, ``workflows/benchmarks.py``) and an LLM judge's rubric scores
(``workflows/judge.py``), each run against its base or per criterion, with 95 % intervals and n.

Charts first (people read a chart faster than a table); every text from data is plain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import altair as alt
import polars as pl
import streamlit as st

from app import components as ui
from app import state

DEFAULT_MAX_DROP = 2.0  # points a benchmark may drop before Compare warns of forgetting (``tuneloop eval --max-drop``)


@st.cache_data(ttl=60, show_spinner=False, max_entries=16)
def _ability(root: str, run_id: str, version: int) -> pl.DataFrame:
    from workflows.benchmarks import newest_general_ability

    rows = [vars(d) for d in newest_general_ability(state.project(), run_id, max_drop=DEFAULT_MAX_DROP)]
    return pl.DataFrame(rows) if rows else pl.DataFrame()


@st.cache_data(ttl=60, show_spinner=False, max_entries=16)
def _judged(root: str, prediction_set_id: str, version: int) -> pl.DataFrame:
    from workflows.judge import run_scores

    return run_scores(state.project(), prediction_set_id)


@st.cache_data(ttl=60, show_spinner=False, max_entries=16)
def _win_rates(root: str, run_x: str, run_y: str, version: int, judges: bool = False) -> pl.DataFrame:
    from workflows.ab import win_rates

    return win_rates(state.project(), run_x, run_y, judges=judges)


@st.cache_data(ttl=60, show_spinner=False, max_entries=16)
def _pairwise_agreement(root: str, run_x: str, run_y: str, version: int) -> dict:
    from workflows.judge import pairwise_agreement

    return pairwise_agreement(state.project(), run_x, run_y)


@st.cache_data(ttl=60, show_spinner=False, max_entries=4)
def _agreement(root: str, version: int):
    from workflows.judge import agreement

    return agreement(state.project())


def beside_errors(run_a: str, run_b: str, label: Callable[[str], str], prediction_sets: Mapping[str, str]) -> None:
    """General ability and judge scores of runs A and B (``prediction_sets``: each run's compared set)."""
    root, version = str(state.project().root), state.bump_count()
    names = {run_a: "A", run_b: "B"}

    st.subheader("General ability: standard benchmarks against the base model")
    frames = [_ability(root, r, version).with_columns(pl.lit(f"{names[r]}: {label(r)}").alias("run"))
              for r in (run_a, run_b) if not _ability(root, r, version).is_empty()]
    if not frames:
        st.caption("No benchmark scores for these runs yet. Score them (and their base) from local copies of the "
                   "benchmarks: tuneloop eval --run RUN --bench mmlu,arc_challenge,hellaswag,truthfulqa_mc2 "
                   "--bench-dir DIR --limit 200 (docs/training.md, 'Standard benchmarks').")
    else:
        ga = pl.concat(frames, how="diagonal_relaxed").filter(pl.col("delta").is_not_null())
        forgot = ga.filter(pl.col("forgetting"))
        for r in forgot.iter_rows(named=True):
            st.warning(f"Forgetting: {ui.esc(r['run'])} lost {-r['delta']:.1f} points on {ui.esc(r['benchmark'])} "
                       f"against its base (95 % interval {r['low']:+.1f} to {r['high']:+.1f}; more than "
                       f"{DEFAULT_MAX_DROP:g} points)")
        if ga.height:
            df = ga.select("run", "benchmark", "base", "delta", "low", "high", "n").to_pandas()
            base = alt.Chart(df).encode(y=alt.Y("benchmark:N", title=None), yOffset="run:N")
            bars = base.mark_bar().encode(
                x=alt.X("delta:Q", title="run − base, points (95 % interval)"), color=alt.Color("run:N", title=None),
                tooltip=["run", "benchmark", alt.Tooltip("base:Q", format=".1f"), alt.Tooltip("delta:Q", format="+.1f"),
                         alt.Tooltip("low:Q", format="+.1f"), alt.Tooltip("high:Q", format="+.1f"), "n"])
            rules = base.mark_rule().encode(x="low:Q", x2="high:Q")
            st.altair_chart(bars + rules, width="stretch")
        else:
            st.caption("Benchmark scores exist, but not for the base at the same --limit: no deltas yet.")

    st.subheader("People's blind A/B: win rate of B over A")
    wr = _win_rates(root, run_b, run_a, version).rename({"a": "B wins", "b": "A wins"})  # in B-over-A terms
    if wr.is_empty() or wr.row(0, named=True)["n"] == 0:
        st.caption("No blind A/B votes on these two runs yet: vote on the Blind A/B page (names hidden, order "
                   "randomised).")
    else:
        top = wr.row(0, named=True)
        st.caption(f"{top['n']} decided or tied votes (ties count half; {top['both_bad']} 'both bad' left out): "
                   f"B wins {100 * top['win_rate']:.0f} % [{100 * top['lo']:.0f}, {100 * top['hi']:.0f}] of them.")
        df = wr.filter(pl.col("win_rate").is_not_null()).to_pandas()
        chart = alt.Chart(df).encode(y=alt.Y("category:N", sort=None, title=None))
        dots = chart.mark_point(filled=True, size=80).encode(
            x=alt.X("win_rate:Q", title="B's win rate over A (95 % interval); 0.5 = even",
                    scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            tooltip=["category", "B wins", "A wins", "tie", "both_bad", "n", alt.Tooltip("win_rate:Q", format=".0%")])
        even = alt.Chart(pl.DataFrame({"x": [0.5]}).to_pandas()).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
        st.altair_chart(chart.mark_rule().encode(x="lo:Q", x2="hi:Q") + dots + even, width="stretch")

    jw = _win_rates(root, run_b, run_a, version, judges=True)
    jtop = jw.row(0, named=True) if jw.height else None
    if jtop and jtop["n"]:
        ag = _pairwise_agreement(root, run_b, run_a, version)
        kappa = "" if not ag["n"] else (f"; agreement with people on {ag['n']} item(s): kappa "
                                        f"{'n/a' if ag['kappa'] is None else format(ag['kappa'], '.2f')}, same choice "
                                        f"{100 * ag['exact']:.0f} %")
        st.caption(f"LLM judge, pairwise in both orders: B wins {100 * jtop['win_rate']:.0f} % "
                   f"[{100 * jtop['lo']:.0f}, {100 * jtop['hi']:.0f}] of {jtop['n']}{kappa}.")

    st.subheader("LLM judge: rubric scores (1-5)")
    judged = [(_judged(root, prediction_sets[r], version).with_columns(pl.lit(f"{names[r]}: {label(r)}").alias("run")))
              for r in (run_a, run_b) if prediction_sets.get(r)]
    judged = [j.filter(pl.col("n") > 0) for j in judged]
    if not any(j.height for j in judged):
        st.caption("No judge scores for these predictions yet: tuneloop judge --run RUN (the bundled model, or "
                   "--endpoint URL --model NAME for a stronger judge).")
        return
    jf = pl.concat([j for j in judged if j.height], how="diagonal_relaxed").to_pandas()
    base = alt.Chart(jf).encode(y=alt.Y("criterion:N", title=None, sort=None), yOffset="run:N")
    bars = base.mark_bar().encode(x=alt.X("mean:Q", title="mean score (95 % interval)", scale=alt.Scale(domain=[1, 5])),
                                  color=alt.Color("run:N", title=None),
                                  tooltip=["run", "criterion", alt.Tooltip("mean:Q", format=".2f"), "n"])
    rules = base.mark_rule().encode(x="lo:Q", x2="hi:Q")
    st.altair_chart(bars + rules, width="stretch")
    a = _agreement(root, version)
    if a.n:
        kappa = "n/a" if a.kappa is None else f"{a.kappa:.2f}"
        st.caption(f"How far to trust the judge: on {a.n} pair responses rated by reviewers, weighted kappa {kappa}, "
                   f"exact agreement {100 * (a.exact or 0):.0f} %, within one point {100 * (a.within_one or 0):.0f} %.")
    else:
        st.caption("The judge's agreement with people is not measured yet: rate pairs in Review, then "
                   "tuneloop judge --pairs --rated.")
