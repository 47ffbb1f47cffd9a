"""Anchor DETR transformer as CellFinder uses it: one feature level, RCDA, learned anchor points.

Queries are 2-D anchor points (``position``, learned, in [0, 1]) combined with one learned
pattern embedding; every decoder layer predicts class logits and a box (cx, cy, w, h) whose
centre is an offset from its anchor in logit space. Class/box heads are ONE module each, shared by
all decoder layers (the published state dict repeats them under ``class_embed.0..5``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rcda import RowColumnAttention


def sine_embedding_1d(pos: torch.Tensor, num_feats: int = 256, temperature: float = 10000.0) -> torch.Tensor:
    """(..., ) positions in [0, 1] -> (..., num_feats): interleaved sin/cos of 2*pi*pos / T^(2i/d)."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=pos.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    x = pos[..., None] * (2 * math.pi) / dim_t
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_embedding_2d(pos: torch.Tensor, num_feats: int = 128) -> torch.Tensor:
    """(..., 2) points (x, y) -> (..., 2*num_feats): [embedding(y), embedding(x)]."""
    return torch.cat((sine_embedding_1d(pos[..., 1], num_feats), sine_embedding_1d(pos[..., 0], num_feats)), dim=-1)


def grid_positions(size: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised centres of ``size`` cells: (i + 0.5) / size (the unpadded case of Anchor DETR's mask2pos)."""
    return (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class FeedForward(nn.Module):
    """Linear-ReLU-Linear with residual and LayerNorm (names as in the checkpoint: linear1/linear2/norm2)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = RowColumnAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn)

    def forward(self, src: torch.Tensor, pos_row: torch.Tensor, pos_col: torch.Tensor) -> torch.Tensor:
        """src (B, H, W, C); pos_row (B, W, C) varies along x; pos_col (B, H, C) varies along y."""
        b, h, w, c = src.shape
        k_row = src + pos_row[:, None, :, :]
        k_col = src + pos_col[:, :, None, :]
        out = self.self_attn(k_row.reshape(b, h * w, c), k_col.reshape(b, h * w, c), k_row, k_col, src)
        src = self.norm1(src + out.reshape(b, h, w, c))
        return self.ffn(src)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.cross_attn = RowColumnAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn)

    def forward(self, tgt: torch.Tensor, anchors: torch.Tensor, memory: torch.Tensor, pos_row: torch.Tensor,
                pos_col: torch.Tensor, adapt_pos2d: nn.Module, adapt_pos1d: nn.Module) -> torch.Tensor:
        dim = tgt.shape[-1]
        query_pos = adapt_pos2d(sine_embedding_2d(anchors, dim // 2))
        q = (tgt + query_pos).transpose(0, 1)
        tgt = self.norm2(tgt + self.self_attn(q, q, tgt.transpose(0, 1), need_weights=False)[0].transpose(0, 1))
        query_x = adapt_pos1d(sine_embedding_1d(anchors[..., 0], dim))
        query_y = adapt_pos1d(sine_embedding_1d(anchors[..., 1], dim))
        k_row = memory + pos_row[:, None, :, :]
        k_col = memory + pos_col[:, :, None, :]
        tgt = self.norm1(tgt + self.cross_attn(tgt + query_x, tgt + query_y, k_row, k_col, memory))
        return self.ffn(tgt)


class BoxHead(nn.Module):
    """3-layer MLP hidden->hidden->hidden->4 (names layers.0..2 as in the checkpoint)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class AnchorDetrTransformer(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 8, enc_layers: int = 6, dec_layers: int = 6,
                 ffn: int = 1024, num_queries: int = 3500, num_classes: int = 2) -> None:
        super().__init__()
        self.d_model = dim
        self.encoder_layers = nn.ModuleList([EncoderLayer(dim, heads, ffn) for _ in range(enc_layers)])
        self.decoder_layers = nn.ModuleList([DecoderLayer(dim, heads, ffn) for _ in range(dec_layers)])
        self.pattern = nn.Embedding(1, dim)
        self.position = nn.Embedding(num_queries, 2)
        self.adapt_pos2d = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.adapt_pos1d = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        class_head = nn.Linear(dim, num_classes)
        box_head = BoxHead(dim)
        # Initialisation as Anchor DETR: 1 % foreground prior, boxes start at the anchor, small w/h.
        nn.init.constant_(class_head.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.zeros_(box_head.layers[-1].weight)
        nn.init.zeros_(box_head.layers[-1].bias)
        nn.init.constant_(box_head.layers[-1].bias[2:], -2.0)
        nn.init.uniform_(self.position.weight, 0, 1)
        # Symmetry breaking for training from random weights (loaded checkpoints overwrite all of it).
        # Every query starts from the same pattern and differs only by its anchor's position
        # embedding; with the default initialisation that embedding is ~6x smaller than the N(0, 1)
        # pattern, the first cross-attention is uniform (largest weight 0.069 vs 1/16), all queries
        # read the same image average, and DETR's loss drives them to one score for good (measured
        # on dsb2018 crops: score spread across queries < 1e-5 after 600 steps). A zero pattern and
        # position MLPs with 6x larger output weights make the queries differ from the first step.
        nn.init.zeros_(self.pattern.weight)
        with torch.no_grad():
            self.adapt_pos1d[2].weight.mul_(6.0)
            self.adapt_pos2d[2].weight.mul_(6.0)
        self.class_embed = nn.ModuleList([class_head] * dec_layers)
        self.bbox_embed = nn.ModuleList([box_head] * dec_layers)

    def position_embeddings(self, batch: int, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W, C) column and (B, H, C) row position embeddings of an unpadded feature map."""
        pos_row = self.adapt_pos1d(sine_embedding_1d(grid_positions(w, device), self.d_model))
        pos_col = self.adapt_pos1d(sine_embedding_1d(grid_positions(h, device), self.d_model))
        return pos_row.expand(batch, -1, -1), pos_col.expand(batch, -1, -1)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """src (B, C, H, W) projected features -> memory (B, H, W, C) and the row/column position embeddings."""
        b, c, h, w = src.shape
        pos_row, pos_col = self.position_embeddings(b, h, w, src.device)
        memory = src.permute(0, 2, 3, 1)
        for layer in self.encoder_layers:
            memory = layer(memory, pos_row, pos_col)
        return memory, pos_row, pos_col

    def decode(self, memory: torch.Tensor, pos_row: torch.Tensor, pos_col: torch.Tensor, anchors: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries at ``anchors`` (B, Q, 2) points (x, y) in [0, 1] -> logits (layers, B, Q, classes), boxes
        (layers, B, Q, 4) cxcywh. Inference decodes the learned anchors; training also decodes
        noised ground-truth anchors (``losses.denoising_loss``) through the same layers."""
        tgt = self.pattern.weight[None].expand(anchors.shape[0], anchors.shape[1], -1)
        logits, boxes = [], []
        anchor_logit = inverse_sigmoid(anchors)
        for i, layer in enumerate(self.decoder_layers):
            tgt = layer(tgt, anchors, memory, pos_row, pos_col, self.adapt_pos2d, self.adapt_pos1d)
            delta = self.bbox_embed[i](tgt)
            delta = torch.cat((delta[..., :2] + anchor_logit, delta[..., 2:]), dim=-1)
            logits.append(self.class_embed[i](tgt))
            boxes.append(delta.sigmoid())
        return torch.stack(logits), torch.stack(boxes)

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, C, H, W) projected features -> logits (layers, B, Q, classes), boxes (layers, B, Q, 4) cxcywh."""
        memory, pos_row, pos_col = self.encode(src)
        anchors = self.position.weight[None].expand(src.shape[0], -1, -1)
        return self.decode(memory, pos_row, pos_col, anchors)
