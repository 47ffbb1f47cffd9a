"""SAMCell's automatic segmentation of one 2D image: crops -> distance maps -> stitched map -> cells."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...errors import InputError
from . import tiling
from .model import SamcellModel
from .postprocess import SamcellParams, labels_from_distance_map
from .preprocess import crops_to_input, to_gray_uint8

BATCH = 4  # crops per encoder call


def resolve_params(model: SamcellModel, overrides: "SamcellParams | dict[str, Any] | None" = None) -> SamcellParams:
    """Defaults, then the model's stored (tuned) thresholds, then ``overrides``."""
    if isinstance(overrides, SamcellParams):
        return overrides
    known = {f.name for f in dataclasses.fields(SamcellParams)}
    params = SamcellParams().replace(**{k: v for k, v in model.params.items() if k in known})
    if overrides is None:
        return params
    if not isinstance(overrides, dict):
        raise InputError(f"SAMCell params must be a dict or SamcellParams, got {type(overrides).__name__}")
    return params.replace(**overrides)


def _batches(crops: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Runs of at most BATCH consecutive crops of one shape (crops of images smaller than 256 px
    can reach past the padded image and come out narrower, as in the authors' pipeline)."""
    batches: list[list[np.ndarray]] = []
    for crop in crops:
        if batches and len(batches[-1]) < BATCH and batches[-1][0].shape == crop.shape:
            batches[-1].append(crop)
        else:
            batches.append([crop])
    return batches


@torch.no_grad()
def crop_distance_maps(model: SamcellModel, crops: list[np.ndarray], *, progress: bool = False) -> list[np.ndarray]:
    """Distance maps of uint8 crops, each resized back to its crop's size."""
    size = model.input_size
    out: list[np.ndarray] = []
    batches = _batches(crops)
    for batch in tqdm(batches, desc="SAMCell crops", disable=not progress or len(batches) <= 1):
        images, (h, w) = crops_to_input(batch, size)
        pixels = F.pad(model.normalise(images.to(model.device)), (0, size - w, 0, size - h))
        maps = model(pixels)[:, 0].float().cpu().numpy()
        for crop, values in zip(batch, maps):
            if values.shape != (tiling.CROP, tiling.CROP):  # the authors' first resize (a no-op for SAM-B)
                values = cv2.resize(values, (tiling.CROP, tiling.CROP))
            if values.shape != crop.shape:
                values = cv2.resize(values, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
            out.append(values)
    return out


def distance_map(image: np.ndarray, model: SamcellModel, *, progress: bool = False) -> np.ndarray:
    """(H,W) float32 distance map of any 2D image SAMCell accepts (see ``preprocess.to_gray_uint8``)."""
    gray = to_gray_uint8(image)
    crops, windows = tiling.split(gray)
    maps = crop_distance_maps(model, crops, progress=progress)
    return tiling.merge(maps, windows, gray.shape, crops[0].shape)


def segment_image(image: np.ndarray, model: SamcellModel, *,
                  params: "SamcellParams | dict[str, Any] | None" = None,
                  tile_shape: int | Sequence[int] | None = None, halo: int | Sequence[int] | None = None,
                  progress: bool = True, embedding_cache: Any = None, **options: Any) -> np.ndarray:
    """One 2D image -> uint32 labels. SAMCell tiles by its own rule (256 px crops, 32 px overlap),
    so ``tile_shape`` / ``halo`` are refused rather than silently ignored. ``embedding_cache`` (the
    CLI passes it for every family) has nothing to cache here: the encoder runs on per-crop
    enhanced inputs that no other call reuses."""
    if options:
        raise InputError(f"SAMCell segmentation takes no option(s) {', '.join(sorted(options))}")
    if tile_shape is not None or halo is not None:
        raise InputError("SAMCell tiles images itself (256 px crops with 32 px overlap); "
                         "tile_shape/halo do not apply")
    chosen = resolve_params(model, params)
    return labels_from_distance_map(distance_map(image, model, progress=progress), chosen)
