"""Object size: rescale an image so its objects reach the size a model was trained for.

Why: a model trained on ~30 px nuclei sees a 120 px nucleus as a cluster of parts (its nucleoli
become separate "objects"), and a 10 px nucleus as a speck. As in cellpose, the user may give the
typical object diameter in pixels (``diameter=D``): the image is resized by ``model_diameter / D``,
segmented, and the labels are resized back (nearest neighbour) to the original shape.
``diameter=0`` estimates ``D`` from a first pass at native size (median equivalent-circle
diameter of the objects found) and rescales only when that lies outside the sizes the model was
trained on, so images that already fit are segmented once, untouched. A model trained with scale
augmentation on several sets knows a wide range (~12-54 px for samzoo-lm-tiny's real-data training),
and rescaling inside it only loses detail; an estimate outside the range is brought to its nearest end.

The model's size comes from its metadata ``object_diameter``: ``median`` (px) and, where the card
states it, the trained range ``low``..``high`` (10th..90th percentile of the training images'
median object diameters, scale augmentation included) and ``prompt``, the size prompt zoom shows a
prompted object at (``model_prompt_diameter``). Without a range, ``AUTO_TOLERANCE``
around the median stands in for it; without metadata, ``DEFAULT_OBJECT_DIAMETER``. Shared by every family
(it wraps a family's ``segment``); resizing uses scikit-image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError

DEFAULT_OBJECT_DIAMETER = 30.0
"""Object diameter (px) assumed for a model whose metadata does not state one."""

AUTO_TOLERANCE = 1.3
"""``diameter=0``: rescale only when the estimate differs from the model's size by more than this factor."""

MIN_OBJECTS_FOR_ESTIMATE = 3
MAX_SCALE_SIDE = 8192  # refuse rescaled images beyond this side (memory), with a one-line error


def _stated_diameter(model: Any, key: str) -> float | None:
    """Metadata ``object_diameter[key]`` (a bare number counts as the median) as a positive float,
    else None: one reading of the metadata for every size the model states."""
    value = (getattr(model, "metadata", None) or {}).get("object_diameter")
    if isinstance(value, dict):
        value = value.get(key)
    elif key != "median":
        value = None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def model_object_diameter(model: Any) -> float:
    """The median object diameter (px) ``model`` was trained for (metadata), else the default."""
    median = _stated_diameter(model, "median")
    return DEFAULT_OBJECT_DIAMETER if median is None else median


def model_prompt_diameter(model: Any) -> float:
    """The object diameter (px) prompt zoom shows a box or mask prompt's object at: metadata
    ``object_diameter["prompt"]`` where the model states one, else its median.

    Why a size of its own: the median is the size the model *finds* objects at best, but a box
    prompt is decoded on the mask decoder's coarse grid (4 input pixels a cell), and a model may
    draw an object's outline better when it is shown larger. Chosen per model on train images
    (``build_real --prompt-diameter``)."""
    prompt = _stated_diameter(model, "prompt")
    return prompt if prompt is not None and math.isfinite(prompt) else model_object_diameter(model)


def declares_object_diameter(model: Any) -> bool:
    """Whether ``model``'s metadata states the object diameter it was trained for (samzoo's
    real-data models do; SAM and μSAM checkpoints do not)."""
    return (getattr(model, "metadata", None) or {}).get("object_diameter") is not None


def model_diameter_range(model: Any) -> tuple[float, float]:
    """The object diameters (px) ``model`` was trained on: metadata ``object_diameter``'s
    ``low``..``high``, else ``AUTO_TOLERANCE`` around its median."""
    median = model_object_diameter(model)
    value = (getattr(model, "metadata", None) or {}).get("object_diameter")
    if isinstance(value, dict):
        try:
            low, high = float(value["low"]), float(value["high"])
        except (KeyError, TypeError, ValueError):
            pass
        else:
            if 0 < low <= median <= high:
                return low, high
    return tolerance_range(median)


def tolerance_range(median: float) -> tuple[float, float]:
    """The stand-in trained range of a model whose metadata gives only a median diameter."""
    return median / AUTO_TOLERANCE, median * AUTO_TOLERANCE


def estimate_diameter(labels: np.ndarray) -> float | None:
    """Median equivalent-circle diameter (px) of the objects in ``labels``; None for fewer than
    ``MIN_OBJECTS_FOR_ESTIMATE`` objects (no reliable estimate)."""
    areas = np.bincount(np.asarray(labels).ravel().astype(np.int64))[1:]
    areas = areas[areas > 0]
    if len(areas) < MIN_OBJECTS_FOR_ESTIMATE:
        return None
    return float(np.median(2.0 * np.sqrt(areas / math.pi)))


def check_diameter(diameter: Any) -> float | None:
    if diameter is None:
        return None
    if isinstance(diameter, bool):
        raise InputError(f"diameter must be a number of pixels (0: estimate), got {diameter!r}")
    try:
        value = float(diameter)
    except (TypeError, ValueError):
        raise InputError(f"diameter must be a number of pixels (0: estimate), got {diameter!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(f"diameter must be >= 0 pixels (0: estimate automatically), got {diameter!r}")
    return value


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """(H, W[, C]) -> (round(H*scale), round(W*scale)[, C]) in the same dtype (integers rounded),
    linear, anti-aliased when shrinking."""
    from skimage.transform import resize

    shape = tuple(max(8, round(s * scale)) for s in image.shape[:2])
    if max(shape) > MAX_SCALE_SIDE:
        raise InputError(f"rescaling the image to its objects' size would make it {shape[1]}x{shape[0]} px "
                         f"(over {MAX_SCALE_SIDE}); check the diameter")
    out = resize(image.astype(np.float32), shape + image.shape[2:], order=1, anti_aliasing=scale < 1,
                 preserve_range=True)
    if image.dtype.kind in "ui":  # keep the dtype, so dtype-dependent normalisation stays the same
        info = np.iinfo(image.dtype)
        return np.clip(np.round(out), info.min, info.max).astype(image.dtype)
    return out.astype(image.dtype if image.dtype.kind == "f" else np.float32)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Labels back to ``shape`` by nearest neighbour (ids kept, no new values)."""
    from skimage.transform import resize

    return resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)


def segment_at_diameter(segment: Callable[[np.ndarray], np.ndarray], image: np.ndarray, diameter: float,
                        model_diameter: float, trained_range: tuple[float, float] | None = None
                        ) -> tuple[np.ndarray, dict[str, float]]:
    """Run ``segment`` (image -> labels) with the image rescaled so objects of ``diameter`` px
    reach ``model_diameter``. ``diameter=0``: estimate from a first pass, and rescale only an
    estimate outside ``trained_range`` (default ``AUTO_TOLERANCE`` around ``model_diameter``), to
    the range's nearest end. Returns the labels at the original size and what was done
    (``estimated``, ``scale``)."""
    image = np.asarray(image)
    info: dict[str, float] = {"scale": 1.0}
    first = None
    if diameter == 0:
        low, high = trained_range or tolerance_range(model_diameter)
        first = segment(image)
        estimate = estimate_diameter(first)
        if estimate is None:
            return first, info
        info["estimated"] = estimate
        if low <= estimate <= high:
            return first, info
        diameter, model_diameter = estimate, min(max(estimate, low), high)
    scale = model_diameter / diameter
    if abs(math.log(scale)) < 1e-3 and first is not None:
        return first, info
    info["scale"] = scale
    labels = segment(resize_image(image, scale))
    return resize_labels(labels, image.shape[:2]), info
