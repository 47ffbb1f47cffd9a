"""LoRA on the image encoder's attention ``qkv`` projections, and merging it back.

``apply_lora(model, rank)`` wraps every ``blocks[i].attn.qkv`` of a ViT image encoder in a
:class:`LoRALinear` (frozen base weight + trainable low-rank ``B @ A``, B zero-initialised so the
model is unchanged at the start) and freezes the rest of the image encoder, as μSAM's LoRA
finetuning does. ``merge_lora(model)`` folds ``W + scale * B @ A`` back into plain ``nn.Linear``
layers, so a finished model is an ordinary SAM again: same state-dict keys, loadable by samzoo,
micro-sam and segment-anything.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ....errors import InputError


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        if rank < 1:
            raise InputError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = int(rank)
        self.scale = float(alpha if alpha is not None else rank) / self.rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * (self.lora_B @ self.lora_A))
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out.to(self.base.weight.device, self.base.weight.dtype)


def _attention_blocks(model):
    encoder = model.sam.image_encoder
    blocks = getattr(encoder, "blocks", None)
    if blocks is None or not all(hasattr(b, "attn") and hasattr(b.attn, "qkv") for b in blocks):
        raise InputError(f"LoRA needs a ViT image encoder with attn.qkv layers ({model.config.encoder!r} has none)")
    return blocks


def apply_lora(model, rank: int, alpha: float | None = None) -> list[nn.Parameter]:
    """Add LoRA to every qkv projection, freeze the other image-encoder weights; returns the
    new trainable parameters."""
    blocks = _attention_blocks(model)
    for p in model.sam.image_encoder.parameters():
        p.requires_grad_(False)
    params = []
    for block in blocks:
        if isinstance(block.attn.qkv, LoRALinear):
            raise InputError("LoRA is already applied to this model")
        block.attn.qkv = LoRALinear(block.attn.qkv, rank, alpha)
        params += [block.attn.qkv.lora_A, block.attn.qkv.lora_B]
    return params


def has_lora(model) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.sam.image_encoder.modules())


def merge_lora(model):
    """Replace every :class:`LoRALinear` by its merged ``nn.Linear`` (in place; returns model)."""
    for block in _attention_blocks(model):
        if isinstance(block.attn.qkv, LoRALinear):
            block.attn.qkv = block.attn.qkv.merged()
    return model
