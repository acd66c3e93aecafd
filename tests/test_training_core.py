"""Pure parts of training: formatting and loss masks, packing, config, schedule, metrics."""

from __future__ import annotations

import pytest

from store.config import ConfigError
from training.config import TrainConfig, load, to_toml
from training.data import IGNORE, collate, plan_batches
from training.formatting import conversation, prompt_and_reference, tokenize_conversation, tokenize_rows
from training.train import lr_lambda


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from models.lm import tokenizer_dir

    t = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    t.padding_side = "right"
    return t


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    out, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        if not m and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("response", ["blue", " leading space", "two\nlines", "émoji 🙂 ok", "assistant: hi <b>x</b>",
                                      "The answer is 42."])
def test_loss_mask_covers_exactly_the_response_tokens(tok, response):
    conv = conversation({"instruction": "Q?", "input": "ctx", "response": response, "system": "Be brief."})
    t = tokenize_conversation(tok, conv, max_length=512)
    # The prompt alone, rendered for generation, is exactly the unmasked prefix, token by token.
    prompt_ids = list(tok(tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True),
                          add_special_tokens=False)["input_ids"])
    assert t.input_ids[: len(prompt_ids)] == prompt_ids
    assert t.loss_mask[: len(prompt_ids)] == [0] * len(prompt_ids)
    # Then the response and the end-of-turn token are masked in, and nothing after them.
    (a, b), = _runs(t.loss_mask)
    assert a == len(prompt_ids)
    assert tok.decode(t.input_ids[a:b]) == response + tok.eos_token
    assert t.input_ids[b - 1] == tok.eos_token_id
    assert all(m == 0 for m in t.loss_mask[b:])
    assert tok.decode(t.input_ids[b:]).strip() == ""


def test_multi_turn_pairs_train_on_every_assistant_turn(tok):
    row = {"instruction": "hi", "response": "second", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "first"},
        {"role": "user", "content": "again"}, {"role": "assistant", "content": "second"}]}
    t = tokenize_conversation(tok, conversation(row), max_length=512)
    spans = _runs(t.loss_mask)
    assert [tok.decode(t.input_ids[a:b]) for a, b in spans] == ["first<|im_end|>", "second<|im_end|>"]
    prompt, ref = prompt_and_reference(row)
    assert ref == "second" and [m["role"] for m in prompt] == ["user", "assistant", "user"]


def test_user_turn_joins_instruction_and_input_and_system_prompt_applies():
    conv = conversation({"instruction": "Translate", "input": "hola", "response": "hello"}, system_prompt="S")
    assert conv == [{"role": "system", "content": "S"}, {"role": "user", "content": "Translate\n\nhola"},
                    {"role": "assistant", "content": "hello"}]
    own = conversation({"instruction": "x", "response": "y", "system": "own"}, system_prompt="S")
    assert own[0]["content"] == "own"


def test_truncation_is_counted_and_examples_without_response_tokens_dropped(tok):
    rows = [{"instruction": "short", "response": "ok"},
            {"instruction": "long " * 200, "response": "ok"},  # prompt alone exceeds max_length: dropped
            {"instruction": "mid", "response": "word " * 100}]  # response cut: kept, truncated
    ex, st = tokenize_rows(tok, rows, max_length=64)
    assert st.truncated == 2 and st.dropped == 1 and st.examples == 2 == len(ex)
    assert all(len(e.input_ids) <= 64 for e in ex)


def test_packing_plans_are_seeded_and_respect_the_token_budget():
    lengths = [5, 30, 12, 7, 40, 3, 22, 9]
    a = plan_batches(lengths, batch_tokens=50, max_examples=4, seed=1)
    assert a == plan_batches(lengths, batch_tokens=50, max_examples=4, seed=1)
    assert a != plan_batches(lengths, batch_tokens=50, max_examples=4, seed=2)
    assert sorted(i for b in a for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 50 and len(b) <= 4 for b in a)


def test_packed_rows_have_no_padding_and_no_cross_example_targets(tok):
    ex, _ = tokenize_rows(tok, [{"instruction": "a", "response": "x"}, {"instruction": "b", "response": "y z"}],
                          max_length=128)
    mb = collate(ex, pad_id=tok.pad_token_id, packed=True)
    assert mb.input_ids.shape == (1, sum(len(e.input_ids) for e in ex))
    assert mb.n_tokens == mb.input_ids.numel() and mb.attention_mask is None
    pos = mb.position_ids[0].tolist()
    assert pos[: len(ex[0].input_ids)] == list(range(len(ex[0].input_ids))) and pos[len(ex[0].input_ids)] == 0
    assert mb.n_loss_tokens == sum(e.n_loss_tokens for e in ex) - 0  # each target predicts a response token
    assert IGNORE not in mb.targets[0].tolist()


