"""Exports that other stacks load: the tokenizer and configs older transformers/peft read, the
adapter's base recorded as a hub id, and `export-model --gguf` (one GGUF file for llama.cpp /
ollama) read back by transformers' GGUF loader and, when installed, by llama.cpp itself.

The older-stack test runs in a second interpreter (transformers 4.57, peft 0.17): `make
interop-deps` creates `.venv-old/`, or point TUNELOOP_OLD_STACK_PYTHON at any python with them;
it is skipped when neither exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from tuneloop.cli import app

REPO = Path(__file__).resolve().parents[2]
FAST = ["learning_rate=1e-2", "warmup_steps=0", "lr_scheduler=constant", "threads=1", "max_steps=6"]
PROMPT = [{"role": "user", "content": "What colour is coal? Say 12345."}]
runner = CliRunner()


def _base(tmp_path: Path) -> Path:
    """The tiny Llama with SmolLM2's rope_theta (100000, not transformers 4.x's default 10000,
    so a config 4.x misreads shows up as different logits), saved as a hub model would be."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.export import compat_model_config

    src = tiny_model_dir()
    model = AutoModelForCausalLM.from_pretrained(str(src), rope_parameters={"rope_theta": 100000.0, "rope_type": "default"})
    assert model.config.rope_parameters["rope_theta"] == 100000.0
    out = tmp_path / "base"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(out)
    compat_model_config(out)  # hub configs carry rope_theta; the merged export must get it on its own
    torch.manual_seed(0)
    return out


def _train(project, base: Path) -> str:
    from training.runner import start_run

    make_slice(project, "memo", MEMO_PAIRS)
    return start_run(project, "memo", base_model=str(base), overrides=FAST, name="export-run", author="tester", wait=True)


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.fixture
def trained(project, tmp_path):
    base = _base(tmp_path)
    rid = _train(project, base)
    P = ["--project", str(project.root)]
    res = runner.invoke(app, ["export-model", "--run", rid, "--out", str(tmp_path / "adapter"), *P])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export-model", "--run", rid, "--merged", "--out", str(tmp_path / "merged"), *P])
    assert res.exit_code == 0, res.output
    return project, rid, base, tmp_path


def test_hub_id_of_a_base():
    from training.export import DEFAULT_HUB_ID, adapter_base_name, hub_id

    assert hub_id(None) == hub_id("smollm2") == DEFAULT_HUB_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    local = str(tiny_model_dir())
    assert hub_id(local) is None and adapter_base_name(local, local) == local
    snap = "/h/hub/models--HuggingFaceTB--SmolLM2-360M/snapshots/abc123"
    assert hub_id(snap) == "HuggingFaceTB/SmolLM2-360M"
    assert adapter_base_name("smollm2", "/cache/tuneloop/models/SmolLM2-135M-Instruct") == DEFAULT_HUB_ID


def test_exports_load_in_this_stack_with_plain_peft_offline(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from store import runs as runs_store
    from training.runfolder import RunFolder

    project, rid, base, tmp = trained
    with project.connect() as con:
        run = runs_store.get(con, rid)
    acfg = json.loads((tmp / "adapter" / "adapter_config.json").read_text())
    assert acfg["base_model_name_or_path"] == str(base.resolve())  # a local base: its folder
    st = RunFolder(run.run_dir).status()
    assert st["base_path"] == str(base.resolve()) and st["base_hub_id"] is None
    for d in ("adapter", "merged"):
        tc = json.loads((tmp / d / "tokenizer_config.json").read_text())
        assert tc["tokenizer_class"] == "PreTrainedTokenizerFast" and "backend" not in tc
        assert "<|im_start|>" in tc["chat_template"]
    mc = json.loads((tmp / "merged" / "config.json").read_text())
    assert mc["rope_theta"] == 100000.0

    orig = AutoTokenizer.from_pretrained(str(tiny_model_dir()))
    want = orig.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp / "merged")).eval()
    for d in ("adapter", "merged"):
        tok = AutoTokenizer.from_pretrained(str(tmp / d))
        assert tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False) == want
    # the documented offline way: the adapter on a local base
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(tmp / "adapter")).eval()
    import torch

    torch.testing.assert_close(_logits(peft_model, want), _logits(merged, want), rtol=1e-4, atol=1e-4)
    assert merged.config.rope_parameters["rope_theta"] == 100000.0


def _gguf_compare(tmp: Path, gguf_name: str, atol: float):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(str(tmp / "merged")).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp / "merged"))
    g = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=gguf_name).eval()
    gtok = AutoTokenizer.from_pretrained(str(tmp), gguf_file=gguf_name)
    text = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=True).input_ids
    assert gtok(text, add_special_tokens=True).input_ids == ids
    assert g.config.rope_parameters["rope_theta"] == 100000.0
    a, b = _logits(merged, ids), _logits(g, ids)
    torch.testing.assert_close(b, a, rtol=0, atol=atol)
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.95
    return ids, a


