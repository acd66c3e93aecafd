"""Export a run's result: the PEFT adapter folder, the base with the adapter merged in, or that
merged model as one GGUF file (llama.cpp, ollama).

Invariants and reasons:

- Older stacks read what we write. transformers 5 saves ``"tokenizer_class": "TokenizersBackend"``
  (a class transformers 4.x, peft 0.17 and llama.cpp's converter do not know) and a model config
  with ``rope_parameters`` only (transformers 4.x ignores it and silently uses its default
  ``rope_theta``: SmolLM2's 100000 would read as 10000). ``compat_tokenizer_config`` and
  ``compat_model_config`` rewrite those files so transformers 4.57 and 5 both load them the same.
- An adapter's ``base_model_name_or_path`` is the base's Hugging Face hub id when it has one
  (the bundled default is ``HuggingFaceTB/SmolLM2-135M-Instruct``), else its local folder.
  tuneloop itself never loads the base from it: a run loads its base from the run's own
  record (``Run.base_model``), and the resolved local folder is kept in the run's status.json
  (``base_path``). Offline, plain peft loads an exported adapter on a local base with
  ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(LOCAL_BASE), ADAPTER)``.
- GGUF export writes the merged model with ``gguf.GGUFWriter`` the way llama.cpp's
  ``convert_hf_to_gguf.py`` writes a Llama model (its tensor names, its Q/K row permutation,
  its vocabulary layout). Only the Llama architecture with a byte-level BPE tokenizer whose
  pre-tokenizer llama.cpp knows is supported; anything else is refused with a message.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from store import runs as runs_store
from store.db import Project
from store.records import Run, RunStatus

# The bundled default base (models.lm) is a GGUF of this hub model.
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

# tokenizer_config.json keys transformers 5 writes that 4.x passes on to the tokenizer's
# constructor (and fails on or keeps as junk).
_V5_ONLY_TOKENIZER_KEYS = ("backend", "is_local", "local_files_only", "_commit_hash", "token", "trust_remote_code")
# tokenizer classes 4.x does not have; any tokenizers-backed (tokenizer.json) one loads as this
_FAST = "PreTrainedTokenizerFast"


# ------------------------------------------------------------------ base model identity


def hub_id(base_model: str | None, base_path: str | None = None) -> str | None:
    """The base's Hugging Face hub id, or None when it is only a local folder.

    The bundled default -> ``HuggingFaceTB/SmolLM2-135M-Instruct``; a name that is not a local
    path -> that name; a folder inside the hub cache (``models--org--name/snapshots/...``) ->
    ``org/name``; any other folder -> None."""
    from models.lm import is_default

    if is_default(base_model):
        return DEFAULT_HUB_ID
    for cand in (base_model, base_path):
        if not cand:
            continue
        m = re.search(r"models--([^/\\]+?)--([^/\\]+)", str(cand))
        if m:
            return f"{m.group(1)}/{m.group(2)}"
    assert base_model is not None
    if not Path(base_model).expanduser().exists() and re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", base_model):
        return base_model
    return None


def adapter_base_name(base_model: str | None, base_path: str) -> str:
    """What an adapter's ``base_model_name_or_path`` records: the hub id, else the local folder."""
    return hub_id(base_model, base_path) or base_path


