"""The LLM judge as the CLI and the app use it: score a run's predictions or pairs' responses,
store the scores, propose hallucinations from low faithfulness, and measure agreement with people.

The rubric and parsing are ``analysis/judge.py``; the scores are ``store/judge.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from analysis import judge as judge_mod
from store import judge as judge_store
from store import ratings as ratings_store
from store.db import Project


def backend(model: str | None = None, endpoint: str | None = None, api_key_env: str = "OPENAI_API_KEY"):
    """The judging model: an OpenAI-compatible server when ``endpoint`` is given (``model`` is the name
    it serves), else the local runtime with ``model`` (an HF id or folder; default: the bundled model)."""
    from ingest.generators.model import LocalChat, OpenAIChat

    if endpoint:
        return OpenAIChat(endpoint, model or "", api_key=os.environ.get(api_key_env) or None)
    return LocalChat(model)


def _question(instruction: str | None, inp: str | None) -> str:
    return "\n".join(x for x in (instruction, inp) if x)


def _store(project: Project, kind: str, items: Sequence[judge_mod.Item], scores: list[list[judge_mod.Score]],
           judge_name: str, author: str) -> dict[str, Any]:
    rows = [judge_store.JudgeRow(kind, it.target_id, it.pair_id, s.criterion, s.score, s.reason)
            for it, sc in zip(items, scores, strict=True) for s in sc]
    with project.connect() as con:
        judge_store.add(con, rows, judge=judge_name, rubric=judge_mod.RUBRIC, author=author)
    means = {c: _mean([s.score for sc in scores for s in sc if s.criterion == c]) for c in judge_mod.CRITERIA}
    return {"judged": len(items), "unreadable": sum(s.score is None for sc in scores for s in sc),
            "means": means, "judge": judge_name, "rubric": judge_mod.RUBRIC}


def _mean(xs: Sequence[int | None]) -> float | None:
    got = [x for x in xs if x is not None]
    return sum(got) / len(got) if got else None


def judge_predictions(project: Project, run_ref: str, *, judge=None, prediction_set: str | None = None,
                      limit: int | None = None, batch_size: int = 8, categorise: bool = True, author: str = "",
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score a run's newest eval prediction set (or ``prediction_set``) with the judge; then, with
    ``categorise``, re-run the error pre-categorisation so low faithfulness proposes hallucination."""
    from workflows import errors as errors_workflow

    rp = errors_workflow.load(project, run_ref, prediction_set)
    rows = rp.predictions.head(limit) if limit else rp.predictions
    items = [judge_mod.Item(target_id=r["prediction_id"], pair_id=r["pair_id"],
                            question=_question(r["instruction"], r["input"]), answer=r["output"] or "",
                            reference=r["reference"] or "", source=r["source_text"] or "")
             for r in rows.iter_rows(named=True)]
    return _run(project, "prediction", items, judge, batch_size, author, progress) | (
        {"run_id": rp.run.id, "prediction_set_id": rp.prediction_set_id,
         "categorised": errors_workflow.auto(project, rp.run.id, prediction_set=rp.prediction_set_id)
         if categorise else None})


