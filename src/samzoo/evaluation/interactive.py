"""μSAM's interactive-segmentation evaluation protocol: one prompt, then iterative corrections.

For every ground-truth object (label > 0) of an image:

* iteration 0 prompts with a **box** (the object's bounding box, ``(x0, y0, x1, y1)`` with
  exclusive ends, as micro-sam derives it from ``regionprops``) or a single positive **point**
  (the object's pixel farthest from its boundary, i.e. the maximum of its distance transform);
* iterations 1..``n_iterations`` (7 by default, as in μSAM) each add one positive point in the
  largest *missed* region (ground truth not covered, its largest connected component, at that
  component's distance-transform maximum) and one negative point in the largest *wrongly
  covered* region (predicted outside the object), keep all earlier prompts (including the box)
  and pass the previous iteration's low-resolution logits as the mask prompt.

When there is nothing to correct, the point goes where micro-sam's ``IterativePromptGenerator``
samples it (micro-sam draws at random; samzoo takes the deepest pixel, so runs are reproducible):
a positive point with no missed pixels lands in the correctly covered region, a negative point
with no wrongly covered pixels in the background within the object's box grown by 3 px (failing
that, anywhere in the background); with no background at all it is padding (label -1, ignored).
Every iteration is decoded without multimask output, like micro-sam's evaluation. micro-sam's
``run_inference_with_iterative_prompting`` passes the previous logits only with ``use_masks=True``
(its default is False); samzoo passes them by default, and ``use_mask_prompt=False`` gives
micro-sam's default behaviour.

Reported per iteration: the mean IoU and mean Dice of the prompted objects (each mask against its
own object) and mSA / SA(0.5) of the label image painted from all the masks (largest first, so a
small mask on a larger one stays visible) against the ground truth restricted to the prompted
objects. Prompts are decoded in batches of objects on one image embedding.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from ..errors import InputError
from ..families import family_of
from .metrics import _as_labels, mean_segmentation_accuracy

__all__ = [
    "DEFAULT_ITERATIONS",
    "InteractiveResult",
    "IterationMetrics",
    "START_PROMPTS",
    "corrective_points",
    "interactive_evaluation",
    "largest_region_point",
    "object_box",
    "object_point",
]

DEFAULT_ITERATIONS = 7
START_PROMPTS = ("box", "point")
NEGATIVE_MARGIN = 3  # px; fallback negative points come from the object's box grown by this (micro-sam)


# --------------------------------------------------------------------------------------------
# prompt derivation (pure numpy, per object)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1) with exclusive ends of a 2D mask, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _deepest_pixel(mask: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the maximum of the mask's distance transform (image border = boundary)."""
    box = _bbox(mask)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    crop = mask[y0:y1, x0:x1]
    dist = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return y0 + int(r), x0 + int(c)


