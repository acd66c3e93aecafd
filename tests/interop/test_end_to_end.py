"""Issue 17, done-when: files made by the tools people use import as they are, a tiny tool-calling
run trains on them, and its exports load in `datasets` and plain peft.

Real producers where they are installed: `datasets.Dataset.to_json` (HF), polars `write_parquet`;
OpenAI fine-tuning JSONL with tools and per-message weights and LLaMA-Factory ShareGPT with
function calls are the sample lines of ``test_tool_calling``. The run is a real detached training
process on the tiny Llama (tests/training_fixtures.py).
"""

from __future__ import annotations

import json

import pytest

from ingest.exporter import export_slice
from ingest.importer import import_file
from store import runs as runs_store
from store import slices
from store.records import SliceFilter
from tests.interop.test_tool_calling import OPENAI_TOOLS, OPENAI_WEIGHTS, SHAREGPT_TOOLS, write_jsonl
from tests.training_fixtures import tiny_model_dir

ALPACA = [{"instruction": f"Name the colour of item {i}.", "input": "", "output": c}
          for i, c in enumerate(["red", "green", "blue", "white"])]
CHATS = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                       {"role": "assistant", "content": str(2 * i)}]} for i in range(4)]


def test_files_from_hf_datasets_and_polars_import_as_they_are(project, tmp_path):
    import datasets
    import polars as pl

    datasets.Dataset.from_list(CHATS).to_json(str(tmp_path / "hf-chats.jsonl"))
    datasets.Dataset.from_list(ALPACA).to_json(str(tmp_path / "hf-alpaca.jsonl"))
    pl.DataFrame(ALPACA).write_parquet(tmp_path / "alpaca.parquet")
    got = {}
    for name, fmt in (("hf-chats.jsonl", "messages"), ("hf-alpaca.jsonl", "alpaca"), ("alpaca.parquet", "parquet")):
        r = import_file(project, tmp_path / name, fmt)
        assert r.fatal is None and r.skipped == 0, (name, r.errors)
        got[name] = (r.rows, r.new)
    assert got == {"hf-chats.jsonl": (4, 4), "hf-alpaca.jsonl": (4, 4), "alpaca.parquet": (4, 0)}  # parquet = same pairs


@pytest.mark.timeout(600)
def test_a_tiny_tool_calling_run_trains_and_its_exports_load_everywhere(project, tmp_path):
    import datasets
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.runner import start_run

    tools = write_jsonl(tmp_path / "tools.jsonl", [OPENAI_TOOLS, OPENAI_WEIGHTS])
    fcalls = write_jsonl(tmp_path / "fcalls.jsonl", [SHAREGPT_TOOLS])
    assert import_file(project, tools, "openai").new == 2 and import_file(project, fcalls, "sharegpt").new == 1
    with project.connect() as con:
        project_slice = slices.create(con, "tools", SliceFilter(), eval_fraction=0.0, split_by="pair", seed=0)
    assert project_slice.n_train == 3
    rid = start_run(project, "tools", base_model=str(tiny_model_dir()), name="tools", author="tester", wait=True,
                    overrides=["max_steps=3", "learning_rate=1e-2", "warmup_steps=0", "threads=1",
                               "predict_after=false"])
    with project.connect() as con:
        run = runs_store.get(con, rid)
    assert run.status == "succeeded", run.error
    assert run.summary["steps"] == 3
    # the adapter loads with plain peft on the base folder, offline
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir())), run.adapter_path)
    assert any("lora_" in n for n, _ in model.named_parameters())
    # the training data, exported, loads in datasets as it is, in every conversational format
    for fmt in ("openai", "messages", "sharegpt"):
        out = tmp_path / f"{fmt}.jsonl"
        assert export_slice(project, "tools", fmt, out) == 3
        ds = datasets.load_dataset("json", data_files={"train": str(out)}, split="train")
        assert ds.num_rows == 3
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        if fmt == "openai":  # tool calls and the weight-0 turn come back as OpenAI has them
            turns = [m for r in rows for m in r["messages"]]
            assert any(m.get("tool_calls") and m.get("content") is None for m in turns)
            assert any(m.get("weight") == 0 for m in turns)
