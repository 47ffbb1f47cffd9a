"""Distance map -> cells: SAMCell's seeded watershed and its two tunable thresholds.

Seeds: the connected regions of ``map > peak_threshold`` (8-connected, the outer contour of each as
OpenCV traces it), one seed pixel at the centroid of each contour polygon; regions whose simplified
contour has fewer than three points (single pixels, straight one-pixel lines) give no seed, as in
the authors' code. Cells: watershed of the negative map from those seeds, restricted to
``map > fill_threshold``. OpenCV's contour moments are used so seeds land on exactly the pixels the
authors' pipeline picks (its labels are reproduced exactly); unlike that pipeline, errors are raised,
not turned into an empty result.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np
from skimage.segmentation import relabel_sequential, watershed

from ...errors import InputError


@dataclasses.dataclass(frozen=True)
class SamcellParams:
    """Thresholds on the distance map (defaults: the paper's and samcell 1.2.0's 0.47 / 0.09)."""

    peak_threshold: float = 0.47
    fill_threshold: float = 0.09

    def __post_init__(self) -> None:
        for name in ("peak_threshold", "fill_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise InputError(f"SAMCell {name} must be a number in [0, 1], got {value!r}")
        if self.fill_threshold > self.peak_threshold:
            raise InputError(f"SAMCell fill_threshold ({self.fill_threshold}) must not exceed "
                             f"peak_threshold ({self.peak_threshold})")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "SamcellParams":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"unknown SAMCell parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)


# What ``samzoo tune`` searches by default (the authors' run_batch_thresholds explores the same region).
PARAM_GRID: dict[str, tuple[float, ...]] = {
    "peak_threshold": (0.35, 0.41, 0.47, 0.53, 0.6),
    "fill_threshold": (0.05, 0.09, 0.13, 0.2),
}


def seed_markers(distance: np.ndarray, peak_threshold: float) -> np.ndarray:
    """int32 image with one labelled seed pixel per peak region (labels in contour order)."""
    peaks = (distance > peak_threshold).astype(np.uint8)
    contours, _ = cv2.findContours(peaks, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    markers = np.zeros(distance.shape, dtype=np.int32)
    for i, contour in enumerate(contours):
        if len(contour) < 3:
            continue
        moments = cv2.moments(contour)
        if moments["m00"] != 0:
            x, y = int(moments["m10"] / moments["m00"]), int(moments["m01"] / moments["m00"])
        else:  # a polygon without area: the mean of its points
            x, y = int(np.mean(contour[:, 0, 0])), int(np.mean(contour[:, 0, 1]))
        markers[min(max(0, y), markers.shape[0] - 1), min(max(0, x), markers.shape[1] - 1)] = i + 1
    return markers


def labels_from_distance_map(distance: np.ndarray, params: SamcellParams = SamcellParams()) -> np.ndarray:
    """(H,W) distance map in [0,1] -> uint32 labels 1..N in the order of the authors' labels."""
    distance = np.asarray(distance, dtype=np.float32)
    if distance.ndim != 2:
        raise InputError(f"distance map must be 2D, got shape {distance.shape}")
    markers = seed_markers(distance, params.peak_threshold)
    if not markers.any():
        return np.zeros(distance.shape, np.uint32)
    labels = watershed(-distance, markers, mask=distance > params.fill_threshold)
    return relabel_sequential(labels)[0].astype(np.uint32)
