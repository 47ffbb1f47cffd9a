"""SAMCell's network: an unmodified SAM used without prompts, read as a distance map.

The image goes through SAM's image encoder; the mask decoder runs with the empty prompt
(no points, no boxes, the learned "no mask" dense embedding), exactly what transformers'
``SamModel`` does when SAMCell calls it with pixel values only. Of the three multimask outputs the
first one (SAM's mask token 1) after a sigmoid is SAMCell's per-cell normalised distance-to-border
map, at a quarter of the input resolution (256 x 256 for SAM's 1024 px input).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..microsam.config import ModelConfig
from ..microsam.sam import build_sam

# SAM ViT-B as SAMCell uses it: no AIS decoder; inputs are min-max scaled per crop (see preprocess).
SAMCELL_VIT_B = ModelConfig(name="vit_b", ais_decoder=False, normalization="minmax")


class SamcellModel(nn.Module):
    """SAM (segment-anything modules) + what SAMCell needs around it.

    ``params`` holds the tuned post-processing thresholds that travel with the weights (see
    :class:`~samzoo.families.samcell.postprocess.SamcellParams`), ``metadata`` free-form provenance.
    """

    def __init__(self, config: ModelConfig = SAMCELL_VIT_B, *, params: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None):
        super().__init__()
        self.config = config.replace(ais_decoder=False) if config.ais_decoder else config
        self.sam = build_sam(self.config)
        self.params = dict(params or {})
        self.metadata = dict(metadata or {})
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def input_size(self) -> int:
        return self.config.img_size

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) values in 0..255 -> SAM's input (ImageNet mean/std, as SamProcessor does)."""
        return (images - self.sam.pixel_mean) / self.sam.pixel_std

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B,C,g,g) -> logits of the first multimask output (B,1,4g,4g)."""
        prompt_encoder, decoder = self.sam.prompt_encoder, self.sam.mask_decoder
        image_pe = prompt_encoder.get_dense_pe()
        dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            1, -1, *prompt_encoder.image_embedding_size)
        sparse = torch.empty((1, 0, prompt_encoder.embed_dim), device=embeddings.device, dtype=embeddings.dtype)
        # segment-anything's decoder decodes the prompts of one image at a time: loop over the batch.
        logits = [decoder.predict_masks(embedding[None], image_pe, sparse, dense)[0][:, 1:2]
                  for embedding in embeddings]
        return torch.cat(logits)

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """SAM-normalised (B,3,S,S) input -> distance-map logits (B,1,S/4,S/4)."""
        return self.decode(self.sam.image_encoder(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """SAM-normalised (B,3,S,S) input -> distance map in [0, 1] (B,1,S/4,S/4)."""
        return torch.sigmoid(self.logits(pixels))
