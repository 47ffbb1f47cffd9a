"""Validate any supported image and bring it into the form SAM expects: RGB-like, 0..255.

Why one module: every entry point (CLI, Python API, training, evaluation) must accept the same
inputs and reject the same bad ones with the same message, and the mapping to SAM's input range
must be identical between training and inference, or models silently lose accuracy.

Supported layouts (H and W are at least ``MIN_SIDE`` pixels):

==================  ==========================================================================
``(H, W)``          grayscale, replicated to three channels
``(H, W, C)``       C = 1 (grayscale), 2 (averaged to one channel, as μSAM does), 3 (RGB),
                    4 (RGBA, alpha dropped)
``(C, H, W)``       channel-first with C = 2 or 3 when the last axis is not a channel axis;
                    with ``is_volume=False`` also C = 1 or 4
``(Z, H, W)``       a volume of grayscale slices
``(Z, H, W, C)``    a volume of multi-channel slices, C as for ``(H, W, C)``
==================  ==========================================================================

Ambiguity rule for 3D arrays (``is_volume=None``): a last axis of size 1-4 is a channel axis
(``(H, W, C)``); otherwise a first axis of size 1 is a singleton (a plain 2D image), a first axis
of size 2 or 3 is a channel axis (``(C, H, W)``, the common ImageJ layout of 2-channel
fluorescence), and anything else is a volume ``(Z, H, W)``. ``is_volume=True`` always reads a 3D
array as ``(Z, H, W)``; ``is_volume=False`` requires a channel axis (first or last, size 1-4).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

MIN_SIDE = 8
"""Smallest accepted height/width. Thinner images are almost always a misread axis (channels or a
short z-stack taken for a spatial axis); SAM resizes the longest side to 1024 px and tiles it into
16 px patches, so a side of a few pixels carries no usable signal."""

METHODS = ("minmax", "percentile")
PERCENTILES = (1.0, 99.8)
"""Lower/upper percentile of the ``percentile`` method: robust to hot pixels and dead pixels."""

_CHANNEL_SIZES = (1, 2, 3, 4)
_CHANNEL_FIRST_DEFAULT = (2, 3)


def _check_dtype(data: np.ndarray) -> None:
    kind = data.dtype.kind
    if kind == "c":
        raise InputError(f"complex images are not supported (dtype {data.dtype}); pass the magnitude or real part")
    if kind not in "biuf":
        raise InputError(f"unsupported image dtype {data.dtype}; expected bool, integer or float")


def _to_three_channels(image: np.ndarray) -> np.ndarray:
    """Map ``(..., H, W, C)`` with C in 1..4 to float32 ``(..., H, W, 3)``."""
    channels = image.shape[-1]
    if channels == 1:
        gray = image[..., 0].astype(np.float32)
    elif channels == 2:
        # μSAM's rule for two channels (e.g. nucleus + membrane stain): average, then treat as gray.
        gray = image.astype(np.float32).mean(axis=-1)
    elif channels == 3:
        return image.astype(np.float32)
    else:  # 4: RGBA; alpha carries no image content
        return image[..., :3].astype(np.float32)
    return np.repeat(gray[..., None], 3, axis=-1)


def _layout_3d(shape: tuple[int, ...], is_volume: bool | None) -> str:
    """Return 'last', 'first' (channel axis) or 'volume' for a 3D shape, or raise."""
    first, last = shape[0], shape[-1]
    if is_volume is True:
        return "volume"
    if last in _CHANNEL_SIZES:
        return "last"
    if is_volume is False:
        if first in _CHANNEL_SIZES:
            return "first"
        raise InputError(
            f"array of shape {shape} has no channel axis of size 1-4 but is_volume=False; "
            "pass is_volume=True to read it as (Z, H, W)"
        )
    if first == 1 or first in _CHANNEL_FIRST_DEFAULT:
        return "first"
    return "volume"


def as_image_stack(data: np.ndarray, *, is_volume: bool | None = None) -> tuple[np.ndarray, bool]:
    """Validate ``data`` and return it as a float32 ``(Z, H, W, 3)`` stack plus whether it is a volume.

    Values are only converted, not rescaled: the mapping to 0..255 depends on the model's
    normalization and the source dtype (see ``normalize_to_uint8_range``). A 2D image is returned
    with Z = 1 and ``False``. See the module docstring for the layouts and the ambiguity rule.
    Constant images are valid. Raises ``InputError`` for anything that cannot be an image.
    """
    if is_volume not in (None, True, False):
        raise InputError(f"is_volume must be True, False or None, got {is_volume!r}")
    try:
        data = np.asarray(data)
    except (TypeError, ValueError) as err:
        raise InputError(f"image cannot be converted to an array: {err}") from None
    _check_dtype(data)
    if data.size == 0:
        raise InputError(f"image is empty (shape {data.shape})")
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise InputError(f"image contains NaN or infinite values (shape {data.shape}, dtype {data.dtype})")
        if data.dtype.itemsize > 4 and np.abs(data).max() > np.finfo(np.float32).max:
            raise InputError(f"image values exceed the float32 range (dtype {data.dtype})")

    shape = tuple(data.shape)
    if data.ndim == 2:
        if is_volume is True:
            raise InputError(f"is_volume=True but the image is 2D (shape {shape})")
        stack, volume = _to_three_channels(data[None, ..., None]), False
    elif data.ndim == 3:
        layout = _layout_3d(shape, is_volume)
        if layout == "volume":
            stack, volume = _to_three_channels(data[..., None]), True
        elif layout == "last":
            stack, volume = _to_three_channels(data[None]), False
        else:
            stack, volume = _to_three_channels(np.moveaxis(data, 0, -1)[None]), False
    elif data.ndim == 4:
        if shape[-1] not in _CHANNEL_SIZES:
            raise InputError(f"4D image of shape {shape} is not (Z, H, W, C) with C in 1-4")
        if is_volume is False and shape[0] != 1:
            raise InputError(f"is_volume=False but the image is a 4D stack of {shape[0]} slices (shape {shape})")
        stack, volume = _to_three_channels(data), is_volume is not False
    else:
        raise InputError(f"image must be 2D, 3D or 4D (Z, H, W, C), got {data.ndim}D with shape {shape}")

    height, width = stack.shape[1:3]
    if min(height, width) < MIN_SIDE:
        raise InputError(
            f"image of shape {shape} is read as {height}x{width} pixels; each side must be at least {MIN_SIDE} "
            "(is an axis misread? see is_volume)"
        )
    return stack, volume


def normalize_to_uint8_range(
    img: np.ndarray, method: str, *, source_dtype: np.dtype | type | str | None = None
) -> np.ndarray:
    """Map one image (typically ``(H, W, 3)``) to float32 values in 0..255, as SAM's encoder expects.

    ``minmax`` reproduces micro-sam: images whose source dtype is uint8 are used as they are, all
    others are min-max scaled to 0..255 (micro-sam then casts to uint8, dropping the fraction;
    samzoo keeps float). ``percentile`` scales the 1st..99.8th percentile to 0..255 and clips, for
    every dtype, so a few hot pixels cannot darken the whole image. Statistics are taken over all
    channels together so colour ratios survive. A constant image maps to zeros (no division by
    zero); for ``percentile`` an image whose percentiles coincide falls back to min-max.

    ``source_dtype`` is the dtype of the original data when ``img`` was already converted to float
    (as ``as_image_stack`` does); it defaults to ``img.dtype``.
    """
    if method not in METHODS:
        raise InputError(f"normalization must be one of {METHODS}, got {method!r}")
    img = np.asarray(img)
    _check_dtype(img)
    if img.size == 0:
        raise InputError(f"image is empty (shape {img.shape})")
    try:
        dtype = np.dtype(img.dtype if source_dtype is None else source_dtype)
    except TypeError:
        raise InputError(f"source_dtype {source_dtype!r} is not a numpy dtype") from None
    values = img.astype(np.float32)
    if img.dtype.kind == "f" and not np.isfinite(values).all():
        raise InputError("image contains NaN or infinite values")

    if method == "minmax" and dtype == np.uint8:
        return values
    if method == "percentile":
        low, high = (float(v) for v in np.percentile(values, PERCENTILES))
        if high <= low:
            low, high = float(values.min()), float(values.max())
    else:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(scaled, 0.0, 255.0, out=scaled)


def prepare_images(
    data: np.ndarray, *, method: str, is_volume: bool | None = None
) -> tuple[np.ndarray, bool]:
    """Validate and normalize in one step: float32 ``(Z, H, W, 3)`` in 0..255 plus the volume flag.

    Each slice is normalized on its own, because micro-sam computes volume embeddings slice by
    slice from individually normalized slices; doing the same keeps results comparable.
    """
    if method not in METHODS:
        raise InputError(f"normalization must be one of {METHODS}, got {method!r}")
    source_dtype = np.asarray(data).dtype
    stack, volume = as_image_stack(data, is_volume=is_volume)
    for z in range(stack.shape[0]):
        stack[z] = normalize_to_uint8_range(stack[z], method, source_dtype=source_dtype)
    return stack, volume
