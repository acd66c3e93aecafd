"""Benchmark: lm-evaluation-harness time per 1,000 questions on the tiny model (issue 18).

    python -m tests.bench.bench_lm_eval [--questions 64] [--rounds 2] [--batch-size 8]

Generated ARC-Challenge and HellaSwag sets in the hub schema (tests/test_benchmarks.py writes
them) scored by the real harness through ``training.benchmarks.evaluate_model`` on the tiny random
Llama (64 hidden, 2 layers, SmolLM2 tokenizer). A = tuneloop's batch size, B = the harness's
default batch size 1, in alternating rounds (A B A B); the reported ratio is the median of the
per-round B/A ratios. Both must give the same accuracies. The tiny model measures the harness's
own overhead (request building, tokenising, batching); a real model's forward passes add to it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_benchmarks import make_bench_dir
    from tests.training_fixtures import tiny_model_dir
    from training.benchmarks import evaluate_model, parse_names

    root = make_bench_dir(Path(tempfile.mkdtemp(prefix="bench-lm-eval-")), n=a.questions)
    benches = parse_names("arc_challenge,hellaswag")
    m = tiny_model_dir()
    model, tok = AutoModelForCausalLM.from_pretrained(str(m)).eval(), AutoTokenizer.from_pretrained(str(m))
    n_q = a.questions * len(benches)

    def once(bs: int) -> tuple[float, dict]:
        t0 = time.perf_counter()
        got = evaluate_model(model, tok, benches, root, batch_size=bs)
        return time.perf_counter() - t0, {k: v["metrics"] for k, v in got.items()}

    once(a.batch_size)  # warm-up: imports, task index, dataset cache
    ratios, ta, tb = [], [], []
    for _ in range(a.rounds):
        sa, ra = once(a.batch_size)
        sb, rb = once(1)
        assert all(abs(ra[k][m][0] - rb[k][m][0]) < 1e-9 for k in ra for m in ra[k]), (ra, rb)
        ta.append(sa)
        tb.append(sb)
        ratios.append(sb / sa)
    print(f"{n_q} questions ({a.questions} ARC-Challenge + {a.questions} HellaSwag, 4 choices each), tiny model, CPU")
    print(f"{'setting':<28}{'s per 1,000 questions':>24}")
    print(f"{'harness, batch ' + str(a.batch_size):<28}{1000 * statistics.median(ta) / n_q:>24.1f}")
    print(f"{'harness, batch 1':<28}{1000 * statistics.median(tb) / n_q:>24.1f}")
    print(f"median per-round ratio batch 1 / batch {a.batch_size}: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
