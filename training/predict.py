"""Batched predictions of a run (or of an untrained base) on a slice split, stored immutably.

- The prompt is the pair's conversation up to its last assistant turn, rendered with the chat
  template exactly as in training (same system prompt); the reference is that last turn.
- Generation is batched (left padding, longest prompts first, results in slice order), greedy
  unless ``temperature > 0``. Per pair we store the text, prompt/output token counts, the finish
  reason (``stop``: end-of-turn token; ``length``: cut at ``max_new_tokens``, a signal) and the
  wall time of its batch. The generation config goes on the prediction set.
- Precision (``precision``): ``auto`` (default) is fp32 on CPU and MPS, and on CUDA the precision the
  run trained in (bf16 for a run trained with bf16 autocast, e.g. LoRA on a bf16 GPU; fp32 for
  one trained in fp32 and for an untrained baseline); ``fp32`` or ``bf16`` choose. fp32 gives the
  same greedy answers as plain fp32 transformers; bf16 autocast can change some of them. The
  generation config records the precision actually used (``precision``, ``autocast_dtype``; the
  weights' dtype is ``model_dtype``) and the one asked for (``precision_requested``). Reference
  perplexity is computed in the same precision.
- A prediction pass is a new prediction set; nothing is overwritten. Metrics are computed from
  the stored rows (plus the perplexity of the references under the same model) and stored.
- The database is held only to read the slice and to write the results, never while generating.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scoring
from scale.engine import Engine
from store import runs as runs_store
from store import slices as slices_store
from store.db import Project
from store.records import Run, RunStatus
from training.formatting import prompt_and_reference, tokenize_rows

_model_cache: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class Predicted:
    """What ``predict_run`` needs from a generation pass, on either engine."""

    gens: list[Any]  # models.lm.Generation, in input order
    label_logprob: list[float | None]
    label_margin: list[float | None]
    nll: float | None
    device: str
    precision: str
    model_dtype: str
    n_params: int
    seconds: float


def run_model_name(run: Run) -> str:
    """The model of a run's predictions, as stored: its base, plus the adapter it trained."""
    return run.base_model + (f" + {Path(run.adapter_path)}" if run.adapter_path else "")


def run_tokenizer(run: Run):
    """The tokenizer ``load_run_model`` would load for ``run``, without its model (left padding)."""
    from models.lm import load_tokenizer

    art = Path(run.adapter_path) if run.adapter_path else None
    return load_tokenizer(str(art) if art is not None and (art / "config.json").exists() else run.base_model)


def load_run_model(run: Run, device: str | None = None):
    """A ChatModel for the run: its base, with the trained adapter merged in (or its full model)."""
    from models.lm import ChatModel, load_base, pick_device

    dev = pick_device(device)
    key = (f"{run.base_model}|{run.adapter_path or ''}", dev)
    if key in _model_cache:
        return _model_cache[key]
    _model_cache.clear()  # one model at a time: memory matters more than reuse here
    art = Path(run.adapter_path) if run.adapter_path else None
    if art is not None and (art / "config.json").exists():
        model, tok = load_base(str(art), device=dev)
    else:
        model, tok = load_base(run.base_model, device=dev)
        if art is not None and (art / "adapter_config.json").exists():
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(art)).merge_and_unload()
    tok.padding_side = "left"
    cm = ChatModel(model, tok, name=run_model_name(run), device=dev)
    _model_cache[key] = cm
    return cm


PREDICT_PRECISIONS = ("auto", "fp32", "bf16")
DECODE_MODES = ("generate", "labels")  # free generation; a label task within its label set


def resolve_precision(precision: str, device: str, run: Run) -> str:
    """"fp32" or "bf16" for predictions of ``run`` on ``device`` (see the module docstring)."""
    if precision in ("fp32", "bf16"):
        return precision
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; use {', '.join(PREDICT_PRECISIONS)}")
    if not device.startswith("cuda") or run.kind not in runs_store.TRAINED_KINDS:
        return "fp32"
    trained = str(run.config.get("precision") or "auto")
    if trained in ("fp32", "bf16"):
        return trained
    # auto: bf16 autocast where the run trained on a bf16 GPU (training.train._amp_dtype)
    import torch

    on_cuda = str(run.summary.get("device") or "").startswith("cuda")
    return "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"


