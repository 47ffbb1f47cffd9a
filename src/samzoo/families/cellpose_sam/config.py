"""Architecture of a Cellpose-SAM network: one serialisable config, stored in samzoo checkpoints.

Cellpose-SAM (cellpose 4) is SAM's ViT-L image encoder retuned to 256-px input with 8-px patches
and global attention in every block, plus a 1x1 conv + pixel-shuffle head. Its relative-position
tables keep the sizes SAM trained them at (27 rows for SAM's 14-px windows, 127 for its global
blocks at 64x64 tokens) and are linearly interpolated to the 63 rows a 32x32 grid needs, which is
what segment-anything does at run time; ``rel_pos_rows`` records those stored sizes so a
checkpoint's tables load strictly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...errors import CheckpointError

FAMILY_NAME = "cellpose_sam"


@dataclass(frozen=True)
class CpsamConfig:
    """Everything needed to build the network (weights aside)."""

    name: str = "cpsam"
    img_size: int = 256
    patch_size: int = 8
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    neck_dim: int = 256
    nout: int = 3
    rel_pos_rows: tuple[int, ...] = tuple(127 if i in (5, 11, 17, 23) else 27 for i in range(24))
    layer_drop: float = 0.4
    """Largest per-block drop probability in training (linear from 0 at block 0), as cellpose."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rel_pos_rows", tuple(int(r) for r in self.rel_pos_rows))
        problems = []
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if len(self.rel_pos_rows) != self.depth:
            problems.append(f"rel_pos_rows has {len(self.rel_pos_rows)} entries for {self.depth} blocks")
        if self.nout != 3:
            problems.append(f"nout must be 3 (Y flow, X flow, cell probability), got {self.nout}")
        if not 0.0 <= self.layer_drop < 1.0:
            problems.append(f"layer_drop must be in [0, 1), got {self.layer_drop}")
        if problems:
            raise CheckpointError("invalid Cellpose-SAM config: " + "; ".join(problems))

    @property
    def grid(self) -> int:
        """Tokens per side (32 for cpsam)."""
        return self.img_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rel_pos_rows"] = list(self.rel_pos_rows)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CpsamConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"Cellpose-SAM config has unknown fields: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "CpsamConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, CpsamConfig] = {
    # The published architecture (cpsam, cpsam_v2): 304,628,930 parameters.
    "cpsam": CpsamConfig(),
    # A small network of the same design for CPU training and tests (~0.9 M parameters):
    # same 256-px input, 8-px patches, 32x32 tokens, global attention, pixel-shuffle head.
    "cpsam_small": CpsamConfig(name="cpsam_small", embed_dim=96, depth=4, num_heads=4, neck_dim=64,
                               rel_pos_rows=(27, 63, 27, 63), layer_drop=0.1),
    # Unit tests only: builds and runs in milliseconds.
    "cpsam_test": CpsamConfig(name="cpsam_test", embed_dim=32, depth=2, num_heads=2, neck_dim=32,
                              rel_pos_rows=(27, 127), layer_drop=0.0),
}


def preset(name: str, **changes: Any) -> CpsamConfig:
    """A named Cellpose-SAM architecture, optionally with fields changed."""
    if name not in PRESETS:
        raise CheckpointError(f"unknown Cellpose-SAM architecture {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
