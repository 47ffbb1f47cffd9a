"""The Cellpose-SAM network in plain PyTorch (imports torch only).

Why not segment-anything's ``ImageEncoderViT``: this file is also shipped verbatim inside
BioImage.IO packages as their architecture, where neither samzoo nor segment-anything (which
imports torchvision) may be required; and its attention runs through
``scaled_dot_product_attention`` with the decomposed relative positions as an additive mask, which
is faster on CPU than SAM's reference attention. Parameter names and shapes are exactly those of
cellpose's ``CPSAM`` (``encoder.*`` = segment-anything's ViT, ``out.*``), so published checkpoints
load strictly, and the outputs equal cellpose's (tested on random weights).

Output channels: 0 = Y flow, 1 = X flow (5x unit vectors), 2 = cell-probability logit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def interpolated_rel_pos(table: torch.Tensor, size: int) -> torch.Tensor:
    """(size, size, dim) relative-position embeddings for a ``size``-token axis.

    A table trained for another grid is linearly resized to 2*size-1 rows first; this is
    segment-anything's ``get_rel_pos`` for equal query and key sizes."""
    rows = 2 * size - 1
    if table.shape[0] != rows:
        table = F.interpolate(table.T.unsqueeze(0), size=rows, mode="linear").squeeze(0).T
    coords = torch.arange(size, device=table.device)
    return table[coords[:, None] - coords[None, :] + (size - 1)]


class Attention(nn.Module):
    """Global multi-head attention with SAM's decomposed relative positions."""

    mask_rows = 256  # query rows per attention call (see forward)

    def __init__(self, dim: int, num_heads: int, rel_pos_rows: int, head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(rel_pos_rows, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(rel_pos_rows, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        n = h * w
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        r_h = interpolated_rel_pos(self.rel_pos_h, h)
        r_w = interpolated_rel_pos(self.rel_pos_w, w)
        outs = []
        # The decomposed relative positions become an additive mask, built for a band of query rows
        # at a time: (heads, rows, N) is 16 MB for ViT-L at 32x32 tokens where the whole (heads, N, N)
        # mask is 64 MB, and writing it in cache-sized bands is faster than one big broadcast copy.
        # 4D inputs and a contiguous mask let SDPA take its fused (flash) CPU kernel; with 3D inputs
        # it falls back to the unfused math path, which is slower than SAM's own attention.
        for i in range(b):
            r_q = q[i:i + 1].reshape(1, self.num_heads, h, w, -1)
            bias_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, r_h).reshape(1, self.num_heads, n, h)
            bias_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, r_w).reshape(1, self.num_heads, n, w)
            bands = []
            for start in range(0, n, self.mask_rows):
                stop = min(start + self.mask_rows, n)
                mask = (bias_h[:, :, start:stop, :, None] + bias_w[:, :, start:stop, None, :]).view(
                    1, self.num_heads, stop - start, n)
                bands.append(F.scaled_dot_product_attention(q[i:i + 1, :, start:stop], k[i:i + 1],
                                                            v[i:i + 1], attn_mask=mask))
            outs.append(torch.cat(bands, dim=2))
        out = torch.cat(outs).transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.gelu(self.lin1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rel_pos_rows: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, rel_pos_rows, dim // num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of a (B, C, H, W) tensor (SAM's neck norm)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)


class Encoder(nn.Module):
    """SAM's ViT image encoder as Cellpose-SAM configures it (all blocks global)."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, neck_dim: int, rel_pos_rows: list[int] | tuple[int, ...]):
        super().__init__()
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, rows) for rows in rel_pos_rows[:depth])
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, neck_dim, kernel_size=1, bias=False),
            LayerNorm2d(neck_dim),
            nn.Conv2d(neck_dim, neck_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dim),
        )


class CpsamNet(nn.Module):
    """(B, C<=3, S, S) normalised image -> (B, 3, S, S): Y flow, X flow, cell-probability logit.

    Fewer than 3 input channels use the first columns of the patch kernel, i.e. the missing
    channels count as zeros (what cellpose does). ``S`` is ``img_size`` (256 for cpsam)."""

    def __init__(self, img_size: int = 256, patch_size: int = 8, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, neck_dim: int = 256, nout: int = 3,
                 rel_pos_rows: list[int] | tuple[int, ...] = (27,) * 24, layer_drop: float = 0.0):
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.nout = nout
        self.layer_drop = layer_drop
        self.encoder = Encoder(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, neck_dim,
                               tuple(rel_pos_rows))
        self.out = nn.Conv2d(neck_dim, nout * patch_size ** 2, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """segment-anything leaves pos_embed and rel-pos tables at zero; small random values make
        a randomly initialised network's outputs depend on position (useful for tests)."""
        nn.init.trunc_normal_(self.encoder.pos_embed, std=0.02)
        for block in self.encoder.blocks:
            nn.init.trunc_normal_(block.attn.rel_pos_h, std=0.02)
            nn.init.trunc_normal_(block.attn.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.encoder.patch_embed.proj
        x = F.conv2d(x, proj.weight[:, : x.shape[1]], proj.bias, stride=self.patch_size)
        x = x.permute(0, 2, 3, 1) + self.encoder.pos_embed
        blocks = self.encoder.blocks
        if self.training and self.layer_drop > 0:
            # per sample and block, as cellpose: block i is skipped with probability i/(depth-1)*layer_drop
            p = torch.linspace(0, self.layer_drop, len(blocks), device=x.device)
            drop = (torch.rand(len(x), len(blocks), device=x.device) < p).to(x.dtype)
            for i, block in enumerate(blocks):
                keep = drop[:, i, None, None, None]
                x = x * keep + block(x) * (1 - keep)
        else:
            for block in blocks:
                x = block(x)
        x = self.encoder.neck(x.permute(0, 3, 1, 2))
        # cellpose's fixed identity conv_transpose2d (W2) is exactly a pixel shuffle
        return F.pixel_shuffle(self.out(x), self.patch_size)


def parameter_count(net: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in net.parameters()))
