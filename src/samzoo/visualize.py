"""Overlay pictures of segmentations and prompts, for checking results by eye and for covers.

Why these choices: the image is shown in gray (percentile-stretched, so dim fluorescence is
visible) so that label colours stand out on any stain; each label id gets a colour derived from
the id itself (not from its rank among the ids present), so the same object keeps its colour
across images, crops and runs; consecutive ids (typically neighbours) get far-apart hues.

Coordinates are ``(x, y)`` as everywhere in samzoo (the CLI, ``segment_from_prompts``, SAM):
points are ``(x, y)`` (column, row), boxes ``(x0, y0, x1, y1)`` with inclusive corners. For 3D data the middle slice (``Z // 2``) is
shown and prompts are drawn on it in 2D.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from skimage.color import hsv2rgb
from skimage.draw import disk, polygon_perimeter
from skimage.segmentation import find_boundaries

from .errors import InputError
from .io import write_png
from .segmentation.preprocess import as_image_stack, normalize_to_uint8_range

POSITIVE_COLOR = (0, 220, 0)
NEGATIVE_COLOR = (230, 0, 0)
BOX_COLOR = (255, 200, 0)
_GOLDEN = 0.6180339887498949  # hue step: consecutive ids land far apart on the colour wheel


def _mix(values: np.ndarray) -> np.ndarray:
    """A bijective 64-bit integer mix (splitmix64 finalizer): well-spread bits from any ids."""
    x = values.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def label_colors(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministic, distinct RGB colours (uint8, shape ``(n, 3)``) for label ids.

    The hue walks the colour wheel in golden-ratio steps from a seed-dependent start; saturation
    and brightness vary pseudo-randomly (hash of id and seed) so equal-hue ids still differ.
    """
    ids = np.asarray(ids).astype(np.uint64).ravel()
    offset = np.random.default_rng(seed).random()
    hue = np.mod(ids.astype(np.float64) * _GOLDEN + offset, 1.0)
    bits = _mix(ids ^ np.uint64(seed & 0xFFFFFFFF))
    saturation = 0.55 + 0.4 * ((bits & np.uint64(0xFFFF)).astype(np.float64) / 0xFFFF)
    value = 0.8 + 0.2 * (((bits >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.float64) / 0xFFFF)
    rgb = hsv2rgb(np.stack([hue, saturation, value], axis=-1)[None])[0]
    return np.round(rgb * 255).astype(np.uint8)


def _display_slice(image: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Gray float (H, W, 3) display image and (H, W) labels of the shown slice."""
    is_volume = None if labels is None else labels.ndim == 3
    stack, volume = as_image_stack(image, is_volume=is_volume)
    z = stack.shape[0] // 2
    shown = normalize_to_uint8_range(stack[z], "percentile")
    gray = np.repeat(shown.mean(axis=-1, keepdims=True), 3, axis=-1)
    if labels is None:
        return gray, np.zeros(gray.shape[:2], dtype=np.uint32)
    expected = stack.shape[:3] if volume else stack.shape[1:3]
    if labels.shape != expected:
        raise InputError(f"labels of shape {labels.shape} do not match the image ({'x'.join(map(str, expected))})")
    return gray, (labels[labels.shape[0] // 2] if volume else labels)


def _check_labels(labels: np.ndarray | None) -> np.ndarray | None:
    if labels is None:
        return None
    array = np.asarray(labels)
    if array.dtype.kind not in "biu":
        raise InputError(f"labels must have an integer dtype, got {array.dtype}")
    if array.ndim not in (2, 3):
        raise InputError(f"labels must be 2D or 3D, got shape {array.shape}")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise InputError("labels contain negative ids")
    return array.astype(np.uint64) if array.dtype.kind == "b" else array


def _draw_points(out: np.ndarray, points: np.ndarray, point_labels: np.ndarray | None) -> None:
    coords = np.asarray(points, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"points must have shape (N, 2) in (x, y) order, got {coords.shape}")
    if not np.isfinite(coords).all():
        raise InputError("points contain NaN or infinite coordinates")
    height, width = out.shape[:2]
    outside = (coords < 0).any(axis=1) | (coords[:, 0] > width - 1) | (coords[:, 1] > height - 1)
    if outside.any():
        raise InputError(f"point {coords[outside][0].tolist()} (x, y) lies outside the {width}x{height} (WxH) image")
    if point_labels is None:
        kinds = np.ones(len(coords), dtype=np.int64)
    else:
        kinds = np.asarray(point_labels).ravel()
        if kinds.shape[0] != len(coords):
            raise InputError(f"{len(coords)} points but {kinds.shape[0]} point labels")
        if not np.isin(kinds, (0, 1)).all():
            raise InputError("point labels must be 1 (positive) or 0 (negative)")
    radius = max(3, round(min(height, width) / 150))
    for (x, y), kind in zip(coords, kinds):
        rr, cc = disk((y, x), radius + 1, shape=(height, width))
        out[rr, cc] = 255  # white rim keeps the dot visible on any label colour
        rr, cc = disk((y, x), radius, shape=(height, width))
        out[rr, cc] = POSITIVE_COLOR if kind == 1 else NEGATIVE_COLOR


def _draw_boxes(out: np.ndarray, boxes: np.ndarray) -> None:
    corners = np.asarray(boxes, dtype=np.float64)
    if corners.ndim == 1 and corners.size == 4:
        corners = corners[None]
    if corners.ndim != 2 or corners.shape[1] != 4:
        raise InputError(f"boxes must have shape (N, 4) as (x0, y0, x1, y1), got {corners.shape}")
    if not np.isfinite(corners).all():
        raise InputError("boxes contain NaN or infinite coordinates")
    if ((corners[:, 2] < corners[:, 0]) | (corners[:, 3] < corners[:, 1])).any():
        raise InputError("boxes must satisfy x0 <= x1 and y0 <= y1 (order x0, y0, x1, y1)")
    for x0, y0, x1, y1 in np.round(corners).astype(np.int64):
        for inset in (0, 1):  # two pixels wide, drawn on and inside the box's edge
            if inset and (y1 - y0 < 2 or x1 - x0 < 2):
                break
            top, left, bottom, right = y0 + inset, x0 + inset, y1 - inset, x1 - inset
            rr, cc = polygon_perimeter(
                [top, top, bottom, bottom], [left, right, right, left], shape=out.shape[:2], clip=True
            )
            out[rr, cc] = BOX_COLOR


def overlay(
    image: np.ndarray,
    labels: np.ndarray | None,
    *,
    alpha: float = 0.45,
    boundaries: bool = True,
    points: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Render ``labels`` (and optional prompts) over ``image`` as an ``(H, W, 3)`` uint8 picture.

    ``image`` is any layout ``segmentation.preprocess`` accepts; with 3D ``labels`` it is read as
    a volume and the middle slice is shown. Objects are tinted with opacity ``alpha`` and, with
    ``boundaries``, outlined in full colour (so touching objects stay distinguishable). Positive
    points are green, negative red, boxes yellow; points are (x, y), boxes (x0, y0, x1, y1). ``labels=None`` shows only image and prompts.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be a number in [0, 1], got {alpha!r}")
    gray, shown = _display_slice(image, _check_labels(labels))

    out = gray.copy()
    ids = np.unique(shown)
    ids = ids[ids > 0]
    if ids.size:
        palette = np.zeros((ids.size + 1, 3), dtype=np.float32)
        palette[1:] = label_colors(ids, seed)
        index = np.searchsorted(ids, shown) + 1
        index[shown == 0] = 0
        colors = palette[index]
        inside = shown > 0
        out[inside] = (1.0 - alpha) * gray[inside] + alpha * colors[inside]
        if boundaries:
            edge = find_boundaries(shown, mode="inner") & inside
            out[edge] = colors[edge]
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if boxes is not None:
        _draw_boxes(out, boxes)
    if points is not None:
        _draw_points(out, points, point_labels)
    elif point_labels is not None:
        raise InputError("point_labels given without points")
    return out


def save_overlay(path: str | os.PathLike[str], image: np.ndarray, labels: np.ndarray | None, **kwargs) -> Path:
    """Render ``overlay(image, labels, **kwargs)`` and write it as a PNG atomically."""
    return write_png(path, overlay(image, labels, **kwargs))