def judge_pairs(project: Project, pair_ids: Sequence[str] | None = None, *, judge=None, rated_only: bool = False,
                limit: int | None = None, batch_size: int = 8, author: str = "",
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score pairs' current responses (their head revisions) against their source: ``pair_ids``, or
    with ``rated_only`` the pairs a reviewer rated (what ``agreement`` compares), else every pair."""
    with project.connect() as con:
        df = judge_store.responses(con, rated_only=rated_only)
    if pair_ids is not None:
        df = df.filter(pl.col("pair_id").is_in(list(pair_ids)))
    if limit:
        df = df.head(limit)
    items = [judge_mod.Item(target_id=r["revision_id"], pair_id=r["pair_id"],
                            question=_question(r["instruction"], r["input"]), answer=r["response"] or "",
                            source=r["source_text"] or "") for r in df.iter_rows(named=True)]
    return _run(project, "revision", items, judge, batch_size, author, progress)


def _run(project: Project, kind: str, items: list[judge_mod.Item], judge, batch_size: int, author: str,
         progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    judge = judge or backend()
    done = [0]
    if progress:
        progress(0, len(items))

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], len(items))

    scores = judge_mod.judge(judge, items, batch_size=batch_size, progress=tick)
    return _store(project, kind, items, scores, judge.name, author)


def agreement(project: Project, judge_name: str | None = None) -> judge_mod.Agreement:
    """The judge's agreement with reviewers on pair responses both scored (``analysis.judge.agreement``):
    per revision, the judge's overall score (the rounded mean of its criteria, latest per criterion;
    of one judge when named, else of every judge together) against the mean reviewer rating."""
    with project.connect() as con:
        js = judge_store.latest(con, target_kind="revision", judge=judge_name)
        if js.is_empty():
            return judge_mod.agreement([], [])
        human = ratings_store.scores(con, js["target_id"].unique().to_list())
    per = (js.filter(pl.col("score").is_not_null()).group_by("target_id")
           .agg(pl.col("score").alias("scores")))
    judged = {r["target_id"]: judge_mod.overall(r["scores"]) for r in per.iter_rows(named=True)}
    both: list[tuple[int, float]] = []
    for r in human.iter_rows(named=True):
        j = judged.get(r["revision_id"])
        if j is not None:
            both.append((j, r["rating"]))
    return judge_mod.agreement([j for j, _ in both], [h for _, h in both])


def judge_pairwise(project: Project, run_x: str, run_y: str, *, judge=None, limit: int | None = None,
                   batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The judge compares the two runs' answers to every prompt both answered, in both orders (each
    run's answer shown first once), and the two verdicts combine (``analysis.judge.combine_orders``:
    disagreeing orders are a tie). Each verdict is stored as a blind A/B vote by ``judge:<model>``
    (no preference pair; people's win rates leave it out). Returns counts, the share of items where
    both orders agreed, and the judge's win rates (``workflows.ab.win_rates(..., judges=True)``)."""
    from store import ab as ab_store
    from workflows import ab as ab_wf

    judge = judge or backend()
    a, b, items = ab_wf.common_answers(project, run_x, run_y)
    if limit:
        items = items.head(limit)
    with project.connect() as con:
        ctx = judge_store.responses(con)
    by_pair = {r["pair_id"]: r for r in ctx.iter_rows(named=True)}
    rows = items.to_dicts()
    done = [0]
    verdicts: list[tuple[str | None, str | None, str]] = []
    for start in range(0, len(rows), max(1, batch_size)):
        batch = rows[start:start + batch_size]
        convs = []
        for r in batch:
            c = by_pair.get(r["pair_id"], {})
            it = judge_mod.Item(r["prediction_a"], r["pair_id"], question=_question(c.get("instruction"), c.get("input"))
                                or (r["prompt"] or ""), answer="", reference=r["reference"] or "",
                                source=c.get("source_text") or "")
            convs += [judge_mod.pair_prompt(it, r["output_a"] or "", r["output_b"] or ""),
                      judge_mod.pair_prompt(it, r["output_b"] or "", r["output_a"] or "")]
        replies = judge.chat(convs, max_new_tokens=128, temperature=0.0)
        for i in range(len(batch)):
            (v1, why1), (v2, why2) = judge_mod.parse_preference(replies[2 * i]), judge_mod.parse_preference(replies[2 * i + 1])
            c1 = _runs_choice(v1, "a")
            c2 = _runs_choice(v2, "b")
            verdicts.append((c1, c2, f"{a} shown first: {c1 or 'unreadable'} ({why1}); {b} shown first: "
                                     f"{c2 or 'unreadable'} ({why2})"))
        done[0] += len(batch)
        if progress:
            progress(done[0], len(rows))
    author = ab_store.JUDGE_PREFIX + judge.name
    stored = 0
    with project.connect() as con:
        for r, (c1, c2, why) in zip(rows, verdicts, strict=True):
            final = judge_mod.combine_orders(c1, c2)
            if final is None:
                continue
            ab_store.add_vote(con, run_a=a, run_b=b, prediction_a=r["prediction_a"], prediction_b=r["prediction_b"],
                              left="a", choice=final, author=author, reason=why[:1000], preference=False)
            stored += 1
    readable = [(c1, c2) for c1, c2, _ in verdicts if c1 is not None and c2 is not None]
    return {"judged": len(rows), "stored": stored, "unreadable": len(rows) - stored, "judge": author,
            "consistent": sum(c1 == c2 for c1, c2 in readable) / len(readable) if readable else None,
            "win_rates": ab_wf.win_rates(project, run_x, run_y, judges=True)}


