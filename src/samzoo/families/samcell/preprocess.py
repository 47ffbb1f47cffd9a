"""SAMCell's input handling: any image -> one 8-bit gray plane, and each crop -> SAM's input.

The authors' pipeline takes 2-D gray images only and casts them with ``astype(uint8)``, which wraps
16-bit and float data (value 256 becomes 0). samzoo keeps their path bit for bit on 8-bit gray
images and fixes the rest before it:

* other integer and float images are min-max scaled to 0..255 over the whole image, then rounded;
* RGB(A) is converted to gray with the ITU-R 601 luma weights (OpenCV's ``RGB2GRAY``; a gray
  image stored as RGB stays the same);
* two-channel images (cytoplasm + nucleus, Cellpose's convention) use their first channel;
* empty, non-finite, complex or otherwise unusable input raises an ``InputError``.

Per crop, as the authors run it: CLAHE (clip limit 1, 8 x 8 tiles), min-max to 0..255, gray to
three channels, resize so the longest side is 1024 (bilinear, on 8-bit values, as transformers'
``SamProcessor`` does), ImageNet mean/std, zero padding to 1024 x 1024. OpenCV supplies CLAHE and
the min-max: it is what the weights were trained and evaluated with.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF

from ...errors import InputError

CLAHE_CLIP_LIMIT = 1.0
CLAHE_TILES = (8, 8)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """(H,W), (H,W,C) with C in 1..4, or channel-first (C,H,W) with C in 1..4 -> (H,W) uint8."""
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise InputError(f"SAMCell: unsupported image dtype {image.dtype}; expected integer or float")
    if image.ndim == 3 and image.shape[-1] > 4 and image.shape[0] <= 4:
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3:
        channels = image.shape[-1]
        if channels == 1:
            image = image[..., 0]
        elif channels == 2:
            image = image[..., 0]
        elif channels in (3, 4):
            if image.dtype == np.uint8:
                image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
            else:
                image = image[..., :3].astype(np.float64) @ _LUMA
        else:
            raise InputError(f"SAMCell: image of shape {image.shape} has {channels} channels; expected 1 to 4")
    if image.ndim != 2:
        raise InputError(f"SAMCell segments 2D images (H, W) or (H, W, C); got shape {image.shape}")
    if image.size == 0 or min(image.shape) < 1:
        raise InputError(f"SAMCell: image is empty (shape {image.shape})")
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError("SAMCell: image contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def enhance_crop(crop: np.ndarray) -> np.ndarray:
    """CLAHE then min-max to 0..255, on one (h,w) uint8 crop (the authors' per-crop step)."""
    crop = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILES).apply(crop)
    return cv2.normalize(crop, None, 0, 255, cv2.NORM_MINMAX)


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """SAM's rule: scale so the longest side equals ``long_side`` (rounded half up)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def crops_to_input(crops: list[np.ndarray], size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 crops of one shape -> enhanced, three-channel, resized (B,3,h,w) floats in 0..255 and
    (h, w). Normalising and zero-padding to ``size`` (SamProcessor pads after normalising) is the
    caller's next step."""
    stack = torch.from_numpy(np.stack([enhance_crop(c) for c in crops]))[:, None].expand(-1, 3, -1, -1)
    h, w = resized_shape(stack.shape[-2], stack.shape[-1], size)
    if (h, w) != tuple(stack.shape[-2:]):
        stack = tvF.resize(stack.contiguous(), [h, w], interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)
    return stack.float(), (h, w)
