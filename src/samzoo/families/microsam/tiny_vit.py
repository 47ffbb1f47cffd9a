"""MobileSAM's TinyViT image encoder, used by the ``vit_t`` models of MobileSAM and micro-sam.

The module tree is laid out so that ``state_dict()`` has exactly the key names, shapes and dtypes
of the ``image_encoder.*`` entries of ``mobile_sam.pt`` and of micro-sam's ``vit_t`` checkpoints
(frozen in ``tests/data/mobile_sam_vit_t_encoder_keys.json``). That layout includes two things the
encoder never uses at inference but the checkpoints carry: the ImageNet classifier (``norm_head``,
``head``) and BatchNorm's ``num_batches_tracked`` counters.

Architecture: a convolutional stem (two stride-2 conv+BN, total stride 4), a first stage of
MBConv blocks, then stages of windowed self-attention blocks. Stages are joined by a
"patch merging" conv stack that widens the channels and halves the resolution, except into the
last stage, where it keeps it (MobileSAM's change to TinyViT, so that a 1024 input ends at 64x64).
A SAM-style neck maps the last stage to ``out_chans`` channels.

Attention uses a learned bias per head and per relative offset ``(|dy|, |dx|)`` within a window:
``attention_biases`` holds ``(heads, window**2)`` values and the buffer ``attention_bias_idxs``
maps each (query, key) pair of a window to its offset, ``|dy| * window + |dx|``. As in MobileSAM
that buffer is *not persistent*: it is derived from the window size, so the checkpoints do not
store it. Loading still accepts a state dict that does carry it (ports of TinyViT that made the
buffer persistent), as long as it agrees with the window size, so strict loading works either way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError
from .config import ModelConfig

# MobileSAM's vit_t (TinyViT-5M at 1024 px). ``config.tiny_vit`` entries override these.
TINY_VIT_DEFAULTS: dict[str, Any] = {
    "embed_dims": [64, 128, 160, 320],
    "depths": [2, 2, 6, 2],
    "num_heads": [2, 4, 5, 10],  # the first (convolutional) stage ignores its entry
    "window_sizes": [7, 7, 14, 7],  # likewise
    "mlp_ratio": 4.0,
    "mbconv_expand_ratio": 4.0,
    "local_conv_size": 3,
    "num_classes": 1000,  # size of the (unused) classifier head that the checkpoints contain
    "in_chans": 3,
}
STEM_STRIDE = 4


def tiny_vit_settings(config: ModelConfig) -> dict[str, Any]:
    """The TinyViT hyperparameters of ``config``: the defaults updated with ``config.tiny_vit``."""
    unknown = sorted(set(config.tiny_vit) - set(TINY_VIT_DEFAULTS))
    if unknown:
        raise CheckpointError(
            f"invalid model config: unknown tiny_vit settings {', '.join(unknown)}; "
            f"known: {', '.join(TINY_VIT_DEFAULTS)}"
        )
    settings = {**TINY_VIT_DEFAULTS, **config.tiny_vit}
    try:
        for name in ("embed_dims", "depths", "num_heads", "window_sizes"):
            settings[name] = [int(v) for v in settings[name]]
        for name in ("local_conv_size", "num_classes", "in_chans"):
            settings[name] = int(settings[name])
        for name in ("mlp_ratio", "mbconv_expand_ratio"):
            settings[name] = float(settings[name])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"invalid model config: tiny_vit setting {name!r}: {err}") from None

    problems = []
    n_stages = len(settings["embed_dims"])
    if n_stages < 2:
        problems.append("tiny_vit needs at least 2 stages (one convolutional, one attention)")
    for name in ("depths", "num_heads", "window_sizes"):
        if len(settings[name]) != n_stages:
            problems.append(f"tiny_vit {name} has {len(settings[name])} entries, embed_dims {n_stages}")
    if not problems:
        for i in range(1, n_stages):
            dim, heads = settings["embed_dims"][i], settings["num_heads"][i]
            if heads < 1 or dim % heads:
                problems.append(f"tiny_vit stage {i}: embed_dim {dim} not divisible by num_heads {heads}")
            if settings["window_sizes"][i] < 1:
                problems.append(f"tiny_vit stage {i}: window size must be positive")
        if min(settings["depths"]) < 1 or min(settings["embed_dims"]) < 2:
            problems.append("tiny_vit depths and embed_dims must be positive")
        stride = total_stride(n_stages)
        if config.patch_size != stride:
            problems.append(f"tiny_vit with {n_stages} stages downsamples by {stride}, "
                            f"but patch_size is {config.patch_size}")
        if config.img_size % stride:
            problems.append(f"img_size {config.img_size} is not a multiple of the encoder stride {stride}")
    if settings["local_conv_size"] < 1 or settings["local_conv_size"] % 2 == 0:
        problems.append("tiny_vit local_conv_size must be a positive odd number")
    if problems:
        raise CheckpointError("invalid model config: " + "; ".join(problems))
    return settings


def infer_tiny_vit_settings(state_dict: dict[str, Any], prefix: str = "image_encoder.") -> dict[str, Any]:
    """The ``config.tiny_vit`` settings a TinyViT checkpoint was made with, read from its shapes.

    ``prefix`` is where the encoder's keys start (``image_encoder.`` in SAM checkpoints). The neck
    width (``prompt_embed_dim``) is ``state_dict[prefix + "neck.0.weight"].shape[0]``.
    """
    def shape(key: str) -> tuple[int, ...]:
        return tuple(state_dict[prefix + key].shape)

    try:
        n_stages = 1 + max(int(k[len(prefix):].split(".")[1]) for k in state_dict
                           if k.startswith(prefix + "layers."))
        depths = [1 + max(int(k[len(prefix):].split(".")[3]) for k in state_dict
                          if k.startswith(f"{prefix}layers.{i}.blocks.")) for i in range(n_stages)]
        embed_dims = [shape("patch_embed.seq.2.c.weight")[0]]
        embed_dims += [shape(f"layers.{i}.downsample.conv1.c.weight")[0] for i in range(n_stages - 1)]
        num_heads, window_sizes = [TINY_VIT_DEFAULTS["num_heads"][0]], [TINY_VIT_DEFAULTS["window_sizes"][0]]
        for i in range(1, n_stages):
            heads, offsets = shape(f"layers.{i}.blocks.0.attn.attention_biases")
            num_heads.append(heads)
            window_sizes.append(math.isqrt(offsets))
        attention_stage = "layers.1.blocks.0."
        settings = {
            "embed_dims": embed_dims,
            "depths": depths,
            "num_heads": num_heads,
            "window_sizes": window_sizes,
            "mlp_ratio": shape(attention_stage + "mlp.fc1.weight")[0] / embed_dims[1],
            "mbconv_expand_ratio": shape("layers.0.blocks.0.conv1.c.weight")[0] / embed_dims[0],
            "local_conv_size": shape(attention_stage + "local_conv.c.weight")[-1],
            "num_classes": shape("head.weight")[0] if prefix + "head.weight" in state_dict else 0,
            "in_chans": shape("patch_embed.seq.0.c.weight")[1],
        }
    except (KeyError, ValueError, IndexError) as err:
        raise CheckpointError(f"not a TinyViT (vit_t) encoder checkpoint: missing or odd entry {err}") from None
    return settings


def total_stride(n_stages: int) -> int:
    """Input pixels per output pixel: the stem, then every merge but the last halves the size."""
    return STEM_STRIDE * 2 ** max(n_stages - 2, 0)


def relative_offset_index(window: int) -> torch.Tensor:
    """``(window**2, window**2)`` index of the offset ``(|dy|, |dx|)`` between two window cells.

    Offsets are numbered ``|dy| * window + |dx|``, which is the order in which TinyViT numbers
    them (first appearance when scanning query and key cells row-major), so the learned
    ``attention_biases`` of MobileSAM checkpoints keep their meaning.
    """
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    dy = (rows[:, None] - rows[None, :]).abs()
    dx = (cols[:, None] - cols[None, :]).abs()
    return dy * window + dx


class ConvBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm, stored as ``c`` and ``bn``."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel_size, stride, kernel_size // 2,
                                       groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (SAM's neck norm, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """Stem: two stride-2 3x3 conv+BN with a GELU between (``seq.0``, ``seq.2``)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, stride=2),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project (BN initialised to 0), residual."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim, 1, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 widen, depthwise 3x3 with ``stride``, 1x1; NCHW in and out."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class Attention(nn.Module):
    """Pre-norm multi-head attention over the cells of one window, with learned offset biases.

    ``qkv`` packs q, k and v *per head* (``[q_h, k_h, v_h]`` for each head h in turn), which is
    TinyViT's layout, not the ``[q, k, v]``-major layout of SAM's ViT.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", relative_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (windows, window**2, dim) -> same shape."""
        n_win, n_tok, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(n_win, n_tok, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)  # each (windows, heads, tokens, d)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # (heads, tokens, tokens)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(n_win, n_tok, -1))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Accept (and check) the index buffer from checkpoints that stored it; ours is derived.
        key = prefix + "attention_bias_idxs"
        if key in state_dict:
            stored = state_dict.pop(key)
            if not torch.equal(torch.as_tensor(stored).cpu().long(), self.attention_bias_idxs.cpu()):
                error_msgs.append(
                    f"{key}: does not match the offsets of a {self.window}x{self.window} window "
                    f"(shape {tuple(stored.shape)}); the checkpoint was made with other window sizes"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class Mlp(nn.Module):
    """Pre-norm two-layer MLP."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise ``local_conv`` (no residual), MLP (residual)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv_size: int) -> None:
        super().__init__()
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)

    def windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, H, W, C). The map is zero-padded at the bottom/right to whole windows and the
        padding takes part in attention as keys, exactly as in TinyViT."""
        b, h, w, c = x.shape
        ws = self.window
        pad_h, pad_w = -h % ws, -w % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // ws, (w + pad_w) // ws
        x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, nh * ws, nw * ws, c)
        return x[:, :h, :w] if (pad_h or pad_w) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, H, W, C) -> same shape."""
        x = x + self.windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvLayer(nn.Module):
    """First stage: MBConv blocks on the NCHW map, then the merge into the next stage."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class BasicLayer(nn.Module):
    """Attention stage: TinyViT blocks (channels-last inside), then the optional merge. NCHW in/out."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv_size: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT image encoder with a SAM neck: (B, in_chans, S, S) -> (B, out_chans, S/16, S/16).

    ``img_size`` and ``in_chans`` are what SAM's preprocessing and torch-em's UNETR read. There is
    deliberately no ``embed_dim`` attribute: torch-em then takes the UNETR width from the neck.
    """

    def __init__(self, img_size: int = 1024, out_chans: int = 256, *, embed_dims: list[int],
                 depths: list[int], num_heads: list[int], window_sizes: list[int], mlp_ratio: float,
                 mbconv_expand_ratio: float, local_conv_size: int, num_classes: int,
                 in_chans: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.embed_dims = list(embed_dims)
        self.patch_size = total_stride(len(embed_dims))  # input pixels per embedding pixel

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        last = len(embed_dims) - 1
        for i, dim in enumerate(embed_dims):
            downsample = None
            if i < last:  # the merge into the last stage keeps the resolution
                downsample = PatchMerging(dim, embed_dims[i + 1], stride=1 if i + 1 == last else 2)
            if i == 0:
                layer: nn.Module = ConvLayer(dim, depths[i], mbconv_expand_ratio, downsample)
            else:
                layer = BasicLayer(dim, depths[i], num_heads[i], window_sizes[i], mlp_ratio,
                                   local_conv_size, downsample)
            self.layers.append(layer)

        # ImageNet classifier of the original TinyViT: unused, kept for checkpoint compatibility.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_tiny_vit(config: ModelConfig) -> TinyViT:
    """The TinyViT encoder ``config`` describes (``config.encoder == "tiny_vit"``), randomly
    initialised; neck width ``config.prompt_embed_dim``, input ``config.img_size``."""
    settings = tiny_vit_settings(config)
    return TinyViT(img_size=config.img_size, out_chans=config.prompt_embed_dim, **settings)
