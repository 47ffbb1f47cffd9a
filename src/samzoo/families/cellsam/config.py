"""Architecture of a CellSAM model: one frozen dataclass, defaults = the published CellSAM.

The defaults reproduce vanvalenlab/cellSAM (``cellSAM/modelconfig.yaml`` + ``CellfinderAnchorDetr``):
SAM ViT-B at 1024 px for the mask part, a second ViT-B trunk (no neck) for CellFinder, and an
Anchor-DETR head with 6 + 6 RCDA layers, d=256, 8 heads, FFN 1024 and 3500 position queries.
Smaller values exist only so tests and CPU training can run the same code in seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...errors import CheckpointError


@dataclass(frozen=True)
class CellSAMConfig:
    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_decoder_mlp_dim: int = 2048
    hidden_dim: int = 256
    detr_heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    num_queries: int = 3500
    num_classes: int = 2
    group_norm_groups: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "global_attn_indexes", tuple(int(i) for i in self.global_attn_indexes))
        problems = []
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.hidden_dim % self.detr_heads:
            problems.append(f"hidden_dim {self.hidden_dim} is not divisible by detr_heads {self.detr_heads}")
        if self.hidden_dim % self.group_norm_groups:
            problems.append(f"hidden_dim {self.hidden_dim} is not divisible by {self.group_norm_groups} groups")
        if any(not 0 <= i < self.depth for i in self.global_attn_indexes):
            problems.append(f"global_attn_indexes {self.global_attn_indexes} outside 0..{self.depth - 1}")
        if self.num_queries < 1 or self.enc_layers < 1 or self.dec_layers < 1:
            problems.append("num_queries, enc_layers and dec_layers must be >= 1")
        if problems:
            raise CheckpointError("invalid CellSAM config: " + "; ".join(problems))

    @property
    def embedding_size(self) -> int:
        return self.img_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["global_attn_indexes"] = list(self.global_attn_indexes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellSAMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"CellSAM config has unknown fields: {', '.join(unknown)}")
        return cls(**data)


PUBLISHED = CellSAMConfig()
"""The architecture of the released cellsam_general / cellsam_extra weights."""

TINY = CellSAMConfig(img_size=128, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                     global_attn_indexes=(1,), window_size=4, prompt_embed_dim=32,
                     mask_decoder_mlp_dim=64, hidden_dim=32, detr_heads=4, enc_layers=2, dec_layers=2,
                     dim_feedforward=64, num_queries=64)
"""A few-hundred-thousand-parameter CellSAM for tests and CPU training presets."""