def largest_region_point(region: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the distance-transform maximum of the largest connected component of
    ``region`` (8-connectivity), or None when ``region`` is empty."""
    box = _bbox(region)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    crop = region[y0:y1, x0:x1]
    components, n = ndimage.label(crop, structure=np.ones((3, 3), dtype=bool))
    if n > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        crop = components == int(np.argmax(sizes))
    point = _deepest_pixel(crop)
    assert point is not None
    return y0 + point[0], x0 + point[1]


def object_box(mask: np.ndarray) -> np.ndarray:
    """SAM box ``(x0, y0, x1, y1)`` (exclusive ends) of a non-empty object mask."""
    box = _bbox(mask)
    if box is None:
        raise InputError("cannot derive a box from an empty object mask")
    y0, x0, y1, x1 = box
    return np.array([x0, y0, x1, y1], dtype=np.float64)


def object_point(mask: np.ndarray) -> np.ndarray:
    """SAM point ``(x, y)``: the object's pixel farthest from its boundary."""
    point = _deepest_pixel(mask)
    if point is None:
        raise InputError("cannot derive a point from an empty object mask")
    return np.array([point[1], point[0]], dtype=np.float64)


def corrective_points(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """One positive and one negative correction point for one object.

    Returns ``points`` (2, 2) as (x, y), ``labels`` (2,) (1, 0, or -1 for padding) and where each
    point came from: ``"missed"``/``"covered"`` (positive) and ``"wrong"``/``"background"``/
    ``"none"`` (negative) -- see the module docstring.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    points = np.zeros((2, 2), dtype=np.float64)
    labels = np.array([1, 0], dtype=np.int64)

    positive = largest_region_point(gt & ~pred)
    pos_source = "missed"
    if positive is None:
        positive = _deepest_pixel(gt & pred) or _deepest_pixel(gt)
        pos_source = "covered"
    points[0] = positive[1], positive[0]

    negative = largest_region_point(pred & ~gt)
    neg_source = "wrong"
    if negative is None:  # micro-sam: background within the object's box grown by 3 px
        neg_source = "background"
        y0, x0, y1, x1 = _bbox(gt)
        m = NEGATIVE_MARGIN
        near = np.zeros_like(gt)
        near[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m] = True
        negative = largest_region_point(near & ~gt & ~pred) or largest_region_point(~gt & ~pred)
    if negative is None:
        labels[1] = -1
        neg_source = "none"
    else:
        points[1] = negative[1], negative[0]
    return points, labels, (pos_source, neg_source)


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class IterationMetrics:
    """Scores of all prompted objects after one iteration (0 = the initial prompt only)."""

    iteration: int
    n_positive: int  # positive points per object so far
    n_negative: int  # negative points per object so far (a padded one, see above, included)
    mean_iou: float
    mean_dice: float
    msa: float
    sa50: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class InteractiveResult:
    """The protocol's outcome on one image.

    ``iterations``: one :class:`IterationMetrics` per iteration (``n_iterations + 1`` entries);
    ``ious`` / ``dices``: (iterations, objects) per-object scores; ``points`` (objects, P, 2) as
    (x, y) and ``point_labels`` (objects, P) hold every point given (P = 1 + 2 * n_iterations for a
    point start, 2 * n_iterations for a box start); ``boxes`` (objects, 4) or None;
    ``point_sources`` says which region each correction point came from; ``labels`` holds the
    painted label image of every iteration when asked for (``return_labels=True``).
    """

    start: str
    object_ids: np.ndarray
    iterations: list[IterationMetrics]
    ious: np.ndarray
    dices: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    boxes: np.ndarray | None
    point_sources: list[list[tuple[str, str]]] = field(default_factory=list)
    labels: list[np.ndarray] | None = None

    @property
    def final(self) -> IterationMetrics:
        return self.iterations[-1]

    def table(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self.iterations]


# --------------------------------------------------------------------------------------------
# the protocol


def _paint(masks: Sequence[tuple[tuple[int, int], np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    """Label image from box-cropped masks, largest first; object i gets label i + 1."""
    out = np.zeros(shape, dtype=np.uint32)
    areas = [int(crop.sum()) for _, crop in masks]
    for i in sorted(range(len(masks)), key=lambda i: -areas[i]):
        (y0, x0), crop = masks[i]
        region = out[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
        region[crop] = i + 1
    return out


def _crop(mask: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    box = _bbox(mask)
    if box is None:
        return (0, 0), np.zeros((0, 0), dtype=bool)
    y0, x0, y1, x1 = box
    return (y0, x0), mask[y0:y1, x0:x1].copy()


def _iou_dice(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    inter = int(np.count_nonzero(gt & pred))
    total = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    union = total - inter
    return (inter / union if union else 1.0), (2.0 * inter / total if total else 1.0)


def _is_predictor(model: Any) -> bool:
    """A prompt predictor (``FamilySpec.prompt_predictor``'s kind of object), not a model or a reference."""
    return (not isinstance(model, (str, os.PathLike, torch.nn.Module))
            and all(hasattr(model, name) for name in ("set_image", "predict", "original_shape")))


def _predictor_for(model: Any, image: np.ndarray | None) -> Any:
    if _is_predictor(model):
        if image is not None:
            model.set_image(image)
        elif not model.is_image_set:
            raise InputError("the predictor has no image set; pass the image")
        return model
    if image is None:
        raise InputError("pass the image (or a predictor whose image is set)")
    if not isinstance(model, torch.nn.Module):
        from ..segmentation.api import resolve_model

        model = resolve_model(model)
    family = family_of(model)
    if family.prompt_predictor is None:
        raise InputError(f"{family.title} models have no iterative prompting: interactive evaluation does not apply")
    return family.prompt_predictor(model).set_image(image)


def interactive_evaluation(
    image: np.ndarray | None,
    labels: np.ndarray,
    model: Any,
    *,
    start: str = "box",
    n_iterations: int = DEFAULT_ITERATIONS,
    use_mask_prompt: bool = True,
    batch_size: int = 32,
    min_object_size: int = 0,
    max_objects: int | None = None,
    seed: int = 0,
    return_labels: bool = False,
    progress: bool = True,
) -> InteractiveResult:
    """Run the μSAM interactive protocol on one 2D image (see the module docstring).

    ``model``: a model of a family with a ``prompt_predictor`` (μSAM), anything ``samzoo.load_model``
    resolves, or such a family's predictor (its image is reused when ``image`` is None; μSAM:
    ``samzoo.Predictor``). ``start``: ``"box"`` or
    ``"point"``. ``min_object_size`` skips smaller ground-truth objects; ``max_objects`` evaluates
    a random subset (drawn with ``seed``) on images with very many objects. ``batch_size``
    objects are decoded per call. Raises ``InputError`` for a label image that does not fit the
    image or has no objects.
    """
    if start not in START_PROMPTS:
        raise InputError(f"start must be one of {START_PROMPTS}, got {start!r}")
    if isinstance(n_iterations, bool) or not isinstance(n_iterations, (int, np.integer)) or n_iterations < 0:
        raise InputError(f"n_iterations must be a whole number >= 0, got {n_iterations!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    gt = _as_labels(labels, "ground truth")
    if gt.ndim != 2:
        raise InputError(f"interactive evaluation takes a 2D label image, got shape {gt.shape}")
    predictor = _predictor_for(model, image)
    if tuple(gt.shape) != tuple(predictor.original_shape):
        raise InputError(f"label image shape {gt.shape} differs from the image's {predictor.original_shape}")

    sizes = np.bincount(gt.ravel())
    ids = np.flatnonzero(sizes >= max(1, min_object_size))
    ids = ids[ids > 0]
    if max_objects is not None and len(ids) > max_objects:
        ids = np.sort(np.random.default_rng(seed).choice(ids, int(max_objects), replace=False))
    if len(ids) == 0:
        raise InputError("the label image has no objects to prompt"
                         + (f" of at least {min_object_size} px" if min_object_size > 1 else ""))

    n_obj, n_steps = len(ids), n_iterations + 1
    n_points = (1 if start == "point" else 0) + 2 * n_iterations
    all_points = np.zeros((n_obj, n_points, 2), dtype=np.float64)
    all_labels = np.full((n_obj, n_points), -1, dtype=np.int64)
    boxes = np.zeros((n_obj, 4), dtype=np.float64) if start == "box" else None
    sources: list[list[tuple[str, str]]] = [[] for _ in range(n_obj)]
    ious = np.zeros((n_steps, n_obj))
    dices = np.zeros((n_steps, n_obj))
    crops: list[list[tuple[tuple[int, int], np.ndarray]]] = [[None] * n_obj for _ in range(n_steps)]  # type: ignore
    windows_vary = getattr(predictor, "prompt_windows_vary", predictor.is_tiled)  # logits belong to one window

    bar = tqdm(total=n_obj * n_steps, desc="interactive", unit="prompt", disable=not progress, leave=False)
    for first in range(0, n_obj, batch_size):
        index = np.arange(first, min(first + batch_size, n_obj))
        gts = np.stack([gt == ids[i] for i in index])
        if start == "box":
            boxes[index] = np.stack([object_box(m) for m in gts])
        else:
            all_points[index, 0] = np.stack([object_point(m) for m in gts])
            all_labels[index, 0] = 1
        used = 1 if start == "point" else 0
        previous_low = previous_masks = None
        for step in range(n_steps):
            if step > 0:
                for j, i in enumerate(index):
                    pts, lbl, src = corrective_points(gts[j], previous_masks[j])
                    all_points[i, used:used + 2] = pts
                    all_labels[i, used:used + 2] = lbl
                    sources[i].append(src)
                used += 2
            mask_input = None
            if step > 0 and use_mask_prompt:
                mask_input = previous_masks if windows_vary else previous_low
            masks, _, low = predictor.predict(
                points=all_points[index, :used] if used else None,
                point_labels=all_labels[index, :used] if used else None,
                boxes=boxes[index] if boxes is not None else None,
                mask_input=mask_input,
                multimask=False,
            )
            for j, i in enumerate(index):
                ious[step, i], dices[step, i] = _iou_dice(gts[j], masks[j])
                crops[step][i] = _crop(masks[j])
            previous_low, previous_masks = low, masks
            bar.update(len(index))
    bar.close()

    keep = np.isin(gt, ids)
    reference = np.where(keep, gt, 0)
    metrics, painted = [], []
    for step in range(n_steps):
        pred = _paint(crops[step], gt.shape)
        msa, accuracies = mean_segmentation_accuracy(reference, pred)
        metrics.append(IterationMetrics(
            iteration=step,
            n_positive=(1 if start == "point" else 0) + step,
            n_negative=step,
            mean_iou=float(ious[step].mean()),
            mean_dice=float(dices[step].mean()),
            msa=float(msa),
            sa50=float(accuracies[0]),
        ))
        if return_labels:
            painted.append(pred)
    return InteractiveResult(
        start=start, object_ids=ids, iterations=metrics, ious=ious, dices=dices,
        points=all_points, point_labels=all_labels, boxes=boxes, point_sources=sources,
        labels=painted if return_labels else None,
    )
