"""SAMCell's sliding window, as the authors run it: 256 px crops overlapping by 32 px, blended back
with a cosine ramp.

The image is reflect-padded by the overlap; crops start every ``crop - 2 * overlap`` pixels (the
last row and column of crops are aligned to the padded image's far edge), and each crop's
distance map is added back with weights that rise as ``0.5 * (1 - cos(pi * i / overlap))`` over the
``overlap`` pixels next to every crop edge. Pixels that end with zero weight (the outermost image
row and column and a few pixels near crop corners, where the ramps are ~0) take the value of the
nearest weighted pixel. (The authors intend the same, but index the pixel grid with OpenCV's
labels of *valid* pixels, so their fill copies an unrelated, mostly zero, pixel: samzoo fixes that;
all other pixels are the same.) Images smaller than the crop use square crops of their shorter side; images shorter than
twice the overlap are one crop (the authors divide by zero at exactly twice).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
from scipy import ndimage

CROP = 256
OVERLAP = 32


@dataclasses.dataclass(frozen=True)
class Window:
    """One crop: where it lies in the padded image and which part of the original it covers."""

    padded_y: int
    padded_x: int
    y: int
    x: int
    height: int
    width: int


def blending_mask(size: int, overlap: int) -> np.ndarray:
    mask = np.ones((size, size), dtype=np.float32)
    for i in range(overlap):
        weight = 0.5 * (1 - np.cos(np.pi * i / overlap))  # float64, as the authors compute it
        mask[i, :] *= weight
        mask[-i - 1, :] *= weight
        mask[:, i] *= weight
        mask[:, -i - 1] *= weight
    return mask


def crop_layout(shape: tuple[int, int], crop: int = CROP, overlap: int = OVERLAP) -> tuple[int, int, list[Window]]:
    """(crop size, padding, windows) for an image of ``shape``.

    Every window starts inside the image and is not empty: the crop is at most the shorter side
    and larger than twice the overlap, so a row's origin ``r * stride`` (not last) or ``height +
    overlap - crop`` (last) lies in ``0 .. height - 1``. The authors clamp the origin to the image
    and drop empty windows too; those clamps can never act and are left out (here and in the
    packaged ``standalone.crop_layout``; tests check both against each other over many sizes)."""
    height, width = shape
    if height < crop or width < crop:
        crop = min(height, width)
        if crop <= 2 * overlap:  # (a stride of 0 px: one crop)
            return -1, 0, [Window(0, 0, 0, 0, height, width)]
    stride = crop - 2 * overlap
    padded_h, padded_w = height + 2 * overlap, width + 2 * overlap
    rows, cols = max(1, math.ceil(height / stride)), max(1, math.ceil(width / stride))
    windows = []
    for r in range(rows):
        for c in range(cols):
            py = r * stride + overlap if r < rows - 1 else padded_h - crop
            px = c * stride + overlap if c < cols - 1 else padded_w - crop
            y, x = max(0, py - overlap), max(0, px - overlap)
            windows.append(Window(py, px, y, x, min(crop, height - y), min(crop, width - x)))
    return crop, overlap, windows


def split(image: np.ndarray, crop: int = CROP, overlap: int = OVERLAP) -> tuple[list[np.ndarray], list[Window]]:
    """The crops of a 2D image and their windows."""
    size, pad, windows = crop_layout(image.shape, crop, overlap)
    if size < 0:
        return [image], windows
    padded = np.pad(image, pad, mode="symmetric")  # OpenCV's BORDER_REFLECT: edge pixel repeated
    return [padded[w.padded_y:w.padded_y + size, w.padded_x:w.padded_x + size] for w in windows], windows


def merge(maps: list[np.ndarray], windows: list[Window], shape: tuple[int, int],
          crop_shape: tuple[int, int], overlap: int = OVERLAP) -> np.ndarray:
    """Weighted average of the crops' maps (each already at its crop's size) -> (H,W) float32."""
    crop_h, crop_w = crop_shape
    mask = blending_mask(max(crop_h, crop_w), overlap)
    if mask.shape != (crop_h, crop_w):
        mask = cv2.resize(mask, (crop_w, crop_h))
    out = np.zeros(shape, np.float32)
    weight = np.zeros(shape, np.float32)
    for values, win in zip(maps, windows):
        h, w = min(win.height, mask.shape[0]), min(win.width, mask.shape[1])
        y_end, x_end = min(win.y + h, shape[0]), min(win.x + w, shape[1])
        h, w = y_end - win.y, x_end - win.x
        if h <= 0 or w <= 0:
            continue
        out[win.y:y_end, win.x:x_end] += values[:h, :w] * mask[:h, :w]
        weight[win.y:y_end, win.x:x_end] += mask[:h, :w]
    valid = weight > 0.0001
    out[valid] /= weight[valid]
    if not valid.all() and valid.any():
        _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
        out[~valid] = out[iy[~valid], ix[~valid]]
    return out