def reference_nll(cm, rows: list[dict[str, Any]], system_prompt: str, max_length: int = 1024,
                  precision: str | None = None) -> float | None:
    """Mean negative log-likelihood per reference token (response tokens only)."""
    total, weight = reference_nll_sum(cm, rows, system_prompt, max_length, precision)
    return total / weight if weight else None


def reference_nll_sum(cm, rows: list[dict[str, Any]], system_prompt: str, max_length: int = 1024,
                      precision: str | None = None) -> tuple[float, float]:
    """(summed negative log-likelihood, reference tokens) over ``rows``: parts of rows add up."""
    import contextlib

    import torch

    from models.lm import precision_autocast
    from training.attention import packed_attention, supports_packed_attention
    from training.data import collate, loss_sum, plan_batches

    ex, _ = tokenize_rows(cm.tokenizer, rows, max_length=max_length, system_prompt=system_prompt)
    if not ex:
        return 0.0, 0.0
    plan = plan_batches([len(e.input_ids) for e in ex], batch_tokens=max(4096, max_length), max_examples=64,
                        seed=0, shuffle=False)
    total = weight = 0.0
    fast = supports_packed_attention(cm.model, max_length)
    with cm.lock, torch.inference_mode(), precision_autocast(cm.device, precision), \
            (packed_attention(cm.model) if fast else contextlib.nullcontext()):
        for idx in plan:
            mb = collate([ex[i] for i in idx], pad_id=cm.tokenizer.pad_token_id or 0, packed=True, share_prefix=fast)
            total += float(loss_sum(cm.model, mb, cm.device, segment_attention=fast))
            weight += sum(float(ex[i].n_loss_tokens) for i in idx)
    return total, weight


# Tokens allowed past the longest label: an end-of-turn token, and a label tokenised a little
# differently after the chat template than alone.
LABEL_MARGIN = 4


def _default_max_new_tokens(tok, refs: list[str], task: scoring.Task | None = None) -> int:
    """Free text: 1.5x the longest reference + 8 (16 to 512). A label task: the longest label of
    the slice (every split) in tokens + ``LABEL_MARGIN``, so no label is cut (a cut label is a
    wrong answer, and a class the model can never spell) and generation stops soon after one."""
    if task is not None and task.is_label:
        labels = [spelled for _, spelled in task.spelling] or refs
        longest = max((len(tok(x, add_special_tokens=False)["input_ids"]) for x in labels), default=16)
        return int(min(512, longest + LABEL_MARGIN))
    longest = max((len(tok(r, add_special_tokens=False)["input_ids"]) for r in refs), default=64)
    return int(min(512, max(16, math.ceil(longest * 1.5) + 8)))


