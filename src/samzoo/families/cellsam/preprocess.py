"""CellSAM's input conventions and its three normalisation paths.

1. Image level (``normalize_image``, what ``cellsam_pipeline`` does before segmenting): channels
   in the (blank, nuclear, whole-cell) convention, per-channel min-max to [0, 1], then per channel
   a clip at the 99.9th percentile of the non-zero values, rescale to [0, 1] and CLAHE
   (kernel 128); constant channels become 0.
2. SAM embedding input (``embedding_input``): resize to S x S (aspect ratio NOT kept), clip to the
   joint [p0, p99.5] of the non-zero values of all channels and rescale to [0, 1]; with the
   ``model_cp`` SAM also ImageNet normalisation and per-channel min-max; then SAM's mean/std on 0..1.
3. CellFinder input (``detector_input``): resize to S x S, quantise to uint8 (truncation), SAM
   mean/std on 0..255; with ``model_cp`` also ImageNet normalisation, per-channel min-max and
   copying whole-cell <-> nuclear when one of them is empty.

2 and 3 are torch code (they run inside the packaged model); 1 uses scikit-image's CLAHE.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from .networks import SAM_PIXEL_MEAN, SAM_PIXEL_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("cellsam", "minmax", "none")


def format_channels(image: np.ndarray) -> np.ndarray:
    """Any 2-D image -> (H, W, 3) float32 in CellSAM's (blank, nuclear, whole-cell) order.

    2-D input is the whole-cell channel. For (H, W, C) / (C, H, W) input the channel axis is the
    smallest one and the C <= 3 channels fill the LAST C slots (1 -> whole-cell, 2 -> nuclear,
    whole-cell), as CellSAM does."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.ndim == 3:
        axis = int(np.argmin(arr.shape))
        arr = np.moveaxis(arr, axis, -1)
    else:
        raise InputError(f"CellSAM takes a 2-D image with at most 3 channels, got shape {arr.shape}")
    channels = arr.shape[-1]
    if channels > 3:
        raise InputError(f"CellSAM takes at most 3 channels (blank, nuclear, whole-cell), got {channels} "
                         f"(shape {np.asarray(image).shape})")
    if min(arr.shape[:2]) < 2:
        raise InputError(f"image too small: {np.asarray(image).shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"image must be real-valued, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise InputError("image contains NaN or infinite values")
    out = np.zeros(arr.shape[:2] + (3,), dtype=np.float32)
    out[..., 3 - channels:] = arr
    return out


def minmax_channels(image: np.ndarray) -> np.ndarray:
    """Per-channel min-max to [0, 1]; constant channels are left as they are (cellsam_pipeline)."""
    out = image.astype(np.float32, copy=True)
    for c in range(out.shape[-1]):
        lo, hi = out[..., c].min(), out[..., c].max()
        if hi > lo:
            out[..., c] = (out[..., c] - lo) / (hi - lo)
    return out


def clahe_channels(image: np.ndarray, percentile: float = 99.9, kernel_size: int = 128) -> np.ndarray:
    """CellSAM's ``normalize_image``: 99.9 %-clip of non-zero values, rescale, CLAHE; constant -> 0."""
    from skimage.exposure import equalize_adapthist, rescale_intensity

    out = np.zeros(image.shape, dtype=np.float64)
    for c in range(image.shape[-1]):
        x = image[..., c].astype(np.float64, copy=True)
        nonzero = x[x != 0]
        if nonzero.size == 0:
            continue  # blank channel stays 0
        x = np.minimum(x, np.percentile(nonzero, percentile))
        if np.all(x == x.flat[0]):
            continue
        x = rescale_intensity(x, out_range=(0.0, 1.0))
        out[..., c] = equalize_adapthist(x, kernel_size=kernel_size)
    return out.astype(np.float32)


def normalize_image(image: np.ndarray, method: str = "cellsam") -> np.ndarray:
    """(H, W, 3) -> (H, W, 3) float32 in [0, 1] by ``method`` (cellsam | minmax | none)."""
    if method not in NORMALIZATIONS:
        raise InputError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")
    if method == "none":
        return image.astype(np.float32, copy=False)
    out = minmax_channels(image)
    return clahe_channels(out) if method == "cellsam" else out


# ----------------------------------------------------------------------------------------------
# model-side transforms (torch, batch-first (B, 3, H, W))


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize to size x size (torchvision's Resize on tensors)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _minmax_per_channel(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """kornia's normalize_min_max: (x - min) / (max - min + eps) per image and channel."""
    flat = x.flatten(2)
    lo = flat.min(-1).values[..., None, None]
    hi = flat.max(-1).values[..., None, None]
    return (x - lo) / (hi - lo + eps)


def _imagenet(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean) / std


def _sam_standardize(x: torch.Tensor, scale: float) -> torch.Tensor:
    mean = torch.tensor(SAM_PIXEL_MEAN, dtype=x.dtype, device=x.device)[:, None, None] / scale
    std = torch.tensor(SAM_PIXEL_STD, dtype=x.dtype, device=x.device)[:, None, None] / scale
    return (x - mean) / std


def percentile_clip(image: torch.Tensor, upper: float = 99.5) -> torch.Tensor:
    """One image (3, H, W): clip to the [p0, p_upper] of its non-zero values (all channels
    together) and rescale that range to [0, 1] (skimage ``rescale_intensity(out_range="float32")``
    for non-negative input). An all-zero image stays zero."""
    nonzero = image[image != 0]
    if nonzero.numel() == 0:
        return torch.zeros_like(image)
    qs = np.percentile(nonzero.detach().cpu().double().numpy(), [0.0, upper])
    lo, hi = float(qs[0]), float(qs[1])
    out = image.clamp(lo, hi)
    if hi == lo:
        return torch.zeros_like(image) if lo == 0 else out.clamp(0, 1)
    low_out = 0.0 if lo >= 0 else -1.0
    return (out - lo) / (hi - lo) * (1.0 - low_out) + low_out


def embedding_input(images: torch.Tensor, size: int, with_model_cp: bool) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> SAM image-encoder input (B, 3, size, size)."""
    x = resize_square(images.float(), size)
    x = torch.stack([percentile_clip(img) for img in x])
    if with_model_cp:
        x = _minmax_per_channel(_imagenet(x))
    return _sam_standardize(x, 255.0)


def copy_empty_channel(x: torch.Tensor) -> torch.Tensor:
    """CellSAM's ToRGB: an empty nuclear channel gets the whole-cell one and vice versa."""
    x = x.clone()
    for b in range(x.shape[0]):
        if torch.max(x[b, 1]) == 0:
            x[b, 1] = x[b, 2]
        if torch.max(x[b, 2]) == 0:
            x[b, 2] = x[b, 1]
    return x


def detector_input(images: torch.Tensor, size: int, with_model_cp: bool) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> CellFinder input (B, 3, size, size)."""
    x = resize_square(images.float(), size)
    x = (x * 255).to(torch.uint8).float()  # ToPILImage: mul(255).byte() truncates
    x = _sam_standardize(x, 1.0)
    if with_model_cp:
        x = copy_empty_channel(_minmax_per_channel(_imagenet(x)))
    return x
