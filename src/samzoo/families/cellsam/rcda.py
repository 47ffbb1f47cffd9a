"""Row-column decoupled attention (RCDA), the attention of Anchor DETR (Wang et al., AAAI 2022).

Instead of one softmax over all H*W key positions, each query gets one softmax over the W
columns and one over the H rows; the attention weight of position (h, w) is their product, so a
query costs O(H + W) logits instead of O(H * W). Row keys are the projected keys averaged over
H, column keys averaged over W. Parameter layout follows ``nn.MultiheadAttention`` with five
stacked projections: ``in_proj_weight`` (5*E, E) = [query_row, query_col, key_row, key_col, value].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RowColumnAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(5 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(5 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _project(self, x: torch.Tensor, index: int) -> torch.Tensor:
        e = self.embed_dim
        return F.linear(x, self.in_proj_weight[index * e:(index + 1) * e], self.in_proj_bias[index * e:(index + 1) * e])

    def weights(self, query_row: torch.Tensor, query_col: torch.Tensor, key_row: torch.Tensor,
                key_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax weights over columns (B, heads, L, W) and over rows (B, heads, L, H).

        query_*: (B, L, E); key_*: (B, H, W, E)."""
        b, length, e = query_row.shape
        heads, hd = self.num_heads, e // self.num_heads
        scale = hd ** -0.5
        q_row = (self._project(query_row, 0) * scale).view(b, length, heads, hd).transpose(1, 2)
        q_col = (self._project(query_col, 1) * scale).view(b, length, heads, hd).transpose(1, 2)
        k_row = self._project(key_row, 2).mean(1)  # (B, W, E): one key per column
        k_col = self._project(key_col, 3).mean(2)  # (B, H, E): one key per row
        k_row = k_row.view(b, -1, heads, hd).transpose(1, 2)
        k_col = k_col.view(b, -1, heads, hd).transpose(1, 2)
        w_row = torch.softmax(q_row @ k_row.transpose(-1, -2), dim=-1)
        w_col = torch.softmax(q_col @ k_col.transpose(-1, -2), dim=-1)
        return w_row, w_col

    def forward(self, query_row: torch.Tensor, query_col: torch.Tensor, key_row: torch.Tensor,
                key_col: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """(B, L, E) attention output; value: (B, H, W, E)."""
        b, length, e = query_row.shape
        heads, hd = self.num_heads, e // self.num_heads
        w_row, w_col = self.weights(query_row, query_col, key_row, key_col)
        h, w = value.shape[1:3]
        v = self._project(value, 4).view(b, h, w, heads, hd).permute(0, 3, 1, 2, 4)  # (B, heads, H, W, hd)
        # Contract the shorter side first (same result, less memory), as the published code does.
        if h < w:
            per_row = torch.einsum("bnqw,bnhwc->bnqhc", w_row, v)
            out = torch.einsum("bnqh,bnqhc->bnqc", w_col, per_row)
        else:
            per_col = torch.einsum("bnqh,bnhwc->bnqwc", w_col, v)
            out = torch.einsum("bnqw,bnqwc->bnqc", w_row, per_col)
        out = out.transpose(1, 2).reshape(b, length, e)
        return self.out_proj(out)
