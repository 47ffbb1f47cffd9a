"""Cellpose-SAM's tunable inference parameters (cellpose 4 defaults), stored in checkpoints."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ...errors import InputError

#: What ``tune`` searches by default: the two thresholds that decide which masks survive
#: (network outputs are computed once; each combination only reruns the dynamics). 5 x 4 = 20.
DEFAULT_GRID: dict[str, tuple] = {
    "cellprob_threshold": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "flow_threshold": (0.0, 0.3, 0.4, 0.6),
}


@dataclass(frozen=True)
class CpsamParams:
    """How an image becomes labels; defaults are ``CellposeModel.eval``'s.

    cellprob_threshold: logit above which a pixel is integrated (lower: more/larger masks).
    flow_threshold: largest mean squared flow error of a kept mask (2D); 0 disables the QC.
    min_size: masks with fewer pixels are dropped (after hole filling); 0 or less keeps all.
    max_size_fraction: masks covering more of the image are dropped.
    niter: Euler steps; 0 means cellpose's automatic 200 / rescale.
    diameter: typical object diameter in pixels; the image is scaled by 30 / diameter (0: no scaling).
    tile_overlap: fraction of a 256-px tile shared with its neighbour (clamped to 0.05..0.5).
    augment: flip test-time augmentation (tiles overlap by half, flipped, un-flipped, averaged).
    batch_size: tiles per network forward pass on a GPU (a CPU runs them one at a time, which is
        faster there); memory/speed only, does not change results.
    stitch_threshold: volumes segmented slice by slice are joined across slices at this mask IoU.
    flow3d: volumes: average the network's flows over YX, ZY and ZX slices and run 3D dynamics.
    flow3d_smooth: Gaussian sigma (voxels) applied to 3D flows before the dynamics (0: none).
    """

    cellprob_threshold: float = 0.0
    flow_threshold: float = 0.4
    min_size: int = 15
    max_size_fraction: float = 0.4
    niter: int = 0
    diameter: float = 0.0
    tile_overlap: float = 0.1
    augment: bool = False
    batch_size: int = 8
    stitch_threshold: float = 0.0
    flow3d: bool = False
    flow3d_smooth: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("cellprob_threshold", "flow_threshold", "max_size_fraction", "diameter", "tile_overlap",
                     "stitch_threshold", "flow3d_smooth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"{name} must be a finite number, got {value!r}")
        for name in ("min_size", "niter", "batch_size"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                problems.append(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not problems:
            if self.flow_threshold < 0 or self.diameter < 0 or self.niter < 0 or self.flow3d_smooth < 0:
                problems.append("flow_threshold, diameter, niter and flow3d_smooth must be >= 0")
            if not 0 < self.max_size_fraction <= 1:
                problems.append(f"max_size_fraction must be in (0, 1], got {self.max_size_fraction}")
            if not 0 <= self.tile_overlap <= 0.5:
                problems.append(f"tile_overlap must be in [0, 0.5], got {self.tile_overlap}")
            if not 0 <= self.stitch_threshold <= 1:
                problems.append(f"stitch_threshold must be in [0, 1], got {self.stitch_threshold}")
            if self.batch_size < 1:
                problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if problems:
            raise InputError("Cellpose-SAM parameters: " + "; ".join(problems))

    @property
    def rescale(self) -> float:
        return 30.0 / self.diameter if self.diameter > 0 else 1.0

    @property
    def steps(self) -> int:
        """Euler steps actually run (cellpose: 200 / rescale unless given)."""
        return self.niter if self.niter > 0 else int(200 / self.rescale)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "CpsamParams":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"unknown Cellpose-SAM parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)


def resolve_params(stored: dict[str, Any] | None, overrides: "CpsamParams | dict[str, Any] | None" = None) -> CpsamParams:
    """Defaults, then a model's stored values, then ``overrides`` (a complete CpsamParams or a dict)."""
    if isinstance(overrides, CpsamParams):
        return overrides
    params = CpsamParams().replace(**dict(stored or {}))
    if overrides is None:
        return params
    if not isinstance(overrides, dict):
        raise InputError(f"params must be a dict or CpsamParams, got {type(overrides).__name__}")
    return params.replace(**overrides)
