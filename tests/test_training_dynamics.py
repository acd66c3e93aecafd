"""Training dynamics: per-example loss and confidence per epoch, the data map, its flags as signals."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.dynamics import CartographyConfig, cartography, region_counts, signals
from store import curation
from store import dynamics as dynamics_store
from store import runs as runs_store
from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from training.runfolder import RunFolder
from training.runner import start_run, sync_run
from workflows.dynamics import map_run

FAST = ["learning_rate=1e-2", "warmup_steps=0", "lr_scheduler=constant", "threads=1", "predict_after=false"]
# Label-like: eleven items answer "yes"; one item, worded like the others, answers "no".
ODD = "Item 7: is it on the list?"
LABELS = [(f"Item {i}: is it on the list?", "no" if f"Item {i}: is it on the list?" == ODD else "yes")
          for i in range(12)]


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(tiny_model_dir())


@pytest.mark.parametrize("packed,share", [(True, False), (True, True), (False, False)])
def test_example_losses_split_the_batch_loss_per_example(tiny, packed, share):
    import torch

    from models.lm import load_base
    from training.attention import packed_attention
    from training.data import collate, example_losses, loss_sum, token_losses, weighted_sum
    from training.formatting import tokenize_rows

    model, tok = load_base(tiny)
    ex, _ = tokenize_rows(tok, [{"instruction": q, "response": a} for q, a in MEMO_PAIRS[:5]], max_length=128)
    mb = collate(ex, pad_id=tok.pad_token_id, packed=packed, share_prefix=share)
    with torch.no_grad(), (packed_attention(model) if share else torch.no_grad()):
        ce = token_losses(model, mb, "cpu", segment_attention=share)
        losses, confs = example_losses(ce, mb, len(ex))
        alone = [float(loss_sum(model, collate([e], pad_id=tok.pad_token_id), "cpu")) / e.n_loss_tokens for e in ex]
        assert float(weighted_sum(ce, mb)) == pytest.approx(float(loss_sum(model, mb, "cpu", share)), rel=1e-5)
    assert losses == pytest.approx(alone, rel=1e-4)
    assert sum(x * e.n_loss_tokens for x, e in zip(losses, ex, strict=True)) == pytest.approx(
        float(weighted_sum(ce, mb)), rel=1e-5)
    assert confs == pytest.approx([math.exp(-x) for x in losses]) and all(0 < c < 1 for c in confs)


def _rows(conf: dict[str, list[float]]) -> pl.DataFrame:
    return pl.DataFrame([{"pair_id": p, "revision_id": f"r_{p}", "epoch": e, "confidence": c, "loss": -math.log(c)}
                         for p, cs in conf.items() for e, c in enumerate(cs)])


@pytest.mark.parametrize("confs,confidence,variability,region", [
    ([0.9, 0.95, 0.97], 0.94, 0.0287, "easy-to-learn"),
    ([0.05, 0.1, 0.06], 0.07, 0.0216, "hard-to-learn"),
    ([0.1, 0.5, 0.9], 0.5, 0.3266, "ambiguous"),
    ([0.2, 0.8], 0.5, 0.3, "ambiguous"),
    ([0.4], 0.4, 0.0, None),  # one epoch: no variability, no region
])
def test_cartography_math(confs, confidence, variability, region):
    got = cartography(_rows({"p": confs})).row(0, named=True)
    assert got["confidence"] == pytest.approx(confidence, abs=1e-3)
    assert got["variability"] == pytest.approx(variability, abs=1e-3)
    assert got["region"] == region and got["epochs"] == len(confs)


def test_cartography_counts_and_signals_on_a_hand_made_frame():
    carto = cartography(_rows({"a": [0.9, 0.95], "b": [0.1, 0.12], "c": [0.1, 0.9], "d": [0.3]}),
                        CartographyConfig(min_epochs=2))
    assert region_counts(carto) == {"easy-to-learn": 1, "ambiguous": 1, "hard-to-learn": 1, "too few epochs": 1}
    sig = signals(carto, "run_x")
    assert sig.height == 6  # two signals per mapped pair; "d" has no region
    flagged = {(r["pair_id"], r["name"]) for r in sig.filter("flagged").iter_rows(named=True)}
    assert flagged == {("b", "hard_to_learn"), ("c", "ambiguous")}
    hard = sig.filter((pl.col("pair_id") == "b") & (pl.col("name") == "hard_to_learn")).row(0, named=True)
    assert hard["score"] == pytest.approx(0.89) and "over 2 epochs of run run_x" in hard["reason"]
    assert json.loads(hard["details"]) == {"run_id": "run_x", "epochs": 2, "confidence": 0.11, "variability": 0.01}


def _signals(con) -> tuple[pl.DataFrame, ...]:
    return (curation.signal_summary(con), curation.flagged(con, "hard_to_learn", limit=100),
            curation.flagged(con, "ambiguous", limit=100))


def test_a_run_records_every_train_pair_each_epoch_and_flags_the_odd_label(project, tiny):
    make_slice(project, "labels", LABELS)
    rid = start_run(project, "labels", base_model=tiny, overrides=[*FAST, "epochs=4", "max_examples_per_batch=4"],
                    author="tester", wait=True)
    with project.connect() as con:
        run = runs_store.get(con, rid)
        rows = dynamics_store.frame_of(con, rid)
        pair_of = dict(curation.curation_frame(con).select("instruction", "pair_id").iter_rows())
    assert run.status == "succeeded", run.error
    # every train pair, every epoch, keyed by pair id and the trained revision
    assert rows.height == len(LABELS) * 4
    assert rows.group_by("pair_id").agg(pl.col("epoch").sort())["epoch"].to_list() == [[0, 1, 2, 3]] * len(LABELS)
    assert set(rows["pair_id"]) == set(pair_of.values()) and rows["revision_id"].str.starts_with("r_").all()
    assert rows["confidence"].is_between(0, 1).all() and rows["loss"].is_finite().all()
    assert len(RunFolder(run.run_dir).dynamics()) == rows.height

    m = map_run(project, rid)
    odd = pair_of[ODD]
    worst = m.pairs.sort("confidence").row(0, named=True)
    assert worst["pair_id"] == odd  # the label inconsistent with the rest is the least confident
    with project.connect() as con:
        stored = _signals(con)
        hard = curation.flagged(con, "hard_to_learn", limit=100)
        ambiguous = curation.flagged(con, "ambiguous", limit=100)
    assert dict(stored[0].select("name", "scored").iter_rows()) == {"ambiguous": len(LABELS),
                                                                    "hard_to_learn": len(LABELS)}
    assert m.flagged == hard.height + ambiguous.height
    expected = set(m.pairs.filter(pl.col("region") == "hard-to-learn")["pair_id"])
    assert set(hard["pair_id"]) == expected

    # re-syncing and re-mapping change nothing: rows and signals are stored once
    sync_run(project, rid)
    m2 = map_run(project, rid)
    with project.connect() as con:
        assert dynamics_store.count(con, rid) == rows.height
        again = _signals(con)
    assert all(a.equals(b) for a, b in zip(again, stored, strict=True)) and m2.counts == m.counts

    # the CLI prints the regions and stores the same flags
    from tuneloop.cli import app

    res = CliRunner().invoke(app, ["dynamics", rid, "--project", str(project.root), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["regions"] == m.counts and len(out["pairs"]) == len(LABELS)
    assert {p["pair_id"]: p["instruction"] for p in out["pairs"]}[odd] == ODD


def test_a_run_without_dynamics_says_so(project):
    from tests.test_app_pages import seed

    info = seed(project)
    from tuneloop.cli import app

    res = CliRunner().invoke(app, ["dynamics", info["run"].id, "--project", str(project.root)])
    assert res.exit_code == 2 and "no training dynamics" in res.output


def test_explore_data_map_tab_renders_and_flags(project, monkeypatch):
    from tests.test_app_pages import app, seed

    monkeypatch.setenv("TUNELOOP_PROJECT", str(project.root))
    info = seed(project)
    with project.connect() as con:
        train = curation.curation_frame(con).head(6)
        confs = [[0.9, 0.95], [0.1, 0.12], [0.1, 0.9], [0.8, 0.85], [0.05, 0.06], [0.5, 0.55]]
        dynamics_store.save(con, info["run"].id, [
            {"pair_id": p, "revision_id": r, "epoch": e, "step": e + 1, "loss": -math.log(c), "confidence": c}
            for (p, r), cs in zip(train.select("pair_id", "revision_id").iter_rows(), confs, strict=True)
            for e, c in enumerate(cs)])
    at = app("explore")
    assert at.selectbox(key="ex_dyn_run").value[0] == info["run"].id
    assert any("hard-to-learn: 2" in c.value for c in at.caption)
    at.button(key="ex_dyn_flag").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with project.connect() as con:
        assert curation.flagged(con, "hard_to_learn").height == 2
        assert curation.flagged(con, "ambiguous").height == 1


def test_the_step_after_training_maps_the_run_and_stores_the_flags(project, tiny):
    from workflows.train import train

    make_slice(project, "labels", LABELS)
    rid = train(project, "labels", base_model=tiny, overrides=[*FAST, "epochs=2"], author="tester", wait=True)
    with project.connect() as con:
        summary = dict(curation.signal_summary(con).select("name", "scored").iter_rows())
        notes = [e[1] for e in runs_store.events(con, rid)]
    assert summary == {"ambiguous": len(LABELS), "hard_to_learn": len(LABELS)}
    assert any(str(n).startswith("training dynamics mapped") for n in notes), notes
