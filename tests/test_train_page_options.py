"""The Train page offers what the CLI offers (issue 16): objective dpo/orpo with the run to start
from and the slice's preference pairs, quantization, gradient checkpointing, attention, gradual
unfreezing, GPUs, and the memory plan before the start.

Real Streamlit (AppTest through the app's router), a real project, a real tiny model and real
training processes; a run started here is cancelled (or fails on its own) and waited for, bounded.
"""

from __future__ import annotations

import pytest

from store import errors as errors_store
from store import runs as runs_store
from tests.test_app_pages import app
from tests.test_train_loop_app import _chart_rows
from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from training.memory import cuda_devices
from training.runner import cancel_run, start_run, wait_run

EVAL = [("What colour is the sea?", "blue"), ("What colour is milk?", "white")]
FAST = ["learning_rate=1e-2", "warmup_steps=0", "lr_scheduler=constant", "threads=1", "save_every=0"]
LIMIT_S = 300.0  # a ceiling against hangs, never a speed requirement


@pytest.fixture
def memo(project, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    return project


def _ok(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _plain(text: str) -> str:
    """Markdown the page escaped (app.components.esc) back to its text."""
    return text.replace("\\", "").replace("\u2060", "")


def _texts(at) -> list[str]:
    return [_plain(x.value) for x in (*at.caption, *at.warning, *at.error, *at.info, *at.markdown)]


def _toml(at, **values) -> None:
    """Set keys of the page's TOML config (each must be there once)."""
    lines = at.text_area(key="tr_toml").value.splitlines()
    for k, v in values.items():
        hits = [i for i, line in enumerate(lines) if line.split(" = ", 1)[0] == k]
        assert len(hits) == 1, (k, lines)
        lines[hits[0]] = f"{k} = {v}"
    at.text_area(key="tr_toml").set_value("\n".join(lines) + "\n")


def _plan_device() -> str:
    from models.lm import pick_device

    device = pick_device("auto")
    return "cuda:0" if device == "cuda" else device


def _stop(project, run_id: str) -> str:
    cancel_run(project, run_id)
    return wait_run(project, run_id, timeout_s=LIMIT_S).status


def test_advanced_choices_land_in_the_run_config_as_cli_overrides(memo):
    tiny = str(tiny_model_dir())
    at = app("train")
    at.text_input(key="tr_base").set_value(tiny)
    at.selectbox(key="tr_quant").set_value("4bit")
    at.selectbox(key="tr_ckpt").set_value("on")
    at.selectbox(key="tr_attention").set_value("sdpa")
    at.number_input(key="tr_unfreeze").set_value(2)
    at.text_input(key="tr_name").set_value("advanced").run()
    _ok(at)
    texts = _texts(at)
    n_cuda = cuda_devices()
    if n_cuda <= 1:  # one process, and it says why; without CUDA, that 4-bit will be refused too
        assert any(f"one process: {n_cuda} CUDA device{'' if n_cuda == 1 else 's'} found" in t for t in texts), texts
        assert not any(w.key == "tr_nproc" for w in at.number_input)
    else:
        assert at.number_input(key="tr_nproc").value == 1 and at.selectbox(key="tr_distributed").disabled
    assert any("quantization are refused by the trainer" in t for t in texts) == (n_cuda == 0), texts
    # the command line the run is equivalent to: the controls as the CLI's key=value overrides
    cli = at.code[0].value
    assert cli.startswith("tuneloop train --slice memo@") and f"--base {tiny}" in cli
    assert cli.endswith("quantization=4bit gradient_checkpointing=true attention=sdpa unfreeze_every=2"), cli
    assert not at.button(key="tr_start").disabled
    at.button(key="tr_start").click().run()
    _ok(at)
    with memo.connect() as con:
        run = runs_store.get(con, "advanced")
    cfg = run.config
    assert (cfg["quantization"], cfg["gradient_checkpointing"], cfg["attention"], cfg["unfreeze_every"]) == \
        ("4bit", True, "sdpa", 2)
    assert cfg["objective"] == "sft" and cfg["nproc"] == 1 and run.kind == "train" and run.base_model == tiny
    # 4-bit off CUDA: the trainer refuses it in its own process (or the run is cancelled first)
    assert _stop(memo, run.id) in ("failed", "cancelled", "succeeded")


def test_dpo_on_corrections_is_one_more_button(memo):
    from training.predict import predict_run

    tiny = str(tiny_model_dir())
    sft = start_run(memo, "memo", base_model=tiny, overrides=[*FAST, "max_steps=2"], name="sft", wait=True)
    with memo.connect() as con:
        assert runs_store.get(con, sft).status == "succeeded"

    at = app("train")
    at.radio(key="tr_objective").set_value("dpo").run()
    _ok(at)
    assert at.selectbox(key="tr_from_run_dpo").options == [at.selectbox(key="tr_from_run_dpo").format_func(sft)]
    assert at.selectbox(key="tr_from_run_dpo").value == sft
    assert at.text_input(key="tr_base").disabled  # the run trains on the base of the run it starts from
    assert any("No preference pairs for the slice's train pairs" in t for t in _texts(at)), _texts(at)
    start = at.button(key="tr_start")
    assert start.disabled and "needs preference pairs" in _plain(start.help or "")
    assert any("Start is off" in t and "needs preference pairs" in t for t in _texts(at))

    # corrections of the SFT run's predictions store the preference pairs
    psid = predict_run(memo, sft, split="train", max_new_tokens=3, perplexity=False)
    with memo.connect() as con:
        for p in runs_store.predictions_frame(con, psid).to_dicts():
            errors_store.correct(con, p["prediction_id"], f"The colour is {p['reference']}.", author="tester")
    at.run()
    _ok(at)
    assert any(f"{len(MEMO_PAIRS)} preference pairs for the slice's train pairs" in t for t in _texts(at)), _texts(at)
    at.radio(key="tr_pref_scope").set_value("all")
    at.number_input(key="tr_beta").set_value(0.5)
    at.text_input(key="tr_name").set_value("dpo").run()
    _ok(at)
    assert any(f"{len(MEMO_PAIRS)} preference pairs in the project" in t for t in _texts(at))
    cli = at.code[0].value
    assert "--base" not in cli and cli.endswith(f"objective=dpo from_run={sft} beta=0.5 preference_pairs=all"), cli
    assert not at.button(key="tr_start").disabled
    at.button(key="tr_start").click().run()
    _ok(at)
    with memo.connect() as con:
        run = runs_store.get(con, "dpo")
        source = runs_store.get(con, sft)
    assert (run.config["objective"], run.config["from_run"], run.config["beta"], run.config["preference_pairs"]) == \
        ("dpo", sft, 0.5, "all")
    assert run.kind == "dpo" and run.parent_run_id == sft and run.base_model == tiny
    assert at.selectbox(key="tr_watch").value == run.id  # the page shows the run it started
    from training.runfolder import RunFolder

    folder = RunFolder(run.run_dir)
    assert folder.job()["init_adapter"] == source.adapter_path
    assert len(folder.read_rows("preference")) == len(MEMO_PAIRS)
    assert _stop(memo, run.id) in ("cancelled", "succeeded")


def test_orpo_needs_no_run_to_start_from_and_dpo_needs_one(memo):
    at = app("train")
    at.radio(key="tr_objective").set_value("dpo").run()
    _ok(at)
    assert at.selectbox(key="tr_from_run_dpo").options == []
    assert any("train an SFT run first" in t for t in _texts(at))
    assert at.button(key="tr_start").disabled
    at.radio(key="tr_objective").set_value("orpo").run()
    _ok(at)
    assert at.selectbox(key="tr_from_run_orpo").value == ""  # a new adapter on the base
    assert not at.text_input(key="tr_base").disabled
    assert any("No preference pairs" in t for t in _texts(at)) and at.button(key="tr_start").disabled


def test_memory_plan_is_shown_and_a_plan_that_cannot_fit_turns_start_off(memo):
    tiny = str(tiny_model_dir())
    at = app("train")
    at.text_input(key="tr_base").set_value(tiny).run()
    _ok(at)
    assert any(m.value == "**Memory plan**" for m in at.markdown)
    plan = [t for t in _texts(at) if "M parameters" in t and "trainable" in t]
    device = _plan_device()
    assert plan and f"free on {device}" in plan[0], _texts(at)
    bars = {(r["bar"], r["part"]) for r in _chart_rows(at) if "bar" in r}
    assert ("this run", "weights") in bars and (f"free on {device}", "free") in bars
    assert not at.button(key="tr_start").disabled

    # a micro-batch of 100M tokens: its logits alone are terabytes; memory_check refuses such a run
    _toml(at, batch_tokens=100_000_000)
    at.run()
    _ok(at)
    assert any("Does not fit" in _plain(e.value) and "Change:" in _plain(e.value) for e in at.error), _texts(at)
    start = at.button(key="tr_start")
    assert start.disabled and "memory plan does not fit" in _plain(start.help or "")

    # memory_check = false: it warns and starts anyway, as the trainer would
    _toml(at, memory_check="false")
    at.run()
    _ok(at)
    assert not at.error and any("Does not fit" in _plain(w.value) for w in at.warning)
    assert not at.button(key="tr_start").disabled


def test_a_base_it_cannot_resolve_offline_says_so_and_still_starts(memo):
    at = app("train")
    at.text_input(key="tr_base").set_value("no-such-org/no-such-model-anywhere").run()
    _ok(at)
    assert any("No memory plan" in t and "without downloading" in t for t in _texts(at)), _texts(at)
    assert not at.button(key="tr_start").disabled  # the run's own process says why it cannot load it


def test_a_bad_config_is_shown_before_the_start(memo):
    at = app("train")
    _toml(at, max_length=4096)  # above batch_tokens: training.config refuses it
    at.run()
    _ok(at)
    assert any("batch_tokens" in _plain(e.value) for e in at.error) and at.button(key="tr_start").disabled


