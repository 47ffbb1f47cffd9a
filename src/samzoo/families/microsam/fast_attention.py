"""A drop-in for segment-anything's ViT attention that runs through ``scaled_dot_product_attention``.

Why: SAM's reference attention materialises the full attention matrix, scales q separately and
adds the decomposed relative-position terms in extra passes. Routing the same math through
PyTorch's fused SDPA kernel (the relative positions as an additive mask) is markedly faster on CPU
and GPU. Parameters and their names are untouched, so state dicts stay bit-compatible with
segment-anything and micro-sam checkpoints.

Large attention maps (the global blocks: 4096 tokens at 1024 px) are computed in chunks of
``query_chunk`` query tokens: attention rows are independent, so the result is the same, but the
relative-position mask of a chunk is (heads, chunk, N) instead of (heads, N, N) -- 200 MB instead of
805 MB for ViT-B (the reference attention holds several tensors of that size). Speed is unchanged
(whole vit_b encoder at 1024 px, 1 and 2 threads, within 2%); outputs equal the unchunked ones to
float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


def relative_position_terms(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                            size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of SAM's decomposed rel-pos term: (B, heads, N, h, 1) and (B, heads, N, 1, w);
    their broadcast sum, reshaped to (B, heads, N, N), is the additive attention bias."""
    h, w = size
    b, heads, _, dim = q.shape
    r_h = get_rel_pos(h, h, rel_pos_h)
    r_w = get_rel_pos(w, w, rel_pos_w)
    r_q = q.reshape(b, heads, h, w, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, r_h).reshape(b, heads, h * w, h, 1)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, r_w).reshape(b, heads, h * w, 1, w)
    return rel_h, rel_w


def relative_position_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                           size: tuple[int, int]) -> torch.Tensor:
    """The decomposed rel-pos term of SAM's attention logits, shaped (B, heads, N, N)."""
    rel_h, rel_w = relative_position_terms(q, rel_pos_h, rel_pos_w, size)
    b, heads, n = q.shape[:3]
    return (rel_h + rel_w).reshape(b, heads, n, n)


class FastAttention(Attention):
    """Same parameters as :class:`segment_anything.modeling.image_encoder.Attention`."""

    query_chunk = 1024
    """Query tokens per SDPA call when the rel-pos mask is used (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        n = h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (b, heads, tokens, dim)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        elif n <= self.query_chunk:
            bias = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            rel_h, rel_w = relative_position_terms(q, self.rel_pos_h, self.rel_pos_w, (h, w))
            chunks = []
            for start in range(0, n, self.query_chunk):
                stop = min(start + self.query_chunk, n)
                bias = (rel_h[:, :, start:stop] + rel_w[:, :, start:stop]).reshape(b, self.num_heads, stop - start, n)
                chunks.append(F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=bias))
                del bias
            out = torch.cat(chunks, dim=2)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
        return self.proj(out)


def use_fast_attention(module: torch.nn.Module) -> torch.nn.Module:
    """Switch every SAM attention block inside ``module`` to :class:`FastAttention`, in place."""
    for child in module.modules():
        if type(child) is Attention:
            child.__class__ = FastAttention
    return module
