"""Training throughput: our trainer vs plain HF ``Trainer`` + peft, same data, same steps, same run.

Both fine-tune the bundled SmolLM2 with the same LoRA (r=16, all linear layers), the same
examples (banking77 queries -> intent labels when ../shared/data is present, else synthetic
instruction pairs of mixed length), the same number of examples per step and of steps, and
bf16 autocast where the CPU has it (``bf16=True`` for the HF Trainer). The baseline pads each
batch to its longest example (``DataCollatorForSeq2Seq``, labels -100 on the prompt) and
computes logits for every position; ours packs examples into padding-free rows, attends within
each example (no [T x T] mask), computes the leading tokens the examples of a row share (the
system prompt and chat header) once, keeps the frozen base weights in bf16 instead of
re-casting them on every call, and runs the LM head only where a label is. Throughput counts
the examples' non-padding tokens for both (a shared prefix counts once per example, as the
baseline computes it); the first step of each is a warm-up and is not timed.

Rounds alternate baseline and ours (TRAIN_ROUNDS, 2); the ratio is the median of the per-round ratios.

Env knobs: TRAIN_STEPS (6), TRAIN_BATCH (8 examples per step), TRAIN_MODEL (bundled SmolLM2),
TRAIN_DATA (banking77, or synthetic: instructions of 4-60 words, responses of 1-12 words).
"""

from __future__ import annotations

import csv
import os
import random
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77" / "train.csv"
SYSTEM = "Banking intent label."


def examples(n: int) -> list[dict]:
    rng = random.Random(0)
    if DATA.exists() and os.environ.get("TRAIN_DATA", "banking77") == "banking77":
        with DATA.open(encoding="utf-8") as f:
            rows = [(r["text"], r["category"]) for r in csv.DictReader(f)]
        rng.shuffle(rows)
        return [{"instruction": q, "response": a, "system": SYSTEM} for q, a in rows[:n]]
    words = ["the", "account", "card", "transfer", "payment", "fee", "pending", "refund", "limit", "exchange", "rate", "verify", "identity"]
    return [{"instruction": " ".join(rng.choice(words) for _ in range(rng.randint(4, 60))),
             "response": " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))), "system": SYSTEM}
            for _ in range(n)]


def ours(model_name, rows, steps, batch) -> tuple[float, int, float]:
    from models.lm import load_base
    from training.config import TrainConfig
    from training.formatting import tokenize_rows
    from training.train import Trainer, prepare_model

    base, tok = load_base(model_name)
    tok.padding_side = "right"
    cfg = TrainConfig(max_steps=steps + 1, learning_rate=1e-4, warmup_steps=0, batch_tokens=1 << 20,
                      max_examples_per_batch=batch, max_length=256)
    model = prepare_model(base, cfg)
    ex, _ = tokenize_rows(tok, rows, max_length=256)
    tr = Trainer(model, tok, cfg, ex, [], None, "cpu")
    tr.train()
    timed = [h for h in tr.history if "loss" in h][1:]
    secs = sum(h["step_time_s"] for h in timed)
    toks = int(sum(h["tokens"] for h in timed))
    return toks / secs, toks, secs


def hf_baseline(model_name, rows, steps, batch) -> tuple[float, int, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from models.lm import cpu_has_bf16, load_base
    from training.config import ALL_LINEAR
    from training.formatting import tokenize_rows

    base, tok = load_base(model_name)
    tok.padding_side = "right"
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=ALL_LINEAR,
                                            task_type="CAUSAL_LM"))
    ex, _ = tokenize_rows(tok, rows, max_length=256)
    ds = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids),
           "labels": [t if m else -100 for t, m in zip(e.input_ids, e.loss_mask)]} for e in ex]
    inner = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
    counts: list[int] = []

    def collate(features):
        counts.append(sum(len(f["input_ids"]) for f in features))
        return inner(features)

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch, max_steps=steps + 1,
                                 learning_rate=1e-4, bf16=cpu_has_bf16(), use_cpu=True, report_to=[],
                                 save_strategy="no", logging_strategy="no", dataloader_num_workers=0, seed=0,
                                 remove_unused_columns=False, disable_tqdm=True)
        Trainer(model=model, args=args, train_dataset=ds, data_collator=collate, callbacks=[Clock()]).train()
    del torch
    # marks: begin/end per step; collation of step i happens before its begin mark.
    spans = [(marks[2 * i], marks[2 * i + 1]) for i in range(len(marks) // 2)][1:]
    secs = sum(b - a for a, b in spans)
    toks = sum(counts[1: 1 + len(spans)])
    return toks / secs, toks, secs


def main() -> int:
    import statistics

    steps = int(os.environ.get("TRAIN_STEPS", 6))
    batch = int(os.environ.get("TRAIN_BATCH", 8))
    n_rounds = int(os.environ.get("TRAIN_ROUNDS", 2))
    name = os.environ.get("TRAIN_MODEL") or None
    rows = examples(batch * (steps + 1))
    labels = ("plain HF Trainer + peft (pad to longest)",
              "tuneloop trainer (packed, per-example attention, shared prefix, label-only logits)")
    rounds = []
    for k in range(n_rounds):  # A B A B: the machine's load changes cancel in the per-round ratios
        r = (hf_baseline(name, rows, steps, batch), ours(name, rows, steps, batch))
        rounds.append(r)
        print(f"round {k + 1}: baseline {r[0][0]:.1f} tokens/s, tuneloop {r[1][0]:.1f} tokens/s, "
              f"ratio {r[1][0] / r[0][0]:.2f}x", flush=True)
    import torch

    print(f"\n{steps} timed steps x {batch} examples, LoRA r=16 all linear, bf16 autocast on CPU; "
          f"torch threads {torch.get_num_threads()}; {n_rounds} rounds")
    print("\n| trainer | non-pad tokens | seconds (median) | tokens/s (median) |\n|---|---|---|---|")
    for i, label in enumerate(labels):
        print(f"| {label} | {rounds[-1][i][1]} | {statistics.median(r[i][2] for r in rounds):.1f} | "
              f"{statistics.median(r[i][0] for r in rounds):.1f} |")
    ratio = statistics.median(r[1][0] / r[0][0] for r in rounds)
    print(f"\nratio {ratio:.2f}x, median of the per-round ratios (goal >= 2x on CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
