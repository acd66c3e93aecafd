"""Predictions on Ray (``--engine ray``): one actor per GPU (or, without GPUs, per CPU slot),
each loading the run's model once, over Parquet shards of whole generation batches.

The prompts are planned into batches exactly as the local engine plans them
(``models.lm.generation_batches``: longest first, bounded by count and tokens), and a shard is a
run of whole batches, so every prompt is generated in the same batch, with the same padding, as
on the local engine: greedy answers are the same. Sampling (``temperature > 0``) seeds shard
``k`` with ``seed + k``: reproducible on the same shards, not equal to the local engine's draw.
Reference perplexity is summed per shard (``reference_nll_sum``) and divided once.

The outputs are stored by the caller in one transaction (``predict_run``) and the shards then
removed; a failed job leaves the store as it was, and running it again computes only the shards
that are missing (``scale.engine.Shards``). The model must be readable at the same path on every
node (the project folder on a shared file system, or a hub id).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from scale.engine import Engine, Shards, content_key, map_shards, runtime
from training.predict import Predicted

PREDICT_SHARD_ROWS = 256  # a shard's fewest prompts (whole batches: a shard may hold a few more)


def shard_plan(lengths: Sequence[int], *, max_new_tokens: int, batch_size: int, min_rows: int) -> list[list[int]]:
    """Prompt indices per shard: whole generation batches, at least ``min_rows`` prompts a shard
    (the last may hold fewer), in the local engine's batch order."""
    from models.lm import generation_batches

    shards: list[list[int]] = [[]]
    for batch in generation_batches(list(lengths), max_new_tokens=max_new_tokens, batch_size=batch_size):
        if len(shards[-1]) >= min_rows:
            shards.append([])
        shards[-1].extend(batch)
    return [s for s in shards if s]


class _PredictShard:
    """A Ray actor's work: the run's model, loaded once, over one shard of prompts per call."""

    def __init__(self, shards: Shards, run: dict[str, Any], precision: str, decode: str, labels: list[str],
                 generation: dict[str, Any], system_prompt: str, perplexity: bool):
        import torch

        from models.lm import pick_device
        from store.records import Run
        from training.predict import load_run_model, resolve_precision

        device = pick_device(None)  # Ray hides the GPUs an actor was not given (CUDA_VISIBLE_DEVICES)
        if device == "cpu":
            torch.set_num_threads(1)  # one CPU slot per actor
        self.shards = shards
        self.run = Run.model_validate(run)
        self.cm = load_run_model(self.run, device)
        self.precision = resolve_precision(precision, self.cm.device, self.run)
        self.decode, self.labels, self.generation = decode, labels, generation
        self.system_prompt, self.perplexity = system_prompt, perplexity

    def __call__(self, k: int) -> int:
        from training.label_scoring import choose_labels
        from training.predict import reference_nll_sum

        t = self.shards.read_input(k)
        ids = [list(x) for x in t["ids"].to_pylist()]
        n = len(ids)
        logprob: list[float | None] = [None] * n
        margin: list[float | None] = [None] * n
        if self.decode == "labels":
            chosen = choose_labels(self.cm, ids, self.labels, precision=self.precision)
            texts = [c.label for c in chosen]
            n_out = [c.n_tokens for c in chosen]
            finish = ["label"] * n
            latency = [c.latency_ms for c in chosen]
            logprob = [c.logprob for c in chosen]
            margin = [c.margin for c in chosen]
        else:
            g = dict(self.generation)
            g["seed"] = int(g.get("seed", 0)) + k
            gens = self.cm.generate_ids(ids, precision=self.precision, **g)
            texts = [x.text for x in gens]
            n_out = [x.n_output_tokens for x in gens]
            finish = [x.finish_reason for x in gens]
            latency = [x.latency_ms for x in gens]
        total = weight = None
        if self.perplexity:
            rows = [json.loads(r) for r in t["row"].to_pylist()]
            total, weight = reference_nll_sum(self.cm, rows, self.system_prompt, precision=self.precision)
        first = [True] + [False] * (n - 1)
        self.shards.write_output(k, pa.table({
            "i": t["i"], "text": texts, "n_prompt_tokens": [len(x) for x in ids], "n_output_tokens": n_out,
            "finish_reason": finish, "latency_ms": pa.array(latency, pa.float64()),
            "label_logprob": pa.array(logprob, pa.float64()), "label_margin": pa.array(margin, pa.float64()),
            "nll_total": pa.array([total if f else None for f in first], pa.float64()),
            "nll_weight": pa.array([weight if f else None for f in first], pa.float64()),
            "device": [self.cm.device] * n, "precision": [self.precision] * n, "model_dtype": [self.cm.dtype] * n,
            "n_params": pa.array([self.cm.n_params] * n, pa.int64()),
        }))
        return n


def generate(engine: Engine, project: Any, run: Any, rows: Sequence[dict[str, Any]], ids: Sequence[Sequence[int]], *,
             precision: str, decode: str, labels: Sequence[str], max_new_tokens: int, temperature: float,
             top_p: float, batch_size: int, seed: int, system_prompt: str, perplexity: bool,
             progress: Callable[[int], None] | None = None) -> tuple[Predicted, Shards]:
    """Generate for ``ids`` (prompt token ids of ``rows``) with the run's model on Ray; also the
    shards, for the caller to remove once the predictions are stored."""
    from models.lm import Generation

    generation = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                  "batch_size": batch_size, "seed": seed}
    plan = shard_plan([len(x) for x in ids], max_new_tokens=max_new_tokens, batch_size=batch_size,
                      min_rows=PREDICT_SHARD_ROWS)
    params = [run.id, run.adapter_path or "", precision, decode, json.dumps(generation, sort_keys=True),
              system_prompt, str(perplexity), *labels]
    key = content_key(params, [json.dumps(list(x)) for x in ids], [str(r.get("revision_id")) for r in rows])
    shards = Shards.of(project, "predict", key)
    n = shards.write_inputs(pa.table({
        "i": pa.array(part, pa.int64()), "ids": pa.array([list(ids[i]) for i in part], pa.list_(pa.int32())),
        "row": [json.dumps(rows[i], default=str) for i in part]}) for part in plan)
    t0 = time.perf_counter()
    with runtime(engine) as ray:
        map_shards(ray, shards, n, actor=_PredictShard, per_gpu=True, progress=progress, kwargs={
            "run": run.model_dump(mode="json"), "precision": precision, "decode": decode, "labels": list(labels),
            "generation": generation, "system_prompt": system_prompt, "perplexity": perplexity})
    seconds = time.perf_counter() - t0
    out = shards.outputs(n).to_pylist()
    if sorted(r["i"] for r in out) != list(range(len(ids))):
        raise RuntimeError(f"the prediction shards under {shards.dir} do not match their input; remove the folder "
                           f"and run again")
    out.sort(key=lambda r: r["i"])
    weight = sum(r["nll_weight"] or 0.0 for r in out)
    nll = sum(r["nll_total"] or 0.0 for r in out) / weight if perplexity and weight else None
    gens = [Generation(text=r["text"], n_prompt_tokens=r["n_prompt_tokens"], n_output_tokens=r["n_output_tokens"],
                       finish_reason=r["finish_reason"], latency_ms=r["latency_ms"]) for r in out]
    head = out[0]
    return Predicted(gens, [r["label_logprob"] for r in out], [r["label_margin"] for r in out], nll,
                     device=head["device"], precision=head["precision"], model_dtype=head["model_dtype"],
                     n_params=int(head["n_params"]), seconds=seconds), shards
