"""Issue 18 point 4: a label task answered within its label set (``predict --decode labels``).

Each label is scored as the model's whole reply (its tokens and the end of turn after it); the
scores from the cached prompt must equal a plain full forward pass over prompt + reply, the
likeliest label is chosen, and every answer is a label. Real tiny model, real project.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from store import runs as runs_store
from tests.training_fixtures import make_slice, tiny_model_dir
from training.label_scoring import choose_labels, label_continuations
from training.predict import generation_config, predict_base
from tuneloop.cli import app

# Two labels where one is a prefix of the other: without the end of turn the longer could never win.
LABELS = ["card_arrival", "card_arrival_delay", "refund_not_showing_up", "exchange_rate", "pin_blocked"]
TRAIN = [(f"Question {i} about my card", LABELS[i % len(LABELS)]) for i in range(20)]
EVAL = [("When will my card arrive?", "card_arrival"), ("My card is late, why?", "card_arrival_delay"),
        ("Where is my refund?", "refund_not_showing_up"), ("What rate do you use?", "exchange_rate"),
        ("My PIN does not work", "pin_blocked"), ("Is my card on its way?", "card_arrival")]


@pytest.fixture(scope="module")
def cm():
    from models.lm import load_chat_model

    return load_chat_model(str(tiny_model_dir()))


def _brute_force(cm, prompt: list[int], cont: list[int]) -> float:
    """log p(cont | prompt) from one plain forward pass over the whole sequence, no cache."""
    import torch

    seq = torch.tensor([prompt + cont])
    with torch.inference_mode():
        logp = torch.log_softmax(cm.model(input_ids=seq).logits[0].double(), dim=-1)
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(cont)))


def test_each_label_ends_with_the_end_of_turn(cm):
    conts = label_continuations(cm, LABELS)
    stops = cm.stop_ids()
    for lab, c in zip(LABELS, conts):
        assert c[-1] in stops and not any(t in stops for t in c[:-1])
        assert cm.tokenizer.decode(c[:-1]).strip() == lab


@pytest.mark.parametrize("chunk", [2, 32])
def test_scores_equal_a_plain_forward_pass_and_the_best_is_chosen(cm, chunk):
    prompts = [cm.prompt_ids([{"role": "user", "content": q}]) for q, _ in EVAL]
    conts = label_continuations(cm, LABELS)
    got = choose_labels(cm, prompts, LABELS, chunk=chunk, precision="fp32")
    assert len(got) == len(EVAL)
    for p, choice in zip(prompts, got):
        truth = {lab: _brute_force(cm, p, c) for lab, c in zip(LABELS, conts)}
        ranked = sorted(truth.values(), reverse=True)
        assert choice.label == max(truth, key=lambda k: truth[k])
        assert choice.logprob == pytest.approx(ranked[0], abs=1e-3)
        assert choice.margin == pytest.approx(ranked[0] - ranked[1], abs=1e-3)
        assert choice.n_tokens == len(conts[LABELS.index(choice.label)])


def test_predict_decode_labels_answers_only_labels_and_is_recorded(project):
    make_slice(project, "intents", TRAIN, eval_pairs=EVAL)
    tiny = str(tiny_model_dir())
    rid, gen_psid = predict_base(project, "intents", base_model=tiny, max_new_tokens=3, perplexity=False)
    _, lab_psid = predict_base(project, "intents", base_model=tiny, decode="labels", perplexity=False)
    with project.connect() as con:
        gen = runs_store.predictions_frame(con, gen_psid)
        lab = runs_store.predictions_frame(con, lab_psid)
    # a random tiny model generating 3 tokens answers with no label at all; within the set it must
    assert not set(gen["output"].to_list()) & set(LABELS)
    assert set(lab["output"].to_list()) <= set(LABELS)
    assert set(lab["finish_reason"].to_list()) == {"label"}
    assert lab["label_logprob"].null_count() == 0 and (lab["label_margin"] >= 0).all()
    assert gen["label_logprob"].null_count() == gen.height
    g = generation_config(project, lab_psid)
    assert (g["decode"], g["labels_scored"]) == ("labels", len(LABELS))
    assert generation_config(project, gen_psid)["decode"] == "generate"


def test_decode_labels_on_free_text_is_refused_cli(project):
    make_slice(project, "prose", [(f"Describe item {i}", f"Item {i} is a long free-text answer number {i}.")
                                  for i in range(6)], eval_pairs=[("Describe item 9", "Item 9 is different.")])
    out = CliRunner().invoke(app, ["predict", "--base", str(tiny_model_dir()), "--slice", "prose",
                                   "--decode", "labels", "--no-perplexity", "--project", str(project.root)])
    assert out.exit_code != 0
    assert "needs a label task" in out.output


def test_predict_on_in_the_app_can_answer_within_the_label_set(project, monkeypatch):
    """The browser loop: "Answer within the label set" on the Errors page's Predict on runs the
    background predict job with decode labels."""
    from app import jobs
    from tests.test_app_pages import app
    from tests.test_train_loop_app import _wait_job
    from training.predict import create_baseline

    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    make_slice(project, "intents", TRAIN, eval_pairs=EVAL)
    rid = create_baseline(project, "intents", base_model=str(tiny_model_dir()), name="zero-shot")
    at = app("errors")
    key = f"er_predict_{rid}"
    at.toggle(key=f"{key}_labels").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.button(key=key).label.endswith("within the label set")
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = _wait_job(jobs.recent(project, kind="predict")[0])
    assert job.status == "succeeded", job.log()
    with project.connect() as con:
        psid = runs_store.prediction_sets(con, rid)["id"][-1]
        outs = runs_store.predictions_frame(con, psid)["output"].to_list()
    assert generation_config(project, psid)["decode"] == "labels"
    assert set(outs) <= set(LABELS) and len(outs) == len(EVAL)
