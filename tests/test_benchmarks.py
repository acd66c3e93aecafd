"""Standard benchmarks through the real lm-evaluation-harness on the tiny model (issue 18 point 1).

Tiny generated sets in each benchmark's exact hub schema, written under tmp_path in the local layout;
a run whose "adapter" is a different tiny model (seed 1) against its base (seed 0), so base and run
really differ. The harness's ARC accuracy is checked against our own log-likelihood argmax of each
choice under each model: a harness that did not score (or scored another model) fails it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analysis.benchmarks import deltas
from store import benchmarks as bench_store
from store import runs as runs_store
from store.records import BenchmarkResult
from tests.training_fixtures import make_slice, tiny_model_dir
from training.benchmarks import BENCHMARKS, MissingBenchmarkData, local_file, parse_names
from tuneloop.cli import app
from workflows.benchmarks import evaluate_with_base, general_ability

WORDS = ["red", "blue", "green", "seven", "table", "river", "music", "cold"]


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_bench_dir(root: Path, n: int = 6) -> Path:
    _write(root / "arc_challenge" / "test.jsonl", [
        {"id": f"arc{i}", "question": f"Which word comes after {WORDS[i % 8]} {i}?",
         "choices": {"text": [WORDS[(i + k) % 8] for k in range(1, 5)], "label": ["A", "B", "C", "D"]},
         "answerKey": "ABCD"[i % 4]} for i in range(n)])
    _write(root / "mmlu" / "test.jsonl", [
        {"question": f"What is {i} plus one?", "subject": ["anatomy", "astronomy"][i % 2],
         "choices": [str(i + 1), str(i + 2), WORDS[i % 8], WORDS[(i + 1) % 8]], "answer": i % 4} for i in range(n)])
    _write(root / "hellaswag" / "validation.jsonl", [
        {"ind": i, "activity_label": "Cooking", "ctx_a": f"A man takes the {WORDS[i % 8]} pan {i}.", "ctx_b": "he",
         "ctx": f"A man takes the {WORDS[i % 8]} pan {i}. he", "endings": [f"puts it on the {w}." for w in WORDS[:4]],
         "source_id": f"s{i}", "split": "val", "split_type": "indomain", "label": str(i % 4)} for i in range(n)])
    _write(root / "truthfulqa_mc2" / "validation.jsonl", [
        {"question": f"Is the sky {WORDS[i % 8]} {i}?",
         "mc1_targets": {"choices": ["No.", "Yes.", "Maybe."], "labels": [1, 0, 0]},
         "mc2_targets": {"choices": ["No.", "It is not.", "Yes.", "Maybe."], "labels": [1, 1, 0, 0]}}
        for i in range(n)])
    return root


@pytest.fixture
def bench_root(tmp_path) -> Path:
    return make_bench_dir(tmp_path / "benchmarks")


@pytest.fixture
def run_pair(project):
    """A run whose model is tiny seed 1 (a full-model artifact) on base tiny seed 0."""
    sl = make_slice(project, "memo", [("hi", "hello")])
    with project.connect() as con:
        run = runs_store.create(con, base_model=str(tiny_model_dir(0)), config={}, run_dir="", kind="train",
                                slice_id=sl.id, slice_hash=sl.content_hash, name="tuned", status="running")
        runs_store.set_status(con, run.id, "succeeded", adapter_path=str(tiny_model_dir(1)))
    return run.id


def _arc_acc_by_hand(model_dir: Path, path: Path) -> float:
    """ARC accuracy as argmax of summed continuation log-likelihood (the harness's acc), by hand."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    right = 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        ctx = f"Question: {row['question']}\nAnswer:"
        scores = []
        for choice in row["choices"]["text"]:
            whole = tok(ctx + " " + choice, add_special_tokens=False)["input_ids"]
            n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
            scores.append(sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole))))
        right += int(max(range(len(scores)), key=scores.__getitem__) == row["choices"]["label"].index(row["answerKey"]))
    return right / len(rows)


