"""Prompts for interactive training, sampled from ground-truth instances and from errors.

Coordinates are (x, y) pixel positions in the patch (SAM's convention); the trainer rescales them
to the model's input frame. Point label 1 = positive, 0 = negative, -1 = padding (SAM's prompt
encoder ignores it), which keeps per-object point lists of equal length in one tensor.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def choose_objects(labels: np.ndarray, n: int, rng: np.random.Generator, min_size: int = 1) -> np.ndarray:
    """Up to ``n`` distinct object ids (sorted draw without replacement) with >= ``min_size`` px."""
    sizes = np.bincount(labels.ravel())
    ids = np.flatnonzero(sizes >= min_size)
    ids = ids[ids > 0]
    if len(ids) > n:
        ids = rng.choice(ids, n, replace=False)
    return np.sort(ids)


def box_from_mask(mask: np.ndarray, rng: np.random.Generator | None = None, jitter: float = 0.1) -> np.ndarray:
    """x0, y0, x1, y1 of a mask, each side moved by up to ``jitter`` x the box size (if rng)."""
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)  # inclusive, as SAM's predictor
    if rng is not None and jitter > 0:
        w, h = box[2] - box[0], box[3] - box[1]
        box += rng.uniform(-jitter, jitter, 4) * np.array([w, h, w, h], dtype=np.float32)
    hgt, wid = mask.shape
    return np.clip(box, 0, [wid - 1, hgt - 1, wid - 1, hgt - 1]).astype(np.float32)


def point_in_mask(mask: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray | None:
    """(x, y) of a pixel inside ``mask``: random among its inner half (by distance to the edge),
    or the most interior pixel when ``rng`` is None. None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    y0, x0 = ys.min(), xs.min()
    crop = mask[y0:ys.max() + 1, x0:xs.max() + 1]  # distances on the bounding box only (speed)
    dist = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    else:
        cy, cx = np.nonzero(dist >= 0.5 * dist.max())
        i = int(rng.integers(len(cy)))
        y, x = cy[i], cx[i]
    return np.array([x0 + x, y0 + y], dtype=np.float32)  # SAM adds the half-pixel shift itself


def initial_prompts(masks: np.ndarray, rng: np.random.Generator | None, use_box: bool
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(points (N,1,2), point_labels (N,1), boxes (N,4))`` for N masks (N, H, W): a box per
    object, or one positive point per object."""
    if use_box:
        boxes = np.stack([box_from_mask(m, rng) for m in masks])
        return None, None, torch.from_numpy(boxes)
    points = np.stack([point_in_mask(m, rng) for m in masks])[:, None]
    return torch.from_numpy(points), torch.ones(len(masks), 1, dtype=torch.int64), None


def corrective_points(gt: np.ndarray, pred: np.ndarray, rng: np.random.Generator | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each object one positive point in the missed region (gt & ~pred) and one negative
    point in the wrongly covered region (pred & ~gt); a missing kind is padded (label -1).
    Returns ``(points (N,2,2), labels (N,2))``."""
    n = len(gt)
    points = np.zeros((n, 2, 2), dtype=np.float32)
    labels = np.full((n, 2), -1, dtype=np.int64)
    for i in range(n):
        for j, (region, value) in enumerate(((gt[i] & ~pred[i], 1), (pred[i] & ~gt[i], 0))):
            p = point_in_mask(region, rng)
            if p is not None:
                points[i, j], labels[i, j] = p, value
    return torch.from_numpy(points), torch.from_numpy(labels)
