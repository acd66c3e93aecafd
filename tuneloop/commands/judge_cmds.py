"""`tuneloop judge`: an LLM judge's rubric scores of a run's predictions or of pairs' responses."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tuneloop.common import AuthorOpt, ProjectOpt, console, default_author, fail, project
from tuneloop.progress import progress


def judge_cmd(
    run: Annotated[str | None, typer.Option("--run", "-r", help="Judge this run's newest eval predictions.")] = None,
    prediction_set: Annotated[str | None, typer.Option("--set", help="Judge this prediction set of the run.")] = None,
    vs: Annotated[str | None, typer.Option("--vs", help="With --run: compare its answers with this run's, pairwise, "
                                                         "in both orders (stored as the judge's blind A/B votes).")] = None,
    pairs: Annotated[bool, typer.Option("--pairs", help="Judge pairs' current responses against their source.")] = False,
    rated: Annotated[bool, typer.Option("--rated", help="With --pairs: only pairs a reviewer rated.")] = False,
    agreement_only: Annotated[bool, typer.Option("--agreement", help="Only print the judge's agreement with reviewers.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N items.")] = None,
    model: Annotated[str | None, typer.Option(help="Judging model: an HF id or folder (default: the bundled "
                                                    "model), or with --endpoint the name the server serves.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="An OpenAI-compatible server (vLLM, llama.cpp, Ollama), "
                                                      "e.g. http://127.0.0.1:8000/v1.")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable holding the server's API key.")] = "OPENAI_API_KEY",
    batch_size: Annotated[int, typer.Option(help="Items per judge batch.")] = 8,
    categorise: Annotated[bool, typer.Option("--categorise/--no-categorise",
                                             help="After judging predictions, propose hallucination where the judge "
                                                  "found the answer unfaithful (`tuneloop errors auto`).")] = True,
    project_dir: ProjectOpt = None,
    author: AuthorOpt = "",
) -> None:
    """Score answers with an LLM judge: correct, faithful (to the source span), complete and concise,
    1-5 each with a reason; stored per prediction (or per pair revision) and shown with the judge's
    agreement with reviewers' ratings (quadratic-weighted kappa), so you know how far to trust it.

    Example: tuneloop judge --run run_01ab... --limit 50
    Example: tuneloop judge --run B-corrected --vs A-noisy --limit 100   (pairwise, both orders)
    Example: tuneloop judge --pairs --rated --endpoint http://127.0.0.1:8000/v1 --model qwen2.5-7b-instruct
    """
    from ingest.generators.model import ModelError
    from workflows import judge as wf

    p = project(project_dir)
    if sum(bool(x) for x in (run, pairs, agreement_only)) != 1:
        raise fail("pass one of --run RUN, --pairs or --agreement")
    if rated and not pairs:
        raise fail("--rated goes with --pairs")
    if vs and not run:
        raise fail("--vs goes with --run")
    if not agreement_only:
        try:
            judge = wf.backend(model, endpoint, api_key_env)
        except Exception as exc:  # noqa: BLE001 - a backend that cannot start is one line, not a traceback
            raise fail(str(exc)) from None
        with progress("judge") as bar:
            bar.update(info="loading the judge")
            tick = lambda done, total: bar.update(done, total, info="")  # noqa: E731
            try:
                if run and vs:
                    res = wf.judge_pairwise(p, run, vs, judge=judge, limit=limit, batch_size=batch_size, progress=tick)
                elif run:
                    res = wf.judge_predictions(p, run, judge=judge, prediction_set=prediction_set, limit=limit,
                                               batch_size=batch_size, categorise=categorise,
                                               author=author or default_author(), progress=tick)
                else:
                    res = wf.judge_pairs(p, judge=judge, rated_only=rated, limit=limit, batch_size=batch_size,
                                         author=author or default_author(), progress=tick)
            except (KeyError, ValueError, ModelError) as exc:  # ModelError: the server failed, named in the message
                raise fail(str(exc).strip('"')) from None
        if run and vs:
            _print_pairwise(p, run, vs, res)
            return
        t = Table(title=f"judge {res['judge']} ({res['rubric']}): {res['judged']} judged")
        t.add_column("criterion")
        t.add_column("mean score (1-5)", justify="right")
        for c, m in res["means"].items():
            t.add_row(c, "-" if m is None else f"{m:.2f}")
        console.print(t)
        if res["unreadable"]:
            console.print(f"{res['unreadable']} criterion score(s) could not be read from the judge's replies "
                          f"(stored without a score, with the reply as the reason)")
        if res.get("categorised"):
            c = res["categorised"]
            console.print(f"errors re-categorised: {c['labels_added']} new proposal(s)")
    a = wf.agreement(p)
    if a.n == 0:
        console.print("agreement with reviewers: no pair response is both judged and rated yet "
                      "(rate pairs in Review, then `tuneloop judge --pairs --rated`)")
    else:
        kappa = "n/a" if a.kappa is None else f"{a.kappa:.2f}"
        console.print(f"agreement with reviewers on {a.n} rated response(s): weighted kappa {kappa}, "
                      f"exact {100 * (a.exact or 0):.0f} %, within one point {100 * (a.within_one or 0):.0f} %")


def _print_pairwise(p, run: str, vs: str, res: dict) -> None:
    from workflows import judge as wf

    top = res["win_rates"].row(0, named=True) if res["win_rates"].height else None
    consistent = "n/a" if res["consistent"] is None else f"{100 * res['consistent']:.0f} %"
    console.print(f"{res['judge']}: {res['stored']} of {res['judged']} item(s) judged in both orders "
                  f"(verdicts agreeing across orders: {consistent}; disagreeing ones count as a tie)", markup=False)
    if top and top["win_rate"] is not None:
        console.print(f"judge: {run} wins {100 * top['win_rate']:.0f} % [{100 * top['lo']:.0f}, {100 * top['hi']:.0f}] "
                      f"over {vs} ({top['a']} won, {top['b']} lost, {top['tie']} tied)", markup=False)
    ag = wf.pairwise_agreement(p, run, vs)
    if ag["n"]:
        kappa = "n/a" if ag["kappa"] is None else f"{ag['kappa']:.2f}"
        console.print(f"agreement with people's blind votes on {ag['n']} item(s): kappa {kappa}, "
                      f"same choice {100 * ag['exact']:.0f} %")
    else:
        console.print("agreement with people: no item has both a blind A/B vote and a judge verdict yet")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app.command("judge")(judge_cmd)