def set_adapter_base(adapter_dir: str | Path, name: str) -> None:
    acfg = Path(adapter_dir) / "adapter_config.json"
    data = json.loads(acfg.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = name
    acfg.write_text(json.dumps(data, indent=2), encoding="utf-8")


# ------------------------------------------------------------------ files older stacks read


def compat_tokenizer_config(folder: str | Path) -> None:
    """Rewrite ``folder/tokenizer_config.json`` so transformers 4.x (and peft 0.17, llama.cpp's
    converter) load the tokenizer too: a class they know, the chat template inline, the added
    tokens listed, no v5-only keys. transformers 5 loads the result unchanged. No-op without a
    tokenizer_config.json."""
    d = Path(folder)
    path = d / "tokenizer_config.json"
    if not path.exists():
        return
    cfg: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for k in _V5_ONLY_TOKENIZER_KEYS:
        cfg.pop(k, None)
    has_json = (d / "tokenizer.json").exists()
    if has_json and cfg.get("tokenizer_class") in (None, "TokenizersBackend"):
        cfg["tokenizer_class"] = _FAST
    extra = cfg.get("extra_special_tokens")
    if isinstance(extra, list):  # v5's list form; 4.x expects a dict of named tokens there
        cfg.pop("extra_special_tokens")
        if extra:
            cfg["additional_special_tokens"] = list(dict.fromkeys([*cfg.get("additional_special_tokens", []), *extra]))
    jinja = d / "chat_template.jinja"
    if "chat_template" not in cfg and jinja.exists():
        cfg["chat_template"] = jinja.read_text(encoding="utf-8")
    if has_json and "added_tokens_decoder" not in cfg:
        added = json.loads((d / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens") or []
        cfg["added_tokens_decoder"] = {
            str(t["id"]): {k: t.get(k, dflt) for k, dflt in (("content", ""), ("lstrip", False), ("normalized", False),
                                                            ("rstrip", False), ("single_word", False), ("special", True))}
            for t in added}
    cfg.setdefault("clean_up_tokenization_spaces", False)  # what v5 does; 4.x's default differs by version
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def compat_model_config(folder: str | Path) -> None:
    """Add the pre-v5 spelling of the rope settings (``rope_theta``, ``rope_scaling``) and dtype
    (``torch_dtype``) to ``folder/config.json``; transformers 5 reads either. No-op without one."""
    path = Path(folder) / "config.json"
    if not path.exists():
        return
    cfg: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict) and "rope_theta" in rp:
        cfg.setdefault("rope_theta", rp["rope_theta"])
        if rp.get("rope_type", "default") != "default" and "rope_scaling" not in cfg:
            cfg["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ export


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
    """Copy the run's adapter (or full model, for full/top-k runs) folder to ``out``, with files
    older stacks read (runs trained before that was written get it here)."""
    run, art = _run(project, run_id)
    out = _fresh(out)
    shutil.copytree(art, out, dirs_exist_ok=True)
    compat_tokenizer_config(out)
    compat_model_config(out)
    if (out / "adapter_config.json").exists():
        name = hub_id(run.base_model)
        if name:
            set_adapter_base(out, name)
    return out


def _merged_model(run: Run, art: Path, dtype: str):
    from models.lm import load_base

    if (art / "adapter_config.json").exists():
        from peft import PeftModel

        base, tok = load_base(run.base_model, dtype=dtype, device="cpu")
        return PeftModel.from_pretrained(base, str(art)).merge_and_unload(), tok
    return load_base(str(art), dtype=dtype, device="cpu")


def _save_merged(model, tok, out: Path) -> None:
    model.save_pretrained(out)
    tok.padding_side = "left"
    tok.save_pretrained(out)
    compat_tokenizer_config(out)
    compat_model_config(out)


def export_merged(project: Project, run_id: str, out: str | Path, dtype: str = "float32") -> Path:
    """Merge the LoRA adapter into its base and save a plain model folder to ``out``."""
    run, art = _run(project, run_id)
    out = _fresh(out)
    model, tok = _merged_model(run, art, dtype)
    _save_merged(model, tok, out)
    return out


def export_gguf(project: Project, run_id: str, out: str | Path, outtype: str = "f16") -> Path:
    """The merged model as one GGUF file at ``out`` (``outtype``: f16 or f32 weights; norms stay
    f32). Llama-architecture models only (SmolLM2 is one); refuses others with a ValueError."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new file name")
    if outtype not in ("f16", "f32"):
        raise ValueError(f"GGUF type {outtype!r}: use f16 or f32")
    run, art = _run(project, run_id)
    cfg_dir = art
    if not (art / "config.json").exists():
        from models.lm import resolve

        cfg_dir = Path(resolve(run.base_model))
    if (cfg_dir / "config.json").exists():
        check_gguf_supported(cfg_dir)  # before the merge: fail fast (a hub id is checked after it)
    with tempfile.TemporaryDirectory(prefix="tuneloop-gguf-") as tmp:
        model, tok = _merged_model(run, art, "float32")
        _save_merged(model, tok, Path(tmp))
        del model
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")  # no half-written file under the asked name
        try:
            write_gguf(tmp, part, outtype=outtype, name=run.name or run.id)
            part.replace(out)
        finally:
            part.unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------ GGUF (llama.cpp's layout)

_LLAMA_TENSORS = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def _pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for a byte-level BPE tokenizer's pre-tokenizer."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps: list[dict[str, Any]] = list(pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # SmolLM / SmolLM2: one token per digit, then GPT-2's split
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pat = (steps[0].get("pattern") or {}).get("Regex", "")
        if pat.startswith("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"):
            return "llama-bpe"  # Llama 3
    raise ValueError("GGUF export: this tokenizer's pre-tokenizer is not one tuneloop maps to llama.cpp's "
                     "(SmolLM2, GPT-2, Llama 3 are); export with --merged and convert that folder with "
                     "llama.cpp's convert_hf_to_gguf.py")


def check_gguf_supported(folder: str | Path) -> dict[str, Any]:
    """The model config of ``folder`` when tuneloop can write it as GGUF, else a ValueError that
    says why (and what to do instead)."""
    d = Path(folder)
    cfg: dict[str, Any] = json.loads((d / "config.json").read_text(encoding="utf-8"))
    how = "export with --merged and convert that folder with llama.cpp's convert_hf_to_gguf.py"
    arch = (cfg.get("architectures") or ["?"])[0]
    if cfg.get("model_type") != "llama" or arch != "LlamaForCausalLM":
        raise ValueError(f"GGUF export supports Llama-architecture models (SmolLM2, Llama); this one is "
                         f"{cfg.get('model_type')} ({arch}): {how}")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ValueError(f"GGUF export: Llama with attention/MLP biases is not supported: {how}")
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if (rp.get("rope_type") or rp.get("type") or "default") != "default":
        raise ValueError(f"GGUF export: rope scaling {rp.get('rope_type') or rp.get('type')!r} is not supported: {how}")
    return cfg


def _permute(w, n_head: int):
    """llama.cpp's ``LlamaModel.permute``: HF's rotate-half Q/K rows -> GGML's interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _vocab(d: Path, vocab_size: int) -> tuple[list[str], list[int], str]:
    """(tokens, token types, pre-tokenizer name) laid out as llama.cpp's converter does for a
    byte-level BPE (``get_vocab_base``): ids without a token become ``[PADn]`` (UNUSED), added
    special tokens CONTROL, other added tokens USER_DEFINED."""
    import gguf

    tj = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ValueError("GGUF export supports byte-level BPE tokenizers (SmolLM2, GPT-2, Llama 3); this one is "
                         f"{model.get('type')}{' with byte fallback (SentencePiece)' if model.get('byte_fallback') else ''}: "
                         "export with --merged and convert that folder with llama.cpp's convert_hf_to_gguf.py")
    pre = _pre_tokenizer(tj)
    rev = {i: t for t, i in model["vocab"].items()}
    added = {t["id"]: t for t in tj.get("added_tokens") or []}
    for i, t in added.items():
        rev[i] = t["content"]
    n = max(vocab_size, max(rev) + 1)
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        if i not in rev:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(rev[i])
            special = added[i].get("special") or (rev[i].startswith(("<|", "<｜")) and rev[i].endswith(("|>", "｜>")))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(rev[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types, pre


def write_gguf(folder: str | Path, out: str | Path, outtype: str = "f16", name: str = "") -> Path:
    """Write the Llama model folder ``folder`` (safetensors + tokenizer.json) as the GGUF file
    ``out``, the way llama.cpp's convert_hf_to_gguf.py does; returns ``out``."""
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open

    d, out = Path(folder), Path(out)
    cfg = check_gguf_supported(d)
    n_head, n_kv = int(cfg["num_attention_heads"]), int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    hidden, n_layer = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    head_dim = int(cfg.get("head_dim") or hidden // n_head)
    rp = cfg.get("rope_parameters") or {}
    theta = float(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    tokens, types, pre = _vocab(d, int(cfg["vocab_size"]))
    if len(tokens) != int(cfg["vocab_size"]):
        raise ValueError(f"GGUF export: the tokenizer has {len(tokens)} tokens, the model {cfg['vocab_size']}")

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name or d.name)
    w.add_context_length(int(cfg.get("max_position_embeddings") or 2048))
    w.add_embedding_length(hidden)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    sv = gguf.SpecialVocab(d, load_merges=True, n_vocab=len(tokens))
    if "bos" not in sv.add_special_token:  # say it: llama.cpp's default for BPE depends on its version
        from tokenizers import Tokenizer

        bos = sv.special_token_ids.get("bos")
        first = Tokenizer.from_file(str(d / "tokenizer.json")).encode("a", add_special_tokens=True).ids[:1]
        sv.add_special_token["bos"] = bos is not None and first == [bos]
    sv.add_to_gguf(w, quiet=True)

    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise ValueError(f"GGUF export: no safetensors weights in {d}")
    wdt = np.float16 if outtype == "f16" else np.float32
    seen: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                t = st.get_tensor(key).to(torch.float32)
                if key.startswith("model."):
                    key = key[len("model."):]
                if key == "embed_tokens.weight":
                    gname = "token_embd.weight"
                elif key == "norm.weight":
                    gname = "output_norm.weight"
                elif key == "lm_head.weight":
                    if cfg.get("tie_word_embeddings"):
                        continue  # llama.cpp reuses token_embd
                    gname = "output.weight"
                elif key.startswith("rotary_emb."):
                    continue
                else:
                    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", key)
                    if not m or m.group(2) not in _LLAMA_TENSORS:
                        raise ValueError(f"GGUF export: unexpected tensor {key!r} in a Llama model")
                    part = _LLAMA_TENSORS[m.group(2)]
                    if part == "attn_q":
                        t = _permute(t, n_head)
                    elif part == "attn_k":
                        t = _permute(t, n_kv)
                    gname = f"blk.{m.group(1)}.{part}.weight"
                arr = t.numpy().astype(wdt if t.ndim > 1 else np.float32)
                w.add_tensor(gname, arr)
                seen.add(gname)
    if "token_embd.weight" not in seen:
        raise ValueError("GGUF export: the model has no token embedding")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