def predict_run(
    project: Project,
    run_id: str,
    *,
    split: str = "eval",
    slice_ref: str | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    limit: int | None = None,
    seed: int = 0,
    perplexity: bool = True,
    device: str | None = None,
    precision: str = "auto",
    decode: str = "generate",
    progress: Callable[[int, int], None] | None = None,
    engine: Engine | None = None,
) -> str:
    """Generate for every pair of the run's slice split; store and score them. Returns the set id.

    ``engine``: ``scale.engine.Engine``; on Ray the generation runs in actors (``training.on_ray``),
    the same greedy answers; default local.

    ``slice_ref`` predicts on another slice than the one trained on. ``max_new_tokens=None``
    allows 1.5x the longest reference (at least 16, at most 512), or for a label task the
    longest label of the slice plus a few tokens. ``perplexity=False`` skips the extra pass that
    scores the references under the model. ``precision``: auto, fp32 or bf16 (module docstring).
    ``decode``: ``generate`` (free generation) or ``labels`` (a label task answered within its
    label set: every label of the slice scored as the whole reply, the likeliest kept;
    training/label_scoring.py); recorded in the generation config.
    ``progress(done, total)`` is called with 0 before
    the first batch and after each batch.
    """
    with project.connect() as con:
        run = runs_store.get(con, run_id)
    if run.kind in runs_store.TRAINED_KINDS and run.status not in runs_store.TERMINAL:
        from training.runner import sync_run

        run = sync_run(project, run.id)  # it may have finished since anyone last looked
    with project.connect() as con:
        if run.kind in runs_store.TRAINED_KINDS and run.status != RunStatus.succeeded.value:
            raise ValueError(f"run {run.id} is {run.status}; only a succeeded run has a model to predict with")
        sl = slices_store.get(con, slice_ref) if slice_ref else (slices_store.get(con, run.slice_id) if run.slice_id else None)
        if sl is None:
            raise ValueError(f"run {run.id} has no slice; pass slice_ref")
        df = slices_store.examples(con, sl.id, split)
        slice_refs = slices_store.references(con, sl.id)
    rows = df.to_dicts()[: limit if limit else None]
    if not rows:
        raise ValueError(f"slice {sl.name!r} has no {split!r} items to predict")
    if precision not in PREDICT_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use {', '.join(PREDICT_PRECISIONS)}")
    if decode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {decode!r}; use {', '.join(DECODE_MODES)}")
    system_prompt = str(run.config.get("system_prompt") or "")
    from models.lm import precision_used, prompt_ids

    engine = engine or Engine()
    cm = None if engine.is_ray else load_run_model(run, device)
    tok = cm.tokenizer if cm is not None else run_tokenizer(run)
    pr = [prompt_and_reference(r, system_prompt) for r in rows]
    prompts, refs = [p for p, _ in pr], [r for _, r in pr]
    task = scoring.task_of_predictions(refs, slice_refs)
    if decode == "labels" and not task.is_label:
        raise ValueError(f"--decode labels needs a label task, and the references of slice {sl.name!r} are free "
                         f"text (fewer than 80 % of them repeat as labels); use --decode generate")
    mnt = max_new_tokens or _default_max_new_tokens(tok, refs, task)
    ids = [prompt_ids(tok, p) for p in prompts]
    done = [0]
    if progress:
        progress(0, len(ids))

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], len(ids))

    label_set = sorted({spelt for _, spelt in task.spelling}) if decode == "labels" else []
    shards = None
    if cm is None:
        from training import on_ray

        got, shards = on_ray.generate(engine, project, run, rows, ids, precision=precision, decode=decode,
                                      labels=label_set, max_new_tokens=mnt, temperature=temperature, top_p=top_p,
                                      batch_size=batch_size, seed=seed, system_prompt=system_prompt,
                                      perplexity=perplexity, progress=tick)
        name = run_model_name(run)
    else:
        got = _generate_local(cm, rows, ids, precision=resolve_precision(precision, cm.device, run), decode=decode,
                              labels=label_set, max_new_tokens=mnt, temperature=temperature, top_p=top_p,
                              batch_size=batch_size, seed=seed, system_prompt=system_prompt, perplexity=perplexity,
                              progress=tick)
        name = cm.name
    gens, used = got.gens, got.precision
    texts = [tok.decode(x, skip_special_tokens=False) for x in ids]
    out_rows = [{
        "pair_id": r["pair_id"], "revision_id": r["revision_id"], "prompt": t, "output": g.text, "reference": ref,
        "n_prompt_tokens": g.n_prompt_tokens, "n_output_tokens": g.n_output_tokens,
        "finish_reason": g.finish_reason, "latency_ms": g.latency_ms,
        "label_logprob": got.label_logprob[i], "label_margin": got.label_margin[i],
    } for i, (r, t, g, ref) in enumerate(zip(rows, texts, gens, refs))]
    gen_s = got.seconds
    gen_cfg = {"max_new_tokens": mnt, "temperature": temperature, "top_p": top_p if temperature > 0 else None,
               "do_sample": temperature > 0, "seed": seed, "batch_size": batch_size, "padding_side": "left",
               "sorted_by_length": True, "system_prompt": system_prompt, "device": got.device, "task": task.kind,
               "reference_perplexity": perplexity, "decode": decode, "engine": engine.describe(),
               **({"labels_scored": len(label_set), "label_score": "sum of log-probabilities, end of turn included"}
                  if decode == "labels" else {}),
               "model_dtype": got.model_dtype, **precision_used(got.device, used), "precision_requested": precision,
               "n_params": got.n_params, "generation_seconds": round(gen_s, 3),
               "output_tokens_per_s": round(sum(g.n_output_tokens for g in gens) / max(gen_s, 1e-9), 2)}
    rows_m = scoring.metric_rows([g.text for g in gens], refs, task,
                                 finish_reasons=[g.finish_reason for g in gens],
                                 n_output_tokens=[g.n_output_tokens for g in gens], ref_nll=got.nll)
    with project.connect() as con:
        psid = runs_store.add_predictions(con, run_id=run.id, model=name, generation_config=gen_cfg,
                                          rows=out_rows, slice_id=sl.id, split=split)
        runs_store.save_metrics(con, run_id=run.id, prediction_set_id=psid, rows=rows_m, slice_id=sl.id)
    if shards is not None:
        shards.remove()  # stored: the Ray job's shards are no longer needed to resume
    return psid


