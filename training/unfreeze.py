"""Gradual unfreezing (ULMFiT): train the top decoder layer first, one more every N steps.

``GradualUnfreezing(model, every)`` groups the parameters that the training method made
trainable by decoder layer, top layer first. At optimizer step ``s`` the top
``min(layers, 1 + s // every)`` groups train and the rest are frozen (``requires_grad`` off, so
the backward pass stops below the lowest trained layer and the optimizer skips them: AdamW
leaves a parameter without a gradient untouched). Trainable parameters outside the layers
follow their side of the stack: the final norm and an untied LM head train from the start, the
input embeddings (and a head tied to them) with the last layer. With ``method = "lora"`` the
groups are the adapters of each layer. The schedule depends only on the step, so a resumed run
continues it exactly.
"""

from __future__ import annotations

from typing import Any


class GradualUnfreezing:
    def __init__(self, model: Any, every: int):
        from training.attention import _hf_model
        from training.train import decoder_layers

        if every < 1:
            raise ValueError("unfreeze_every must be >= 1")
        self.every = every
        trainable = {id(p): p for p in model.parameters() if p.requires_grad}
        layers = list(decoder_layers(_hf_model(model)))
        self.groups: list[list[Any]] = []
        seen: set[int] = set()
        for layer in reversed(layers):  # top layer first
            group = [p for p in layer.parameters() if id(p) in trainable and id(p) not in seen]
            seen.update(id(p) for p in group)
            self.groups.append(group)
        embed = getattr(_hf_model(model), "get_input_embeddings", lambda: None)()
        embed_ids = {id(p) for p in embed.parameters()} if embed is not None else set()
        rest = [p for i, p in trainable.items() if i not in seen]
        if self.groups:
            self.groups[0] += [p for p in rest if id(p) not in embed_ids]
            self.groups[-1] += [p for p in rest if id(p) in embed_ids]
        self.unfrozen = 0

    @property
    def layers(self) -> int:
        return len(self.groups)

    def apply(self, step: int) -> int:
        """Set which layers train at optimizer step ``step``; returns how many do."""
        k = min(self.layers, 1 + step // self.every)
        if k != self.unfrozen:
            for n, group in enumerate(self.groups):
                for p in group:
                    p.requires_grad_(n < k)
            self.unfrozen = k
        return k
