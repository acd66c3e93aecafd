"""The CUDA paths of training, where CUDA exists (skipped elsewhere; CI has no GPU): LoRA on a bf16
frozen base, QLoRA 4-bit (with bitsandbytes), and the memory plan against the measured peak."""

from __future__ import annotations

import importlib.util

import pytest

from tests.training_fixtures import MEMO_PAIRS, tiny_model_dir

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _train(cfg_kw: dict, quantization: str = "none"):
    from models.lm import load_base
    from training.config import TrainConfig
    from training.formatting import tokenize_rows
    from training.kernels import use_liger
    from training.train import Trainer, prepare_model

    cfg = TrainConfig(max_steps=10, learning_rate=1e-2, warmup_steps=0, lr_scheduler="constant",
                      quantization=quantization, **cfg_kw)
    dtype = "bfloat16" if quantization == "none" else "float32"
    base, tok = load_base(str(tiny_model_dir()), dtype=dtype, device="cuda", quantization=quantization)
    tok.padding_side = "right"
    use_liger(base, cfg.liger_kernels, "cuda:0")  # as training.train.run does
    model = prepare_model(base, cfg)
    ex, _ = tokenize_rows(tok, [{"instruction": q, "response": a} for q, a in MEMO_PAIRS], max_length=128)
    torch.cuda.reset_peak_memory_stats()
    tr = Trainer(model, tok, cfg, ex, [], None, "cuda")
    tr.train()
    return model, [h["loss"] for h in tr.history if "loss" in h]


def test_lora_on_a_bf16_base_keeps_fp32_adapters_and_learns():
    model, losses = _train({})
    assert losses[-1] < losses[0]
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n)
    assert any(d == torch.bfloat16 for n, d in dtypes.items() if "lora_" not in n)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_qlora_4bit_trains_the_adapter_only():
    model, losses = _train({}, quantization="4bit")
    assert losses[-1] < losses[0]
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())


def test_the_memory_plan_is_not_below_the_measured_peak():
    from transformers import AutoConfig

    from training.config import TrainConfig
    from training.memory import plan, shape_of

    _train({})
    peak = torch.cuda.max_memory_allocated()
    est = plan(shape_of(AutoConfig.from_pretrained(str(tiny_model_dir()))), TrainConfig(), "cuda:0")
    assert est.total >= peak


@pytest.mark.parametrize("attention", ["sdpa", "packed"])
def test_cuda_attention_paths_train_the_same_packed_rows(attention):
    """transformers' varlen route from position_ids (the CUDA default) and tuneloop's packed kernel
    learn alike on CUDA (same data, same seed: the first loss agrees)."""
    torch.manual_seed(0)
    _, losses = _train({"attention": attention})
    assert losses[-1] < losses[0]


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="needs liger-kernel (tuneloop[gpu])")
def test_liger_kernels_patch_the_model_and_it_still_learns():
    from models.lm import load_base
    from training.kernels import use_liger

    base, _ = load_base(str(tiny_model_dir()), dtype="bfloat16", device="cuda")
    assert use_liger(base, True, "cuda:0")
    assert any("Liger" in type(m).__name__ for m in base.modules())
    _, losses = _train({"liger_kernels": True})
    assert losses[-1] < losses[0]