def test_gguf_export_round_trips_through_transformers_and_llama_cpp(trained):
    import gguf

    project, rid, _, tmp = trained
    P = ["--project", str(project.root)]
    res = runner.invoke(app, ["export-model", "--run", rid, "--gguf", str(tmp / "m32.gguf"), "--gguf-type", "f32", *P])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export-model", "--run", rid, "--gguf", str(tmp / "m16.gguf"), *P])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export-model", "--run", rid, "--gguf", str(tmp / "m16.gguf"), *P])
    assert res.exit_code == 2 and "exists" in res.output
    res = runner.invoke(app, ["export-model", "--run", rid, "--gguf", str(tmp / "x.gguf"), "--out", str(tmp / "x"), *P])
    assert res.exit_code == 2

    r = gguf.GGUFReader(str(tmp / "m16.gguf"))
    names = {t.name for t in r.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.1.attn_q.weight", "blk.1.ffn_down.weight",
            "blk.0.attn_norm.weight"} <= names and "output.weight" not in names  # tied: llama.cpp reuses token_embd
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    ids, want = _gguf_compare(tmp, "m32.gguf", atol=1e-4)
    _gguf_compare(tmp, "m16.gguf", atol=0.1)

    try:
        import llama_cpp
    except ImportError:
        pytest.skip("llama-cpp-python is not installed (make llm-server-deps)")
    llm = llama_cpp.Llama(str(tmp / "m32.gguf"), n_ctx=256, logits_all=True, verbose=False, n_threads=1)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp / "merged"))
    s = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert llm.tokenize(s.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    import numpy as np

    got = np.asarray(llm.scores[: len(ids)])
    # llama.cpp keeps its KV cache in f16: logits agree to ~1e-2 of a scale of ~10, the choices exactly
    np.testing.assert_allclose(got, want.numpy(), atol=5e-2, rtol=0)
    assert (got.argmax(-1) == want.numpy().argmax(-1)).all()
    llm.reset()
    greedy = [t for _, t in zip(range(8), llm.generate(ids, temp=0.0, top_k=1), strict=False)]
    import torch
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(tmp / "merged")).eval()
    hf = merged.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                         eos_token_id=None)[0, len(ids):].tolist()
    assert greedy == hf[: len(greedy)]


def test_gguf_export_refuses_other_architectures(tmp_path):
    from training.export import write_gguf

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(ValueError, match="Llama-architecture"):
        write_gguf(tmp_path, tmp_path / "x.gguf")


def _old_python() -> str | None:
    cand = os.environ.get("TUNELOOP_OLD_STACK_PYTHON") or str(REPO / ".venv-old" / "bin" / "python")
    return cand if Path(cand).exists() else None


OLD_SCRIPT = r"""
import json, sys
import torch, transformers, peft
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import AutoPeftModelForCausalLM, PeftModel
adapter, merged, base, prompt = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
out = {"versions": [transformers.__version__, peft.__version__, torch.__version__]}
for name, d in (("adapter", adapter), ("merged", merged)):
    tok = AutoTokenizer.from_pretrained(d)
    out[name + "_tok"] = [type(tok).__name__, tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)]
ids = torch.tensor([out["merged_tok"][1]])
m = AutoModelForCausalLM.from_pretrained(merged).eval()
a = AutoPeftModelForCausalLM.from_pretrained(adapter).eval()
p = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
with torch.no_grad():
    for name, model in (("merged", m), ("auto_peft", a), ("peft", p)):
        out[name] = model(ids).logits[0].tolist()
    out["greedy"] = m.generate(ids, max_new_tokens=8, do_sample=False)[0].tolist()
print(json.dumps(out))
"""


def test_exports_load_in_transformers_4_and_peft_0_17(trained):
    """The real older stack, in its own interpreter: tokenizer, adapter (AutoPeftModel and PeftModel on
    the local base) and merged model give the logits and greedy tokens this stack gives."""
    py = _old_python()
    if py is None:
        pytest.skip("no older stack: run `make interop-deps` (.venv-old) or set TUNELOOP_OLD_STACK_PYTHON")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, base, tmp = trained
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    res = subprocess.run([py, "-c", OLD_SCRIPT, str(tmp / "adapter"), str(tmp / "merged"), str(base), json.dumps(PROMPT)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp))
    assert res.returncode == 0, res.stderr[-3000:]
    old = json.loads(res.stdout.strip().splitlines()[-1])
    assert old["versions"][0].startswith("4."), old["versions"]
    tok = AutoTokenizer.from_pretrained(str(tmp / "merged"))
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert old["adapter_tok"] == ["PreTrainedTokenizerFast", ids] and old["merged_tok"][1] == ids
    merged = AutoModelForCausalLM.from_pretrained(str(tmp / "merged")).eval()
    want = _logits(merged, ids)
    for k in ("merged", "auto_peft", "peft"):
        torch.testing.assert_close(torch.tensor(old[k]), want, rtol=1e-4, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
    greedy = merged.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0].tolist()
    assert old["greedy"] == greedy
    print("older stack:", old["versions"], file=sys.stderr)
