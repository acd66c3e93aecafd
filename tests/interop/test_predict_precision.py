"""Issue 17 point 5: predictions are reproducible and say the precision they ran in.

With precision fp32 (and with auto on a CPU) ``predict`` gives exactly what plain fp32
transformers greedy decoding gives on the same chat-template prompts, for an untrained base and
for a trained LoRA adapter; the generation config records the precision actually used, and a
forced bf16 is recorded as bf16 and matches plain transformers under bf16 autocast.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from store import runs as runs_store
from store import slices as slices_store
from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from training.predict import generation_config, predict_base, predict_run
from training.runner import start_run
from tuneloop.cli import app

EVAL = [("What colour is the sea?", "blue"), ("What colour is milk?", "white"), ("What is 12 + 7?", "19"),
        ("Name a fruit.", "apple")]
MNT = 12
FAST = ["learning_rate=1e-2", "warmup_steps=0", "lr_scheduler=constant", "threads=1", "max_steps=6",
        "batch_tokens=128", "max_length=64"]


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(tiny_model_dir())


def _plain(model_dir: str, questions: list[str], *, adapter: str | None = None, bf16: bool = False) -> list[str]:
    """Plain transformers: fp32 weights, one prompt at a time, ``generate(do_sample=False)``."""
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    eos = tok.eos_token_id
    out = []
    for q in questions:
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                      return_dict=True, return_tensors="pt")
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            seq = model.generate(**ids, do_sample=False, max_new_tokens=MNT, pad_token_id=eos, eos_token_id=eos)
        new = seq[0, ids["input_ids"].shape[1]:].tolist()
        new = new[: new.index(eos)] if eos in new else new
        out.append(tok.decode(new, skip_special_tokens=True).strip())
    return out


def _outputs(project, psid: str) -> dict[str, str]:
    """question -> predicted answer of a prediction set."""
    with project.connect() as con:
        df = runs_store.predictions_frame(con, psid)
        ex = slices_store.examples(con, slices_store.get(con, "memo").id, "eval")
    q_of = dict(zip(ex["pair_id"].to_list(), ex["instruction"].to_list()))
    return {q_of[p]: o for p, o in zip(df["pair_id"].to_list(), df["output"].to_list())}


def _expect(project, psid: str, questions: list[str], plain: list[str]) -> None:
    got = _outputs(project, psid)
    assert [got[q] for q in questions] == plain


def test_fp32_predictions_equal_plain_transformers_base_and_lora(project, tiny):
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    qs = [q for q, _ in EVAL]
    common = dict(max_new_tokens=MNT, batch_size=1, perplexity=False)

    # the untrained base, asked for fp32
    _, psid = predict_base(project, "memo", base_model=tiny, precision="fp32", **common)
    g = generation_config(project, psid)
    assert (g["precision"], g["autocast_dtype"], g["precision_requested"], g["model_dtype"]) == \
        ("fp32", None, "fp32", "float32")
    _expect(project, psid, qs, _plain(tiny, qs))

    # a trained LoRA run, default precision: auto is fp32 on a CPU (native bf16 or not)
    rid = start_run(project, "memo", base_model=tiny, overrides=FAST, wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
    assert run.status == "succeeded" and run.adapter_path
    psid = predict_run(project, rid, **common)
    g = generation_config(project, psid)
    assert (g["precision"], g["autocast_dtype"], g["precision_requested"]) == ("fp32", None, "auto")
    _expect(project, psid, qs, _plain(tiny, qs, adapter=run.adapter_path))


def test_bf16_forced_is_recorded_and_is_what_ran_cli(project, tiny):
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    qs = [q for q, _ in EVAL]
    res = CliRunner().invoke(app, ["predict", "--base", tiny, "--slice", "memo", "--precision", "bf16",
                                   "--batch-size", "1", "--max-new-tokens", str(MNT), "--no-perplexity",
                                   "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    assert "precision bf16 (asked: bf16; autocast bfloat16" in res.output
    with project.connect() as con:
        (psid,) = [s for s in runs_store.prediction_sets(con, runs_store.list_runs(con)[0].id)["id"].to_list()]
    g = generation_config(project, psid)
    assert (g["precision"], g["autocast_dtype"]) == ("bf16", "bfloat16")
    # what ran is bf16 autocast: the same answers as plain transformers under bf16 autocast
    # (CPU autocast computes bf16 with or without native support; native: cpu_has_bf16())
    _expect(project, psid, qs, _plain(tiny, qs, bf16=True))


def test_unknown_precision_is_one_clear_line(project, tiny):
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    res = CliRunner().invoke(app, ["predict", "--base", tiny, "--slice", "memo", "--precision", "fp16",
                                   "--project", str(project.root)])
    assert res.exit_code != 0 and "use auto, fp32 or bf16" in res.output
    with pytest.raises(ValueError, match="unknown precision"):
        predict_base(project, "memo", base_model=tiny, precision="half")
