"""A drop-in for segment-anything's ViT attention that runs through ``scaled_dot_product_attention``.

Why: SAM's reference attention materialises the full attention matrix, scales q separately and
adds the decomposed relative-position terms in extra passes. Routing the same math through
PyTorch's fused SDPA kernel (the relative positions as an additive mask) is markedly faster on CPU
and GPU. Parameters and their names are untouched, so state dicts stay bit-compatible with
segment-anything and micro-sam checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


def relative_position_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                           size: tuple[int, int]) -> torch.Tensor:
    """The decomposed rel-pos term of SAM's attention logits, shaped (B, heads, N, N)."""
    h, w = size
    b, heads, _, dim = q.shape
    r_h = get_rel_pos(h, h, rel_pos_h)
    r_w = get_rel_pos(w, w, rel_pos_w)
    r_q = q.reshape(b, heads, h, w, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, r_h)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, r_w)
    bias = rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)  # (b, n, h, w, kh, kw)
    return bias.reshape(b, heads, h * w, h * w)


class FastAttention(Attention):
    """Same parameters as :class:`segment_anything.modeling.image_encoder.Attention`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (b, heads, tokens, dim)
        bias = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w)) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
        return self.proj(out)


def use_fast_attention(module: torch.nn.Module) -> torch.nn.Module:
    """Switch every SAM attention block inside ``module`` to :class:`FastAttention`, in place."""
    for child in module.modules():
        if type(child) is Attention:
            child.__class__ = FastAttention
    return module
