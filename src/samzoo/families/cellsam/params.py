"""Every threshold of CellSAM's inference in one dataclass (defaults = the reference pipeline)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...errors import InputError
from .preprocess import NORMALIZATIONS


@dataclass(frozen=True)
class CellSAMParams:
    bbox_threshold: float = 0.4
    """Detector score threshold (blended with the 2-cluster midpoint when ``cluster_blend``)."""
    cluster_blend: bool = True
    """Threshold = 0.66 * bbox_threshold + 0.33 * mean of the 2-means centres of all scores."""
    exact_two_means: bool = False
    """Use the exact 1-D 2-means split instead of scikit-learn's KMeans (what the package runs)."""
    iou_threshold: float = 0.5
    """Drop masks whose SAM-predicted IoU is below this."""
    mask_threshold: float = 0.4
    """Pixel is in a mask when sigmoid(logit) exceeds this (code default; the paper says 0.5)."""
    min_size: int = 25
    """Objects smaller than this (pixels) are removed after hole filling."""
    normalization: str = "cellsam"
    """cellsam (min-max, 99.9 %-clip, CLAHE) | minmax | none (input already in [0, 1])."""
    tiling: bool = True
    """Segment in blocks of ``block_size`` with ``overlap`` and link objects across blocks."""
    block_size: int = 400
    overlap: int = 56
    iou_depth: int = 56
    """Width (each side of a block boundary) of the band where objects of two blocks are compared."""
    link_iou_threshold: float = 0.5
    """Objects of neighbouring blocks whose IoU in the band reaches this become one object."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("bbox_threshold", "iou_threshold", "mask_threshold", "link_iou_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {value!r}")
        if self.mask_threshold <= 0:
            problems.append("mask_threshold must be > 0 (0 makes every pixel foreground)")
        if int(self.min_size) < 0:
            problems.append(f"min_size must be >= 0, got {self.min_size}")
        if self.normalization not in NORMALIZATIONS:
            problems.append(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.block_size < 32:
            problems.append(f"block_size must be >= 32, got {self.block_size}")
        if not 0 <= self.iou_depth <= self.overlap:
            problems.append(f"iou_depth ({self.iou_depth}) must be in 0..overlap ({self.overlap})")
        if self.overlap >= self.block_size:
            problems.append(f"overlap ({self.overlap}) must be smaller than block_size ({self.block_size})")
        if problems:
            raise InputError("invalid CellSAM parameters: " + "; ".join(problems))

    def replace(self, **changes: Any) -> "CellSAMParams":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"unknown CellSAM parameter(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TUNING_GRID: dict[str, tuple[Any, ...]] = {
    "bbox_threshold": (0.2, 0.3, 0.4, 0.5),
    "iou_threshold": (0.3, 0.5, 0.7),
    "mask_threshold": (0.3, 0.4, 0.5),
    "min_size": (10, 25, 50),
}
"""What ``samzoo tune`` searches for CellSAM (every other field keeps its value)."""
