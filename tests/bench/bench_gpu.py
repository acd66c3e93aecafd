"""Benchmark: LoRA fine-tuning on one GPU, tuneloop's trainer against HF ``Trainer`` + peft (issue 16).

Everything is made here, nothing is downloaded: randomly initialised Qwen2-architecture models of
~0.5B and ~1.5B parameters built from a config (speed and memory do not depend on the weights) and
synthetic chat examples whose lengths spread log-uniformly over 16-1024 tokens, the last ~40 % of
each being the response (the loss tokens). Side by side in one process, per size:

- ``hf+peft``: ``transformers.Trainer`` with peft LoRA r=16 on all linear layers, bf16, SDPA, the
  batch padded to its longest example (the baseline);
- ``tuneloop lora``: ``training.train.Trainer`` (padding-free packing, loss on response tokens,
  bf16 base, fp32 adapters);
- ``tuneloop qlora``: the same on a 4-bit NF4 base (needs bitsandbytes).

Reported: non-pad tokens/s (median of the steps after ``--warmup``), MFU and peak GPU memory, with
the ratio to the baseline. MFU counts what a LoRA step needs per token: forward 2N, backward through
the activations 2N (frozen weights need no weight gradient), plus causal attention (6 L h s per
token), against the bf16 matmul peak measured here (an 8192^3 matmul; ~790 TFLOP/s on an H200).
Goals on an H200: >= 3x the baseline tokens/s for LoRA at 1.5B, >= 30 % MFU, QLoRA peak memory
<= 40 % of the baseline's.

On the device machine (torch, transformers, accelerate present; no network) carry wheels for
peft, pydantic and pydantic-core, and bitsandbytes for the QLoRA row (see .library/device/README):
    python -m tests.bench.bench_gpu [--sizes 0.5b,1.5b] [--steps 30] [--warmup 5]
``--smoke`` runs a tiny model on the CPU (fp32, a few steps): it checks the script, not the speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import random
import statistics
import sys
import time
from functools import partial
from types import SimpleNamespace
from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 4096},
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
    "1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
             "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def synthetic(n: int, vocab: int, lo: int, hi: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(input ids, loss mask) of ``n`` examples, lengths log-uniform in [lo, hi], the last 40 % the response."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        ids = [rng.randrange(10, vocab) for _ in range(length)]
        start = max(1, int(length * 0.6))
        out.append((ids, [0] * start + [1] * (length - start)))
    return out


def build_model(spec: dict[str, Any], device: str, dtype: Any, seed: int = 0):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(**spec, attn_implementation="sdpa", use_cache=False)
    return Qwen2ForCausalLM(cfg).to(dtype=dtype, device=device)


def matmul_peak(device: str) -> float:
    """Measured bf16 matmul FLOP/s of the device (an 8192^3 product, median of 10)."""
    import torch

    n = 8192 if device.startswith("cuda") else 512
    dt = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    times = []
    for _ in range(12):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times[2:])


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def flops_per_token(spec: dict[str, Any], n_params: int, seq: float) -> float:
    """LoRA step FLOPs per token: 2N forward + 2N backward through activations + causal attention."""
    layers, hidden = spec["num_hidden_layers"], spec["hidden_size"]
    emb = spec["vocab_size"] * hidden  # the input embedding is a lookup, not a matmul
    return 4 * (n_params - emb * (0 if spec.get("tie_word_embeddings") else 1)) + 6 * layers * hidden * seq


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def run_hf(spec, data, device, dtype, steps: int, warmup: int, batch: int) -> dict[str, Any]:
    """The baseline: transformers.Trainer + peft LoRA, pad to longest, bf16, SDPA."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    _peak_reset(device)
    model = get_peft_model(build_model(spec, device, dtype), LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS,
                                                                      task_type="CAUSAL_LM"))
    rows = [{"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]} for ids, mask in data]

    def collate(items):
        n = max(len(x["input_ids"]) for x in items)
        ids = torch.zeros(len(items), n, dtype=torch.long)
        lab = torch.full((len(items), n), -100, dtype=torch.long)
        att = torch.zeros(len(items), n, dtype=torch.long)
        for i, x in enumerate(items):
            k = len(x["input_ids"])
            ids[i, :k], lab[i, :k], att[i, :k] = torch.tensor(x["input_ids"]), torch.tensor(x["labels"]), 1
        tokens.append(int(att.sum()))  # non-pad tokens of this step's batch (collated in step order)
        return {"input_ids": ids, "labels": lab, "attention_mask": att}

    times: list[float] = []
    tokens: list[int] = []

    class Clock(TrainerCallback):
        t = 0.0

        def on_step_begin(self, *a, **k):
            _sync(device)
            Clock.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            _sync(device)
            times.append(time.perf_counter() - Clock.t)

    cuda = device.startswith("cuda")
    args = TrainingArguments(output_dir="/tmp/bench_gpu_hf", per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=1e-4, bf16=cuda, logging_steps=10**9, save_strategy="no", report_to=[],
                             dataloader_num_workers=0, remove_unused_columns=False, use_cpu=not cuda,
                             disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[Clock()]).train()
    return _summary(times, tokens, warmup, device)


def run_tuneloop(spec, data, device, dtype, steps: int, warmup: int, batch_tokens: int,
                 quantization: str = "none") -> dict[str, Any]:
    import torch

    from training.config import TrainConfig
    from training.formatting import Tokenized
    from training.train import Trainer, prepare_model

    _peak_reset(device)
    cfg = TrainConfig(max_steps=steps, learning_rate=1e-4, warmup_steps=0, lr_scheduler="constant",
                      batch_tokens=batch_tokens, max_length=max(len(ids) for ids, _ in data), eval_max_examples=0,
                      save_every=0, record_dynamics=False, quantization=quantization,
                      gradient_checkpointing=False, memory_check=False, threads=0)
    if quantization != "none":
        import tempfile

        from transformers import BitsAndBytesConfig, Qwen2ForCausalLM

        # a random model is quantized on load: save it to a temp folder, reload it in 4 bits
        folder = tempfile.mkdtemp(prefix="bench-gpu-q-")
        build_model(spec, "cpu", torch.bfloat16).save_pretrained(folder)
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        base = Qwen2ForCausalLM.from_pretrained(folder, quantization_config=quant, device_map={"": device},
                                                attn_implementation="sdpa")
    else:
        base = build_model(spec, device, dtype)
    model = prepare_model(base, cfg)
    train = [Tokenized(input_ids=ids, loss_mask=mask, row=i) for i, (ids, mask) in enumerate(data)]
    times: list[float] = []
    tokens: list[int] = []

    def progress(step, total, row):
        times.append(row["step_time_s"])
        tokens.append(int(row["tokens"]))

    Trainer(model, SimpleNamespace(pad_token_id=0), cfg, train, [], None, device).train(progress)
    return _summary(times, tokens, warmup, device)


def _summary(times: list[float], tokens: list[int], warmup: int, device: str) -> dict[str, Any]:
    rates = [n / t for n, t in zip(tokens[warmup:], times[warmup:]) if t > 0]
    return {"tokens_per_s": statistics.median(rates) if rates else float("nan"), "peak_gib": _peak(device),
            "steps": len(times)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.5b,1.5b")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8, help="examples per baseline step (ours: the same tokens)")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script only")
    a = ap.parse_args(argv)
    import torch

    if a.smoke:
        device, dtype, sizes, a.steps, a.warmup, hi = "cpu", torch.float32, ["tiny"], 4, 1, 128
    else:
        if not torch.cuda.is_available():
            print("bench_gpu: no CUDA device here; use --smoke for a CPU check of the script")
            return 0
        device, dtype, sizes, hi = "cuda", torch.bfloat16, a.sizes.split(","), 1024
    peak = matmul_peak(device)
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; matmul peak "
          f"{peak / 1e12:.1f} TFLOP/s; torch {torch.__version__}")
    print(f"{'size':<6} {'trainer':<15} {'tokens/s':>10} {'ratio':>7} {'MFU':>7} {'peak GiB':>9} {'mem ratio':>9}")
    for size in sizes:
        spec = SIZES[size]
        data = synthetic(a.batch * (a.steps + 2), spec["vocab_size"], 16, hi, seed=1)
        mean_len = statistics.fmean(len(ids) for ids, _ in data)
        n_params = sum(p.numel() for p in build_model(spec, "meta", dtype).parameters())
        fpt = flops_per_token(spec, n_params, mean_len)
        budget = int(a.batch * mean_len)
        rows = [("hf+peft", partial(run_hf, spec, data, device, dtype, a.steps, a.warmup, a.batch)),
                ("tuneloop lora", partial(run_tuneloop, spec, data, device, dtype, a.steps, a.warmup, budget))]
        if device == "cuda" and importlib.util.find_spec("bitsandbytes"):
            rows.append(("tuneloop qlora",
                         partial(run_tuneloop, spec, data, device, dtype, a.steps, a.warmup, budget, "4bit")))
        base: dict[str, Any] | None = None
        for name, fn in rows:
            r = fn()
            base = base or r
            mfu = r["tokens_per_s"] * fpt / peak
            print(f"{size:<6} {name:<15} {r['tokens_per_s']:>10.0f} {r['tokens_per_s'] / base['tokens_per_s']:>6.2f}x "
                  f"{100 * mfu:>6.1f}% {r['peak_gib']:>9.2f} {r['peak_gib'] / base['peak_gib']:>8.2f}x", flush=True)
        if len(rows) < 3:
            print(f"{size:<6} {'tuneloop qlora':<15} skipped: needs CUDA and bitsandbytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
