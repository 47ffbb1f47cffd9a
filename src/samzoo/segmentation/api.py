"""One-call segmentation: ``segment`` (automatic: AIS or AMG) and ``segment_from_prompts``.

Both take any image ``preprocess`` accepts and a model (a :class:`SamzooModel`, anything
``samzoo.load_model`` resolves, or None for the shipped default) and return a uint32 label image
(0 = background, objects 1..N). Volumes are segmented slice by slice and the slices' objects are
merged into 3D objects (``volume.merge_slices``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..models.model import SamzooModel
from .ais import AisParams, watershed_from_decoder_outputs
from .amg import AmgParams, as_amg_params, automatic_mask_generation
from .embedding_cache import EmbeddingCache, as_embedding_cache
from .predictor import Predictor, validate_boxes, validate_points
from .preprocess import as_image_stack
from .volume import merge_slices

MODES = ("ais", "amg")
ModelLike = "SamzooModel | str | os.PathLike | None"


def resolve_model(model: "SamzooModel | str | os.PathLike | None" = None) -> SamzooModel:
    """A model object as is; anything else through ``samzoo.api.load_model`` (None: default)."""
    if isinstance(model, SamzooModel):
        return model
    from ..api import load_model
    from ..errors import ModelNotFoundError

    try:
        return load_model(model)
    except ModuleNotFoundError as err:  # an ID that needs the hub, in an install without it
        if err.name and err.name.startswith("samzoo."):
            raise ModelNotFoundError(f"{model}: not a local file, and resolving model IDs needs {err.name}, "
                                     "which is not installed") from None
        raise


def resolve_ais_params(model: SamzooModel, overrides: "AisParams | dict[str, Any] | None" = None) -> AisParams:
    """AisParams defaults, then the model's tuned ``ais_params``, then ``overrides`` (a dict of
    changes; an ``AisParams`` object is taken as the complete set)."""
    if isinstance(overrides, AisParams):
        return overrides
    known = {f.name for f in dataclasses.fields(AisParams)}
    params = AisParams().replace(**{k: v for k, v in dict(model.ais_params or {}).items() if k in known})
    if overrides is None:
        return params
    if not isinstance(overrides, dict):
        raise InputError(f"ais_params must be a dict or AisParams, got {type(overrides).__name__}")
    return params.replace(**overrides)


def _slices(raw: np.ndarray, is_volume: bool | None) -> tuple[list[np.ndarray], bool]:
    """Validate, then split into the 2D images to segment (raw, not normalised)."""
    stack, volume = as_image_stack(raw, is_volume=is_volume)
    if volume:
        return [raw[z] for z in range(raw.shape[0])], True
    return [raw[0] if raw.ndim == 4 else raw], False


def segment(
    image: np.ndarray,
    model: "SamzooModel | str | os.PathLike | None" = None,
    *,
    mode: str = "ais",
    ais_params: "AisParams | dict[str, Any] | None" = None,
    amg_params: "AmgParams | dict[str, Any] | None" = None,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    embedding_cache: "EmbeddingCache | str | os.PathLike | bool | None" = None,
    progress: bool = True,
    is_volume: bool | None = None,
) -> np.ndarray:
    """Automatic instance segmentation of a 2D image or a volume -> uint32 labels.

    ``mode="ais"``: the model's AIS decoder on the image embedding, then the seeded watershed
    (``ais_params`` override the model's tuned values, which override ``AisParams`` defaults).
    ``mode="amg"``: SAM's automatic mask generation (``amg_params``, see ``amg.AmgParams``).
    Large images are tiled (``tile_shape``/``halo``, see ``predictor.resolve_tiling``);
    ``embedding_cache`` (None, True, a folder) stores embeddings on disk for later runs;
    ``is_volume`` resolves 3D arrays (see ``preprocess``); ``progress`` shows tqdm bars.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "ais" and amg_params is not None:
        raise InputError("amg_params apply to mode='amg'")
    if mode == "amg" and ais_params is not None:
        raise InputError("ais_params apply to mode='ais'")
    raw = np.asarray(image)
    slices, volume = _slices(raw, is_volume)
    cache = as_embedding_cache(embedding_cache)
    model = resolve_model(model)
    if mode == "ais":
        if not model.has_ais_decoder:
            raise InputError(f"model {model.config.name!r} has no AIS decoder; use mode='amg' or prompts")
        params: Any = resolve_ais_params(model, ais_params)
    else:
        params = as_amg_params(amg_params)

    predictor = Predictor(model, progress=progress)
    results = []
    for data in tqdm(slices, desc="slices", disable=not (progress and volume)):
        predictor.set_image(data, tile_shape=tile_shape, halo=halo, embedding_cache=cache)
        if mode == "ais":
            maps = predictor.ais_outputs()
            labels = watershed_from_decoder_outputs(maps[0], maps[1], maps[2], params)
        else:
            labels = automatic_mask_generation(predictor, params)
        predictor.reset_image()
        results.append(labels)
    if volume:
        return merge_slices(np.stack(results))
    return results[0]


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
    image: np.ndarray,
    model: "SamzooModel | str | os.PathLike | None" = None,
    *,
    points=None,
    point_labels=None,
    boxes=None,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    embedding_cache: "EmbeddingCache | str | os.PathLike | bool | None" = None,
    progress: bool = True,
    predictor: Predictor | None = None,
) -> np.ndarray:
    """Interactive segmentation of a 2D image -> uint32 labels, one object per prompt.

    Each box is one object (label i + 1 for box i). Points (x, y) with ``point_labels`` 1/0
    (default all positive) describe ONE object when there is at most one box (SAM semantics:
    negative points exclude); with several boxes each point belongs to the smallest box that
    contains it. For a single-point prompt the best of SAM's three candidates is kept. Masks are
    painted largest first so a smaller object inside a larger one stays visible.
    ``predictor``: reuse one whose image is already set (then ``image`` may be None).
    """
    if predictor is None:
        raw = np.asarray(image)
        slices, volume = _slices(raw, None)
        if volume:
            raise InputError(f"prompts work on 2D images; got a volume of shape {raw.shape}")
        predictor = Predictor(resolve_model(model), progress=progress)
        predictor.set_image(slices[0], tile_shape=tile_shape, halo=halo,
                            embedding_cache=as_embedding_cache(embedding_cache))
    shape = predictor.original_shape
    if points is None and boxes is None:
        raise InputError("no prompt: give points and/or boxes")
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
    if labels is not None and not (labels == 1).any() and box_array is None:
        raise InputError("the points are all negative (label 0); give at least one positive point or a box")

    masks, scores, _ = predictor.predict(coords, labels, box_array)
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
    return out
