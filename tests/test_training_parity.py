"""Parity with the standard trainer: tuneloop's loss and LoRA gradients for a batch equal TRL's
``SFTTrainer`` (padding-free, loss on the assistant's answer only) on the same tiny model and data.

How TRL is set up, and what is aligned (each on purpose, each asserted):

- Loss on the answer only: TRL's ``assistant_only_loss`` needs ``{% generation %}`` markers, which
  SmolLM2's chat template lacks, and TRL 1.16 has no training template to patch in for it (it
  raises). For single-turn data the equivalent is TRL's conversational prompt-completion format
  (``{"prompt": [system?, user], "completion": [assistant]}``) with ``completion_only_loss=True``.
- Same token ids: both render with the tokenizer's chat template (the template's default system
  prompt when a row has none, the row's own otherwise) and tokenize without added special tokens;
  the test asserts identical ``input_ids`` and ``position_ids`` (per example, then the packed row).
- One genuine difference: TRL's completion is everything after the generation prompt, so it also
  trains on the ``"\\n"`` that the template writes after ``<|im_end|>``; tuneloop's mask stops at
  the end-of-turn token (``training/formatting.py``). The test asserts this is the only
  difference (exactly one extra target per example, its last token) and masks that label in
  TRL's dataset before collating, so both sides compare the same targets.
- Normalisation: TRL divides the summed cross-entropy by the number of target tokens of the batch,
  or, under gradient accumulation, by ``num_items_in_batch`` (the target tokens of every
  micro-batch of the step) without a further division by the number of micro-batches; tuneloop's
  Trainer divides every micro-batch's ``loss_sum`` by the ``loss_weight`` of the whole step. With
  weights of 1 these agree, one batch and two unequal micro-batches alike.

Both tuneloop attention paths are checked: the CPU fast path (``packed_attention`` +
``segment_attention``) and transformers' sdpa reading the per-example ``position_ids``.
"""

from __future__ import annotations

import pytest

from tests.training_fixtures import MEMO_PAIRS, tiny_model_dir

pytest.importorskip("trl")
pytest.importorskip("datasets")

IGNORE = -100
TOL = 1e-4
# Answers of different lengths (so micro-batches differ in target tokens) and one row with its own
# system prompt (which replaces the template's default one on both sides).
ROWS = [{"instruction": q, "response": a} for q, a in MEMO_PAIRS[:3]] + [
    {"instruction": "Describe the sky at dusk.", "response": "Orange and pink, fading into a deep blue."},
    {"instruction": "What colour is chalk?", "response": "White, mostly.", "system": "Answer in two words."},
]


def _trl_row(row: dict) -> dict:
    prompt = ([{"role": "system", "content": row["system"]}] if row.get("system") else []) + [
        {"role": "user", "content": row["instruction"]}]
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": row["response"]}]}


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from training.formatting import tokenize_rows

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir()))
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir()))  # float32
    model = get_peft_model(base, LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])).train()
    ex, _ = tokenize_rows(tok, ROWS, max_length=512)
    assert len(ex) == len(ROWS)
    args = SFTConfig(output_dir=str(tmp_path_factory.mktemp("trl")), report_to=[], use_cpu=True, bf16=False,
                     fp16=False, padding_free=True, completion_only_loss=True, max_length=None,
                     per_device_train_batch_size=len(ROWS), gradient_accumulation_steps=2,
                     # recomputes activations only; off so the one model object is left as built
                     activation_checkpointing=False, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([_trl_row(r) for r in ROWS]),
                         processing_class=tok)
    assert trainer.model is model and trainer.padding_free and trainer.completion_only_loss
    lora = [p for p in model.parameters() if p.requires_grad]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    return {"tok": tok, "model": model, "ex": ex, "trainer": trainer, "lora": lora,
            "processed": [trainer.train_dataset[i] for i in range(len(ROWS))]}


def _aligned(setup, idx: list[int]) -> list[dict]:
    """TRL's processed examples with the label of the newline after ``<|im_end|>`` masked."""
    tok = setup["tok"]
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    assert len(nl) == 1
    out = []
    for i in idx:
        d = setup["processed"][i]
        labels = list(d["labels"])
        assert labels[-1] == nl[0] and d["input_ids"][-2] == tok.eos_token_id  # "<|im_end|>" "\n" end the row
        labels[-1] = IGNORE
        out.append({"input_ids": d["input_ids"], "labels": labels})
    return out


def _trl_batch(setup, idx: list[int]) -> dict:
    return setup["trainer"].data_collator(_aligned(setup, idx))


def _grads(setup, fn):
    model = setup["model"]
    model.zero_grad(set_to_none=True)
    loss = fn()
    return float(loss), [p.grad.detach().clone() for p in setup["lora"]]


def _tuneloop_step(setup, batches: list[list[int]], path: str):
    """tuneloop's Trainer._train for one step: every micro-batch's weighted loss sum over the
    loss_weight of the whole step, backward per micro-batch."""
    from training.attention import packed_attention, use_attention
    from training.data import collate, loss_sum

    model, ex, tok = setup["model"], setup["ex"], setup["tok"]
    mbs = [collate([ex[i] for i in b], pad_id=tok.pad_token_id, packed=True) for b in batches]
    denom = sum(mb.loss_weight for mb in mbs)

    def run():
        total = 0.0
        for mb in mbs:
            loss = loss_sum(model, mb, "cpu", segment_attention=(path == "segment")) / denom
            loss.backward()
            total += float(loss.detach())
        return total

    if path == "segment":
        with packed_attention(model):
            return _grads(setup, run)
    use_attention(model, "sdpa")
    return _grads(setup, run)


