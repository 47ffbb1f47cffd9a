"""CellSAM inference on one image: normalise, (tile,) detect, decode, merge.

``segment_image`` is what ``samzoo segment`` runs for a CellSAM model; ``segment_block`` is one
pass of the networks (what the reference's ``segment_cellular_image`` does) on an image that is
already normalised to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .detections import select_boxes
from .masks import decode_boxes, fill_holes_and_remove_small, merge_masks
from .model import CellSAMModel
from .params import CellSAMParams
from .preprocess import clahe_channels, format_channels, minmax_channels, normalize_image


@dataclass
class BlockResult:
    labels: np.ndarray
    """(H, W) uint32 after hole filling and the size filter."""
    boxes: np.ndarray
    """(K, 4) xyxy boxes in image pixels of the masks that were kept (before the size filter)."""
    scores: np.ndarray
    """Detector scores of those boxes."""


def as_tensor(image01: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image01, dtype=np.float32)).permute(2, 0, 1)[None]


def detect_boxes_01(model: CellSAMModel, image01: np.ndarray, params: CellSAMParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected boxes (xyxy, SAM-input pixels) and scores for a normalised (H, W, 3) image."""
    scores, boxes = model.detect(as_tensor(image01))
    return select_boxes(scores, boxes, params.bbox_threshold, params.cluster_blend, params.exact_two_means)


def to_image_pixels(boxes: torch.Tensor, shape: tuple[int, int], size: int) -> np.ndarray:
    h, w = shape
    scale = torch.tensor([w / size, h / size, w / size, h / size], dtype=torch.float64)
    return (boxes.detach().cpu().double() * scale).numpy()


@torch.no_grad()
def segment_block(model: CellSAMModel, image01: np.ndarray, params: CellSAMParams, *, batch: int = 32) -> BlockResult:
    """One network pass over a normalised (H, W, 3) image."""
    shape = image01.shape[:2]
    x = as_tensor(image01)
    scores, boxes = detect_boxes_01(model, image01, params)
    if boxes.shape[0] == 0:
        return BlockResult(np.zeros(shape, np.uint32), np.zeros((0, 4)), np.zeros(0))
    embedding = model.embed(x)
    masks, kept = decode_boxes(model.sam, embedding, boxes, shape, iou_threshold=params.iou_threshold,
                               mask_threshold=params.mask_threshold, batch=batch)
    labels = fill_holes_and_remove_small(merge_masks(masks), params.min_size)
    kept_t = torch.from_numpy(kept)
    return BlockResult(labels, to_image_pixels(boxes[kept_t], shape, model.config.img_size),
                       scores[kept_t].cpu().numpy())


def prepare_image(image: np.ndarray, params: CellSAMParams) -> np.ndarray:
    """Channel convention + the image-level normalisation of ``params``."""
    return normalize_image(format_channels(image), params.normalization)


def segment_image(model: CellSAMModel, image: np.ndarray, params: CellSAMParams | None = None, *,
                  progress: bool = False) -> np.ndarray:
    """Any 2-D image (H, W) / (H, W, C<=3) / (C<=3, H, W) -> uint32 labels, as cellsam_pipeline.

    With ``params.tiling`` and an image larger than one block, the image is min-max normalised as a
    whole and each block gets CellSAM's percentile/CLAHE normalisation on its own (as the reference's
    ``segment_wsi(normalize=True)``); objects are linked across blocks by IoU."""
    params = params or model.params
    formatted = format_channels(image)
    from .tiling import block_grid, segment_tiled

    if params.tiling and len(block_grid(formatted.shape[:2], params.block_size)) > 1:
        if params.normalization == "none":
            base, per_block = formatted, None
        else:
            base = minmax_channels(formatted)
            per_block = clahe_channels if params.normalization == "cellsam" else None
        return segment_tiled(model, base, params, per_block=per_block, progress=progress)
    return segment_block(model, normalize_image(formatted, params.normalization), params).labels
