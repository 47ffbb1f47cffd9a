"""Build SAM (image encoder, prompt encoder, mask decoder) from a :class:`ModelConfig`.

The modules are segment-anything's own, so weights are interchangeable with SAM and micro-sam.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from .config import ModelConfig
from .fast_attention import use_fast_attention


class Float32Neck(torch.nn.Sequential):
    """SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d), kept in float32 under autocast.

    Why: LayerNorm2d takes its statistics in its input's dtype, so under bfloat16 autocast the
    embedding every decoder reads is normalised with 8-bit-mantissa means and variances. In
    float32 the bfloat16 AIS labels of a crowded phase-contrast crop went from mSA 0.937 to 0.969
    against float32, for about 1 % of the encoder's work. Outside autocast it is the plain neck;
    its children are the same, so the state-dict keys (``neck.0`` ... ``neck.3``) are too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def build_image_encoder(config: ModelConfig) -> torch.nn.Module:
    encoder = _build_trunk(config)
    encoder.neck = Float32Neck(*encoder.neck)
    return encoder


def _build_trunk(config: ModelConfig) -> torch.nn.Module:
    if config.encoder == "tiny_vit":
        from .tiny_vit import build_tiny_vit  # MobileSAM's encoder, only needed for vit_t

        return build_tiny_vit(config)
    encoder = ImageEncoderViT(
        depth=config.depth,
        embed_dim=config.embed_dim,
        img_size=config.img_size,
        mlp_ratio=config.mlp_ratio,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=config.num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=config.global_attn_indexes,
        window_size=config.window_size,
        out_chans=config.prompt_embed_dim,
    )
    return use_fast_attention(encoder)


def build_sam(config: ModelConfig) -> Sam:
    """A randomly initialised SAM with the architecture ``config`` describes."""
    grid = config.embedding_size
    sam = Sam(
        image_encoder=build_image_encoder(config),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=config.mask_decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.mask_decoder_mlp_dim,
                num_heads=config.mask_decoder_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()