def test_trl_sees_the_same_tokens_and_targets_but_for_the_newline_after_end_of_turn(setup):
    import torch

    from training.data import collate

    tok, ex = setup["tok"], setup["ex"]
    for e, d in zip(ex, setup["processed"], strict=True):
        assert d["input_ids"] == e.input_ids
        trl_targets = [lab != IGNORE for lab in d["labels"]]
        assert [int(t) for t in trl_targets[:-1]] == e.loss_mask[:-1]  # same targets up to the last token
        assert trl_targets[-1] and not e.loss_mask[-1]  # ... which only TRL trains on: "\n" after <|im_end|>
        assert e.input_ids[-2:] == [tok.eos_token_id, *tok("\n", add_special_tokens=False)["input_ids"]]
        assert [lab for lab in d["labels"][:-1] if lab != IGNORE] == [t for t, m in zip(e.input_ids, e.loss_mask) if m]
    idx = list(range(len(ex)))
    batch, mb = _trl_batch(setup, idx), collate(ex, pad_id=tok.pad_token_id, packed=True)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free: one row
    assert torch.equal(batch["input_ids"], mb.input_ids) and torch.equal(batch["position_ids"], mb.position_ids)
    # TRL's labels are unshifted (token t is the target of position t-1); tuneloop keeps the predicting positions
    where = (batch["labels"][0] != IGNORE).nonzero().flatten()
    assert torch.equal(where, mb.keep + 1) and torch.equal(batch["labels"][0, where], mb.targets[0])
    assert mb.loss_weight == mb.n_loss_tokens == len(where)


@pytest.fixture(scope="module")
def trl_one_batch(setup):
    trainer = setup["trainer"]
    batch = trainer._prepare_inputs(_trl_batch(setup, list(range(len(ROWS)))))
    return _grads(setup, lambda: _backward(trainer.compute_loss(setup["model"], batch)))


def _backward(loss):
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("path", ["segment", "sdpa"])
def test_one_batch_loss_and_lora_gradients_equal_trl(setup, trl_one_batch, path):
    ref_loss, ref = trl_one_batch
    loss, got = _tuneloop_step(setup, [list(range(len(ROWS)))], path)
    assert abs(loss - ref_loss) / abs(ref_loss) < TOL, (loss, ref_loss)
    errs = [_rel(a, b) for a, b in zip(got, ref, strict=True)]
    assert all(float(b.norm()) > 0 for b in ref)
    assert max(errs) < TOL, errs


def test_the_comparison_tells_a_different_loss_mask_apart(setup, trl_one_batch):
    """The check has teeth: training on one extra token per example (TRL's raw newline target) or
    on the prompt tokens too moves the loss far beyond the tolerance."""
    import dataclasses

    import torch

    from training.data import collate, loss_sum

    ref_loss, _ = trl_one_batch
    trainer, model, tok = setup["trainer"], setup["model"], setup["tok"]
    with torch.no_grad():
        raw = trainer.data_collator([{"input_ids": d["input_ids"], "labels": d["labels"]} for d in setup["processed"]])
        raw_loss = float(trainer.compute_loss(model, trainer._prepare_inputs(raw)))
        all_tokens = [dataclasses.replace(e, loss_mask=[0] + [1] * (len(e.input_ids) - 1)) for e in setup["ex"]]
        mb = collate(all_tokens, pad_id=tok.pad_token_id, packed=True)
        prompt_too = float(loss_sum(model, mb, "cpu") / mb.loss_weight)
    assert abs(raw_loss - ref_loss) / ref_loss > 10 * TOL
    assert abs(prompt_too - ref_loss) / ref_loss > 10 * TOL


@pytest.mark.parametrize("path", ["segment", "sdpa"])
def test_gradient_accumulation_normalises_by_every_target_token_of_the_step_like_trl(setup, path):
    """Two micro-batches with unequal target counts: TRL's training_step with the Trainer's own
    ``num_items_in_batch`` == tuneloop dividing each micro-batch by the step's total loss weight
    (not the mean of per-micro-batch means)."""
    trainer, model = setup["trainer"], setup["model"]
    split = [[0, 1, 2], [3, 4]]
    # as Trainer's loop does: take the step's micro-batches, count the targets of all of them
    batches, num = trainer.get_batch_samples(iter([_trl_batch(setup, b) for b in split]), len(split),
                                             trainer.args.device)
    assert int(num) == sum(sum(setup["ex"][i].loss_mask) for b in split for i in b)
    trainer.current_gradient_accumulation_steps = len(split)

    def trl_step():
        return sum(float(trainer.training_step(model, b, num_items_in_batch=num)) for b in batches)

    ref_loss, ref = _grads(setup, trl_step)
    loss, got = _tuneloop_step(setup, split, path)
    assert abs(loss - ref_loss) / abs(ref_loss) < TOL, (loss, ref_loss)
    errs = [_rel(a, b) for a, b in zip(got, ref, strict=True)]
    assert max(errs) < TOL, errs
    # the normalisation matters here: the mean of the micro-batches' own means is another loss
    per_mb = [_tuneloop_step(setup, [b], path)[0] for b in split]
    assert abs(sum(per_mb) / len(per_mb) - ref_loss) / ref_loss > 10 * TOL
