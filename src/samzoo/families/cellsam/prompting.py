"""Point / box prompts on a CellSAM model's own SAM (its ``model_cp`` when present).

Prompts are in image pixels ((x, y) points, (x0, y0, x1, y1) boxes). CellSAM resizes images to
S x S without keeping the aspect ratio, so prompts are scaled per axis. Each box is one object;
points (labels 1 = inside, 0 = outside; default all 1) describe ONE object, together with the box
when exactly one box is given. Masks are painted largest first so small objects stay visible.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import InputError
from .masks import upsample_logits
from .model import CellSAMModel
from .segment import as_tensor, prepare_image


def _as_array(value, width: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1 and arr.size == width:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != width or not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite numbers shaped (N, {width}), got shape {np.asarray(value).shape}")
    return arr


@torch.no_grad()
def segment_from_prompts(image: np.ndarray, model: CellSAMModel, *, points=None, point_labels=None,
                         boxes=None) -> np.ndarray:
    if points is None and boxes is None:
        raise InputError("no prompt: give points and/or boxes")
    prepared = prepare_image(image, model.params)
    h, w = prepared.shape[:2]
    size = model.config.img_size
    scale = np.array([size / w, size / h])
    box_arr = None if boxes is None else _as_array(boxes, 4, "boxes")
    if box_arr is not None and np.any((box_arr[:, 2] <= box_arr[:, 0]) | (box_arr[:, 3] <= box_arr[:, 1])):
        raise InputError("every box needs x1 > x0 and y1 > y0")
    prompts: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]] = []
    if points is not None:
        pts = _as_array(points, 2, "points")
        labels = np.ones(len(pts)) if point_labels is None else np.asarray(point_labels, dtype=np.float64).ravel()
        if labels.shape != (len(pts),) or not np.isin(labels, (0, 1)).all():
            raise InputError("point_labels must be one 0/1 label per point")
        if box_arr is not None and len(box_arr) > 1:
            raise InputError("points with several boxes are ambiguous for CellSAM prompts; give one box")
        prompts.append((pts, labels, None if box_arr is None else box_arr[0]))
    elif box_arr is not None:
        prompts.extend((None, None, b) for b in box_arr)
    sam = model.sam
    embedding = model.embed(as_tensor(prepared))
    masks = []
    for pts, labels, box in prompts:
        point_arg = None
        if pts is not None:
            coords = torch.as_tensor(pts * scale, dtype=torch.float32)[None]
            point_arg = (coords, torch.as_tensor(labels, dtype=torch.int64)[None])
        box_arg = None if box is None else torch.as_tensor(box * np.tile(scale, 2), dtype=torch.float32)[None, None]
        sparse, dense = sam.prompt_encoder(points=point_arg, boxes=box_arg, masks=None)
        multi = box is None and pts is not None and len(pts) == 1
        low, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=multi)
        best = int(iou[0].argmax()) if multi else 0
        logits = upsample_logits(low[:, best:best + 1].float(), size, (h, w))
        masks.append((logits[0, 0] > 0).numpy())
    labels_out = np.zeros((h, w), dtype=np.uint32)
    for i in sorted(range(len(masks)), key=lambda i: -masks[i].sum()):
        labels_out[masks[i]] = i + 1
    return labels_out
