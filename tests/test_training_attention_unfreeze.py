"""The attention switch (tuneloop's packed kernel or transformers' own from position_ids) and
gradual unfreezing, on the tiny model (CPU)."""

from __future__ import annotations

import pytest

from tests.training_fixtures import MEMO_PAIRS, tiny_model_dir


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from models.lm import tokenizer_dir

    t = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    t.padding_side = "right"
    return t


def test_auto_attention_is_the_packed_kernel_on_cpu_and_transformers_varlen_on_cuda():
    from training.attention import choose, flash_attn_available

    assert choose("auto", "cpu") == "packed"
    assert choose("auto", "cuda:0") == ("flash_attention_2" if flash_attn_available() else "sdpa")
    assert choose("sdpa", "cpu") == "sdpa"
    if not flash_attn_available():
        with pytest.raises(ValueError, match="flash-attn"):
            choose("flash_attention_2", "cuda:0")


@pytest.mark.parametrize("attention", ["sdpa", "eager", "flex_attention"])
def test_transformers_attention_on_a_packed_row_equals_each_example_alone(tok, attention):
    """A packed row (no padding, position_ids restarting per example) through transformers' own
    attention gives the loss and LoRA gradients of the examples run one by one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.attention import use_attention
    from training.data import collate, loss_sum
    from training.formatting import tokenize_rows

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir()))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False)).train()
    try:
        use_attention(model, attention)
    except (ImportError, ValueError) as e:  # flex attention needs a torch build that has it
        pytest.skip(f"{attention} is not available here: {e}")
    assert model.get_base_model().config._attn_implementation == attention
    rows = [{"instruction": f"question {i} " * (i + 1), "response": f"answer {i}"} for i in range(4)]
    ex, _ = tokenize_rows(tok, rows, max_length=128)
    packed = collate(ex, pad_id=tok.pad_token_id, packed=True)
    assert packed.input_ids.shape[0] == 1 and packed.attention_mask is None  # one row, no padding
    lora = [p for p in model.parameters() if p.requires_grad]
    if attention == "flex_attention":  # torch has no flex backward on the CPU: the forward pass only
        with torch.no_grad():
            got_loss = float(loss_sum(model, packed, "cpu"))
            ref_loss = float(sum(loss_sum(model, collate([e], pad_id=tok.pad_token_id), "cpu") for e in ex))
        assert got_loss == pytest.approx(ref_loss, rel=1e-5)
        return

    def run(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in lora]

    got_loss, got = run(lambda: loss_sum(model, packed, "cpu"))
    ref_loss, ref = run(lambda: sum(loss_sum(model, collate([e], pad_id=tok.pad_token_id), "cpu") for e in ex))
    assert got_loss == pytest.approx(ref_loss, rel=1e-5)
    for a, b in zip(got, ref, strict=True):
        assert float((a - b).norm() / b.norm()) < 1e-4


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[parts.index("layers") + 1]) if "layers" in parts else None


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradual_unfreezing_trains_the_top_layer_first_then_one_more_every_n_steps(tok, method):
    import torch

    from models.lm import load_base
    from training.config import TrainConfig
    from training.formatting import tokenize_rows
    from training.train import Trainer, prepare_model

    base, tok2 = load_base(str(tiny_model_dir()))
    tok2.padding_side = "right"
    cfg = TrainConfig(method=method, unfreeze_every=2, max_steps=2, learning_rate=1e-2, warmup_steps=0,
                      lr_scheduler="constant", record_dynamics=False)
    model = prepare_model(base, cfg)
    ex, _ = tokenize_rows(tok2, [{"instruction": q, "response": a} for q, a in MEMO_PAIRS], max_length=64)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def changed() -> dict[str, bool]:
        now = dict(model.named_parameters())
        return {n: not torch.equal(now[n].detach(), t) for n, t in start.items()}

    tr = Trainer(model, tok2, cfg, ex, [], None, "cpu")
    assert tr.unfreezing is not None and tr.unfreezing.layers == 2
    tr.train()  # steps 0 and 1: only the top layer (layer 1) trains
    after_two = changed()
    top = [n for n in start if _layer_of(n) == 1]
    bottom = [n for n in start if _layer_of(n) == 0]
    assert top and bottom
    assert any(after_two[n] for n in top)
    assert not any(after_two[n] for n in bottom), [n for n in bottom if after_two[n]]
    if method == "full":  # the tied embedding / LM head unfreezes with the last layer
        assert not after_two["model.embed_tokens.weight"]
        assert after_two["model.norm.weight"]  # the final norm sits above the top layer: trains from the start

    tr.total_steps = cfg.max_steps + 2  # two more steps: both layers train from step 2
    tr.train()
    after_four = changed()
    assert any(after_four[n] for n in bottom)
    if method == "full":
        assert after_four["model.embed_tokens.weight"]
    assert [h["unfrozen_layers"] for h in tr.history if "unfrozen_layers" in h] == [1.0, 2.0]
    assert all(p.requires_grad for n, p in model.named_parameters() if n in start)  # all trained at the end


def test_unfreezing_is_refused_where_it_cannot_work():
    from pydantic import ValidationError

    from training.config import TrainConfig

    with pytest.raises(ValidationError, match="nproc=1"):
        TrainConfig(unfreeze_every=5, nproc=2)
    with pytest.raises(ValidationError, match="top_k"):
        TrainConfig(unfreeze_every=5, method="top_k")


def test_liger_kernels_are_used_only_on_cuda_with_the_package_and_a_required_one_says_why_not():
    from transformers import AutoModelForCausalLM

    from training.kernels import liger_available, use_liger

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir()))
    assert use_liger(model, None, "cpu") is False and use_liger(model, False, "cuda:0") is False
    with pytest.raises(ValueError, match="CUDA device"):
        use_liger(model, True, "cpu")
    if not liger_available():
        assert use_liger(model, None, "cuda:0") is False  # optional: silently off without the extra
        with pytest.raises(ValueError, match=r"pip install 'tuneloop\[gpu\]'"):
            use_liger(model, True, "cuda:0")
