"""Automatic instance segmentation (AIS): seeded watershed on the AIS decoder's three outputs.

Why a watershed and not thresholding: touching cells share a foreground region, so the
foreground alone cannot separate them. The decoder also predicts, per pixel, the normalized
distance to its object's center and to its object's boundary (see docs/ARCHITECTURE.md, "Decoder
output convention"). Pixels close to a center *and* far from a boundary form one seed per
object; flooding the boundary-distance map from those seeds, inside the foreground, splits
touching objects along their shared boundary. This is μSAM's post-processing, with the same
parameter names and defaults, so parameters tuned for μSAM models carry over.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential, watershed

from ...errors import InputError

_THRESHOLDS = ("center_distance_threshold", "boundary_distance_threshold", "foreground_threshold")
MAX_SMOOTHING = 64.0  # sigma in pixels; larger kernels cost time and memory for nothing
_SMOOTHINGS = ("foreground_smoothing", "distance_smoothing")
_RANGE_TOLERANCE = 1e-3  # sigmoid outputs stored as float16 can overshoot [0, 1] by rounding


@dataclass(frozen=True)
class AisParams:
    """Watershed parameters; stored with every model so its tuned values travel with it.

    Thresholds lie in (0, 1] because all decoder outputs are sigmoid probabilities / normalized
    distances; smoothing sigmas (pixels) are >= 0 (0 disables smoothing); ``min_size`` (pixels)
    is >= 0 (0 keeps every object).
    """

    center_distance_threshold: float = 0.5
    boundary_distance_threshold: float = 0.5
    foreground_threshold: float = 0.5
    foreground_smoothing: float = 1.0
    distance_smoothing: float = 1.6
    min_size: int = 0

    def __post_init__(self) -> None:
        for name in _THRESHOLDS + _SMOOTHINGS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise InputError(f"AIS parameter {name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise InputError(f"AIS parameter {name} must be finite, got {value}")
            if name in _THRESHOLDS and not 0.0 < value <= 1.0:
                raise InputError(f"AIS parameter {name} must be in (0, 1], got {value}")
            if name in _SMOOTHINGS and not 0.0 <= value <= MAX_SMOOTHING:
                raise InputError(f"AIS parameter {name} must be >= 0 and <= {MAX_SMOOTHING:g} (a Gaussian sigma "
                                 f"in pixels), got {value}")
            object.__setattr__(self, name, value)
        size = self.min_size
        integral = isinstance(size, (int, np.integer)) or (
            isinstance(size, (float, np.floating)) and math.isfinite(size) and float(size).is_integer()
        )
        if isinstance(size, bool) or not integral:
            raise InputError(f"AIS parameter min_size must be a whole number of pixels, got {size!r}")
        if size < 0:
            raise InputError(f"AIS parameter min_size must be >= 0, got {int(size)}")
        object.__setattr__(self, "min_size", int(size))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON/YAML safe) for checkpoints and model metadata."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AisParams":
        """Build from a dict; missing keys take defaults, unknown keys are an error (likely typos)."""
        if not isinstance(data, dict):
            raise InputError(f"AIS parameters must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise InputError(f"unknown AIS parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "AisParams":
        """Copy with some values changed (validated like the constructor)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(k for k in changes if k not in known)
        if unknown:
            raise InputError(f"unknown AIS parameter(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)


def _as_map(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a real-valued array, got dtype {array.dtype}")
    if array.ndim != 2:
        raise InputError(f"{name} must be 2D (H, W), got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"{name} is empty (shape {array.shape})")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise InputError(
            f"{name} has values outside [0, 1] (min {low:.3g}, max {high:.3g}); pass sigmoid outputs, not logits"
        )
    return array


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(values, sigma) if sigma > 0 else values


def _remove_small(labels: np.ndarray, heightmap: np.ndarray, mask: np.ndarray, min_size: int) -> np.ndarray:
    """Give the pixels of objects below ``min_size`` to their neighbours, or to the background.

    Small objects are erased and the watershed is flooded again from the remaining objects over
    the same height map and mask: erased pixels join whichever adjacent object reaches them first
    (over-segmented fragments of a cell are merged back into it), while a small object with no
    neighbour in its foreground region is unreachable and becomes background (debris).
    """
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    if not small.any():
        return labels
    markers = np.where(small[labels], 0, labels)
    return watershed(heightmap, markers=markers, mask=mask)


def watershed_from_decoder_outputs(
    foreground: np.ndarray,
    center_distances: np.ndarray,
    boundary_distances: np.ndarray,
    params: AisParams | None = None,
) -> np.ndarray:
    """Instance labels (uint32, 0 = background, objects numbered 1..N) from the decoder outputs.

    Steps: Gaussian-smooth the foreground (``foreground_smoothing``) and both distance maps
    (``distance_smoothing``); foreground mask = foreground > ``foreground_threshold``; seeds =
    connected components of (center < ``center_distance_threshold``) and (boundary <
    ``boundary_distance_threshold``) inside the mask; watershed of the boundary distances from the
    seeds, restricted to the mask (foreground without a seed stays background); objects below
    ``min_size`` are merged into neighbours or dropped (see ``_remove_small``); relabel 1..N.
    All inputs are 2D maps of the same shape with values in [0, 1].
    """
    mask, seeds, boundary = watershed_inputs(foreground, center_distances, boundary_distances, params)
    params = AisParams() if params is None else params
    # 8-connected seeds, as micro-sam labels them: a diagonal chain is one seed, not several.
    markers, _ = ndimage.label(seeds, structure=np.ones((3, 3), dtype=bool))
    labels = watershed(boundary, markers=markers, mask=mask)
    if params.min_size > 0:
        labels = _remove_small(labels, boundary, mask, params.min_size)
    relabeled, _, _ = relabel_sequential(labels.astype(np.uint32, copy=False))
    return relabeled.astype(np.uint32, copy=False)


def smoothing_radius(params: AisParams) -> int:
    """Pixels of context the Gaussian smoothing in ``watershed_inputs`` reads around a pixel
    (scipy's kernel radius, ``int(4 * sigma + 0.5)``): blockwise runs read this much extra."""
    return int(4.0 * max(params.foreground_smoothing, params.distance_smoothing) + 0.5)


def watershed_inputs(
    foreground: np.ndarray,
    center_distances: np.ndarray,
    boundary_distances: np.ndarray,
    params: AisParams | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seeded watershed's inputs from the decoder outputs: (foreground mask, seed mask,
    height map = smoothed boundary distances). Split out so blockwise segmentation can compute
    them per block and label the seeds across blocks (``blockwise``)."""
    params = AisParams() if params is None else params
    if not isinstance(params, AisParams):
        raise InputError(f"params must be AisParams, got {type(params).__name__}")
    fg = _as_map("foreground", foreground)
    center = _as_map("center_distances", center_distances)
    boundary = _as_map("boundary_distances", boundary_distances)
    if not fg.shape == center.shape == boundary.shape:
        raise InputError(
            f"decoder outputs differ in shape: foreground {fg.shape}, center {center.shape}, boundary {boundary.shape}"
        )

    fg = _smooth(fg, params.foreground_smoothing)
    center = _smooth(center, params.distance_smoothing)
    boundary = _smooth(boundary, params.distance_smoothing)

    mask = fg > params.foreground_threshold
    seeds = (center < params.center_distance_threshold) & (boundary < params.boundary_distance_threshold) & mask
    return mask, seeds, boundary


def watershed_from_prediction(prediction: np.ndarray, params: AisParams | None = None) -> np.ndarray:
    """Same as ``watershed_from_decoder_outputs`` for the decoder's stacked ``(3, H, W)`` output."""
    array = np.asarray(prediction)
    if array.ndim != 3 or array.shape[0] != 3:
        raise InputError(
            f"prediction must have shape (3, H, W) (foreground, center distance, boundary distance), got {array.shape}"
        )
    return watershed_from_decoder_outputs(array[0], array[1], array[2], params)
