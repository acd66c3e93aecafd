"""Benchmark: tuneloop's Encoder vs ``SentenceTransformer.encode`` defaults, same texts, same run.

    python -m tests.bench.bench_embed [--n 2000] [--threads 2]

Texts are banking77 queries (../shared/data/banking77/train.csv) when present, else
generated sentences. The baseline is ``SentenceTransformer(path).encode(texts)`` with its
defaults (fp32, batch 32). Ours is ``models.embeddings.Encoder`` with ``precision=auto``
(bf16 only when its calibration cosine to fp32 is >= 0.999), batches of 64 sorted by token count (texts tokenised once).
The table reports sentences/s, the ratio, and the minimum cosine of our vectors to fp32.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77" / "train.csv"


def texts(n: int) -> tuple[list[str], str]:
    if DATA.exists():
        import polars as pl

        t = pl.read_csv(DATA)["text"].to_list()
        return (t * (n // len(t) + 1))[:n], "banking77"
    rng = np.random.default_rng(0)
    words = ["the", "card", "payment", "transfer", "account", "refund", "why", "is", "my", "not", "working", "how", "do", "i", "get", "a", "new", "pin"]
    return [" ".join(rng.choice(words, rng.integers(6, 20))) for _ in range(n)], "generated"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TUNELOOP_TORCH_THREADS", "2")))
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from models.embeddings import Encoder, EncoderConfig, model_path

    torch.set_num_threads(a.threads)
    sents, source = texts(a.n)
    base_model = SentenceTransformer(model_path(), device="cpu")
    base_model.encode(sents[:64])  # warm-up
    t = time.perf_counter()
    ref = base_model.encode(sents, normalize_embeddings=True)
    base_s = time.perf_counter() - t

    enc = Encoder(EncoderConfig(precision="auto", threads=a.threads))
    t0 = time.perf_counter()
    enc.calibrate(sents)
    cal_s = time.perf_counter() - t0
    enc.encode(sents[:64])  # warm-up
    t = time.perf_counter()
    ours = enc.encode(sents)
    ours_s = time.perf_counter() - t + cal_s
    cos = (ours * ref).sum(axis=1)
    print(f"{a.n} {source} sentences, {a.threads} torch threads; ours chose {enc.info['precision']} "
          f"(calibration min cosine {enc.info['min_cosine_vs_fp32']}, {cal_s:.1f} s, included)")
    print("\n| method | sentences | seconds | sentences/s | ratio | min cosine to fp32 |\n|---|---|---|---|---|---|")
    print(f"| SentenceTransformer.encode defaults (fp32, batch 32) | {a.n} | {base_s:.2f} | {a.n / base_s:,.0f} | 1.0x | 1.0 |")
    print(f"| tuneloop Encoder (auto: {enc.info['precision']}, token-sorted batches of 64, tokenised once) | {a.n} | {ours_s:.2f} | "
          f"{a.n / ours_s:,.0f} | {base_s / ours_s:.2f}x | {cos.min():.5f} |")


if __name__ == "__main__":
    main()
