"""Automatic mask generation (AMG): SAM's "segment everything" on samzoo's :class:`Predictor`.

The algorithm is segment-anything's ``SamAutomaticMaskGenerator`` (and its helpers in
``segment_anything.utils.amg`` are reused): a regular grid of single-point prompts
(``points_per_side``² per window), decoded in batches of ``points_per_batch`` with three
candidate masks each; candidates are kept when their predicted IoU exceeds ``pred_iou_thresh``
and their stability score (IoU of the mask thresholded at logit +-``stability_score_offset``)
reaches ``stability_score_thresh``; duplicates are removed by box non-maximum suppression
(``box_nms_thresh``, scored by predicted IoU); with ``min_mask_region_area`` > 0 small holes and
islands are removed from each mask and NMS is run again (SAM's post-processing, reimplemented
with scipy because SAM's needs OpenCV).

Differences from SAM, and why:

* Tiled images (see ``Predictor``): every tile gets its own point grid over its inner block; masks
  are decoded on the tile's outer block (tile + halo), masks touching the outer block's border
  (but not the image border) are dropped as cut off -- SAM's rule for crops -- and a global NMS
  removes the duplicates that neighbouring tiles find in their halos. So objects crossing tile
  borders are kept whole, and only one tile's features exist at a time.
* Masks are stored cropped to their bounding box, so memory scales with the objects, not with
  (number of masks x image size).
* The result is a label image, not a list of masks: masks are painted largest first, so a
  smaller mask lying on a larger one stays visible on top (the usual choice for nested SAM
  masks, e.g. a nucleus inside a cell-sized mask); ids are then renumbered 1..N in painting
  order, so larger objects get smaller ids. Masks that end up completely covered disappear.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from segment_anything.utils.amg import (
    MaskData,
    batch_iterator,
    batched_mask_to_box,
    build_all_layer_point_grids,
    calculate_stability_score,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
)
from skimage.segmentation import relabel_sequential
from torchvision.ops import batched_nms
from tqdm.auto import tqdm

from ...errors import InputError
from .predictor import MASK_THRESHOLD, Predictor

_UPSCALE_CHUNK = 16  # masks upsampled to window size at once (bounds memory for 1024 px windows)
_EDGE_TOLERANCE = 20.0  # SAM's atol for "mask touches the crop edge"

_INTS = {"points_per_side": 1, "points_per_batch": 1, "min_mask_region_area": 0}
_UNIT = ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")


# Upper bounds: points_per_side=100000 would ask for a 10^10-point grid (74 GiB) before anything runs.
_INT_MAXIMA = {"points_per_side": 256, "points_per_batch": 4096}


@dataclass(frozen=True)
class AmgParams:
    """SAM's automatic-mask-generation settings (same names and defaults as segment-anything)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0

    def __post_init__(self) -> None:
        for name, minimum in _INTS.items():
            value = getattr(self, name)
            integral = isinstance(value, (int, np.integer)) or (
                isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer())
            if isinstance(value, bool) or not integral or value < minimum:
                raise InputError(f"AMG parameter {name} must be a whole number >= {minimum}, got {value!r}")
            if name in _INT_MAXIMA and value > _INT_MAXIMA[name]:
                raise InputError(f"AMG parameter {name} must be <= {_INT_MAXIMA[name]} (memory grows with its "
                                 f"square), got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in (*_UNIT, "stability_score_offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(value):
                raise InputError(f"AMG parameter {name} must be a finite number, got {value!r}")
            if name in _UNIT and not 0.0 <= value <= 1.0:
                raise InputError(f"AMG parameter {name} must be in [0, 1], got {value}")
            if name == "stability_score_offset" and not 0 <= value <= 100:
                raise InputError(f"AMG parameter {name} must be in [0, 100], got {value}")
            object.__setattr__(self, name, float(value))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AmgParams":
        return cls().replace(**data)

    def replace(self, **changes: Any) -> "AmgParams":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(str(k) for k in changes if k not in known)
        if unknown:
            raise InputError(f"unknown AMG parameter(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)


def as_amg_params(value: "AmgParams | dict[str, Any] | None") -> AmgParams:
    if value is None:
        return AmgParams()
    if isinstance(value, AmgParams):
        return value
    if isinstance(value, dict):
        return AmgParams.from_dict(value)
    raise InputError(f"amg_params must be a dict or AmgParams, got {type(value).__name__}")


# --------------------------------------------------------------------------------------------


def _crop_masks(masks: torch.Tensor, boxes: torch.Tensor) -> list[np.ndarray]:
    """Bool masks cut to their inclusive (x0, y0, x1, y1) boxes, as numpy arrays."""
    out = []
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
        out.append(mask[int(y0): int(y1) + 1, int(x0): int(x1) + 1].cpu().numpy().copy())
    return out


def _process_batch(predictor: Predictor, emb, points: np.ndarray, params: AmgParams,
                   image_box: list[int], atol: float) -> MaskData:
    labels = np.ones((len(points), 1), dtype=np.int64)
    low_res, iou = predictor.decode(emb, points[:, None, :], labels, multimask=True)
    k = low_res.shape[1]
    low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1).float()
    point_tensor = torch.as_tensor(np.repeat(points, k, axis=0), dtype=torch.float32)
    keep = iou > params.pred_iou_thresh if params.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
    low_res, iou, point_tensor = low_res[keep], iou[keep], point_tensor[keep.cpu()]

    x0, y0 = emb.offset
    window_box = [x0, y0, x0 + emb.window_shape[1], y0 + emb.window_shape[0]]
    data = MaskData()
    for start in range(0, len(low_res), _UPSCALE_CHUNK):
        part = slice(start, start + _UPSCALE_CHUNK)
        with torch.inference_mode():
            logits = predictor.upscale_logits(low_res[part], emb)
            stability = calculate_stability_score(logits, MASK_THRESHOLD, params.stability_score_offset)
            chosen = stability >= params.stability_score_thresh
            masks = logits[chosen] > MASK_THRESHOLD
            del logits
            boxes = batched_mask_to_box(masks)
            nonempty = masks.flatten(1).any(dim=1)
            cut = is_box_near_crop_edge(boxes, window_box, image_box, atol=atol)
            ok = nonempty & ~cut
        if not ok.any():
            continue
        masks, boxes = masks[ok], boxes[ok]
        data.cat(MaskData(
            boxes=uncrop_boxes_xyxy(boxes, window_box).cpu(),
            iou_preds=iou[part][chosen][ok].cpu(),
            stability_score=stability[chosen][ok].float().cpu(),
            points=point_tensor[part][chosen.cpu()][ok.cpu()],
            crops=_crop_masks(masks, boxes),
        ))
    return data


def _nms(data: MaskData, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    boxes = data["boxes"].float()
    return batched_nms(boxes, scores.float(), torch.zeros(len(boxes), dtype=torch.int64), iou_threshold=threshold)


def _count(data: MaskData) -> int:
    try:
        return len(data["iou_preds"])
    except KeyError:
        return 0


def generate_masks(predictor: Predictor, params: AmgParams | dict | None = None, *,
                   progress: bool | None = None) -> MaskData:
    """All masks of the current image: MaskData with ``boxes`` (N, 4) inclusive (x0, y0, x1, y1)
    image coordinates, ``iou_preds``, ``stability_score``, ``points`` (x, y) and ``crops``
    (list of bool arrays, each its mask cut to its box)."""
    params = as_amg_params(params)
    predictor._require_image()
    height, width = predictor.original_shape
    image_box = [0, 0, width, height]
    grid = build_all_layer_point_grids(params.points_per_side, 0, 1)[0]  # (n*n, 2) in [0, 1], (x, y)
    show = predictor.progress if progress is None else progress
    n_windows = len(predictor.grid) if predictor.is_tiled else 1
    n_batches = math.ceil(len(grid) / params.points_per_batch)
    halo = min(predictor.halo) if predictor.halo else None
    atol = _EDGE_TOLERANCE if halo is None else max(1.0, min(_EDGE_TOLERANCE, halo / 2))

    result = MaskData()
    with tqdm(total=n_windows * n_batches, desc="AMG batches", disable=not show, leave=False) as bar:
        for tile, emb in predictor.iter_tile_embeddings(progress=False):
            inner = tile.inner if tile is not None else predictor.full_window
            ih, iw = inner[0].stop - inner[0].start, inner[1].stop - inner[1].start
            points = grid * np.array([iw, ih]) + np.array([inner[1].start, inner[0].start])
            window_data = MaskData()
            for (batch,) in batch_iterator(params.points_per_batch, points):
                window_data.cat(_process_batch(predictor, emb, batch, params, image_box, atol))
                bar.update(1)
            del emb
            if _count(window_data):
                window_data.filter(_nms(window_data, window_data["iou_preds"], params.box_nms_thresh))
                result.cat(window_data)
    if n_windows > 1 and _count(result):
        result.filter(_nms(result, result["iou_preds"], params.box_nms_thresh))
    if params.min_mask_region_area > 0 and _count(result):
        result = _postprocess_small_regions(result, params.min_mask_region_area, params.box_nms_thresh)
    return result


# --------------------------------------------------------------------------------------------


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """SAM's ``remove_small_regions`` (8-connectivity) without OpenCV: fill holes (``mode="holes"``)
    or drop islands (``"islands"``) smaller than ``area_thresh``; keeps the largest island if all
    are small. Returns the mask and whether it changed."""
    if mode not in ("holes", "islands"):
        raise ValueError(mode)
    holes = mode == "holes"
    # Pad so that background touching the crop border is one region (the mask's outside).
    working = np.pad(mask != holes, 1, constant_values=holes)
    regions, n = ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    if holes:
        outside = regions[0, 0]
        small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh and i + 1 != outside]
    else:
        small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    if holes:
        new = ~working | np.isin(regions, small)
    else:
        keep = [i for i in range(1, n + 1) if i not in small] or [int(np.argmax(sizes)) + 1]
        new = np.isin(regions, keep)
    return new[1:-1, 1:-1], True


def _postprocess_small_regions(data: MaskData, min_area: int, nms_thresh: float) -> MaskData:
    """SAM's ``postprocess_small_regions`` on box-cropped masks."""
    crops, boxes, scores = [], [], []
    for crop, box in zip(data["crops"], data["boxes"].tolist()):
        mask, changed_holes = remove_small_regions(crop, min_area, "holes")
        mask, changed_islands = remove_small_regions(mask, min_area, "islands")
        rows, cols = np.nonzero(mask)
        if rows.size:
            x0, y0 = int(box[0]) + cols.min(), int(box[1]) + rows.min()
            mask = mask[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
            box = [x0, y0, x0 + mask.shape[1] - 1, y0 + mask.shape[0] - 1]
        crops.append(mask)
        boxes.append(box)
        scores.append(float(not (changed_holes or changed_islands)))
    new_boxes = torch.as_tensor(boxes, dtype=data["boxes"].dtype)
    keep = batched_nms(new_boxes.float(), torch.as_tensor(scores), torch.zeros(len(boxes), dtype=torch.int64),
                       iou_threshold=nms_thresh)
    for i in keep.tolist():
        if scores[i] == 0.0:
            data["crops"][i] = crops[i]
            data["boxes"][i] = new_boxes[i]
    data.filter(keep)
    return data


def masks_to_labels(data: MaskData, shape: tuple[int, int]) -> np.ndarray:
    """Paint masks into a uint32 label image, largest first (smaller masks stay on top); ids
    1..N in painting order after dropping masks that were completely covered."""
    labels = np.zeros(shape, dtype=np.uint32)
    n = _count(data)
    if n == 0:
        return labels
    areas = np.array([int(c.sum()) for c in data["crops"]])
    order = np.argsort(-areas, kind="stable")
    for rank, i in enumerate(order, start=1):
        crop = data["crops"][i]
        x0, y0 = (int(v) for v in data["boxes"][i][:2].tolist())
        region = labels[y0: y0 + crop.shape[0], x0: x0 + crop.shape[1]]
        region[crop[: region.shape[0], : region.shape[1]]] = rank
    relabeled, _, _ = relabel_sequential(labels)
    return relabeled.astype(np.uint32, copy=False)


def automatic_mask_generation(predictor: Predictor, params: AmgParams | dict | None = None, *,
                              progress: bool | None = None) -> np.ndarray:
    """Label image (uint32, H x W) of all masks AMG finds on the predictor's current image."""
    data = generate_masks(predictor, params, progress=progress)
    return masks_to_labels(data, predictor.original_shape)
