"""Issue 18: Compare shows general ability (benchmark deltas against the base, with the forgetting
warning), people's blind A/B win rates and the LLM judge's scores beside the per-category errors.

Real project, real page (AppTest); the stored results are written through the store's own
functions, as `tuneloop eval`, the Blind A/B page and `tuneloop judge` write them.
"""

from __future__ import annotations

from analysis.benchmarks import PRIMARY_METRIC
from store import ab as ab_store
from store import benchmarks as bench_store
from store import judge as judge_store
from store import runs as runs_store
from store.records import BenchmarkResult
from tests.test_ab import two_runs  # noqa: F401 - the fixture: two runs answering the same 20 prompts
from tests.test_app_pages import app
from tests.test_train_loop_app import _chart_rows


def _result(run_id: str, bench: str, value: float) -> BenchmarkResult:
    return BenchmarkResult(id="", run_id=run_id, benchmark=bench, task=bench, metric=PRIMARY_METRIC, value=value,
                           stderr=0.01, n=400, limit=400)


def test_compare_shows_benchmarks_win_rates_and_judge_beside_the_errors(two_runs):  # noqa: F811
    p, north, south = two_runs["project"], two_runs["north"], two_runs["south"]
    with p.connect() as con:
        base = runs_store.create(con, base_model="tiny", config={}, run_dir="", kind="baseline", name="base",
                                 status="succeeded")
        bench_store.add_results(con, [_result(base.id, "arc_challenge", 0.40), _result(base.id, "hellaswag", 0.50)])
        # north lost 10 points of HellaSwag (forgetting); south is level with the base
        bench_store.add_results(con, [_result(north, "arc_challenge", 0.41), _result(north, "hellaswag", 0.40)])
        bench_store.add_results(con, [_result(south, "arc_challenge", 0.40), _result(south, "hellaswag", 0.50)])
        # people: south wins 3 items, north 1, one tie
        a, b = ab_store.canonical(north, south)
        for i, choice_for in enumerate(["south", "south", "south", "north", "tie"]):
            pa_, pb_ = (two_runs[f"{'north' if a == north else 'south'}_preds"][i][0],
                        two_runs[f"{'south' if a == north else 'north'}_preds"][i][0])
            choice = "tie" if choice_for == "tie" else ("a" if two_runs[choice_for] == a else "b")
            ab_store.add_vote(con, run_a=a, run_b=b, prediction_a=pa_, prediction_b=pb_, left="a", choice=choice,
                              author="ana")
            if i < 2:  # the judge, pairwise, agrees on the first two (south wins); no preference pair
                ab_store.add_vote(con, run_a=a, run_b=b, prediction_a=pa_, prediction_b=pb_, left="a", choice=choice,
                                  author=ab_store.JUDGE_PREFIX + "grader", preference=False)
        # the judge scored south's answers faithful 5 and north's 2
        rows = [judge_store.JudgeRow("prediction", pid, "pair", "faithful", 5 if key == "south" else 2, "r")
                for key in ("north", "south") for pid, _ in two_runs[f"{key}_preds"].values()]
        judge_store.add(con, rows, judge="grader", rubric="rubric-1:test")
    at = app("compare")
    at.selectbox(key="cmp_a").set_value(north).run()
    at.selectbox(key="cmp_b").set_value(south).run()
    assert not at.exception, [e.value for e in at.exception]
    subheaders = [s.value for s in at.subheader]
    for want in ("General ability: standard benchmarks against the base model",
                 "People's blind A/B: win rate of B over A", "LLM judge: rubric scores (1-5)"):
        assert want in subheaders
    warnings = [w.value for w in at.warning]
    assert any("Forgetting" in w and "hellaswag" in w and "lost 10.0 points" in w for w in warnings), warnings
    assert not any("Forgetting" in w and "arc_challenge" in w for w in warnings)
    rows = _chart_rows(at)
    deltas = {(r["run"][:1], r["benchmark"]): round(r["delta"], 1) for r in rows if "delta" in r and "benchmark" in r}
    assert deltas == {("A", "arc_challenge"): 1.0, ("A", "hellaswag"): -10.0, ("B", "arc_challenge"): 0.0,
                      ("B", "hellaswag"): 0.0}
    wr = {r["category"]: r for r in rows if "win_rate" in r}
    assert (wr["all items"]["B wins"], wr["all items"]["A wins"], wr["all items"]["tie"]) == (3, 1, 1)
    assert abs(wr["all items"]["win_rate"] - 3.5 / 5) < 1e-9  # B over A, a tie counts half
    judged = {(r["run"][:1], r["criterion"]): r["mean"] for r in rows if "criterion" in r and "mean" in r}
    assert judged[("A", "faithful")] == 2 and judged[("B", "faithful")] == 5
    captions = [c.value for c in at.caption]
    assert any("B wins 70 %" in c for c in captions), captions
    assert any(c.startswith("LLM judge, pairwise in both orders: B wins 100 %") and "agreement with people on 2 item(s)"
               in c and "same choice 100 %" in c for c in captions), captions


def test_report_holds_each_runs_evaluation_cli_and_app(two_runs, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from tuneloop.cli import app as cli_app

    p, north, south = two_runs["project"], two_runs["north"], two_runs["south"]
    with p.connect() as con:
        base = runs_store.create(con, base_model="tiny", config={}, run_dir="", kind="baseline", name="base",
                                 status="succeeded")
        bench_store.add_results(con, [_result(base.id, "hellaswag", 0.50)])
        bench_store.add_results(con, [_result(north, "hellaswag", 0.40)])
        a, b = ab_store.canonical(north, south)
        pa_, pb_ = (two_runs["north_preds"][0][0], two_runs["south_preds"][0][0]) if a == north else \
            (two_runs["south_preds"][0][0], two_runs["north_preds"][0][0])
        ab_store.add_vote(con, run_a=a, run_b=b, prediction_a=pa_, prediction_b=pb_, left="a",
                          choice="a" if a == south else "b", author="ana")  # south better
    out = tmp_path / "report.html"
    res = CliRunner().invoke(cli_app, ["report", "--run", north, "--vs", south, "--out", str(out),
                                       "--project", str(p.root)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    for want in ("Evaluation of run-north", "Evaluation of run-south", "forgetting", "-10.0 pt",
                 "People&#x27;s blind A/B: run-south over run-north", "Not judged"):
        assert want in html or want.replace("&#x27;", "'") in html, want
    at = app("compare")
    at.selectbox(key="cmp_a").set_value(north).run()
    at.selectbox(key="cmp_b").set_value(south).run()
    at.button(key="cmp_report").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.get("download_button"), "no download after building the report"