def test_packed_loss_equals_separate_losses(tok):
    """Block-diagonal attention: packing examples into one row changes nothing."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.training_fixtures import tiny_model_dir
    from training.data import loss_sum

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir())).eval()
    ex, _ = tokenize_rows(tok, [{"instruction": f"question {i}" * (i + 1), "response": f"answer {i}"} for i in range(3)],
                          max_length=128)
    with torch.no_grad():
        packed = float(loss_sum(model, collate(ex, pad_id=tok.pad_token_id, packed=True), "cpu"))
        separate = sum(float(loss_sum(model, collate([e], pad_id=tok.pad_token_id, packed=True), "cpu")) for e in ex)
        padded = float(loss_sum(model, collate(ex, pad_id=tok.pad_token_id, packed=False), "cpu"))
    assert packed == pytest.approx(separate, rel=1e-4)
    assert padded == pytest.approx(separate, rel=1e-4)


def test_config_rejects_unknown_keys_with_the_key_named(tmp_path):
    with pytest.raises(ConfigError, match="Unknown config key.*lerning_rate"):
        load(None, ["lerning_rate=1e-3"])
    f = tmp_path / "c.toml"
    f.write_text("method = 'lora'\nbogus = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load(f)
    with pytest.raises(ConfigError, match="lora_r"):
        load(None, ["lora_r=0"])
    with pytest.raises(ConfigError, match="method"):
        load(None, ["method=qlora"])


def test_config_toml_roundtrip_and_overrides(tmp_path):
    cfg = load(None, ["max_steps=7", "learning_rate=0.001", "target_modules=['q_proj','v_proj']", "packing=false"])
    assert cfg.max_steps == 7 and cfg.learning_rate == 1e-3 and cfg.target_modules == ["q_proj", "v_proj"]
    f = tmp_path / "c.toml"
    f.write_text(to_toml(cfg))
    assert load(f) == cfg
    assert load(f, ["seed=3"]).seed == 3
    assert TrainConfig().method == "lora"


@pytest.mark.parametrize(("kind", "step", "expected"), [
    ("cosine", 0, 0.25), ("cosine", 3, 1.0), ("cosine", 4, 1.0), ("cosine", 8, 0.5), ("cosine", 12, 0.0),
    ("linear", 8, 0.5), ("linear", 12, 0.0), ("constant", 11, 1.0),
])
def test_warmup_then_decay_schedule(kind, step, expected):
    assert lr_lambda(step, total=12, warmup=4, kind=kind) == pytest.approx(expected)


def _lora_tiny():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.training_fixtures import tiny_model_dir

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir()))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))
    return model.train()


def test_shared_prefix_is_found_and_stops_before_any_target(tok):
    from training.data import shared_prefix_len

    rows = [{"instruction": f"query number {i}", "response": "label", "system": "Route the query."} for i in range(3)]
    ex, _ = tokenize_rows(tok, rows, max_length=128)
    p = shared_prefix_len(ex)
    first_target = min(next(i for i, m in enumerate(e.loss_mask) if m) for e in ex)
    assert 4 <= p < first_target
    assert all(e.input_ids[:p] == ex[0].input_ids[:p] for e in ex)
    assert ex[0].input_ids[p] == ex[1].input_ids[p] or ex[0].input_ids[:p + 1] != ex[1].input_ids[:p + 1]
    assert shared_prefix_len(ex[:1]) == 0  # nothing to share
    same, _ = tokenize_rows(tok, [rows[0], rows[0]], max_length=128)
    assert shared_prefix_len(same) < next(i for i, m in enumerate(same[0].loss_mask) if m)  # never into the response


@pytest.mark.parametrize("share", [False, True])
def test_segment_attention_gives_the_separate_losses_and_gradients(tok, share):
    """Per-example attention (and a shared prefix computed once) == each example on its own."""

    from training.attention import packed_attention, supports_packed_attention
    from training.data import loss_sum

    model = _lora_tiny()
    assert supports_packed_attention(model, 128)
    rows = [{"instruction": f"question {i} " * (i + 1), "response": f"answer {i}", "system": "Be brief."}
            for i in range(4)]
    ex, _ = tokenize_rows(tok, rows, max_length=128)
    mb = collate(ex, pad_id=tok.pad_token_id, packed=True, share_prefix=share)
    assert (mb.prefix_len > 0) == share and mb.n_tokens == sum(len(e.input_ids) for e in ex)
    assert mb.input_ids.shape[1] == mb.n_tokens - (len(ex) - 1) * mb.prefix_len
    lora = [p for n, p in model.named_parameters() if p.requires_grad]

    def run(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in lora]

    with packed_attention(model):
        fast_loss, fast_grads = run(lambda: loss_sum(model, mb, "cpu", segment_attention=True))
    ref_loss, ref_grads = run(lambda: sum(loss_sum(model, collate([e], pad_id=tok.pad_token_id), "cpu") for e in ex))
    assert fast_loss == pytest.approx(ref_loss, rel=1e-5)
    for a, b in zip(fast_grads, ref_grads):
        assert float((a - b).norm() / b.norm()) < 1e-4  # float32 summation order only
    assert model.get_base_model().config._attn_implementation != "tuneloop_packed"  # restored on exit


def test_frozen_linears_switch_dtype_inside_and_restore_ties_on_exit():
    import torch

    from training.attention import frozen_linears_in

    model = _lora_tiny()
    base = model.get_base_model()
    emb, head = base.model.embed_tokens, base.lm_head
    assert head.weight is emb.weight  # tied
    q = base.model.layers[0].self_attn.q_proj
    before = q.base_layer.weight.detach().clone()
    with frozen_linears_in(model, torch.bfloat16) as n:
        assert n > 0
        assert q.base_layer.weight.dtype == torch.bfloat16 and head.weight.dtype == torch.bfloat16
        assert emb.weight.dtype == torch.float32  # the embedding keeps its own fp32 copy
        assert q.lora_A["default"].weight.dtype == torch.float32  # trainable weights untouched
    assert head.weight is emb.weight and q.base_layer.weight.dtype == torch.float32
    assert torch.equal(q.base_layer.weight, before)
