"""Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU) on CUDA, an optional extra.

``pip install 'tuneloop[gpu]'`` brings liger-kernel; a run then patches its model instance
with ``liger_kernel.transformers._apply_liger_kernel_to_instance`` when the model type is one
Liger supports (Llama, Qwen2/3, Mistral, Gemma, Phi-3 ...). tuneloop computes the loss itself at
the target positions only (``logits_to_keep``), so the LM head never produces logits for the
prompt tokens; Liger's fused linear cross-entropy (which replaces the model's own loss) is not
used. Config ``liger_kernels``: unset = when installed and on CUDA; true = required (the run
is refused with the reason); false = off.
"""

from __future__ import annotations

import importlib.util
from typing import Any


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def use_liger(model: Any, setting: bool | None, device: str) -> bool:
    """Patch ``model`` (a transformers model, before peft wraps it) with Liger's kernels when
    ``setting`` allows and they apply here; returns whether it did. Raises ``ValueError`` when
    ``setting`` is true and they cannot be used, saying why."""
    if setting is False:
        return False
    if not device.startswith("cuda"):
        if setting:
            raise ValueError(f"liger_kernels=true needs a CUDA device (Liger's kernels are Triton GPU kernels); "
                             f"this run is on {device}: unset liger_kernels")
        return False
    if not liger_available():
        if setting:
            raise ValueError("liger_kernels=true needs the liger-kernel package: pip install 'tuneloop[gpu]' "
                             "(or pip install liger-kernel)")
        return False
    from liger_kernel.transformers import _apply_liger_kernel_to_instance
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        if setting:
            raise ValueError(f"Liger has no kernels for model type {kind!r}: unset liger_kernels")
        return False
    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)
    return True
