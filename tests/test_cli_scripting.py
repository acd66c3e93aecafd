"""The CLI for people and for scripts: whole ids, id prefixes, --json, plain progress lines,
import options, predict options, pair ids in `errors correct`, and `retrain --wait` outcomes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from store import errors as errors_store
from store import pairs as pairs_store
from store import runs as runs_store
from store import slices as slices_store
from store.refs import AmbiguousId, NoSuchId
from tests.errors_fixtures import INTENTS, add_intent_pairs, make_run, store_predictions
from tests.errors_fixtures import make_slice as freeze_slice
from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from tuneloop.cli import app
from tuneloop.progress import Reporter

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def cli(project, *args, ok: bool = True, columns: int = 250):
    res = runner.invoke(app, [*args, "--project", str(project.root)], env={"COLUMNS": str(columns)})
    if ok:
        assert res.exit_code == 0, res.output
    return res


@pytest.fixture
def runs(project):
    """Runs A and B with eval predictions on a label slice (no training)."""
    with project.connect() as con:
        ids = add_intent_pairs(con)
        sl = freeze_slice(con, ids, eval_ids=ids[::2])
    lab = {pid: label for pid, (_, label) in zip(ids, INTENTS)}
    e0, e1, e2, e3 = ids[::2]
    a = make_run(project, sl.id, "A")
    store_predictions(project, a, {e0: lab[e0], e1: "card_arrival", e2: "top_up_transfer", e3: "card_arrival"})
    b = make_run(project, sl.id, "B", parent=a)
    store_predictions(project, b, {e0: lab[e0], e1: lab[e1], e2: "declined_payment", e3: lab[e3]})
    return {"A": a, "B": b, "slice": sl, "ids": ids, "eval": [e0, e1, e2, e3]}


# ------------------------------------------------------------------ ids: whole, and by prefix


def test_tables_print_whole_ids_at_80_columns(project, runs):
    out = cli(project, "runs", "list", columns=80).stdout
    assert runs["A"] in out and runs["B"] in out
    out = cli(project, "slice", "list", columns=80).stdout
    assert runs["slice"].id in out
    out = cli(project, "pairs", "list", columns=80).stdout
    assert all(pid in out for pid in runs["ids"][:3])
    cli(project, "errors", "auto", "--run", "A")
    out = cli(project, "queue", "--run", "A", columns=80).stdout
    with project.connect() as con:
        psid = runs_store.latest_prediction_set(con, runs["A"])
        pred_ids = runs_store.predictions_frame(con, psid)["prediction_id"].to_list()
    assert any(pid in out for pid in pred_ids)


def test_every_id_kind_resolves_an_unambiguous_prefix(project, runs):
    with project.connect() as con:
        a, b = runs["A"], runs["B"]
        assert runs_store.get(con, a[:-3]).id == a
        with pytest.raises(AmbiguousId) as amb:
            runs_store.get(con, "run_")
        assert a in str(amb.value) and b in str(amb.value) and "ambiguous" in str(amb.value)
        with pytest.raises(NoSuchId, match="no such run 'run_zz'"):
            runs_store.get(con, "run_zz")
        sl = runs["slice"]
        assert slices_store.get(con, sl.id[:-4]).id == sl.id
        pid = runs["ids"][0]
        assert pairs_store.get(con, pid[:12]).id == pid and pairs_store.resolve(con, pid[:12]) == pid
        with pytest.raises(AmbiguousId):
            pairs_store.resolve(con, "p_")
        psid = runs_store.latest_prediction_set(con, a)
        assert runs_store.resolve_prediction_set(con, psid[:-2]) == psid
        pred = runs_store.predictions_frame(con, psid)["prediction_id"][0]
        assert errors_store.resolve_prediction(con, pred[:10]) == pred

    # the same through the CLI: a prefix works, an ambiguous one lists candidates, none says so
    assert json.loads(cli(project, "metrics", "--run", runs["A"][:-3], "--json").stdout) == []
    res = cli(project, "metrics", "--run", "run_", ok=False)
    assert res.exit_code == 2 and "ambiguous" in res.output and runs["B"] in res.output
    res = cli(project, "pairs", "show", "p_", ok=False)
    assert res.exit_code == 2 and "ambiguous" in res.output and runs["ids"][0][:12] in res.output
    res = cli(project, "pairs", "show", "p_nothing_starts_so", ok=False)
    assert res.exit_code == 2 and "no such pair" in res.output
    res = cli(project, "pairs", "rejected", runs["ids"][1][:10])
    assert "1 pair(s) marked rejected" in res.stdout
    res = cli(project, "slice", "show", runs["slice"].id[:-4])
    assert runs["slice"].id in res.stdout


def test_listing_commands_print_only_json_with_json(project, runs):
    cli(project, "errors", "auto", "--run", "A")
    for args, check in [
        (["runs", "list"], lambda d: {r["id"] for r in d} == {runs["A"], runs["B"]}),
        (["slice", "list"], lambda d: d[0]["id"] == runs["slice"].id),
        (["pairs", "list", "--limit", "3"], lambda d: len(d) == 3 and d[0]["id"].startswith("p_")),
        (["documents", "list"], lambda d: d == []),
        (["taxonomy", "list"], lambda d: "wrong_label" in {c["id"] for c in d}),
        (["queue", "--run", "A"], lambda d: all("prediction_id" in r for r in d) and d),
        (["metrics", "--run", "A"], lambda d: isinstance(d, list)),
        (["stats"], lambda d: d["pairs"] == len(INTENTS)),
    ]:
        res = cli(project, *args, "--json")
        assert check(json.loads(res.stdout)), args
    lines = cli(project, "errors", "list", "--run", "A", "--json").stdout.splitlines()
    assert lines and all(json.loads(x)["prediction_id"] for x in lines)


# ------------------------------------------------------------------ progress


def test_plain_progress_lines_are_rate_limited_and_end_with_the_total():
    clock = [0.0]
    out = io.StringIO()
    rep = Reporter("predict", stream=out, clock=lambda: clock[0])
    rep.update(0, 3079)
    for done in range(1, 101):  # a burst of quick updates: no line
        clock[0] += 0.001
        rep.update(done)
    clock[0] = 1200 / 52.1
    rep.update(1200)  # 23 s since the last line
    clock[0] += 0.5
    rep.update(1600)  # +13 % but only half a second later: no line
    clock[0] += 1.0
    rep.update(1700)  # +16 % since the last line, 1.5 s later
    clock[0] += 3.0
    rep.update(3079)
    rep.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "predict: 0/3079 (0%)"
    assert lines[1] == "predict: 1200/3079 (39%) 52.1/s"
    assert lines[2].startswith("predict: 1700/3079 (55%)")
    assert lines[3].startswith("predict: 3079/3079 (100%)") and len(lines) == 4


def test_predict_prints_progress_lines_when_not_a_terminal(project):
    tiny = str(tiny_model_dir())
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=[("What colour is the sea?", "blue")] * 1
               + [("What colour is milk?", "white"), ("What colour is ash?", "grey")])
    res = cli(project, "predict", "--base", tiny, "--slice", "memo", "--max-new-tokens", "2", "--batch-size", "1",
              "--no-perplexity")
    assert "predict: 3/3 (100%)" in res.stderr
    assert "predict: loading model" in res.stderr
    assert "predict:" not in res.stdout
    with project.connect() as con:
        rid = runs_store.list_runs(con)[0].id
        psid = runs_store.latest_prediction_set(con, rid)
        names = set(runs_store.metrics_of(con, psid)["name"])
        gen = json.loads(runs_store.prediction_set(con, psid)["generation_config"])
    assert "perplexity" not in names and gen["reference_perplexity"] is False


def test_label_task_default_max_new_tokens_covers_the_longest_label(project):
    from models.lm import load_tokenizer
    from training.predict import predict_base

    tiny = str(tiny_model_dir())
    long_label = "balance_not_updated_after_cheque_or_cash_deposit_at_a_branch_abroad"
    train = [(f"question {i}", lab) for i, lab in enumerate(["card_arrival", "lost_card", long_label] * 3)]
    make_slice(project, "intents", train, eval_pairs=[("where is my card", "card_arrival"),
                                                      ("lost it", "lost_card")])
    _, psid = predict_base(project, "intents", base_model=tiny, perplexity=False)
    with project.connect() as con:
        gen = json.loads(runs_store.prediction_set(con, psid)["generation_config"])
    n_long = len(load_tokenizer(tiny)(long_label, add_special_tokens=False)["input_ids"])
    assert n_long > 16  # the old default (1.5x the longest eval reference, at least 16) cut it
    assert gen["task"] == "label" and n_long <= gen["max_new_tokens"] <= n_long + 8


# ------------------------------------------------------------------ import options


def test_import_tag_split_status_and_collisions_reported(project, tmp_path):
    first = tmp_path / "train.csv"
    first.write_text("text,category\nwhere is my card,card_arrival\ni lost my card,lost_card\n", encoding="utf-8")
    cli(project, "import", str(first), "--map", "instruction=text,response=category")
    test = tmp_path / "test.csv"
    test.write_text("text,category\nwhere is my card,card_arrival\nmy card got eaten,card_swallowed\n"
                    "what is my balance,balance\nmy card got eaten,card_swallowed\n", encoding="utf-8")
    res = cli(project, "import", str(test), "--map", "instruction=text,response=category", "--tag", "banking77",
              "--tag", "test", "--split", "eval", "--status", "accepted")
    with project.connect() as con:
        got = {p.instruction: p for p in pairs_store.query(con, limit=100)}
    new = got["what is my balance"]
    assert (new.tags, new.split, new.status) == (["banking77", "test"], "eval", "accepted")
    old = got["where is my card"]
    assert (old.tags, old.split, old.status) == ([], None, "pending")  # the stored pair is unchanged
    out = " ".join(res.stdout.split())
    assert "2 row(s) matched existing pairs (1 already in the project; 1 repeating an earlier row)" in out
    assert f"line 2 = {old.id}" in out and f"line 5 = {got['my card got eaten'].id} (repeat)" in out
    bad = cli(project, "import", str(test), "--split", "dev", ok=False)
    assert bad.exit_code == 2 and "dev" in bad.output


# ------------------------------------------------------------------ errors correct, retrain --wait


def test_errors_correct_takes_a_pair_id(project, runs):
    e1 = runs["eval"][1]
    with project.connect() as con:
        preds_a = runs_store.predictions_frame(con, runs_store.latest_prediction_set(con, runs["A"]))
    pred_a = preds_a.filter(preds_a["pair_id"] == e1)["prediction_id"][0]
    res = cli(project, "errors", "correct", e1[:12], "--run", "A", "--response", "card_arrival")
    assert f"prediction {pred_a} of run {runs['A']}" in res.stderr
    with project.connect() as con:
        assert pairs_store.get(con, e1).response == "card_arrival"
        assert {p.prediction_id for p in errors_store.preference_pairs(con, [e1])} == {pred_a}
    # without --run: the pair's newest prediction (run B's)
    res = cli(project, "errors", "correct", e1, "--use-output")
    assert f"of run {runs['B']}" in res.stderr
    res = cli(project, "errors", "correct", "p_", "--use-output", ok=False)
    assert res.exit_code == 2 and "ambiguous" in res.output


def _trainer_pids(project) -> list[int]:
    pids = []
    for st in project.runs_dir.glob("*/status.json"):
        pid = json.loads(st.read_text()).get("pid")
        if pid:
            pids.append(int(pid))
    return pids


def test_retrain_wait_reports_a_cancelled_run_and_exits_nonzero(project):
    tiny = str(tiny_model_dir())
    sl = make_slice(project, "memo", MEMO_PAIRS, eval_pairs=[("What colour is the sea?", "blue")])
    with project.connect() as con:
        parent = runs_store.create(con, base_model=tiny, config={"threads": 1}, run_dir=str(project.runs_dir / "x"),
                                   slice_id=sl.id, name="A", status="succeeded").id
    with project.connect() as con:
        sea = slices_store.items(con, sl.id, "eval")[0].pair_id
    store_predictions(project, parent, {sea: "green"}, slice_id=sl.id)
    cli(project, "errors", "correct", sea, "--run", "A", "--response", "dark blue")
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tuneloop.cli", "retrain", "--from-run", "A", "--wait",
                             "--project", str(project.root), "max_steps=1000000", "save_every=0", "eval_every=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 300
        folder = None
        while folder is None and time.monotonic() < deadline and proc.poll() is None:
            for st in project.runs_dir.glob("*/status.json"):
                if json.loads(st.read_text() or "{}").get("pid"):  # launched: CANCEL is no longer removed
                    folder = st.parent
            time.sleep(0.2)
        assert folder is not None, proc.communicate()
        (folder / "CANCEL").touch()
        out, errs = proc.communicate(timeout=300)
    finally:
        for d in project.runs_dir.glob("*/"):
            (d / "CANCEL").touch()
        if proc.poll() is None:
            proc.kill()
        for pid in _trainer_pids(project):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 1, (out, errs)
    assert "cancelled" in out and "finished" not in out
    with project.connect() as con:
        assert runs_store.get(con, folder.name).status == "cancelled"
