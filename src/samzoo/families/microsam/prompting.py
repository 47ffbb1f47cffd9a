"""μSAM's prompt-based segmentation: points and boxes -> one object per prompt."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import InputError
from ...segmentation.embedding_cache import EmbeddingCache, as_embedding_cache
from ...segmentation.preprocess import as_image_stack
from .model import SamzooModel
from .predictor import Predictor, validate_boxes, validate_points


def assign_points_to_boxes(points: np.ndarray, labels: np.ndarray, boxes: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Give each point to the smallest box containing it -> (B, N, 2) points and (B, N) labels
    padded with label -1 (ignored). A point inside no box is an error."""
    owner = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for (x, y) in points:
        inside = np.nonzero((boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3]))[0]
        if inside.size == 0:
            raise InputError(f"point (x={x:g}, y={y:g}) lies in none of the {len(boxes)} boxes; with several "
                             "boxes every point must lie inside the box of its object")
        owner.append(int(inside[np.argmin(areas[inside])]))
    owner = np.asarray(owner)
    width = max(1, max((int((owner == b).sum()) for b in range(len(boxes))), default=1))
    out_points = np.zeros((len(boxes), width, 2))
    out_labels = -np.ones((len(boxes), width), dtype=np.int64)
    for b in range(len(boxes)):
        mine = np.nonzero(owner == b)[0]
        out_points[b, : mine.size] = points[mine]
        out_labels[b, : mine.size] = labels[mine]
    return out_points, out_labels


def segment_from_prompts(
    image: np.ndarray | None,
    model: SamzooModel,
    *,
    points=None,
    point_labels=None,
    boxes=None,
    masks=None,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    embedding_cache: "EmbeddingCache | str | bool | None" = None,
    progress: bool = True,
    predictor: Predictor | None = None,
    return_scores: bool = False,
    zoom_prompts: bool | None = None,
    clip_to_boxes: bool | None = None,
) -> "np.ndarray | tuple[np.ndarray, np.ndarray]":
    """Interactive segmentation of a 2D image -> uint32 labels, one object per prompt.

    Each box is one object (label i + 1 for box i). Points (x, y) with ``point_labels`` 1/0
    (default all positive) describe ONE object when there is at most one box (SAM semantics:
    negative points exclude); with several boxes each point belongs to the smallest box that
    contains it. For a single-point prompt the best of SAM's three candidates is kept. Masks are
    painted largest first so a smaller object inside a larger one stays visible.
    ``masks``: a mask prompt -- a binary mask of the image's shape (or SAM's low-res logits) that
    describes the object roughly; alone or with points/one box (one object). ``predictor``: reuse
    one whose image is already set (then ``image`` may be None). ``return_scores``: also return the
    predicted IoU of each object (index i for label i + 1). ``zoom_prompts``: decode each box or
    mask prompt at the model's prompt diameter, ``clip_to_boxes``: keep each box's mask inside the box
    (``Predictor``; both by default for models that state their object size).

    >>> labels, scores = segment_from_prompts(image, model, masks=rough_mask, return_scores=True)  # doctest: +SKIP
    """
    if predictor is None:
        raw = np.asarray(image)
        _, volume = as_image_stack(raw, is_volume=None)
        if volume:
            raise InputError(f"prompts work on 2D images; got a volume of shape {raw.shape}")
        predictor = Predictor(model, progress=progress, zoom_prompts=zoom_prompts, clip_to_boxes=clip_to_boxes)
        predictor.set_image(raw[0] if raw.ndim == 4 else raw, tile_shape=tile_shape, halo=halo,
                            embedding_cache=as_embedding_cache(embedding_cache))
    shape = predictor.original_shape
    if points is None and boxes is None and masks is None:
        raise InputError("no prompt: give points, boxes and/or masks")
    coords = labels = box_array = None
    if points is not None:
        coords, labels = validate_points(points, point_labels, shape)
        if coords.shape[0] != 1:
            raise InputError("segment_from_prompts takes points as (N, 2); they are grouped by box")
        coords, labels = coords[0], labels[0]
    elif point_labels is not None:
        raise InputError("point_labels given without points")
    if boxes is not None:
        box_array = validate_boxes(boxes, shape)
        if coords is not None and len(box_array) > 1:
            coords, labels = assign_points_to_boxes(coords, labels, box_array)
    if coords is not None and coords.ndim == 2:
        coords, labels = coords[None], labels[None]
    if labels is not None and not (labels == 1).any() and box_array is None and masks is None:
        raise InputError("the points are all negative (label 0); give at least one positive point or a box")
    mask_input = None
    if masks is not None:
        mask_input = np.asarray(masks)
        if box_array is not None and len(box_array) > 1:
            raise InputError("a mask prompt describes one object; give at most one box with it")
        if mask_input.ndim == 2:
            mask_input = mask_input[None]

    masks, scores, _ = predictor.predict(coords, labels, box_array, mask_input=mask_input)
    n_prompts = len(box_array) if box_array is not None else 1
    per_prompt = len(masks) // n_prompts
    chosen = []
    for b in range(n_prompts):
        candidates = range(b * per_prompt, (b + 1) * per_prompt)
        chosen.append(max(candidates, key=lambda i: scores[i]))
    out = np.zeros(shape, dtype=np.uint32)
    areas = [int(masks[i].sum()) for i in chosen]
    for b in sorted(range(n_prompts), key=lambda b: -areas[b]):
        out[masks[chosen[b]]] = b + 1
    if return_scores:
        return out, np.asarray([float(scores[i]) for i in chosen], dtype=np.float32)
    return out
