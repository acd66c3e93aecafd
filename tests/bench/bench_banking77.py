"""Task result: banking77 intent accuracy of the bundled SmolLM2, zero-shot and after LoRA training.

A seeded split of ../shared/data/banking77/train.csv (default 2,000 train / 1,000 eval, at
least one example of each of the 77 intents in train) goes into a real project as accepted
pairs and a frozen slice; then, through the same functions as the CLI:

1. zero-shot: ``predict_base`` (an untrained ``kind="baseline"`` run) on the eval split;
2. training: ``start_run`` (its own process; LoRA r=16 on all linear layers, packed batches,
   loss on the label tokens only, bf16 autocast where the CPU has it);
3. after training: ``predict_run`` on the eval split.

Prompt design: a 4-word system prompt (it replaces the template's 20-token default) and the label as the whole answer (a few tokens), no
list of the 77 labels in the prompt (it would make every example ~8x longer). Accuracy is the
stored ``accuracy`` metric (label match after normalisation). Skips when the data is absent.

Env knobs: BANKING_TRAIN, BANKING_EVAL, BANKING_EPOCHS, BANKING_LR, BANKING_BATCH_TOKENS,
BANKING_MAX_STEPS (0 = use epochs), BANKING_ZERO_SHOT (1/0), BANKING_DIR (project folder),
BANKING_THREADS (0 = auto), BANKING_LORA_TOP_LAYERS (0 = LoRA in every layer).
"""

from __future__ import annotations

import csv
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from store import pairs as pairs_store
from store import runs as runs_store
from store import slices as slices_store
from store.db import Project
from store.records import NewPair, PairContent, Provenance, SliceFilter, Status

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77" / "train.csv"
SYSTEM = "Banking intent label."


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def split(rows: list[tuple[str, str]], n_train: int, n_eval: int, seed: int = 0):
    """Seeded split with every label represented in train (round-robin over labels first)."""
    rng = random.Random(seed)
    rows = sorted(set(rows))
    rng.shuffle(rows)
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r in rows:
        by_label[r[1]].append(r)
    evals = rows[:n_eval]
    taken = set(evals)
    pool = [r for r in rows if r not in taken]
    train, seen = [], set()
    for r in pool:  # one of each label first, then the rest in shuffled order
        if r[1] not in seen:
            seen.add(r[1])
            train.append(r)
    rest = [r for r in pool if r not in set(train)]
    train += rest[: max(0, n_train - len(train))]
    rng.shuffle(train)
    return train, evals


def accuracy(project: Project, psid: str) -> float:
    with project.connect() as con:
        m = {(s, n): v for s, n, v in runs_store.metrics_of(con, psid).iter_rows()}
    return m.get(("overall", "accuracy"), m.get(("overall", "normalized_exact_match"), 0.0))


def main() -> int:
    if not DATA.exists():
        print(f"SKIP: {DATA} not present")
        return 0
    from training.predict import predict_base, predict_run
    from training.runner import start_run

    n_train, n_eval = int(_env("BANKING_TRAIN", 2000)), int(_env("BANKING_EVAL", 1000))
    threads = int(_env("BANKING_THREADS", 0))
    with DATA.open(encoding="utf-8") as f:
        rows = [(r["text"].strip(), r["category"].strip()) for r in csv.DictReader(f)]
    train, evals = split(rows, n_train, n_eval)
    root = Path(os.environ.get("BANKING_DIR") or tempfile.mkdtemp(prefix="bench_banking77_")) / "proj"
    project = Project(root).init()
    new = [NewPair(content=PairContent(instruction=q, response=a), split=s, status=Status.accepted, author="bench",
                   provenance=Provenance(generator="banking77", source_uri=str(DATA)))
           for s, part in (("train", train), ("eval", evals)) for q, a in part]
    with project.connect() as con:
        ids = pairs_store.add_pairs(con, new)
        sl = slices_store.create(con, "banking77", SliceFilter(pair_ids=list(ids)), split_by="existing", eval_fraction=0.0)
    print(f"banking77: {sl.n_train} train / {sl.n_eval} eval, {len({a for _, a in train})} labels in train; "
          f"project {root}", flush=True)
    results = []
    t_all = time.time()
    if int(_env("BANKING_ZERO_SHOT", 1)):
        t = time.time()
        _, ps0 = predict_base(project, "banking77", system_prompt=SYSTEM, max_new_tokens=8, batch_size=64)
        results.append(("zero-shot (untrained)", accuracy(project, ps0), time.time() - t))
        print(f"zero-shot accuracy {results[-1][1]:.3f} in {results[-1][2]:.0f} s", flush=True)
    epochs, lr = _env("BANKING_EPOCHS", 3), _env("BANKING_LR", 2e-3)
    overrides = [f"epochs={epochs}", f"learning_rate={lr}", f"system_prompt=\"{SYSTEM}\"", "lora_r=16",
                 "lora_alpha=32", f"batch_tokens={int(_env('BANKING_BATCH_TOKENS', 1536))}", "max_length=128",
                 "warmup_ratio=0.05", "lr_scheduler=cosine", "eval_every=0", "eval_max_examples=128",
                 "save_every=25", f"max_steps={int(_env('BANKING_MAX_STEPS', 0))}", f"threads={threads}",
                 f"lora_top_layers={int(_env('BANKING_LORA_TOP_LAYERS', 0))}"]
    t = time.time()
    last = [0.0]

    def show(st):
        if time.time() - last[0] > 30 and st.get("step"):
            last[0] = time.time()
            print(f"  step {st.get('step')}/{st.get('total_steps')} loss {st.get('loss', 0):.3f} "
                  f"({time.time() - t:.0f} s)", flush=True)

    rid = start_run(project, "banking77", overrides=overrides, name="banking77-lora", wait=True, progress=show)
    train_s = time.time() - t
    with project.connect() as con:
        run = runs_store.get(con, rid)
        m = runs_store.metrics_frame(con, rid)
    if run.status != "succeeded":
        print(f"training {run.status}: {run.error}")
        return 1
    tps = m.filter(m["name"] == "tokens_per_s")["value"]
    t = time.time()
    ps1 = predict_run(project, rid, max_new_tokens=16, batch_size=64, perplexity=False)
    pred_s = time.time() - t
    results.append((f"after LoRA ({run.summary.get('steps')} steps, {epochs:g} ep)", accuracy(project, ps1), train_s + pred_s))
    total = time.time() - t_all
    print("\n| model | eval accuracy | wall time |\n|---|---|---|")
    for name, acc, secs in results:
        print(f"| {name} | {acc * 100:.1f} % | {secs / 60:.1f} min |")
    print(f"\ntraining {train_s / 60:.1f} min (mean {tps.mean():.0f} tokens/s), prediction {pred_s:.0f} s, "
          f"total {total / 60:.1f} min; goal >= 75 % within 30 min: "
          f"{'MET' if results[-1][1] >= 0.75 and total <= 1800 else 'NOT MET'}")
    print(f"run {rid}; final loss {run.summary.get('final_loss')}, best val loss {run.summary.get('best_val_loss')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