def _generate_local(cm, rows: list[dict[str, Any]], ids: list[list[int]], *, precision: str, decode: str,
                    labels: list[str], max_new_tokens: int, temperature: float, top_p: float, batch_size: int,
                    seed: int, system_prompt: str, perplexity: bool, progress: Callable[[int], None]):
    """The generation pass in this process (``training.on_ray.generate`` is the Ray one)."""
    from models.lm import Generation
    t0 = time.perf_counter()
    logprob: list[float | None] = [None] * len(ids)
    margin: list[float | None] = [None] * len(ids)
    if decode == "labels":
        from training.label_scoring import choose_labels

        chosen = choose_labels(cm, ids, labels, precision=precision, progress=progress)
        gens = [Generation(text=c.label, n_prompt_tokens=len(x), n_output_tokens=c.n_tokens, finish_reason="label",
                           latency_ms=c.latency_ms) for c, x in zip(chosen, ids, strict=True)]
        logprob, margin = [c.logprob for c in chosen], [c.margin for c in chosen]
    else:
        gens = cm.generate_ids(ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                               batch_size=batch_size, seed=seed, progress=progress, precision=precision)
    seconds = time.perf_counter() - t0
    nll = reference_nll(cm, rows, system_prompt, precision=precision) if perplexity else None
    return Predicted(gens, logprob, margin, nll, device=cm.device, precision=precision, model_dtype=cm.dtype,
                     n_params=cm.n_params, seconds=seconds)


def create_baseline(project: Project, slice_ref: str, *, base_model: str | None = None, system_prompt: str = "",
                    name: str = "", author: str = "") -> str:
    """A ``kind="baseline"`` run: the untrained base model, to predict with and compare against."""
    base = base_model or "smollm2"
    with project.connect() as con:
        sl = slices_store.get(con, slice_ref)
        run = runs_store.create(con, base_model=base, config={"system_prompt": system_prompt}, run_dir="",
                                kind="baseline", slice_id=sl.id, slice_hash=sl.content_hash,
                                name=runs_store.free_name(con, name, default=f"baseline {base} on {sl.name}"),
                                author=author,
                                status=RunStatus.succeeded)
    return run.id


def predict_base(project: Project, slice_ref: str, *, base_model: str | None = None, system_prompt: str = "",
                 name: str = "", author: str = "", **kwargs: Any) -> tuple[str, str]:
    """Predictions of an untrained base model on a slice: (baseline run id, prediction set id)."""
    rid = create_baseline(project, slice_ref, base_model=base_model, system_prompt=system_prompt, name=name,
                          author=author)
    return rid, predict_run(project, rid, **kwargs)


def compute_metrics(project: Project, prediction_set_id: str) -> list[tuple[str, str, float]]:
    """Recompute a prediction set's text metrics from its stored rows (keeps a stored perplexity)."""
    with project.connect() as con:
        df = runs_store.predictions_frame(con, prediction_set_id)
        old = runs_store.metrics_of(con, prediction_set_id)
        run_id, slice_id = _set_owner(con, prediction_set_id)
        slice_refs = runs_store.task_references(con, prediction_set_id)
    nll = None
    if old.height:
        hit = old.filter((old["scope"] == "overall") & (old["name"] == "reference_nll"))
        nll = float(hit["value"][0]) if hit.height else None
    refs = [r or "" for r in df["reference"].to_list()]
    rows = scoring.metric_rows([o or "" for o in df["output"].to_list()], refs,
                               scoring.task_of_predictions(refs, slice_refs), finish_reasons=df["finish_reason"].to_list(),
                               n_output_tokens=df["n_output_tokens"].to_list(), ref_nll=nll)
    with project.connect() as con:
        runs_store.save_metrics(con, run_id=run_id, prediction_set_id=prediction_set_id, rows=rows, slice_id=slice_id)
    return rows


def _set_owner(con, prediction_set_id: str) -> tuple[str, str | None]:
    row = runs_store.prediction_set(con, prediction_set_id)
    if row is None:
        raise KeyError(f"no prediction set {prediction_set_id!r}")
    return row["run_id"], row["slice_id"]


def generation_config(project: Project, prediction_set_id: str) -> dict[str, Any]:
    with project.connect() as con:
        row = runs_store.prediction_set(con, prediction_set_id)
    return json.loads(row["generation_config"]) if row else {}
