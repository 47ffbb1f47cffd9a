"""The networks of CellSAM, assembled from segment-anything modules plus the Anchor-DETR head.

Module names mirror the published state dict so checkpoints load without renaming:
``model.*`` / ``model_cp.*`` are full SAM ViT-B models, ``cellfinder.decode_head.*`` is CellFinder
(``backbone.body`` = SAM ViT trunk without neck, ``input_proj.0`` = 1x1 conv + GroupNorm,
``transformer`` = Anchor DETR).
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from .anchor_detr import AnchorDetrTransformer
from .config import CellSAMConfig

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def _vit(config: CellSAMConfig) -> ImageEncoderViT:
    return ImageEncoderViT(
        img_size=config.img_size, patch_size=config.patch_size, embed_dim=config.embed_dim, depth=config.depth,
        num_heads=config.num_heads, mlp_ratio=4.0, out_chans=config.prompt_embed_dim, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=config.window_size,
        global_attn_indexes=config.global_attn_indexes)


def build_sam(config: CellSAMConfig) -> Sam:
    """segment-anything's SAM with the ViT of ``config`` (vit_b for the published model)."""
    grid = config.embedding_size
    dim = config.prompt_embed_dim
    return Sam(
        image_encoder=_vit(config),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                                     input_image_size=(config.img_size, config.img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=dim,
                                                               mlp_dim=config.mask_decoder_mlp_dim, num_heads=8),
                                 transformer_dim=dim, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=list(SAM_PIXEL_MEAN), pixel_std=list(SAM_PIXEL_STD),
    )


class NecklessViT(nn.Module):
    """SAM's ViT trunk (patch embedding, absolute positions, blocks) returning (B, embed_dim, H/16, W/16)."""

    def __init__(self, config: CellSAMConfig) -> None:
        super().__init__()
        vit = _vit(config)
        self.patch_embed = vit.patch_embed
        self.pos_embed = vit.pos_embed
        self.blocks = vit.blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 3, 1, 2)


class _Backbone(nn.Module):
    def __init__(self, config: CellSAMConfig) -> None:
        super().__init__()
        self.body = NecklessViT(config)


class CellFinderHead(nn.Module):
    """Anchor DETR on the neckless ViT: image (B, 3, S, S) -> logits (L, B, Q, 2), boxes (L, B, Q, 4) cxcywh in [0, 1]."""

    def __init__(self, config: CellSAMConfig) -> None:
        super().__init__()
        self.backbone = _Backbone(config)
        proj = nn.Sequential(nn.Conv2d(config.embed_dim, config.hidden_dim, kernel_size=1),
                             nn.GroupNorm(config.group_norm_groups, config.hidden_dim))
        nn.init.xavier_uniform_(proj[0].weight)
        nn.init.zeros_(proj[0].bias)
        self.input_proj = nn.ModuleList([proj])
        self.transformer = AnchorDetrTransformer(
            dim=config.hidden_dim, heads=config.detr_heads, enc_layers=config.enc_layers,
            dec_layers=config.dec_layers, ffn=config.dim_feedforward, num_queries=config.num_queries,
            num_classes=config.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> projected trunk features (B, hidden_dim, S/patch, S/patch), the transformer's input."""
        return self.input_proj[0](self.backbone.body(images))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transformer(self.features(images))


class CellFinder(nn.Module):
    def __init__(self, config: CellSAMConfig) -> None:
        super().__init__()
        self.decode_head = CellFinderHead(config)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode_head(images)


class CellSAMNetworks(nn.Module):
    """The three networks of a CellSAM checkpoint. ``model_cp`` (the re-trained-neck SAM) is used
    for embeddings, prompts and masks when the checkpoint holds it (``uses_model_cp``); ``model``
    otherwise."""

    def __init__(self, config: CellSAMConfig, with_model_cp: bool = True) -> None:
        super().__init__()
        self.config = config
        self.model = build_sam(config)
        self.model_cp = build_sam(config) if with_model_cp else None
        self.cellfinder = CellFinder(config)

    @property
    def uses_model_cp(self) -> bool:
        return self.model_cp is not None

    @property
    def sam(self) -> Sam:
        """The SAM that computes embeddings and decodes boxes."""
        return self.model_cp if self.model_cp is not None else self.model
