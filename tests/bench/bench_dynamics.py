"""Bench: corrupted labels found by training dynamics vs confident learning vs chance.

A seeded label-like set from ../shared/data/banking77/train.csv (default 10 intents x 30 texts =
300 pairs; skipped cleanly when the file is absent) has a known share of its labels corrupted
(default 10 %: the label replaced by another of the set). It goes into a real project as
accepted pairs and a frozen all-train slice; then, through the library functions the CLI uses:

1. dynamics: ``start_run`` trains (its own process, LoRA; the bundled SmolLM2 by default, the
   tiny test model with ``--base tiny``) for a few epochs recording each pair's confidence per
   epoch; ``workflows.dynamics.map_run`` maps them; the k pairs with the lowest mean confidence
   (the hard-to-learn end of the map) are the candidates;
2. confident learning: ``analysis.curate.label_noise(review=k)``, the k most suspect pairs by
   cross-validated classifier probabilities over the bundled sentence embeddings;
3. chance: the corrupted share itself (what k random pairs hold on average).

k = the number of corrupted pairs. Printed: the share of corrupted labels among the top k for
each, the flags of each method and how many corrupted pairs they hold, and the times.

    python -m tests.bench.bench_dynamics [--labels 10] [--per-label 30] [--noise 0.1] [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from pathlib import Path

import polars as pl

from store import pairs as pairs_store
from store import slices as slices_store
from store.db import Project
from store.records import NewPair, PairContent, Provenance, SliceFilter, Status

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77" / "train.csv"
SYSTEM = "Banking intent label."


def noisy_set(rows: list[tuple[str, str]], labels: int, per_label: int, noise: float, seed: int
              ) -> list[tuple[str, str, bool]]:
    """(text, label, corrupted): ``labels`` intents x ``per_label`` texts, ``noise`` of them relabelled
    at random to another intent of the set (seeded)."""
    rng = random.Random(seed)
    by: dict[str, list[str]] = {}
    for text, label in sorted(set(rows)):
        by.setdefault(label, []).append(text)
    names = sorted(rng.sample(sorted(k for k, v in by.items() if len(v) >= per_label), labels))
    out = [(t, name, False) for name in names for t in rng.sample(by[name], per_label)]
    rng.shuffle(out)
    for i in rng.sample(range(len(out)), round(noise * len(out))):
        t, name, _ = out[i]
        out[i] = (t, rng.choice([n for n in names if n != name]), True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_dynamics", description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--per-label", type=int, default=30)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--base", default="smollm2", help="'smollm2' (bundled), 'tiny' (test model) or a model folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dir", default="", help="project folder (default: a temporary one)")
    a = ap.parse_args(argv)
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return 0
    from analysis.curate import label_noise
    from training.runner import start_run
    from workflows.dynamics import map_run

    with DATA.open(encoding="utf-8") as f:
        rows = [(r["text"].strip(), r["category"].strip()) for r in csv.DictReader(f)]
    data = noisy_set(rows, a.labels, a.per_label, a.noise, a.seed)
    root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="bench-dynamics-")) / "p"
    project = Project(root).init()
    new = [NewPair(content=PairContent(instruction=t, response=lab),
                   provenance=Provenance(generator="bench", source_uri="banking77.csv", source_line=i),
                   split="train", status=Status.accepted, author="bench")
           for i, (t, lab, _) in enumerate(data)]
    with project.connect() as con:
        ids = pairs_store.add_pairs(con, new)
        slices_store.create(con, "noisy", SliceFilter(pair_ids=list(ids)), split_by="existing", eval_fraction=0.0)
    corrupted = {pid for pid, (_, _, bad) in zip(ids, data, strict=True) if bad}
    k = len(corrupted)
    base = a.base
    if base == "tiny":
        from tests.training_fixtures import tiny_model_dir

        base = str(tiny_model_dir())
    print(f"{len(data)} pairs, {a.labels} intents, {k} corrupted ({k / len(data):.0%}); base {a.base}; "
          f"project {root}", flush=True)

    t0 = time.perf_counter()
    overrides = [f"epochs={a.epochs}", f"learning_rate={a.lr}", f"system_prompt=\"{SYSTEM}\"", "max_length=128",
                 "warmup_ratio=0.05", "lr_scheduler=cosine", "eval_every=0", "predict_after=false",
                 f"threads={a.threads}", f"seed={a.seed}", "save_every=0"]
    rid = start_run(project, "noisy", base_model=None if base == "smollm2" else base, overrides=overrides,
                    name="noisy-dynamics", author="bench", wait=True)
    train_s = time.perf_counter() - t0
    m = map_run(project, rid)
    ranked = m.pairs.sort("confidence", "pair_id")
    dyn_top = set(ranked.head(k)["pair_id"])
    dyn_flags = set(m.pairs.filter(pl.col("region") == "hard-to-learn")["pair_id"])
    amb_flags = set(m.pairs.filter(pl.col("region") == "ambiguous")["pair_id"])

    t1 = time.perf_counter()
    queue = label_noise(project, "noisy", review=k)
    cl_top = set(queue["pair_id"])
    cl_flags = set(label_noise(project, "noisy")["pair_id"])
    cl_s = time.perf_counter() - t1

    def share(s: set[str]) -> str:
        return f"{len(s & corrupted) / len(s):.2f} ({len(s & corrupted)}/{len(s)})" if s else "n/a (0 pairs)"

    print(f"\ntop-{k} share of corrupted labels (precision@k; recall@k is the same number here)")
    print(f"  training dynamics, lowest mean confidence : {share(dyn_top)}   [{train_s:.0f} s training, "
          f"{m.pairs['epochs'].max()} epochs]")
    print(f"  confident learning (label_noise review)   : {share(cl_top)}   [{cl_s:.0f} s embed + CV]")
    print(f"  chance (base rate)                        : {k / len(data):.2f}")
    print(f"  both (corrupted in the union of the two)  : {len((dyn_top | cl_top) & corrupted)}/{k}")
    print("\nflags: " + ", ".join(f"{r} {n}" for r, n in m.counts.items()))
    print(f"  hard_to_learn flags  : {share(dyn_flags)}")
    print(f"  ambiguous flags      : {share(amb_flags)}")
    print(f"  label_noise flags    : {share(cl_flags)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
