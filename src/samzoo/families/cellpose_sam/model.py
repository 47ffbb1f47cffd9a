"""A loaded Cellpose-SAM model: the network plus its config, inference parameters and metadata."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import CpsamConfig
from .network import CpsamNet


def build_network(config: CpsamConfig) -> CpsamNet:
    """A randomly initialised network with the architecture ``config`` describes."""
    return CpsamNet(img_size=config.img_size, patch_size=config.patch_size, embed_dim=config.embed_dim,
                    depth=config.depth, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
                    neck_dim=config.neck_dim, nout=config.nout, rel_pos_rows=config.rel_pos_rows,
                    layer_drop=config.layer_drop)


class CellposeSamModel(nn.Module):
    """``net`` maps normalised (B, C<=3, 256, 256) tiles to (B, 3, 256, 256) flows + logit.

    ``params``: stored inference parameters (a dict of ``CpsamParams`` fields, tuned values);
    ``diam_mean`` / ``diam_labels``: cellpose's diameter bookkeeping (30 px), kept for round trips."""

    def __init__(self, config: CpsamConfig, *, params: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None, diam_mean: float = 30.0, diam_labels: float = 30.0):
        super().__init__()
        self.config = config
        self.net = build_network(config)
        self.params: dict[str, Any] = dict(params or {})
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.diam_mean = float(diam_mean)
        self.diam_labels = float(diam_labels)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
