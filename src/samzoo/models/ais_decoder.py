"""μSAM's automatic-instance-segmentation decoder: torch-em's UNETR on the SAM image encoder.

The settings below are the ones micro-sam uses (3 sigmoid outputs, SAM input statistics, no skip
connections), so ``decoder_state`` dicts load in both projects unchanged. Without skip
connections the decoder only needs the image embedding, which lets samzoo run it from the same
cached embedding the prompt decoder uses.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig

AIS_CHANNELS = ("foreground", "center_distances", "boundary_distances")


def build_ais_decoder(image_encoder: nn.Module, config: ModelConfig) -> nn.Module:
    """A UNETR sharing ``image_encoder`` (its weights are not duplicated)."""
    from torch_em.model import UNETR

    return UNETR(
        img_size=config.img_size,
        backbone="sam",
        encoder=image_encoder,
        out_channels=len(AIS_CHANNELS),
        use_sam_stats=True,
        final_activation="Sigmoid",
        use_skip_connection=False,
        resize_input=True,
        initial_features=config.ais_initial_features,
    )


def decoder_state(unetr: nn.Module) -> dict[str, torch.Tensor]:
    """The decoder's own weights: the UNETR state without the shared ``encoder.*`` entries."""
    return {k: v for k, v in unetr.state_dict().items() if not k.startswith("encoder.")}


def decode_embedding(unetr: nn.Module, embedding: torch.Tensor, input_shape: tuple[int, int],
                     original_shape: tuple[int, int]) -> torch.Tensor:
    """Decoder outputs (B, 3, *original_shape) from a precomputed image embedding."""
    return unetr.decode((embedding, None, None), tuple(input_shape), tuple(original_shape))
