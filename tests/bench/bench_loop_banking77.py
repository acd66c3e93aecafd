"""The error-analysis loop on real data: banking77 with 20 % corrupted training labels.

    nice -n 10 python -m tests.bench.bench_loop_banking77 [--labels 77] [--train-per-label 26]
        [--eval-per-label 13] [--epochs 2] [--lr 2e-3] [--noise 0.2] [--seed 0] [--project DIR]
        [--list-labels-up-to 20]

Steps (issue 6's benchmark), all through the product's own functions:
1. a seeded split of ``../shared/data/banking77/train.csv``: by default all 77 intents,
   26 train + 13 eval queries each (1,998 / 1,001); ``--labels 10`` takes a seeded subset
   for a quicker run (~40 min for the default on 2 cores);
2. zero-shot predictions of the bundled SmolLM2 on eval, categorised;
3. run A on a slice whose training labels are 20 % corrupted (seeded), predictions on eval
   and on train, categorised;
4. the reviewer is pointed at suspect training pairs by the curation label-noise queue
   (confident learning on MiniLM embeddings; the reviewer works down it, highest score
   first, for ``--review-budget`` x the training pairs, default 25 %) and by run A's
   ``wrong label`` errors on the training split; for each, the product proposes a label (label-noise suggestion, else A's
   prediction). A reviewer accepting proposals: a right proposal is accepted (a correction:
   new revision + preference pair), a wrong proposal on a wrong label sets the pair aside
   (needs_fix), a flag on a right label is rejected;
5. ``retrain`` (corrected slice, same config) gives run B; a run on the clean labels is the
   reference;
6. prints the per-category before/after table (A vs B), fixed/broken counts and accuracy of
   zero-shot, A, B and clean, and writes an HTML report next to the project;
7. (unless ``--no-decode-labels``) predicts each run's eval split again within the label set
   (``predict --decode labels``) and prints both modes: accuracy, and how many generated answers
   were not a label at all (issue 18.4).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "banking77" / "train.csv"


def load_rows(labels: int, train_per: int, eval_per: int, seed: int) -> tuple[list, list, list[str]]:
    by: dict[str, list[str]] = {}
    with DATA.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            by.setdefault(r["category"], []).append(r["text"].strip())
    rng = random.Random(seed)
    names = sorted(by)
    chosen = sorted(rng.sample(names, labels)) if labels < len(names) else names
    train, evals = [], []
    for lab in chosen:
        texts = sorted(set(by[lab]))
        rng.shuffle(texts)
        evals += [(t, lab) for t in texts[:eval_per]]
        train += [(t, lab) for t in texts[eval_per:eval_per + train_per]]
    rng.shuffle(train)
    return train, evals, chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=77)
    ap.add_argument("--train-per-label", type=int, default=26)
    ap.add_argument("--eval-per-label", type=int, default=13)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--project", type=Path, default=None)
    ap.add_argument("--review-budget", type=float, default=0.25,
                    help="the reviewer checks this fraction of the training pairs, most suspect first (0: flags only)")
    ap.add_argument("--list-labels-up-to", type=int, default=20,
                    help="name the labels in the system prompt when there are at most this many")
    ap.add_argument("--skip-clean", action="store_true", help="skip the clean-label reference run")
    ap.add_argument("--no-decode-labels", dest="decode_labels", action="store_false",
                    help="skip predicting each run again within the label set (predict --decode labels)")
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"skipped: {DATA} is not present")
        return 0

    from analysis.errors.report import ReportInput, html
    from analysis.label_noise import find_label_noise
    from models.embeddings import Encoder
    from store import errors as errors_store
    from store import pairs as pairs_store
    from store import runs as runs_store
    from store import slices as slices_store
    from store.db import Project
    from store.records import NewPair, PairContent, Provenance, Status
    from store.slices import Item
    from training.predict import predict_base, predict_run
    from training.runner import start_run
    from workflows import errors as workflow

    t_all = time.perf_counter()
    train, evals, labels = load_rows(args.labels, args.train_per_label, args.eval_per_label, args.seed)
    rng = random.Random(args.seed + 1)
    n_bad = int(round(args.noise * len(train)))
    bad_idx = set(rng.sample(range(len(train)), n_bad))
    noisy = [(t, rng.choice([x for x in labels if x != lab]) if i in bad_idx else lab)
             for i, (t, lab) in enumerate(train)]
    root = args.project or Path(tempfile.mkdtemp(prefix="bench_loop_b77_"))
    p = Project(root).init()
    print(f"project {root}: {len(labels)} intents, {len(train)} train ({n_bad} corrupted), {len(evals)} eval")

    def pair(text: str, lab: str, split: str) -> NewPair:
        return NewPair(content=PairContent(instruction=text, response=lab), status=Status.accepted, split=split,
                       provenance=Provenance(source_uri="banking77/train.csv"), tags=["banking77"])

    with p.connect() as con:
        eval_ids = pairs_store.add_pairs(con, [pair(t, lab, "eval") for t, lab in evals])
        noisy_ids = pairs_store.add_pairs(con, [pair(t, lab, "train") for t, lab in noisy])
        clean_ids = pairs_store.add_pairs(con, [pair(t, lab, "train") for t, lab in train])

        def freeze(name: str, train_ids: list[str]):
            items = [Item(i, pairs_store.get(con, i).head_revision_id, "train") for i in train_ids]
            items += [Item(i, pairs_store.get(con, i).head_revision_id, "eval") for i in eval_ids]
            return slices_store.freeze(con, name, items, split_by="existing", seed=args.seed)

        noisy_slice = freeze("b77-noisy", noisy_ids)
        clean_slice = freeze("b77-clean", clean_ids)
    truth = {pid: lab for pid, (_, lab) in zip(noisy_ids, train)}
    corrupted = {noisy_ids[i] for i in bad_idx}

    if len(labels) <= args.list_labels_up_to:
        system = ("Classify the banking customer's message. Answer with exactly one intent label from: "
                  + ", ".join(labels) + ".")
    else:  # 77 labels would make every prompt ~10x longer (training and every prediction)
        system = "Banking intent label."
    cfg = [f"epochs={args.epochs}", f"learning_rate={args.lr}", "lora_r=16", "lora_alpha=32", f"seed={args.seed}",
           "save_every=0", f"system_prompt={json.dumps(system)}", "max_length=256", "eval_max_examples=64"]
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t0
        print(f"  {name}: {timings[name]:.0f} s", flush=True)
        return out

    mnt = 16
    zs_run, _ = timed("zero-shot predictions", lambda: predict_base(
        p, noisy_slice.id, system_prompt=system, name="zero-shot", split="eval", max_new_tokens=mnt, perplexity=False))
    workflow.auto(p, zs_run)
    run_a = timed("train A (noisy)", lambda: start_run(p, noisy_slice.id, overrides=cfg, name="A-noisy", wait=True))
    timed("predict A eval", lambda: predict_run(p, run_a, split="eval", max_new_tokens=mnt, perplexity=False))
    workflow.auto(p, run_a)
    train_set = timed("predict A train", lambda: predict_run(p, run_a, split="train", max_new_tokens=mnt,
                                                             perplexity=False))
    workflow.auto(p, run_a, prediction_set=train_set)

    # ---- point the reviewer at suspect training labels
    with p.connect() as con:
        ex = slices_store.examples(con, noisy_slice.id, "train")
        tp = errors_store.predictions_with_source(con, train_set)
        tl = errors_store.current_labels(con, train_set)
    vec = timed("embed train prompts", lambda: Encoder().encode(ex["instruction"].to_list()))
    noise = find_label_noise(ex.select("revision_id", "pair_id", "response"), vec)
    import orjson

    # the reviewer works down the label-noise queue, highest score first, for a budget of
    # --review-budget x the training pairs (0: the confident flags only)
    budget = int(round(args.review_budget * len(train)))
    queue = (noise.filter(pl.col("score") > 0).sort("score", descending=True).head(budget) if budget
             else noise.filter(pl.col("flagged")))
    suggest = {r["pair_id"]: orjson.loads(r["details"])["suggested"] for r in queue.iter_rows(named=True)}
    wrong = tl.filter(pl.col("category_id") == "wrong_label").join(tp.select("prediction_id", "output"),
                                                                   on="prediction_id")
    model_says = {r["pair_id"]: r["output"].strip() for r in wrong.iter_rows(named=True)}
    pred_of = dict(zip(tp["pair_id"].to_list(), tp["prediction_id"].to_list()))
    flagged = set(suggest) | set(model_says)
    accepted = set_aside = rejected = 0
    with p.connect() as con:
        for pid in sorted(flagged):
            proposal = suggest.get(pid) or model_says.get(pid)
            if pid not in corrupted:
                if pid in model_says:
                    errors_store.review(con, pred_of[pid], "wrong_label", "rejected", author="reviewer",
                                        comment="the training label is right")
                rejected += 1
            elif proposal == truth[pid]:
                errors_store.correct(con, pred_of[pid], proposal, author="reviewer", category_id="wrong_label",
                                     reason="accepted the proposed label")
                accepted += 1
            else:
                errors_store.mark_bad(con, pred_of[pid], "needs_fix", author="reviewer", category_id="wrong_label",
                                      comment=f"label wrong, proposal {proposal!r} wrong too")
                set_aside += 1
    hit = len(flagged & corrupted)
    print(f"pointing: {len(flagged)} to review (label-noise queue {len(suggest)}, budget {budget}; "
          f"{int(noise['flagged'].sum())} confident flags; run A wrong-label on train "
          f"{len(model_says)}); {hit}/{len(corrupted)} corrupted found (recall {hit / max(1, len(corrupted)):.0%}, "
          f"precision {hit / max(1, len(flagged)):.0%}); reviewer: {accepted} corrected, {set_aside} set aside, "
          f"{rejected} flags rejected")

    sl_b, plan = workflow.freeze_corrected_slice(p, run_a, name="b77-corrected", author="reviewer")
    with p.connect() as con:
        run_a_rec = runs_store.get(con, run_a)
    run_b = timed("train B (corrected)", lambda: start_run(p, sl_b.id, overrides=cfg, name="B-corrected",
                                                           parent_run_id=run_a_rec.id, wait=True))
    timed("predict B eval", lambda: predict_run(p, run_b, split="eval", max_new_tokens=mnt, perplexity=False))
    workflow.auto(p, run_b)
    run_c = None
    if not args.skip_clean:
        run_c = timed("train clean", lambda: start_run(p, clean_slice.id, overrides=cfg, name="clean", wait=True))
        timed("predict clean eval", lambda: predict_run(p, run_c, split="eval", max_new_tokens=mnt, perplexity=False))
        workflow.auto(p, run_c)

    # ---- results
    comp = workflow.compare_runs(p, run_a, run_b)
    acc = {name: workflow.accuracy_of(p, r) for name, r in
           [("zero-shot", zs_run), ("A (noisy)", run_a), ("B (corrected)", run_b)] + ([("clean", run_c)] if run_c else [])}
    print()
    print(f"corrected slice {sl_b.name}@{sl_b.version}: {plan.summary()}")
    print("\n| category | A (noisy) | B (corrected) | delta B-A [95% CI] | count A -> B |")
    print("|---|---|---|---|---|")
    for r in comp.table.iter_rows(named=True):
        print(f"| {r['category']} | {100 * r['rate_a']:.1f}% | {100 * r['rate_b']:.1f}% | "
              f"{100 * r['delta']:+.1f} [{100 * r['delta_lo']:+.1f}, {100 * r['delta_hi']:+.1f}] | {r['k_a']} -> {r['k_b']} |")
    print(f"\nfixed {comp.fixed.height}, broken {comp.broken.height} (of {comp.n_common} eval pairs)\n")
    print("| model | eval accuracy [95% CI] |")
    print("|---|---|")
    for name, a in acc.items():
        print(f"| {name} | {100 * a['accuracy']:.1f}% [{100 * a['lo']:.1f}, {100 * a['hi']:.1f}] ({a['k']}/{a['n']}) |")
    if run_c:
        gap_b = 100 * (acc["B (corrected)"]["accuracy"] - acc["clean"]["accuracy"])
        gap_a = 100 * (acc["A (noisy)"]["accuracy"] - acc["clean"]["accuracy"])
        print(f"\nB - clean = {gap_b:+.1f} points (goal: >= -2); A - clean = {gap_a:+.1f} points")
    out = root / "loop_report.html"
    inp = ReportInput(title="banking77 loop: A (noisy labels) vs B (corrected)", run_a="A-noisy",
                      metrics_a=workflow.run_metrics(p, run_a), run_b="B-corrected",
                      metrics_b=workflow.run_metrics(p, run_b), comparison=comp)
    out.write_text(html(inp), encoding="utf-8")
    print(f"report: {out}")
    if args.decode_labels:  # after the report: these sets would otherwise be each run's newest eval set
        from scoring import normalize_label

        known = {normalize_label(x) for x in labels}
        print("\n| model | generate: accuracy [95% CI] | answers not a label | "
              "decode labels: accuracy [95% CI] | seconds generate / labels |")
        print("|---|---|---|---|---|")
        for name, r in [("A (noisy)", run_a), ("B (corrected)", run_b)] + ([("clean", run_c)] if run_c else []):
            with p.connect() as con:
                sets = runs_store.prediction_sets(con, r)
                gen_set = sets.filter(sets["split"] == "eval")["id"][-1]
                outs = runs_store.predictions_frame(con, gen_set)["output"].to_list()
            t0 = time.perf_counter()
            lab_set = predict_run(p, r, split="eval", decode="labels", perplexity=False)
            lab_s = time.perf_counter() - t0
            g, lb = workflow.accuracy_of(p, r, gen_set), workflow.accuracy_of(p, r, lab_set)
            off = sum(normalize_label(o) not in known for o in outs)
            gen_s = timings.get(f"predict {name.split()[0]} eval", float("nan"))
            print(f"| {name} | {100 * g['accuracy']:.1f}% [{100 * g['lo']:.1f}, {100 * g['hi']:.1f}] | "
                  f"{off}/{len(outs)} ({100 * off / max(len(outs), 1):.1f}%) | "
                  f"{100 * lb['accuracy']:.1f}% [{100 * lb['lo']:.1f}, {100 * lb['hi']:.1f}] | {gen_s:.0f} / {lab_s:.0f} |")
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
