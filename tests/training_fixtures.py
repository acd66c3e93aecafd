"""Reusable pieces for tests that train: a tiny causal LM built offline, and small slices.

``tiny_model_dir()`` writes (once, cached under $TUNELOOP_CACHE/models) a 2-layer Llama with
hidden size 64 and the bundled SmolLM2 tokenizer, and returns its folder: pass it anywhere a
base model is accepted (``start_run(..., base_model=str(tiny_model_dir()))``). It trains a few
LoRA steps on CPU in about a second.

``make_slice(project, name, pairs)`` imports (instruction, response) pairs as accepted pairs and
freezes them into a slice with the given train/eval split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from store import pairs as pairs_store
from store import slices as slices_store
from store.db import Project
from store.records import NewPair, PairContent, Provenance, Slice, SliceFilter, Status

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 1024,
        # Large init: embeddings long enough that LoRA alone can push a token's logit high.
        "initializer_range": 0.3}

# A slice a tiny model can memorise: eight questions, short fixed answers.
MEMO_PAIRS: list[tuple[str, str]] = [
    ("What colour is the sky?", "blue"), ("What colour is grass?", "green"),
    ("What colour is snow?", "white"), ("What colour is coal?", "black"),
    ("What colour is a banana?", "yellow"), ("What colour is an orange?", "orange"),
    ("What colour is blood?", "red"), ("What colour is a plum?", "purple"),
]


def _cache() -> Path:
    base = os.environ.get("TUNELOOP_CACHE") or str(Path.home() / ".cache" / "tuneloop")
    return Path(base) / "models"


def tiny_model_dir(seed: int = 0) -> Path:
    """A tiny LlamaForCausalLM (random weights, seeded) + SmolLM2 tokenizer, saved once."""
    target = _cache() / f"tiny-llama-h64-l2-i03-v2-s{seed}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    import torch
    from filelock import FileLock
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from models.lm import tokenizer_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if (target / "config.json").exists() and (target / "model.safetensors").exists():
            return target
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
        # No pad_token_id in the config: pad == eos here, and a padding_idx would pin the eos
        # embedding (and, tied, its logit) at zero, so the model could never learn to stop.
        cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=None, tie_word_embeddings=True, **TINY)
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def make_slice(project: Project, name: str, pairs: Sequence[tuple[str, str]], *, eval_pairs: Sequence[tuple[str, str]] = (),
               system: str = "") -> Slice:
    """Accepted pairs for ``pairs`` (train) and ``eval_pairs`` (eval), frozen as slice ``name``."""
    new = [NewPair(content=PairContent(instruction=q, response=a, system=system),
                   provenance=Provenance(generator="test", source_uri=f"{name}.jsonl", source_line=i),
                   split=split, status=Status.accepted, author="tester")
           for i, (q, a, split) in enumerate([(q, a, "train") for q, a in pairs] + [(q, a, "eval") for q, a in eval_pairs])]
    with project.connect() as con:
        ids = pairs_store.add_pairs(con, new)
        return slices_store.create(con, name, SliceFilter(pair_ids=list(ids)), split_by="existing", eval_fraction=0.0)
