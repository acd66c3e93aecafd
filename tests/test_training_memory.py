"""The memory plan before a run starts (training/memory.py): exact parameter counts from a config on
the meta device, what QLoRA and checkpointing save, a refusal that says what to change, and QLoRA
refused with a reason where it cannot run (no CUDA, no bitsandbytes)."""

from __future__ import annotations

import pytest

from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from training.config import TrainConfig
from training.memory import DoesNotFit, GiB, check, plan, shape_of

# Qwen2.5-0.5B- and -1.5B-shaped configs (built here: nothing is downloaded)
QWEN_05 = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
           "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}
QWEN_15 = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
           "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}


def _qwen(spec):
    from transformers import Qwen2Config

    return shape_of(Qwen2Config(**spec))


def test_parameter_counts_are_exact_for_a_real_model_and_its_lora_adapter():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    tiny = str(tiny_model_dir())
    shape = shape_of(AutoConfig.from_pretrained(tiny))
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    for cfg in (TrainConfig(), TrainConfig(lora_r=4, target_modules=["q_proj", "v_proj"]),
                TrainConfig(lora_top_layers=1)):
        extra = {"layers_to_transform": [1]} if cfg.lora_top_layers else {}
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.target_modules), task_type="CAUSAL_LM",
            **extra))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert plan(shape, cfg, "cpu").n_trainable == trainable, cfg
    # fp32 on the CPU: the weights are exactly the model's bytes
    assert plan(shape, TrainConfig(), "cpu").weights == sum(p.numel() * 4 for p in model.parameters())


def test_real_sizes_qlora_and_checkpointing():
    small, big = _qwen(QWEN_05), _qwen(QWEN_15)
    assert 0.45e9 < small.n_params < 0.55e9 and 1.45e9 < big.n_params < 1.6e9  # Qwen2.5-0.5B / 1.5B
    lora = plan(big, TrainConfig(batch_tokens=4096, max_length=1024), "cuda:0")
    qlora = plan(big, TrainConfig(batch_tokens=4096, max_length=1024, quantization="4bit"), "cuda:0")
    assert lora.weights == pytest.approx(big.n_params * 2, rel=0.01)  # bf16 base on CUDA
    assert qlora.weights < 0.45 * lora.weights  # layers in 4 bits; embeddings stay bf16
    assert lora.n_trainable == qlora.n_trainable == pytest.approx(18.5e6, rel=0.02)  # r=16, all linear
    # checkpointing: on by default from 1B parameters, and it cuts activations by an order of magnitude
    assert lora.gradient_checkpointing and not plan(small, TrainConfig(), "cuda:0").gradient_checkpointing
    off = plan(big, TrainConfig(batch_tokens=4096, max_length=1024, gradient_checkpointing=False), "cuda:0")
    assert off.activations > 8 * lora.activations
    full = plan(big, TrainConfig(method="full", batch_tokens=4096, max_length=1024), "cuda:0")
    assert full.trainable_state == big.n_params * 16 and full.total > 3 * lora.total


def test_a_run_that_cannot_fit_is_refused_with_what_to_change():
    big = _qwen(QWEN_15)
    full = TrainConfig(method="full", batch_tokens=8192, max_length=1024, gradient_checkpointing=False)
    with pytest.raises(DoesNotFit) as err:
        check(big, full, "cuda:0", free=16 * GiB)
    msg = str(err.value)
    assert "only 16.00 GiB is free on cuda:0" in msg and "method=lora with checkpointing" in msg
    lora = TrainConfig(batch_tokens=65536, max_length=1024, gradient_checkpointing=False)
    with pytest.raises(DoesNotFit) as err:
        check(big, lora, "cuda:0", free=12 * GiB)
    msg = str(err.value)
    # checkpointing alone still needs more than 12 GiB here: only the change that fits is proposed
    assert "Change: batch_tokens=2048 (~11.46 GiB; raise grad_accum to keep the batch)." in msg
    assert "gradient_checkpointing=true" not in msg
    assert check(big, TrainConfig(batch_tokens=4096, max_length=1024), "cuda:0", free=80 * GiB).total < 80 * GiB


def test_quantization_is_refused_where_it_cannot_run():
    from models.lm import load_base

    with pytest.raises(ValueError, match="quantization=4bit trains LoRA adapters"):
        TrainConfig(method="full", quantization="4bit")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        load_base(str(tiny_model_dir()), device="cpu", quantization="4bit")


def test_the_run_records_its_plan_and_a_run_too_big_for_the_machine_fails_saying_why(project):
    from store import runs as runs_store
    from training.runner import start_run

    tiny = str(tiny_model_dir())
    make_slice(project, "memo", MEMO_PAIRS)
    fast = ["learning_rate=1e-2", "warmup_steps=0", "threads=1", "max_steps=2", "predict_after=false"]
    rid = start_run(project, "memo", base_model=tiny, overrides=fast, name="fits", author="tester", wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
    assert run.status == "succeeded", run.error
    # a micro-batch of 2**31 tokens needs terabytes of logits: refused before the model is loaded
    rid = start_run(project, "memo", base_model=tiny, overrides=[*fast, f"batch_tokens={2**31}"], name="huge",
                    author="tester", wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
    assert run.status == "failed" and run.error.startswith("DoesNotFit: this run needs ~")
    assert "free on cpu" in run.error and "batch_tokens=" in run.error


def test_a_preference_run_is_planned_for_its_chosen_and_rejected_answers_and_told_what_to_change():
    big = _qwen(QWEN_15)
    dpo = TrainConfig(objective="dpo", from_run="run_x", pairs_per_batch=8, max_length=1024,
                      gradient_checkpointing=False)
    p = plan(big, dpo, "cuda:0")
    assert p.batch_tokens == 2 * 8 * 1024  # chosen + rejected per pair, padded to max_length at most
    assert p.weights == pytest.approx(big.n_params * 4, rel=0.01)  # dpo/orpo hold the base in fp32
    assert plan(big, dpo.model_copy(update={"pairs_per_batch": 2}), "cuda:0").activations == p.activations // 4
    with pytest.raises(DoesNotFit) as err:
        check(big, dpo, "cuda:0", free=16 * GiB)
    msg = str(err.value)
    assert "pairs_per_batch=" in msg and "quantization" not in msg and "batch_tokens" not in msg


def test_fsdp_plans_each_process_for_its_shard_of_weights_and_optimizer_state():
    big = _qwen(QWEN_15)
    full = TrainConfig(method="full", batch_tokens=4096, max_length=1024)
    one = plan(big, full, "cuda:0")
    four = plan(big, full.model_copy(update={"nproc": 4, "distributed": "fsdp"}), "cuda:0")
    ddp = plan(big, full.model_copy(update={"nproc": 4, "distributed": "ddp"}), "cuda:0")
    assert four.trainable_state == one.trainable_state // 4 and four.weights == one.weights // 4
    assert four.activations == one.activations and ddp.total == one.total  # DDP keeps a full copy per process


def test_preference_runs_refuse_settings_trl_would_ignore():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unfreeze_every=0"):
        TrainConfig(objective="orpo", unfreeze_every=3)
    with pytest.raises(ValidationError, match="attention=auto"):
        TrainConfig(objective="orpo", attention="sdpa")