def test_all_four_benchmarks_scored_stored_and_compared(project, bench_root, run_pair):
    benches = parse_names("mmlu,arc_challenge,hellaswag,truthfulqa_mc2")
    run_id, base_id, rows = evaluate_with_base(project, run_pair, benches, bench_root, batch_size=4)
    assert run_id == run_pair and base_id and base_id != run_id
    assert [r.benchmark for r in rows] == sorted(BENCHMARKS)
    with project.connect() as con:
        assert runs_store.get(con, base_id).kind == "baseline"
        mine = bench_store.results(con, run_id)
        base = bench_store.results(con, base_id)
    for stored in (mine, base):
        assert {(r.benchmark, r.metric) for r in stored} == {
            ("mmlu", "acc"), ("arc_challenge", "acc"), ("arc_challenge", "acc_norm"), ("hellaswag", "acc"),
            ("hellaswag", "acc_norm"), ("truthfulqa_mc2", "acc")}
        for r in stored:
            assert 0.0 <= r.value <= 1.0 and r.stderr is not None and r.stderr >= 0
            assert r.n == 6 and r.limit is None and r.harness_version.startswith("0.4") and r.seconds > 0
    # the harness scored the run's model and the base's, each as argmax log-likelihood would
    arc = bench_root / "arc_challenge" / "test.jsonl"
    got = {r.run_id: r.value for r in mine + base if (r.benchmark, r.metric) == ("arc_challenge", "acc")}
    assert got[run_id] == pytest.approx(_arc_acc_by_hand(tiny_model_dir(1), arc))
    assert got[base_id] == pytest.approx(_arc_acc_by_hand(tiny_model_dir(0), arc))
    # the deltas are run - base in points, from the stored rows
    by = {d.benchmark: d for d in general_ability(project, run_id)}
    assert by["arc_challenge"].delta == pytest.approx(100 * (got[run_id] - got[base_id]))
    assert by["arc_challenge"].low < by["arc_challenge"].delta < by["arc_challenge"].high


def test_cli_prints_table_reuses_base_and_limit(project, bench_root, run_pair):
    args = ["eval", "--run", "tuned", "--bench", "arc_challenge", "--bench-dir", str(bench_root), "--limit", "3",
            "--project", str(project.root)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "arc_challenge" in out.output and "delta" in out.output
    with project.connect() as con:
        base_id = bench_store.baseline_with(con, str(tiny_model_dir(0)), "arc_challenge", 3)
        assert base_id is not None
        assert {r.n for r in bench_store.results(con, base_id)} == {3}
    out = CliRunner().invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["baseline_run_id"] == base_id  # the base's scores at this limit are reused
    with project.connect() as con:
        assert len(bench_store.results(con, base_id)) == 2  # acc, acc_norm: not scored again


def test_missing_local_copy_names_folder_and_fetch_command(project, tmp_path, run_pair):
    empty = tmp_path / "nothing"
    with pytest.raises(MissingBenchmarkData) as e:
        local_file(BENCHMARKS["hellaswag"], empty)
    assert str(empty / "hellaswag" / "validation.jsonl") in str(e.value)
    assert "load_dataset('Rowan/hellaswag', split='validation')" in str(e.value)
    out = CliRunner().invoke(app, ["eval", "--run", "tuned", "--bench", "mmlu", "--bench-dir", str(empty),
                                   "--project", str(project.root)])
    assert out.exit_code != 0
    assert isinstance(out.exception, FileNotFoundError) and "cais/mmlu" in str(out.exception)
    with pytest.raises(ValueError, match="unknown benchmark gsm8k"):
        parse_names("gsm8k")


def _res(bench: str, value: float, stderr: float | None, run: str = "r") -> BenchmarkResult:
    return BenchmarkResult(id="x", run_id=run, benchmark=bench, task=bench, metric="acc", value=value, stderr=stderr,
                           n=100)


@pytest.mark.parametrize(("base", "run", "se", "forgetting"), [
    (0.50, 0.40, 0.01, True),    # -10 points, interval about ±2.8: beyond -2
    (0.50, 0.48, 0.01, False),   # -2 points: within the interval
    (0.50, 0.55, 0.01, False),   # better
    (0.50, 0.40, None, True),    # no stderr: the point estimate decides
])
def test_forgetting_flag(base, run, se, forgetting):
    (d,) = deltas([_res("mmlu", base, se)], [_res("mmlu", run, se)], max_drop=2.0)
    assert d.delta == pytest.approx(100 * (run - base))
    assert d.forgetting is forgetting
    if se is not None:
        assert d.high - d.delta == pytest.approx(100 * 1.96 * (2 * se * se) ** 0.5)
