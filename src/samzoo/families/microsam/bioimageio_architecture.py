"""μSAM (Segment Anything for Microscopy) as one self-contained source file for BioImage.IO packages.

Why this file exists: every package samzoo writes ships it as its architecture
(``ArchitectureFromFileDescr``, sha256-pinned), so a consumer needs nothing beyond torch, numpy and
scipy -- not samzoo, not segment-anything, not torch-em, not torchvision, not scikit-image
(bioimage.io's shared runtime has none of the last three). It is written for torch >= 2.5 and
numpy >= 1.26 (that runtime's versions) and uses no newer API.

Contents (parameter names and module layout equal segment-anything's and torch-em's, so a
``{"sam.<segment-anything key>": ..., "ais_decoder.<micro-sam decoder_state key>": ...}`` weights
file loads with a plain strict ``load_state_dict``):

* SAM: ViT image encoder (windowed / global attention with decomposed relative positions, neck)
  or MobileSAM's TinyViT (``vit_t``, mobile_sam.pt's / micro-sam's key layout),
  prompt encoder, mask decoder with its two-way transformer.
* torch-em's UNETR decoder without skip connections (μSAM's AIS decoder), with the
  full-resolution head run in row strips to bound memory.
* samzoo's inference around them: normalization to 0..255, SAM's resize/pad, tiling at native
  resolution for large images, and the seeded watershed: scikit-image 0.26's ``watershed``
  re-implemented exactly (same flooding order, so the same labels on plateaus and quantised
  maps), because scikit-image is not available on every consumer. SAMCell's packaged pipeline
  uses it too.
* The package entry points: :class:`AisInstanceSegmentation` (image -> labels),
  :class:`AisNetwork` (one 0..255 block of the model's input size -> decoder maps; also exported
  to TorchScript / ONNX) and :class:`InteractiveSegmentation` (image + prompts -> masks).

samzoo's tests check that this file gives the same labels, maps and masks as samzoo's own
inference on the same weights.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
PERCENTILES = (1.0, 99.8)
FULL_RESOLUTION_ROWS = 32
MASK_THRESHOLD = 0.0
AIS_DEFAULTS = {
    "center_distance_threshold": 0.5,
    "boundary_distance_threshold": 0.5,
    "foreground_threshold": 0.5,
    "foreground_smoothing": 1.0,
    "distance_smoothing": 1.6,
    "min_size": 0,
}


# MobileSAM's vit_t encoder (TinyViT-5M); a config's ``tiny_vit`` entries override these
TINY_VIT_DEFAULTS = {
    "embed_dims": [64, 128, 160, 320],
    "depths": [2, 2, 6, 2],
    "num_heads": [2, 4, 5, 10],  # the first (convolutional) stage ignores its entry
    "window_sizes": [7, 7, 14, 7],  # likewise
    "mlp_ratio": 4.0,
    "mbconv_expand_ratio": 4.0,
    "local_conv_size": 3,
    "num_classes": 1000,  # the unused ImageNet classifier the checkpoints carry
    "in_chans": 3,
}


class Config:
    """The architecture fields of samzoo's ``ModelConfig`` (a dict in rdf.yaml); others are ignored."""

    def __init__(self, data: Mapping[str, Any]):
        d = dict(data)
        self.encoder = str(d.get("encoder", "vit"))
        if self.encoder not in ("vit", "tiny_vit"):
            raise ValueError(f"this architecture file builds 'vit' and 'tiny_vit' image encoders, not {self.encoder!r}")
        unknown = sorted(set(d.get("tiny_vit") or {}) - set(TINY_VIT_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown tiny_vit setting(s) {unknown}")
        self.tiny_vit = dict(TINY_VIT_DEFAULTS, **dict(d.get("tiny_vit") or {}))
        self.img_size = int(d.get("img_size", 1024))
        self.patch_size = int(d.get("patch_size", 16))
        self.embed_dim = int(d.get("embed_dim", 768))
        self.depth = int(d.get("depth", 12))
        self.num_heads = int(d.get("num_heads", 12))
        self.global_attn_indexes = tuple(int(i) for i in d.get("global_attn_indexes", (2, 5, 8, 11)))
        self.window_size = int(d.get("window_size", 14))
        self.mlp_ratio = float(d.get("mlp_ratio", 4.0))
        self.prompt_embed_dim = int(d.get("prompt_embed_dim", 256))
        self.mask_decoder_depth = int(d.get("mask_decoder_depth", 2))
        self.mask_decoder_mlp_dim = int(d.get("mask_decoder_mlp_dim", 2048))
        self.mask_decoder_heads = int(d.get("mask_decoder_heads", 8))
        self.iou_head_hidden_dim = int(d.get("iou_head_hidden_dim", 256))
        self.ais_initial_features = int(d.get("ais_initial_features", 64))
        self.normalization = str(d.get("normalization", "minmax"))
        if self.normalization not in ("minmax", "percentile"):
            raise ValueError(f"unknown normalization {self.normalization!r}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


# ================================================================================================
# SAM image encoder (ViT)
# ================================================================================================

class LayerNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, act: type = nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=(patch, patch), stride=(patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def relative_positions(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) offset along one axis."""
    max_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_dist:
        resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_dist,
                                mode="linear")
        resized = resized.reshape(-1, max_dist).permute(1, 0)
    else:
        resized = rel_pos
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return resized[coords.long()]


class Attention(nn.Module):
    """SAM's ViT attention (decomposed relative positions), through ``scaled_dot_product_attention``
    with the relative-position term as an additive mask; global attention is computed in chunks of
    ``query_chunk`` queries so the mask stays small (rows of attention are independent)."""

    query_chunk = 1024

    def __init__(self, dim: int, num_heads: int, input_size: Tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = True
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def _terms(self, q: torch.Tensor, h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
        b, heads, _, dim = q.shape
        r_h = relative_positions(h, h, self.rel_pos_h)
        r_w = relative_positions(w, w, self.rel_pos_w)
        r_q = q.reshape(b, heads, h, w, dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, r_h).reshape(b, heads, h * w, h, 1)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, r_w).reshape(b, heads, h * w, 1, w)
        return rel_h, rel_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        n = h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        rel_h, rel_w = self._terms(q, h, w)
        if n <= self.query_chunk:
            bias = (rel_h + rel_w).reshape(b, self.num_heads, n, n)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            chunks = []
            for start in range(0, n, self.query_chunk):
                stop = min(start + self.query_chunk, n)
                bias = (rel_h[:, :, start:stop] + rel_w[:, :, start:stop]).reshape(b, self.num_heads, stop - start, n)
                chunks.append(F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=bias))
            out = torch.cat(chunks, dim=2)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
        return self.proj(out)


def window_partition(x: torch.Tensor, size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    b, h, w, c = x.shape
    pad_h = (size - h % size) % size
    pad_w = (size - w % size) % size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // size, size, wp // size, size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, size, size, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, size: int, padded: Tuple[int, int], hw: Tuple[int, int]) -> torch.Tensor:
    hp, wp = padded
    h, w = hw
    b = windows.shape[0] // (hp * wp // size // size)
    x = windows.view(b, hp // size, wp // size, size, size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, hp, wp, -1)
    if hp > h or wp > w:
        x = x[:, :h, :w, :].contiguous()
    return x


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, input_size: Tuple[int, int]):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, input_size if window_size == 0 else (window_size, window_size))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, padded = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, padded, (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.img_size = cfg.img_size
        grid = cfg.grid
        self.patch_embed = PatchEmbed(cfg.patch_size, 3, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio,
                  0 if i in cfg.global_attn_indexes else cfg.window_size, (grid, grid))
            for i in range(cfg.depth))
        out = cfg.prompt_embed_dim
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, out, kernel_size=1, bias=False), LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False), LayerNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


# ================================================================================================
# MobileSAM's TinyViT image encoder (vit_t), with mobile_sam.pt's / micro-sam's vit_t key layout
# ================================================================================================

class TinyConvBN(nn.Sequential):
    """Bias-free conv + BatchNorm (keys ``c``, ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class TinyMBConv(nn.Module):
    """Inverted residual block of the convolutional first stage."""

    def __init__(self, dim: int, expand: float):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1, self.act1 = TinyConvBN(dim, hidden), nn.GELU()
        self.conv2, self.act2 = TinyConvBN(hidden, hidden, 3, groups=hidden), nn.GELU()
        self.conv3, self.act3 = TinyConvBN(hidden, dim), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class TinyPatchMerging(nn.Module):
    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = TinyConvBN(dim, out_dim)
        self.conv2 = TinyConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = TinyConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


def window_offsets(window: int) -> torch.Tensor:
    """(window², window²) index of the offset (|dy|, |dx|) between two cells: |dy| * window + |dx|."""
    rows = torch.arange(window).repeat_interleave(window)
    cols = torch.arange(window).repeat(window)
    return (rows[:, None] - rows[None, :]).abs() * window + (cols[:, None] - cols[None, :]).abs()


class TinyAttention(nn.Module):
    """Pre-norm attention within a window with a learned bias per head and offset; ``qkv`` is packed
    per head (TinyViT's layout). The offset index is derived, not stored (as in MobileSAM)."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        self.register_buffer("attention_bias_idxs", window_offsets(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(n, t, self.heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(n, t, -1))


class TinyMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2, self.act = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """(B, H, W, C): windowed attention (zero padding at bottom/right takes part as keys), residual;
    depthwise ``local_conv``; MLP, residual."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float, local_conv: int):
        super().__init__()
        self.window = window
        self.attn = TinyAttention(dim, heads, window)
        self.mlp = TinyMlp(dim, int(dim * mlp_ratio))
        self.local_conv = TinyConvBN(dim, dim, local_conv, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        ph, pw = -h % ws, -w % ws
        y = F.pad(x, (0, 0, 0, pw, 0, ph)) if ph or pw else x
        nh, nw = (h + ph) // ws, (w + pw) // ws
        y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        y = self.attn(y).view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
        x = x + (y[:, :h, :w] if ph or pw else y)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class TinyStage(nn.Module):
    """One stage (``blocks`` + optional ``downsample``), NCHW in and out; stage 0 is convolutional."""

    def __init__(self, blocks: List[nn.Module], downsample: Optional[nn.Module], channels_last: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyPatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(TinyConvBN(cin, dim // 2, 3, 2), nn.GELU(), TinyConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class ImageEncoderTinyViT(nn.Module):
    """TinyViT with SAM's neck: (B, 3, S, S) -> (B, prompt_embed_dim, S / 16, S / 16) for 4 stages
    (stem stride 4, every merge but the one into the last stage halves the size)."""

    def __init__(self, cfg: Config):
        super().__init__()
        t = cfg.tiny_vit
        dims, depths = [int(v) for v in t["embed_dims"]], [int(v) for v in t["depths"]]
        heads, windows = [int(v) for v in t["num_heads"]], [int(v) for v in t["window_sizes"]]
        self.img_size = cfg.img_size
        self.patch_embed = TinyPatchEmbed(int(t["in_chans"]), dims[0])
        last = len(dims) - 1
        self.layers = nn.ModuleList()
        for i, dim in enumerate(dims):
            down = TinyPatchMerging(dim, dims[i + 1], 1 if i + 1 == last else 2) if i < last else None
            if i == 0:
                blocks = [TinyMBConv(dim, float(t["mbconv_expand_ratio"])) for _ in range(depths[i])]
            else:
                blocks = [TinyViTBlock(dim, heads[i], windows[i], float(t["mlp_ratio"]), int(t["local_conv_size"]))
                          for _ in range(depths[i])]
            self.layers.append(TinyStage(blocks, down, channels_last=i > 0))
        classes = int(t["num_classes"])
        self.norm_head = nn.LayerNorm(dims[-1])  # the unused classifier, kept for the key layout
        self.head = nn.Linear(dims[-1], classes) if classes > 0 else nn.Identity()
        out = cfg.prompt_embed_dim
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out, kernel_size=1, bias=False), LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False), LayerNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


# ================================================================================================
# SAM prompt encoder and mask decoder
# ================================================================================================

class PositionEmbeddingRandom(nn.Module):
    def __init__(self, num_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * np.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> torch.Tensor:
        h, w = size
        grid = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self._encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords_in: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        coords = coords_in.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._encode(coords.to(torch.float))


class PromptEncoder(nn.Module):
    def __init__(self, dim: int, grid: int, img_size: int, mask_in_chans: int = 16):
        super().__init__()
        self.embed_dim = dim
        self.input_image_size = (img_size, img_size)
        self.image_embedding_size = (grid, grid)
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2), LayerNorm2d(mask_in_chans // 4), nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2), LayerNorm2d(mask_in_chans),
            nn.GELU(), nn.Conv2d(mask_in_chans, dim, kernel_size=1))
        self.no_mask_embed = nn.Embedding(1, dim)

    def get_dense_pe(self) -> torch.Tensor:
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5
        if pad:
            points = torch.cat([points, torch.zeros((points.shape[0], 1, 2), device=points.device)], dim=1)
            labels = torch.cat([labels, -torch.ones((labels.shape[0], 1), device=labels.device)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        emb[labels == -1] = 0.0
        emb[labels == -1] += self.not_a_point_embed.weight
        emb[labels == 0] += self.point_embeddings[0].weight
        emb[labels == 1] += self.point_embeddings[1].weight
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        emb[:, 0, :] += self.point_embeddings[2].weight
        emb[:, 1, :] += self.point_embeddings[3].weight
        return emb

    def forward(self, points: Optional[Tuple[torch.Tensor, torch.Tensor]], boxes: Optional[torch.Tensor],
                masks: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        sparse = torch.empty((bs, 0, self.embed_dim), device=self.point_embeddings[0].weight.device)
        if points is not None:
            sparse = torch.cat([sparse, self._embed_points(points[0], points[1], pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return sparse, dense


class TokenAttention(nn.Module):
    """The mask decoder's attention (optionally projecting to a smaller internal width)."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        internal = dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = q @ k.permute(0, 1, 3, 2)
        attn = torch.softmax(attn / math.sqrt(q.shape[-1]), dim=-1)
        out = attn @ v
        b, heads, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, heads * c))


class TwoWayAttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = TokenAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TokenAttention(dim, num_heads, 2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = TokenAttention(dim, num_heads, 2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayAttentionBlock(dim, num_heads, mlp_dim, i == 0) for i in range(depth))
        self.final_attn_token_to_image = TokenAttention(dim, num_heads, 2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image_embedding, image_pe, point_embedding):
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        dims = [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([in_dim] + dims, dims + [out_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class MaskDecoder(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        dim = cfg.prompt_embed_dim
        self.transformer = TwoWayTransformer(cfg.mask_decoder_depth, dim, cfg.mask_decoder_heads,
                                             cfg.mask_decoder_mlp_dim)
        self.num_mask_tokens = 4
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2), LayerNorm2d(dim // 4), nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, 3)

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output: bool):
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((tokens, sparse_prompt_embeddings), dim=1)
        src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0) + dense_prompt_embeddings
        pos = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_out = hs[:, 0, :]
        mask_out = hs[:, 1:1 + self.num_mask_tokens, :]
        upscaled = self.output_upscaling(src.transpose(1, 2).view(b, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        iou = self.iou_prediction_head(iou_out)
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou[:, chosen]


class Sam(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.image_encoder = ImageEncoderTinyViT(cfg) if cfg.encoder == "tiny_vit" else ImageEncoderViT(cfg)
        self.prompt_encoder = PromptEncoder(cfg.prompt_embed_dim, cfg.grid, cfg.img_size)
        self.mask_decoder = MaskDecoder(cfg)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)


# ================================================================================================
# torch-em's UNETR decoder (no skip connections): μSAM's AIS decoder
# ================================================================================================

class Upsampler2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class SingleConv2DBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Deconv2DBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(Upsampler2d(in_channels, out_channels), SingleConv2DBlock(out_channels, out_channels),
                                   nn.BatchNorm2d(out_channels), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConvBlock2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.InstanceNorm2d(in_channels), nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True), nn.InstanceNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _center_crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """torch-em's decoder crop: centred along every axis but the batch axis (channels included)."""
    for dim in range(1, x.dim()):
        size, want = int(x.shape[dim]), int(shape[dim])  # plain ints: static shapes when traced
        if size != want:
            x = x.narrow(dim, (size - want) // 2, want)
    return x


class UnetDecoder(nn.Module):
    def __init__(self, features: Sequence[int]):
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock2d(i, o) for i, o in zip(features[:-1], features[1:]))
        self.samplers = nn.ModuleList(Upsampler2d(i, o) for i, o in zip(features[:-1], features[1:]))

    def forward(self, x: torch.Tensor, encoder_inputs: List[torch.Tensor]) -> torch.Tensor:
        for block, sampler, skip in zip(self.blocks, self.samplers, encoder_inputs):
            x = sampler(x)
            x = block(torch.cat([x, _center_crop(skip, x.shape)], dim=1))
        return x


class AisDecoder(nn.Module):
    """The UNETR decoder on SAM's image embedding: 3 sigmoid maps at 16x the embedding grid."""

    def __init__(self, cfg: Config):
        super().__init__()
        f = [cfg.ais_initial_features * 2 ** i for i in range(4)][::-1]
        embed = cfg.prompt_embed_dim
        self.img_size = cfg.img_size
        self.decoder = UnetDecoder(f)
        self.deconv1 = Deconv2DBlock(embed, f[0])
        self.deconv2 = Deconv2DBlock(f[0], f[1])
        self.deconv3 = Deconv2DBlock(f[1], f[2])
        self.deconv4 = Deconv2DBlock(f[2], f[3])
        self.base = ConvBlock2d(embed, f[0])
        self.out_conv = nn.Conv2d(f[-1], 3, 1)
        self.deconv_out = Upsampler2d(f[-1], f[-1])
        self.decoder_head = ConvBlock2d(2 * f[-1], f[-1])

    def features(self, z12: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        z9 = self.deconv1(z12)
        z6 = self.deconv2(z9)
        z3 = self.deconv3(z6)
        return self.decoder(self.base(z12), [z9, z6, z3]), z3

    def full_size(self, z12: torch.Tensor, rows: Optional[int] = FULL_RESOLUTION_ROWS) -> torch.Tensor:
        """Sigmoid maps at the decoder's native resolution; ``rows``: strip height of the
        full-resolution head (None = one piece, as tracing needs)."""
        x, z3 = self.features(z12)
        if rows is None or torch.is_grad_enabled():
            joined = torch.cat([self.deconv_out(x), self.deconv4(z3)], dim=1)
            return torch.sigmoid(self.out_conv(self.decoder_head(joined)))
        return self._head_in_strips(x, z3, max(2, int(rows)))

    def _head_in_strips(self, x: torch.Tensor, z3: torch.Tensor, rows: int) -> torch.Tensor:
        """The full-resolution head strip by strip in three passes; the two instance norms use
        statistics accumulated over all strips first (equal to the one-piece head to rounding)."""
        norm1, conv1, act1, norm2, conv2, act2 = self.decoder_head.block
        height = 2 * x.shape[-2]
        strips = [(s, min(s + rows, height)) for s in range(0, height, rows)]
        z0, first = None, _Moments()
        for start, stop in strips:
            part = _upsampled_rows(self.deconv4, z3, start, stop)
            if z0 is None:
                z0 = part.new_empty((*part.shape[:2], height, part.shape[-1]))
            z0[..., start:stop, :] = part
            first.add(torch.cat([_upsampled_rows(self.deconv_out, x, start, stop), part], dim=1))
        mean1, var1 = first.mean_var(x.dtype)
        hidden, second = None, _Moments()
        for start, stop in strips:
            top, bottom = max(0, start - 1), min(height, stop + 1)
            joined = torch.cat([_upsampled_rows(self.deconv_out, x, top, bottom), z0[..., top:bottom, :]], dim=1)
            h = act1(conv1(_normalize(joined, mean1, var1, norm1.eps)))[..., start - top: stop - top, :]
            if hidden is None:
                hidden = h.new_empty((*h.shape[:2], height, h.shape[-1]))
            hidden[..., start:stop, :] = h
            second.add(h)
        mean2, var2 = second.mean_var(hidden.dtype)
        out = None
        for start, stop in strips:
            top, bottom = max(0, start - 1), min(height, stop + 1)
            h = _normalize(hidden[..., top:bottom, :], mean2, var2, norm2.eps)
            y = torch.sigmoid(self.out_conv(act2(conv2(h)))[..., start - top: stop - top, :])
            if out is None:
                out = y.new_empty((*y.shape[:2], height, y.shape[-1]))
            out[..., start:stop, :] = y
        return out

    def to_image(self, maps: torch.Tensor, input_shape: Tuple[int, int], original: Tuple[int, int]) -> torch.Tensor:
        """Native decoder maps -> the original image's pixels (torch-em's ``postprocess_masks``)."""
        maps = F.interpolate(maps, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        maps = maps[..., :input_shape[0], :input_shape[1]]
        return F.interpolate(maps, original, mode="bilinear", align_corners=False)


def _upsampled_rows(module: nn.Module, t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a resolution-doubling module's output, from a half-resolution window
    4 rows wider on each side (bilinear upsampling and a 3x3 conv reach at most 2 rows)."""
    half = t.shape[-2]
    low, high = max(0, start // 2 - 4), min(half, (stop + 1) // 2 + 4)
    return module(t[..., low:high, :])[..., start - 2 * low: stop - 2 * low, :]


def _normalize(t: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float) -> torch.Tensor:
    return ((t - mean) / torch.sqrt(var + eps)).to(t.dtype)


class _Moments:
    """Per-(batch, channel) mean and biased variance over strips, accumulated in float64."""

    def __init__(self):
        self.total = self.squares = None
        self.count = 0

    def add(self, t: torch.Tensor) -> None:
        t64 = t.double()
        total, squares = t64.sum(dim=(2, 3)), (t64 * t64).sum(dim=(2, 3))
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += t.shape[2] * t.shape[3]

    def mean_var(self, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        var = (self.squares / self.count - mean * mean).clamp_min(0)
        return mean[..., None, None].to(dtype), var[..., None, None].to(dtype)


# ================================================================================================
# image handling: normalization, SAM's resize / pad, tiling
# ================================================================================================

def three_channels(image_chw: np.ndarray) -> np.ndarray:
    """(C, H, W) with C = 1 or 3 -> float32 (H, W, 3) (grayscale replicated)."""
    if image_chw.ndim != 3 or image_chw.shape[0] not in (1, 3):
        raise ValueError(f"expected a (channel, y, x) image with 1 or 3 channels, got shape {image_chw.shape}")
    if image_chw.shape[0] == 1:
        return np.repeat(image_chw[0].astype(np.float32)[..., None], 3, axis=-1)
    return np.moveaxis(image_chw, 0, -1).astype(np.float32)


def normalize_to_255(image_hwc: np.ndarray, method: str, source_dtype: np.dtype) -> np.ndarray:
    """samzoo's normalization: ``percentile`` maps the 1st..99.8th percentile to 0..255 and clips;
    ``minmax`` (micro-sam) keeps uint8 images and min-max scales all others."""
    values = image_hwc.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError("image contains NaN or infinite values")
    if method == "minmax" and np.dtype(source_dtype) == np.uint8:
        return values
    if method == "percentile":
        low, high = (float(v) for v in np.percentile(values, PERCENTILES))
        if high <= low:
            low, high = float(values.min()), float(values.max())
    else:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(scaled, 0.0, 255.0, out=scaled)


def resized_shape(height: int, width: int, long_side: int) -> Tuple[int, int]:
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def auto_tiling(shape: Tuple[int, int], img_size: int) -> Optional[Tuple[int, int]]:
    """samzoo's default: tile (tile, halo) when the long side exceeds the model input; each
    window (tile + 2 halo) is then exactly one encoder input, at native resolution."""
    if max(shape) <= img_size:
        return None
    halo = img_size // 8
    tile = img_size - 2 * halo
    if tile >= shape[0] and tile >= shape[1]:
        return None
    return tile, halo


def tiles(shape: Tuple[int, int], tile: int, halo: int):
    """(outer, inner, inner-within-outer, padding) of bioimageio.core's block layout, row-major:
    windows of tile + 2 halo, the last one on each axis moved back to end at the image edge (it
    owns its overlap with the previous tile, as core writes blocks in order), ``outer`` clipped
    to the image and ``padding`` (before, after) per axis what core pads (symmetric) past it."""
    rows, cols = math.ceil(shape[0] / tile), math.ceil(shape[1] / tile)
    for r in range(rows):
        for c in range(cols):
            outer, inner, local, padding = [], [], [], []
            for p, n, size in ((r, rows, shape[0]), (c, cols, shape[1])):
                start, stop = p * tile, min((p + 1) * tile, size)
                last_start = max(size - tile, 0)
                window_start = last_start if p == n - 1 else start
                if p == n - 1:
                    start = last_start
                elif p == n - 2:
                    stop = min(stop, last_start)
                want_start, want_stop = window_start - halo, window_start + tile + halo
                o_start, o_stop = max(want_start, 0), min(want_stop, size)
                outer.append(slice(o_start, o_stop))
                inner.append(slice(start, stop))
                local.append(slice(start - o_start, stop - o_start))
                padding.append((o_start - want_start, want_stop - o_stop))
            yield tuple(outer), tuple(inner), tuple(local), tuple(padding)


def blend_weights(outer: Tuple[slice, slice], shape: Tuple[int, int], halo: int, floor: float = 1e-3) -> np.ndarray:
    """Weights over a window's ``outer`` block for blending overlapping windows' maps: along each
    axis a linear ramp from ``floor`` at an edge that has a neighbouring window to 1 at ``2 halo``
    inside (the overlap with that neighbour), 1 at an image border; so no seam follows the grid.
    samzoo's in-house tiling computes the same float32 values."""
    factors = []
    for axis, (part, size) in enumerate(zip(outer, shape)):
        n = part.stop - part.start
        ramp = np.ones(n, dtype=np.float32)
        width = 2 * int(halo)
        if width > 0:
            rising = np.clip((np.arange(n, dtype=np.float32) + 0.5) / width, floor, 1.0)
            if part.start > 0:
                ramp = np.minimum(ramp, rising)
            if part.stop < size:
                ramp = np.minimum(ramp, rising[::-1])
        factors.append(ramp.reshape((n, 1) if axis == 0 else (1, n)))
    return factors[0] * factors[1]


# ================================================================================================
# seeded watershed (numpy / scipy / heapq only)
# ================================================================================================

def _sift_push(heap: List[Tuple[Tuple[float, int], int]], item: Tuple[Tuple[float, int], int]) -> None:
    """scikit-image's heap push: sift up while strictly smaller than the parent (key = (cost, age))."""
    heap.append(item)
    key = item[0]
    child = len(heap) - 1
    while child:
        parent = (child - 1) >> 1
        above = heap[parent]
        if key < above[0]:
            heap[child] = above
            child = parent
        else:
            break
    heap[child] = item


def _sift_pop(heap: List[Tuple[Tuple[float, int], int]]) -> Tuple[Tuple[float, int], int]:
    """scikit-image's heap pop: the last item moves to the root and sinks while a child is strictly
    smaller (the left child preferred unless the right one is strictly smaller still)."""
    top = heap[0]
    last = heap.pop()
    count = len(heap)
    if not count:
        return top
    key = last[0]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= count:
            break
        smaller = heap[child]
        if child + 1 < count and heap[child + 1][0] < smaller[0]:
            child += 1
            smaller = heap[child]
        if smaller[0] < key:
            heap[i] = smaller
            i = child
        else:
            break
    heap[i] = last
    return top


def watershed(heightmap: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The seeded watershed the packages run: scikit-image's own (C, 10-20x faster) when
    scikit-image >= 0.26 imports, else :func:`flood_watershed`, which gives the same labels byte
    for byte without it (bioimage.io's runtime has no scikit-image). Tests bind the two."""
    fast = _scikit_image_watershed()
    if fast is None:
        return flood_watershed(heightmap, markers, mask)
    return fast(heightmap, markers=markers, mask=mask)


def _scikit_image_watershed():
    """scikit-image's ``watershed`` if version >= 0.26 (the order :func:`flood_watershed` copies)
    imports cleanly; None otherwise (absent, older, or broken against this numpy)."""
    global _FAST_WATERSHED
    if _FAST_WATERSHED is None:
        _FAST_WATERSHED = False
        try:
            import skimage
            from skimage.segmentation import watershed as fast

            if tuple(int(part) for part in skimage.__version__.split(".")[:2]) >= (0, 26):
                _FAST_WATERSHED = fast
        except Exception:  # absent or unusable here: the flood below gives the same labels
            pass
    return _FAST_WATERSHED or None


_FAST_WATERSHED: Any = None


def flood_watershed(heightmap: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(heightmap, markers, mask=mask)`` (4-connected, no
    compactness, no lines) exactly, label for label, in the markers' dtype.

    Why not scikit-image: it is not on bioimage.io's runtime. Why not a plain ``heapq`` flood:
    the labels depend on the flooding order wherever heights tie (plateaus, quantised maps), and
    scikit-image's order is: markers (inside ``mask``) pushed in raster order with key (height,
    age 0); a pixel labelled when first pushed, by the pixel being expanded, with key (max(its
    height, that pixel's cost), next age). Keys tie only between markers of equal height (every
    other age is unique); while such ties remain queued, scikit-image's own binary heap (strict
    comparisons on the key) is mimicked, since its pop order among equal keys decides. After
    that all keys are distinct, every correct heap pops the same order, and ``heapq`` (in C)
    takes over from the same array.
    """
    h, w = heightmap.shape
    width = w + 2  # a frame of masked-out pixels: no bounds checks
    values = np.zeros((h + 2, width), np.float64)
    values[1:-1, 1:-1] = heightmap
    allowed = np.zeros((h + 2, width), bool)
    allowed[1:-1, 1:-1] = mask
    labels = np.zeros((h + 2, width), np.int64)
    labels[1:-1, 1:-1] = np.where(mask, markers, 0)
    height = values.ravel().tolist()
    out = labels.ravel().tolist()
    free = (allowed & (labels == 0)).ravel().tolist()
    starts = np.flatnonzero(labels.ravel()).tolist()
    offsets = (-width, -1, 1, width)
    age = 1
    marker_heights = values.ravel()[starts]
    queued = dict(zip(*(v.tolist() for v in np.unique(marker_heights, return_counts=True))))
    tied = sum(1 for c in queued.values() if c > 1)  # heights shared by markers still queued
    heap: List[Tuple[Tuple[float, int], int]] = []
    for i in starts:
        _sift_push(heap, ((height[i], 0), i))
    pop, push = _sift_pop, _sift_push
    while heap:
        if not tied:  # every key is distinct from here on: heapq (in C) pops the same order
            pop, push = heapq.heappop, heapq.heappush
        (cost, item_age), index = pop(heap)
        if item_age == 0 and tied:
            queued[cost] -= 1
            tied -= queued[cost] == 1
        label = out[index]
        for off in offsets:
            n = index + off
            if free[n]:
                free[n] = False
                out[n] = label
                age += 1
                value = height[n]
                push(heap, ((value if value > cost else cost, age), n))
    return np.asarray(out, np.int64).reshape(h + 2, width)[1:-1, 1:-1].astype(np.asarray(markers).dtype)


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(values, sigma) if sigma > 0 else values


def watershed_from_maps(maps: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Instance labels (uint32, objects 1..N) from the decoder's (3, H, W) maps; μSAM's
    post-processing with samzoo's parameter names (see the package documentation)."""
    p = dict(AIS_DEFAULTS, **dict(params))
    fg = _smooth(maps[0].astype(np.float32), float(p["foreground_smoothing"]))
    center = _smooth(maps[1].astype(np.float32), float(p["distance_smoothing"]))
    boundary = _smooth(maps[2].astype(np.float32), float(p["distance_smoothing"]))
    mask = fg > p["foreground_threshold"]
    seeds = (center < p["center_distance_threshold"]) & (boundary < p["boundary_distance_threshold"]) & mask
    markers, _ = ndimage.label(seeds, structure=np.ones((3, 3), dtype=bool))
    labels = watershed(boundary, markers, mask)
    min_size = int(p["min_size"])
    if min_size > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        if small.any():
            labels = watershed(boundary, np.where(small[labels], 0, labels), mask)
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.uint32)


# ================================================================================================
# the complete model and the package entry points
# ================================================================================================

class MicroSam(nn.Module):
    """SAM + optional AIS decoder. ``state_dict()`` keys: ``sam.*`` (segment-anything's) and
    ``ais_decoder.*`` (micro-sam's ``decoder_state``)."""

    def __init__(self, config: Mapping[str, Any], with_ais_decoder: bool = True):
        super().__init__()
        self.cfg = Config(config)
        self.sam = Sam(self.cfg)
        self.ais_decoder = AisDecoder(self.cfg) if with_ais_decoder else None
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.sam.pixel_mean.device

    def preprocess(self, images: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(B, 3, H, W) 0..255 -> encoder input (B, 3, S, S) and the resized (h, w)."""
        size = self.cfg.img_size
        h, w = resized_shape(images.shape[-2], images.shape[-1], size)
        if (h, w) != tuple(images.shape[-2:]):
            images = F.interpolate(images, (h, w), mode="bilinear", align_corners=False, antialias=True)
        images = (images - self.sam.pixel_mean) / self.sam.pixel_std
        return F.pad(images, (0, size - w, 0, size - h)), (h, w)

    def embed(self, images: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x, input_shape = self.preprocess(images.to(self.device, torch.float32))
        return self.sam.image_encoder(x), input_shape

    def maps_of_block(self, block_hwc: np.ndarray) -> np.ndarray:
        """AIS maps (3, h, w) of one (h, w, 3) 0..255 block, encoded as one SAM input."""
        tensor = torch.from_numpy(np.ascontiguousarray(block_hwc)).permute(2, 0, 1)[None].contiguous()
        embedding, input_shape = self.embed(tensor)
        maps = self.ais_decoder.to_image(self.ais_decoder.full_size(embedding), input_shape, tuple(block_hwc.shape[:2]))
        return maps[0].float().cpu().numpy()

    def ais_maps(self, image_hwc: np.ndarray) -> np.ndarray:
        """AIS maps (3, H, W) of a 0..255 image: whole, or tiled at native resolution with the
        windows' maps blended across their overlaps (``blend_weights``), as samzoo segments."""
        shape = tuple(image_hwc.shape[:2])
        tiling = auto_tiling(shape, self.cfg.img_size)
        if tiling is None:
            return self.maps_of_block(image_hwc)
        total = np.zeros((3, *shape), np.float32)
        weight = np.zeros(shape, np.float32)
        for outer, _, _, padding in tiles(shape, *tiling):
            block = np.pad(image_hwc[outer], (*padding, (0, 0)), mode="symmetric")
            maps = self.maps_of_block(block)
            (top, _), (left, _) = padding
            weights = blend_weights(outer, shape, tiling[1])
            total[(slice(None), *outer)] += maps[:, top:top + weights.shape[0], left:left + weights.shape[1]] * weights
            weight[outer] += weights
        return total / weight

    def prompt_masks(self, embeddings: torch.Tensor, input_shape: Tuple[int, int], original: Tuple[int, int],
                     box_prompts=None, point_prompts=None, point_labels=None, mask_prompts=None):
        """Masks (1, N, 1, H, W) uint8 and IoU scores (1, N, 1) for N objects' prompts."""
        sam, device = self.sam, embeddings.device
        height, width = original
        scale = torch.tensor([input_shape[1] / width, input_shape[0] / height], dtype=torch.float32, device=device)
        counts = {}
        boxes = points = masks_in = None
        if box_prompts is not None:
            boxes = (box_prompts[0].to(device, torch.float32).reshape(-1, 2, 2) * scale).reshape(-1, 4)
            counts["box_prompts"] = boxes.shape[0]
        if point_prompts is not None:
            if point_labels is None:
                raise ValueError("point_prompts need point_labels")
            coords = point_prompts[0].to(device, torch.float32) * scale
            labels = point_labels[0].to(device, torch.int64)
            if labels.shape != coords.shape[:2]:
                raise ValueError(f"point_labels {tuple(labels.shape)} do not fit point_prompts {tuple(coords.shape)}")
            points = (coords, labels)
            counts["point_prompts"] = coords.shape[0]
        elif point_labels is not None:
            raise ValueError("point_labels given without point_prompts")
        if mask_prompts is not None:
            masks_in = mask_prompts[0].to(device, torch.float32)
            counts["mask_prompts"] = masks_in.shape[0]
        if len(set(counts.values())) > 1:
            raise ValueError(f"prompts disagree on the number of objects: {counts}")
        n = next(iter(counts.values()), 0)
        if n == 0:
            return torch.zeros((1, 0, 1, height, width), dtype=torch.uint8), torch.zeros((1, 0, 1), dtype=torch.float32)
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=masks_in)
        if sparse.shape[0] != n:  # mask-only prompts
            sparse = sparse.expand(n, -1, -1)
        low_res, iou = sam.mask_decoder(embeddings, sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
        size = self.cfg.img_size
        logits = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        logits = logits[..., :input_shape[0], :input_shape[1]]
        logits = F.interpolate(logits, original, mode="bilinear", align_corners=False)
        masks = (logits > MASK_THRESHOLD).to(torch.uint8)
        return masks[None].cpu(), iou[None].to(torch.float32).cpu()


def _normalized(model: MicroSam, image_chw: torch.Tensor) -> np.ndarray:
    array = image_chw.detach().cpu().numpy()
    return normalize_to_255(three_channels(array), model.cfg.normalization, array.dtype)


class AisInstanceSegmentation(MicroSam):
    """``(B, C, H, W)`` raw image (C = 1 or 3) -> ``(B, 1, H, W)`` uint32 instance labels:
    normalization, encoder (tiled at native resolution for large images), AIS decoder, watershed."""

    def __init__(self, config: Mapping[str, Any], ais_params: Optional[Mapping[str, Any]] = None):
        super().__init__(config, with_ais_decoder=True)
        unknown = sorted(set(dict(ais_params or {})) - set(AIS_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown AIS parameter(s) {unknown}")
        self.ais_params = dict(AIS_DEFAULTS, **dict(ais_params or {}))

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4:
            raise ValueError(f"expected a (batch, channel, y, x) image, got shape {tuple(image.shape)}")
        labels = [watershed_from_maps(self.ais_maps(_normalized(self, item)), self.ais_params) for item in image]
        return torch.from_numpy(np.stack(labels))[:, None]


class AisNetwork(MicroSam):
    """One block: ``(B, C, S, S)`` image already scaled to 0..255 (C = 1 or 3, S = the model's
    input size) -> ``(B, 3, S, S)`` maps (foreground, center distance, boundary distance).

    This is the network a blockwise consumer runs on each S x S block of a larger image (the
    package declares the halo), i.e. what samzoo's own tiling does: every block is one encoder
    input at native resolution. Pure tensor code with static shapes, so it also exports to
    TorchScript and ONNX.
    """

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config, with_ais_decoder=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size = self.cfg.img_size
        if image.ndim != 4 or image.shape[-2] != size or image.shape[-1] != size:
            raise ValueError(f"expected a (batch, channel, {size}, {size}) block, got shape {tuple(image.shape)}")
        x = image.to(torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.sam.pixel_mean) / self.sam.pixel_std
        maps = self.ais_decoder.full_size(self.sam.image_encoder(x), rows=None)
        return F.interpolate(maps, (size, size), mode="bilinear", align_corners=False)


class InteractiveSegmentation(MicroSam):
    """Prompted segmentation in micro-sam's tensor layout (batch size 1). Inputs in order (all but
    ``image`` optional): image (1, C, H, W) raw; box_prompts (1, N, 4) x0, y0, x1, y1 px;
    point_prompts (1, N, P, 2) x, y px; point_labels (1, N, P) 1/0/-1; mask_prompts
    (1, N, 1, 4g, 4g) low-res logits; embeddings (1, E, g, g) from an earlier call (skips the
    encoder). Outputs: masks (1, N, 1, H, W) uint8, scores (1, N, 1), embeddings (1, E, g, g)."""

    def __init__(self, config: Mapping[str, Any], with_ais_decoder: bool = False):
        super().__init__(config, with_ais_decoder=with_ais_decoder)

    @torch.no_grad()
    def forward(self, image: torch.Tensor, box_prompts: Optional[torch.Tensor] = None,
                point_prompts: Optional[torch.Tensor] = None, point_labels: Optional[torch.Tensor] = None,
                mask_prompts: Optional[torch.Tensor] = None, embeddings: Optional[torch.Tensor] = None):
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"expected a (1, channel, y, x) image, got shape {tuple(image.shape)}")
        original = (int(image.shape[-2]), int(image.shape[-1]))
        input_shape = resized_shape(*original, self.cfg.img_size)
        if embeddings is None:
            x = torch.from_numpy(np.ascontiguousarray(_normalized(self, image[0]).transpose(2, 0, 1)))[None]
            embeddings, input_shape = self.embed(x)
        else:
            embeddings = embeddings.to(self.device, torch.float32)
        masks, scores = self.prompt_masks(embeddings, input_shape, original, box_prompts, point_prompts,
                                          point_labels, mask_prompts)
        return masks, scores, embeddings

