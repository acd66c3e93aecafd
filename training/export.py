"""Export a run's result: the PEFT adapter folder, or the base with the adapter merged in.

The adapter folder loads with plain transformers + peft (``AutoPeftModelForCausalLM``): its
``adapter_config.json`` points at a base folder that loads without GGUF (the converted cache
copy of the bundled model, or the base the run used). The merged export is a full model
folder (safetensors + tokenizer + chat template) that loads with ``from_pretrained`` alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from store import runs as runs_store
from store.db import Project
from store.records import Run, RunStatus


def _run(project: Project, run_id: str) -> tuple[Run, Path]:
    with project.connect() as con:
        run = runs_store.get(con, run_id)
    if run.status != RunStatus.succeeded.value or not run.adapter_path:
        raise ValueError(f"run {run.id} is {run.status} and has no trained result to export")
    return run, Path(run.adapter_path)


def _fresh(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_adapter(project: Project, run_id: str, out: str | Path) -> Path:
    """Copy the run's adapter (or full model, for full/top-k runs) folder to ``out``."""
    _, art = _run(project, run_id)
    out = _fresh(out)
    shutil.copytree(art, out, dirs_exist_ok=True)
    return out


def export_merged(project: Project, run_id: str, out: str | Path, dtype: str = "float32") -> Path:
    """Merge the LoRA adapter into its base and save a plain model folder to ``out``."""
    from models.lm import load_base

    run, art = _run(project, run_id)
    out = _fresh(out)
    if (art / "adapter_config.json").exists():
        from peft import PeftModel

        base, tok = load_base(run.base_model, dtype=dtype, device="cpu")
        model = PeftModel.from_pretrained(base, str(art)).merge_and_unload()
    else:
        model, tok = load_base(str(art), dtype=dtype, device="cpu")
    model.save_pretrained(out)
    tok.padding_side = "left"
    tok.save_pretrained(out)
    return out