def _runs_choice(screen: str | None, left: str) -> str | None:
    """A judge's screen verdict ("1", "2", "tie") as a choice between the runs (None stays None)."""
    from analysis.ab import canonical_choice

    return None if screen is None else canonical_choice(screen, left)


def pairwise_agreement(project: Project, run_x: str, run_y: str) -> dict[str, Any]:
    """How often the judge's pairwise verdicts agree with people's on the items both voted on: per
    item, people's majority choice (a, b or tie; 'both bad' left out; an even split is skipped)
    against the judge's latest; Cohen's kappa (scikit-learn) and the exact share, with n."""
    from collections import Counter

    from sklearn.metrics import cohen_kappa_score

    from store import ab as ab_store

    with project.connect() as con:
        people = ab_store.votes(con, run_x, run_y)
        judged = ab_store.votes(con, run_x, run_y, judges=True)
    by_item: dict[tuple[str, str], Counter[str]] = {}
    for v in people:
        if v.choice != "both_bad":
            by_item.setdefault((v.prediction_a, v.prediction_b), Counter())[v.choice] += 1
    verdict = {(v.prediction_a, v.prediction_b): v.choice for v in judged}
    both: list[tuple[str, str]] = []
    for item, counts in by_item.items():
        top = counts.most_common(2)
        if item in verdict and (len(top) == 1 or top[0][1] > top[1][1]):
            both.append((top[0][0], verdict[item]))
    n = len(both)
    if n == 0:
        return {"n": 0, "kappa": None, "exact": None}
    hs, js = [h for h, _ in both], [j for _, j in both]
    kappa = float(cohen_kappa_score(hs, js, labels=["a", "b", "tie"])) if len(set(hs) | set(js)) > 1 else None
    return {"n": n, "kappa": None if kappa != kappa else kappa, "exact": sum(h == j for h, j in both) / n}


def run_scores(project: Project, prediction_set_id: str) -> pl.DataFrame:
    """Per criterion, a prediction set's judge scores: mean, a 95 % interval (normal, from the
    standard error; n >= 2) and n, over the scores that count (one judge's or several)."""
    with project.connect() as con:
        js = judge_store.latest(con, judge_store.prediction_ids(con, prediction_set_id), target_kind="prediction")
    out = []
    for c in judge_mod.CRITERIA:
        xs = [float(x) for x in js.filter((pl.col("criterion") == c) & pl.col("score").is_not_null())["score"]]
        n = len(xs)
        mean = sum(xs) / n if n else None
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n >= 2 and mean is not None else None
        half = 1.96 * sd / math.sqrt(n) if sd is not None else None
        out.append({"criterion": c, "mean": mean, "lo": mean - half if half is not None and mean is not None else None,
                    "hi": mean + half if half is not None and mean is not None else None, "n": n})
    return pl.DataFrame(out, schema={"criterion": pl.String, "mean": pl.Float64, "lo": pl.Float64, "hi": pl.Float64,
                                     "n": pl.Int64})


def evaluation_report(project: Project, run_ref: str, vs: str | None = None, *, max_drop: float = 2.0) -> list[str]:
    """The report's evaluation section of a run (Markdown lines, ``analysis.errors.report.evaluation_markdown``):
    benchmark deltas against its base, judge scores of its newest eval predictions and, with ``vs``,
    people's and the judge's blind A/B win rates over ``vs``."""
    from analysis.errors.report import evaluation_markdown
    from store import ab as ab_store
    from store import runs as runs_store
    from workflows import ab as ab_wf
    from workflows.benchmarks import newest_general_ability

    with project.connect() as con:
        run = runs_store.get(con, run_ref)
        other = runs_store.get(con, vs) if vs is not None else None
        psid = ab_store.newest_eval_set(con, run.id)
    scores = run_scores(project, psid) if psid else None
    wr = jwr = None
    if vs is not None:
        try:
            wr, jwr = ab_wf.win_rates(project, run.id, vs), ab_wf.win_rates(project, run.id, vs, judges=True)
        except ValueError:  # the same run twice: no A/B
            wr = jwr = None
    return evaluation_markdown(run.name or run.id, newest_general_ability(project, run.id, max_drop=max_drop), scores,
                               vs=(other.name or other.id) if other is not None else None, win_rates=wr,
                               judge_win_rates=jwr)


__all__ = ["agreement", "backend", "evaluation_report", "judge_pairs", "judge_pairwise", "judge_predictions", "pairwise_agreement",
           "run_scores"]
