"""Activation recomputation for the image encoder (``TrainConfig.recompute_encoder``).

A ViT-B step at 1024 px keeps every encoder block's activations for the backward pass, the four
global-attention blocks alone about 0.8 GB each. With recomputation only each block's input is kept
and the block runs again during backward: about one more encoder forward of compute for most of
the encoder's activation memory, which is what lets vit_b fine-tune on smaller GPUs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def encode_with_recomputation(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """segment-anything's ``ImageEncoderViT.forward`` with each block recomputed in backward.

    Other encoders (MobileSAM's TinyViT) run unchanged. Without autograd there is nothing to save,
    so the plain forward runs."""
    from segment_anything.modeling.image_encoder import ImageEncoderViT

    if not isinstance(encoder, ImageEncoderViT) or not torch.is_grad_enabled():
        return encoder(x)
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for block in encoder.blocks:
        x = checkpoint(block, x, use_reentrant=False)
    return encoder.neck(x.permute(0, 3, 1, 2))
