"""Issue 18 point 2: an LLM judge's rubric scores, stored per prediction and per pair response,
proposing hallucination where it finds an answer unfaithful, with its agreement with reviewers.

The judge is a real OpenAI-compatible HTTP server in a thread (a scripted grader: it reads the
prompt tuneloop sends and grades by a fixed rule, so the expected scores are known), driven
through the real client, the CLI and a real DuckDB project; and the real local runtime on the tiny
model, whose replies are not JSON at all.
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from analysis.judge import CRITERIA, RUBRIC, agreement, parse, prompt
from ingest.generators.model import LocalChat, OpenAIChat
from store import errors as errors_store
from store import judge as judge_store
from store import ratings as ratings_store
from store import runs as runs_store
from tests.local_http import reply, serving
from tests.test_ab import two_runs  # noqa: F401 - fixture: two runs answering the same 20 prompts
from tests.training_fixtures import make_slice, tiny_model_dir
from training.predict import create_baseline
from tuneloop.cli import app
from workflows import judge as wf

EVAL = [("Where is the warehouse?", "The warehouse is in Lisbon."),
        ("How long is the warranty?", "The warranty lasts two years."),
        ("Who answers the phone?", "The support team answers the phone."),
        ("When does the shop open?", "The shop opens at nine.")]
TRAIN = [(f"Question {i}?", f"Answer number {i}.") for i in range(4)]


def test_parse_reads_json_short_json_and_lines_and_never_guesses():
    full = parse('Sure! {"correct": {"score": 4, "reason": "matches"}, "faithful": {"score": 2, "reason": "adds a '
                 'date"}, "complete": {"score": 5, "reason": "all"}, "concise": {"score": "3", "reason": "ok"}}')
    assert [(s.criterion, s.score, s.reason) for s in full] == [
        ("correct", 4, "matches"), ("faithful", 2, "adds a date"), ("complete", 5, "all"), ("concise", 3, "ok")]
    short = parse('{"correct": 5, "faithful": 9, "complete": 1}\nconcise: 2')
    assert [s.score for s in short] == [5, None, 1, 2]  # 9 is out of range: unread, not clipped
    assert "no 1-5 score for faithful" in short[1].reason
    junk = parse("The answer looks fine to me.")
    assert all(s.score is None for s in junk) and "The answer looks fine" in junk[0].reason
    assert RUBRIC.startswith("rubric-1:")


def test_prompt_carries_source_reference_question_and_answer():
    from analysis.judge import Item

    msgs = prompt(Item("t", "p", question="Q?", answer="A.", reference="", source="The source text."))
    text = msgs[-1]["content"]
    assert "The source text." in text and "REFERENCE ANSWER:\n(none)" in text and "Q?" in text and "A." in text


def test_agreement_is_weighted_kappa_with_exact_and_within_one():
    a = agreement([5, 4, 2, 1], [5.0, 4.0, 2.0, 1.0])
    assert (a.n, a.kappa, a.exact, a.within_one) == (4, pytest.approx(1.0), 1.0, 1.0)
    b = agreement([5, 4, 2, 1], [4.0, 5.0, 1.0, 3.0])
    assert b.n == 4 and b.exact == 0.0 and b.within_one == 0.75 and 0 < b.kappa < 1
    assert agreement([], []).kappa is None


class Grader(ThreadingHTTPServer):
    """A scripted grader behind the OpenAI chat API: an answer that repeats the reference or the source
    (with neither: one without the word "number") scores correct 5 and faithful 5, others 1 and 1
    (it claims what the source lacks); complete and concise are always 4."""

    def __init__(self, grade=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = 0
        self.grade = grade or _grade

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def _grade(content: str) -> dict:
    def part(name: str) -> str:
        m = re.search(rf"^{name}:\n(.*?)\n\n", content, re.S | re.M)
        return m.group(1).strip() if m else ""

    ref, answer, source = part("REFERENCE ANSWER"), part("ANSWER"), part(r"SOURCE \(the passage the answer must be faithful to\)")
    good = answer in (ref, source) or (ref == source == "(none)" and "number" not in answer)
    s = 5 if good else 1
    return {c: {"score": s if c in ("correct", "faithful") else 4, "reason": "same as the reference" if good else "differs"}
            for c in CRITERIA}


class _Handler(BaseHTTPRequestHandler):
    server: Grader

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests += 1
        reply(self, {"choices": [{"message": {"role": "assistant",
                                              "content": json.dumps(self.server.grade(body["messages"][-1]["content"]))}}]})


def _predictions(project) -> tuple[str, str, dict[str, str]]:
    """A baseline run with stored predictions: two repeat the reference, two do not."""
    sl = make_slice(project, "facts", TRAIN, eval_pairs=EVAL)
    rid = create_baseline(project, "facts", base_model="tiny", name="answers")
    with project.connect() as con:
        from store import slices as slices_store

        ex = slices_store.examples(con, sl.id, "eval").to_dicts()
        outs = {e["pair_id"]: (e["response"] if i < 2 else "It is in Madrid, since 1990.") for i, e in enumerate(ex)}
        psid = runs_store.add_predictions(con, run_id=rid, model="tiny", generation_config={}, slice_id=sl.id,
                                          split="eval", rows=[{"pair_id": e["pair_id"], "revision_id": e["revision_id"],
                                                               "prompt": e["instruction"], "output": outs[e["pair_id"]],
                                                               "reference": e["response"]} for e in ex])
    return rid, psid, outs


def test_judged_predictions_are_stored_and_low_faithfulness_proposes_hallucination(project):
    rid, psid, outs = _predictions(project)
    with serving(Grader()) as srv:
        res = wf.judge_predictions(project, rid, judge=OpenAIChat(srv.url, "grader"), batch_size=3)
    assert srv.requests == len(EVAL) and res["judged"] == len(EVAL) and res["unreadable"] == 0
    assert res["means"]["correct"] == pytest.approx(3.0) and res["means"]["concise"] == pytest.approx(4.0)
    with project.connect() as con:
        js = judge_store.latest(con, target_kind="prediction")
        preds = errors_store.predictions_with_source(con, psid)
        labels = errors_store.current_labels(con, psid)
    assert js.height == len(EVAL) * len(CRITERIA) and set(js["judge"]) == {"grader"} and set(js["rubric"]) == {RUBRIC}
    faithful = dict(zip(preds["pair_id"], preds["judge_faithful"]))
    assert faithful == {p: (5 if o != "It is in Madrid, since 1990." else 1) for p, o in outs.items()}
    hall = labels.filter(labels["category_id"] == "hallucination")
    bad = {p for p, o in outs.items() if o.startswith("It is in Madrid")}
    assert set(hall["pair_id"]) == bad
    scores = wf.run_scores(project, psid)
    row = scores.filter(scores["criterion"] == "faithful").row(0, named=True)
    assert row["n"] == 4 and row["mean"] == pytest.approx(3.0) and row["lo"] < 3.0 < row["hi"]


def test_pairs_judged_against_their_source_and_agreement_with_reviewers_cli(project):
    make_slice(project, "facts", TRAIN, eval_pairs=EVAL)
    with project.connect() as con:
        from store.db import frame

        pairs = frame(con, "SELECT p.id, r.response FROM pairs p JOIN pair_revisions r ON r.id = p.head_revision_id "
                           "ORDER BY p.id").to_dicts()
        human = {p["id"]: 2 if "number" in p["response"] else 5 for p in pairs}
        for pid, v in human.items():
            ratings_store.rate(con, pid, v, author="ana")
        ratings_store.rate(con, pairs[0]["id"], 4, author="ben")  # a second reviewer: the mean counts
    assert wf.agreement(project).n == 0
    with serving(Grader()) as srv:
        out = CliRunner().invoke(app, ["judge", "--pairs", "--rated", "--endpoint", srv.url, "--model", "grader",
                                       "--project", str(project.root)])
    assert out.exit_code == 0, out.output
    # "Answer number i." is graded 1, 1, 4, 4 (overall 3: the mean 2.5 rounds up), the others 5, 5, 4, 4 (5)
    from sklearn.metrics import cohen_kappa_score

    judged = {pid: 3 if v == 2 else 5 for pid, v in human.items()}
    people = {pid: round((v + (4 if pid == pairs[0]["id"] else v)) / 2 + 1e-9) for pid, v in human.items()}
    a = wf.agreement(project)
    assert a.n == len(pairs)
    assert a.exact == pytest.approx(sum(judged[k] == people[k] for k in judged) / len(pairs))
    assert a.within_one == pytest.approx(sum(abs(judged[k] - people[k]) <= 1 for k in judged) / len(pairs))
    assert a.kappa == pytest.approx(cohen_kappa_score([judged[k] for k in judged], [people[k] for k in judged],
                                                      weights="quadratic", labels=[1, 2, 3, 4, 5]))
    assert a.kappa > 0.5
    assert f"agreement with reviewers on {len(pairs)} rated response(s)" in out.output
    with project.connect() as con:
        assert judge_store.latest(con, target_kind="revision")["target_id"].n_unique() == len(pairs)


def test_the_local_runtime_judges_and_unreadable_replies_are_stored_without_a_score(project):
    rid, psid, _ = _predictions(project)
    res = wf.judge_predictions(project, rid, judge=LocalChat(str(tiny_model_dir())), limit=2, categorise=False)
    assert res["judged"] == 2
    with project.connect() as con:
        js = judge_store.latest(con, target_kind="prediction")
    assert js.height == 2 * len(CRITERIA)
    unread = js.filter(js["score"].is_null())
    assert unread.height == res["unreadable"]
    assert all("in the judge's reply" in r for r in unread["reason"])


def test_judge_cli_refuses_unclear_requests(project):
    out = CliRunner().invoke(app, ["judge", "--project", str(project.root)])
    assert out.exit_code != 0 and "pass one of --run RUN, --pairs or --agreement" in out.output
    out = CliRunner().invoke(app, ["judge", "--agreement", "--project", str(project.root)])
    assert out.exit_code == 0 and "no pair response is both judged and rated yet" in out.output


def _prefers_crisp(content: str) -> dict:
    """A fair pairwise grader: the answer that says "crisp" is better, wherever it is shown."""
    first = re.search(r"^ANSWER 1:\n(.*?)\n\n", content, re.S | re.M).group(1)
    return {"better": "1" if "crisp" in first else "2", "reason": "the crisp one"}


def _always_first(content: str) -> dict:
    """A position-biased grader: always the answer shown first."""
    return {"better": "1", "reason": "first"}


def test_pairwise_judge_both_orders_cancel_position_bias_and_agreement_with_people(two_runs):  # noqa: F811
    from store import ab as ab_store
    from store import errors as errors_store
    from workflows import ab as ab_wf

    p, north, south = two_runs["project"], two_runs["north"], two_runs["south"]
    with serving(Grader(_always_first)) as srv:
        biased = wf.judge_pairwise(p, north, south, judge=OpenAIChat(srv.url, "biased"), limit=5, batch_size=2)
    assert srv.requests == 10 and biased["stored"] == 5 and biased["consistent"] == 0.0  # every item a tie
    top = biased["win_rates"].row(0, named=True)
    assert (top["a"], top["b"], top["tie"]) == (0, 0, 5)
    with serving(Grader(_prefers_crisp)) as srv:
        out = CliRunner().invoke(app, ["judge", "--run", north, "--vs", south, "--endpoint", srv.url, "--model", "fair",
                                       "--project", str(p.root)])
    assert out.exit_code == 0, out.output
    assert "verdicts agreeing across orders: 100 %" in out.output
    fair = ab_wf.win_rates(p, north, south, judges=True)
    assert fair.row(0, named=True)["a"] == 20 + 0 and fair.row(0, named=True)["win_rate"] > 0.5  # the biased judge's 5 ties
    with p.connect() as con:
        judged = ab_store.votes(con, north, south, judges=True)
        assert {v.author for v in judged} == {"judge:biased", "judge:fair"}
        assert all(v.preference_pair_id is None for v in judged)
        assert errors_store.preference_pairs(con) == []  # judges write no DPO data
        assert ab_store.votes(con, north, south) == []  # people's votes hold none of the judges'
        # people: north better on items 0-2, south on 3 (the fair judge disagrees there)
        a, b = ab_store.canonical(north, south)
        for i, winner in enumerate(["north", "north", "north", "south"]):
            pn, ps = two_runs["north_preds"][i][0], two_runs["south_preds"][i][0]
            pa_, pb_ = (pn, ps) if a == north else (ps, pn)
            ab_store.add_vote(con, run_a=a, run_b=b, prediction_a=pa_, prediction_b=pb_, left="a",
                              choice="a" if two_runs[winner] == a else "b", author="ana")
    assert ab_wf.win_rates(p, north, south).row(0, named=True)["n"] == 4
    ag = wf.pairwise_agreement(p, north, south)
    assert ag["n"] == 4 and ag["exact"] == 0.75


def test_errors_page_filters_by_the_judges_score(project, monkeypatch):
    from store import error_pages
    from tests.test_app_pages import app as page

    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    rid, psid, outs = _predictions(project)
    with serving(Grader()) as srv:
        wf.judge_predictions(project, rid, judge=OpenAIChat(srv.url, "grader"))
    bad = {p for p, o in outs.items() if o.startswith("It is in Madrid")}
    with project.connect() as con:
        low = error_pages.error_examples(con, psid, judge_low=("faithful", 2))
        assert set(low["pair_id"]) == bad
        assert all("faithful 1" in j for j in low["judge"])
        assert error_pages.error_example_count(con, psid, judge_low=("faithful", 2)) == len(bad)
        assert error_pages.error_example_count(con, psid, judge_low=("concise", 2)) == 0
    at = page("errors")
    at.selectbox(key="er_judge").set_value(("faithful", 2)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"{len(bad)} predictions" in c.value for c in at.caption), [c.value for c in at.caption]


def test_an_unreachable_judge_server_is_one_clear_line(project):
    import socket

    rid, _, _ = _predictions(project)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = CliRunner().invoke(app, ["judge", "--run", rid, "--endpoint", f"http://127.0.0.1:{port}/v1", "--model", "m",
                                   "--project", str(project.root)])
    assert out.exit_code == 2 and isinstance(out.exception, SystemExit), out.exception  # `fail`, not a traceback
    assert f"cannot reach the chat endpoint http://127.0.0.1:{port}/v1/chat/completions" in out.output
    assert "Traceback" not in out.output
