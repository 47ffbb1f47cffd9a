"""CellSAMModel: the networks, their config, tuned parameters and provenance (licence) in one object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .config import CellSAMConfig
from .detections import rank_detections
from .networks import CellSAMNetworks
from .params import CellSAMParams
from .preprocess import detector_input, embedding_input

LICENCE_NON_COMMERCIAL = (
    "CellSAM weights: Modified Apache License 2.0 (Van Valen lab) -- non-commercial academic use only; "
    "commercial use needs permission from vanvalenlab@gmail.com. Do not redistribute.")


@dataclass
class CellSAMMetadata:
    name: str = "cellsam"
    licence: str | None = None
    """Licence of the weights; a non-empty value restricts redistribution (see ``redistributable``)."""
    redistributable: bool = True
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "licence": self.licence, "redistributable": self.redistributable,
                "source": self.source, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellSAMMetadata":
        return cls(name=str(data.get("name", "cellsam")), licence=data.get("licence"),
                   redistributable=bool(data.get("redistributable", True)), source=str(data.get("source", "")),
                   extra=dict(data.get("extra") or {}))


class CellSAMModel(nn.Module):
    family = "cellsam"

    def __init__(self, config: CellSAMConfig, *, with_model_cp: bool = True, params: CellSAMParams | None = None,
                 metadata: CellSAMMetadata | None = None) -> None:
        super().__init__()
        self.config = config
        self.networks = CellSAMNetworks(config, with_model_cp=with_model_cp)
        self.params = params or CellSAMParams()
        self.metadata = metadata or CellSAMMetadata()

    @property
    def sam(self):
        return self.networks.sam

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> SAM image embeddings (B, C, h, w)."""
        x = embedding_input(images, self.config.img_size, self.networks.uses_model_cp).to(self.device)
        return self.sam.image_encoder(x)

    @torch.no_grad()
    def detect_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> CellFinder logits (layers, B, Q, classes) and boxes (layers, B, Q, 4)."""
        x = detector_input(images, self.config.img_size, self.networks.uses_model_cp).to(self.device)
        return self.networks.cellfinder(x)

    @torch.no_grad()
    def detect(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One image (1, 3, H, W) -> ranked scores (Q,) and xyxy boxes (Q, 4) in SAM-input pixels."""
        logits, boxes = self.detect_raw(image)
        return rank_detections(logits[-1, 0], boxes[-1, 0], self.config.img_size)
