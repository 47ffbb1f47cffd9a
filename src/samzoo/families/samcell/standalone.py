"""SAMCell's whole inference in torch, numpy and scipy only: the body of its BioImage.IO packages.

Why this file exists: SAMCell's own pipeline (and samzoo's copy of it in this family) leans on
OpenCV (CLAHE, min-max, resize, contours) and scikit-image (watershed); neither is in
bioimage.io's shared runtime, so a package cannot import them. This file re-implements exactly the
operations samzoo runs, with the same floating-point steps, so the package's labels equal
``samzoo segment``'s on the same weights (tests bind every function here to its OpenCV /
scikit-image counterpart):

* :func:`clahe` -- OpenCV's 8-bit CLAHE (tile histograms, clip and redistribute, bilinear LUTs);
* :func:`minmax_uint8` -- ``cv2.normalize(..., NORM_MINMAX)`` on 8-bit crops;
* :func:`resize_linear` -- ``cv2.resize(..., INTER_LINEAR)`` on float32 maps;
* :func:`outer_contours` -- ``cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)`` (Suzuki's
  border following) and :func:`polygon_centroid` -- ``cv2.moments`` of those polygons;
The SAM modules and the seeded watershed (scikit-image 0.26's ``watershed``, exactly) come from
μSAM's self-contained architecture file.

The packaging step concatenates μSAM's architecture file and this one into the package's single
architecture file (relative imports removed).
"""

from __future__ import annotations

import math
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..microsam.bioimageio_architecture import Config, Sam, watershed

CROP = 256
OVERLAP = 32
CLAHE_CLIP_LIMIT = 1.0
CLAHE_TILES = 8
BATCH = 4
SAMCELL_DEFAULTS = {"peak_threshold": 0.47, "fill_threshold": 0.09}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


# ================================================================================================
# input -> 8-bit gray
# ================================================================================================

def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """(H,W), (H,W,C) or (C,H,W) with C in 1..4 -> (H,W) uint8: 8-bit kept, other data min-max
    scaled and rounded, RGB(A) to luma (8-bit: OpenCV's fixed-point weights), 2 channels: first."""
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise ValueError(f"SAMCell: unsupported image dtype {image.dtype}; expected integer or float")
    if image.ndim == 3 and image.shape[-1] > 4 and image.shape[0] <= 4:
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3:
        channels = image.shape[-1]
        if channels in (1, 2):
            image = image[..., 0]
        elif channels in (3, 4):
            if image.dtype == np.uint8:
                rgb = image[..., :3].astype(np.int32)
                image = ((rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + 16384) >> 15).astype(np.uint8)
            else:
                image = image[..., :3].astype(np.float64) @ _LUMA
        else:
            raise ValueError(f"SAMCell: image of shape {image.shape} has {channels} channels; expected 1 to 4")
    if image.ndim != 2:
        raise ValueError(f"SAMCell segments 2D images (H, W) or (H, W, C); got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"SAMCell: image is empty (shape {image.shape})")
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("SAMCell: image contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def as_8bit_if_integral(image: np.ndarray) -> np.ndarray:
    """A float image whose values are all integers in 0..255 is 8-bit data that came through a
    float tensor (BioImage.IO inputs are float32): give it back as uint8, so it is not stretched."""
    if image.dtype.kind == "f" and image.size and np.isfinite(image).all():
        if image.min() >= 0 and image.max() <= 255 and np.array_equal(image, np.round(image)):
            return image.astype(np.uint8)
    return image


# ================================================================================================
# per-crop enhancement: OpenCV's CLAHE and min-max, in numpy
# ================================================================================================

def clahe(image: np.ndarray, clip_limit: float = CLAHE_CLIP_LIMIT, tiles: int = CLAHE_TILES) -> np.ndarray:
    """OpenCV's ``createCLAHE(clip_limit, (tiles, tiles)).apply`` on a 2D uint8 image, step by step."""
    height, width = image.shape
    source = image
    if height % tiles or width % tiles:  # OpenCV extends bottom/right (reflect-101) to whole tiles
        source = np.pad(image, ((0, tiles - height % tiles), (0, tiles - width % tiles)), mode="reflect")
    tile_h, tile_w = source.shape[0] // tiles, source.shape[1] // tiles
    area = tile_h * tile_w
    blocks = source[:tile_h * tiles, :tile_w * tiles].reshape(tiles, tile_h, tiles, tile_w)
    index = np.arange(tiles * tiles).reshape(tiles, 1, tiles, 1) * 256 + blocks.astype(np.int64)
    hist = np.bincount(index.ravel(), minlength=tiles * tiles * 256).reshape(tiles * tiles, 256)
    if clip_limit > 0:
        limit = max(int(clip_limit * area / 256), 1)
        clipped = np.maximum(hist - limit, 0).sum(axis=1)
        hist = np.minimum(hist, limit) + (clipped // 256)[:, None]
        for t, residual in enumerate(clipped % 256):
            step = max(256 // residual, 1) if residual else 0
            for i in range(0, 256, step or 256):
                if residual <= 0:
                    break
                hist[t, i] += 1
                residual -= 1
    scale = np.float32(255) / np.float32(area)
    lut = np.clip(np.rint(np.cumsum(hist, axis=1).astype(np.float32) * scale), 0, 255).astype(np.float32)

    def axis_weights(size: int, tile: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        pos = np.arange(size, dtype=np.float32) * (np.float32(1.0) / np.float32(tile)) - np.float32(0.5)
        first = np.floor(pos).astype(np.int64)
        frac = (pos - first.astype(np.float32)).astype(np.float32)
        return np.maximum(first, 0), np.minimum(first + 1, tiles - 1), frac, np.float32(1.0) - frac

    y1, y2, ya, ya1 = axis_weights(height, tile_h)
    x1, x2, xa, xa1 = axis_weights(width, tile_w)
    values = image.astype(np.int64)
    lut = lut.reshape(tiles, tiles, 256)
    a = lut[y1[:, None], x1[None, :], values]
    b = lut[y1[:, None], x2[None, :], values]
    c = lut[y2[:, None], x1[None, :], values]
    d = lut[y2[:, None], x2[None, :], values]
    xa, xa1, ya, ya1 = xa[None, :], xa1[None, :], ya[:, None], ya1[:, None]
    result = (a * xa1 + b * xa) * ya1 + (c * xa1 + d * xa) * ya
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)


def minmax_uint8(image: np.ndarray) -> np.ndarray:
    """``cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)`` on uint8: scale and shift computed in
    double, applied as a float32 fused multiply-add (OpenCV's convertTo), rounded half to even."""
    low, high = float(image.min()), float(image.max())
    scale = 255.0 * (1.0 / (high - low)) if high - low > np.finfo(np.float64).eps else 0.0
    shift = 0.0 - low * scale
    product = image.astype(np.float64) * float(np.float32(scale))  # exact: 8 x 24 bits
    result = (product + float(np.float32(shift))).astype(np.float32)
    return np.clip(np.rint(result), 0, 255).astype(np.uint8)


def enhance_crop(crop: np.ndarray) -> np.ndarray:
    """The authors' per-crop step: CLAHE (clip 1, 8 x 8 tiles), then min-max to 0..255."""
    return minmax_uint8(clahe(crop))


# ================================================================================================
# OpenCV's bilinear resize of float32 maps
# ================================================================================================

def _linear_taps(source: int, target: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output pixel: first source index, its weight and the next one's (OpenCV's float32
    coefficients; past the last source pixel the weight of the next one is 0)."""
    scale = 1.0 / (target / source)
    pos = (np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5
    first = np.floor(pos).astype(np.int64)
    frac = (pos - first).astype(np.float32)
    frac[first < 0] = 0
    first[first < 0] = 0
    last = first >= source - 1
    frac[last] = 0
    first[last] = source - 1
    return first, np.float32(1.0) - frac, frac


def _lerp(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``fma(b - a, weight, a)`` in float32, as OpenCV 5 interpolates (the fused multiply-add is
    computed in float64: the product is exact there, so only a double rounding could differ)."""
    diff = (b - a).astype(np.float64)
    return (diff * weight.astype(np.float64) + a.astype(np.float64)).astype(np.float32)


def resize_linear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(values, (width, height))`` (INTER_LINEAR, OpenCV 5) of a 2D float32 array:
    horizontal pass, then vertical, each a float32 lerp between neighbours."""
    values = np.asarray(values, dtype=np.float32)
    src_h, src_w = values.shape
    if (src_h, src_w) == (height, width):
        return values.copy()
    xs, _, xw = _linear_taps(src_w, width)
    ys, _, yw = _linear_taps(src_h, height)
    rows = _lerp(values[:, xs], values[:, np.minimum(xs + 1, src_w - 1)], xw[None, :])
    return _lerp(rows[ys], rows[np.minimum(ys + 1, src_h - 1)], yw[:, None])


# ================================================================================================
# the authors' crops (256 px, 32 px overlap) and cosine blending
# ================================================================================================

def blending_mask(size: int, overlap: int) -> np.ndarray:
    mask = np.ones((size, size), dtype=np.float32)
    for i in range(overlap):
        weight = 0.5 * (1 - np.cos(np.pi * i / overlap))
        mask[i, :] *= weight
        mask[-i - 1, :] *= weight
        mask[:, i] *= weight
        mask[:, -i - 1] *= weight
    return mask


def crop_layout(shape: Tuple[int, int], crop: int = CROP, overlap: int = OVERLAP):
    """(crop size, padding, windows); a window = (padded_y, padded_x, y, x, height, width)."""
    height, width = shape
    if height < crop or width < crop:
        crop = min(height, width)
        if crop <= 2 * overlap:  # (a stride of 0 px: one crop)
            return -1, 0, [(0, 0, 0, 0, height, width)]
    stride = crop - 2 * overlap
    padded_h, padded_w = height + 2 * overlap, width + 2 * overlap
    rows, cols = max(1, math.ceil(height / stride)), max(1, math.ceil(width / stride))
    windows = []
    for r in range(rows):
        for c in range(cols):
            py = r * stride + overlap if r < rows - 1 else padded_h - crop
            px = c * stride + overlap if c < cols - 1 else padded_w - crop
            y, x = max(0, py - overlap), max(0, px - overlap)  # inside the image: see tiling.crop_layout
            windows.append((py, px, y, x, min(crop, height - y), min(crop, width - x)))
    return crop, overlap, windows


def split(image: np.ndarray, crop: int = CROP, overlap: int = OVERLAP):
    size, pad, windows = crop_layout(image.shape, crop, overlap)
    if size < 0:
        return [image], windows
    padded = np.pad(image, pad, mode="symmetric")
    return [padded[py:py + size, px:px + size] for py, px, *_ in windows], windows


def merge(maps: Sequence[np.ndarray], windows, shape: Tuple[int, int], crop_shape: Tuple[int, int],
          overlap: int = OVERLAP) -> np.ndarray:
    crop_h, crop_w = crop_shape
    mask = blending_mask(max(crop_h, crop_w), overlap)
    if mask.shape != (crop_h, crop_w):
        mask = resize_linear(mask, crop_h, crop_w)
    out = np.zeros(shape, np.float32)
    weight = np.zeros(shape, np.float32)
    for values, (_, _, y, x, height, width) in zip(maps, windows):
        h, w = min(height, mask.shape[0]), min(width, mask.shape[1])
        y_end, x_end = min(y + h, shape[0]), min(x + w, shape[1])
        h, w = y_end - y, x_end - x
        if h <= 0 or w <= 0:
            continue
        out[y:y_end, x:x_end] += values[:h, :w] * mask[:h, :w]
        weight[y:y_end, x:x_end] += mask[:h, :w]
    valid = weight > 0.0001
    out[valid] /= weight[valid]
    if not valid.all() and valid.any():
        _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
        out[~valid] = out[iy[~valid], ix[~valid]]
    return out


# ================================================================================================
# seeds: OpenCV's outer contours and their centroids; cells: seeded watershed
# ================================================================================================

_STEPS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))  # (dy, dx), OpenCV's codes 0..7


def _trace(grid: np.ndarray, y0: int, x0: int) -> List[Tuple[int, int]]:
    """Suzuki's outer-border following from (y0, x0) with OpenCV's simple chain approximation:
    the (x, y) points where the direction changes, in the padded grid's coordinates."""
    s = 4
    for _ in range(8):
        s = (s - 1) & 7
        if grid[y0 + _STEPS[s][0], x0 + _STEPS[s][1]]:
            break
    else:
        return [(x0, y0)]
    y1, x1 = y0 + _STEPS[s][0], x0 + _STEPS[s][1]
    points = []
    y3, x3 = y0, x0
    prev = s ^ 4
    while True:
        end = s
        while True:
            s += 1
            y4, x4 = y3 + _STEPS[s & 7][0], x3 + _STEPS[s & 7][1]
            if grid[y4, x4] or s >= end + 8:
                break
        s &= 7
        if s != prev:
            points.append((x3, y3))
            prev = s
        if (y4, x4) == (y0, x0) and (y3, x3) == (y1, x1):
            return points
        y3, x3 = y4, x4
        s = (s + 4) & 7


def outer_contours(binary: np.ndarray) -> List[np.ndarray]:
    """``cv2.findContours(binary, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)[0]`` as (n, 2) int (x, y)
    arrays, in OpenCV's order (the last border found first). Regions inside holes of other regions
    are not outer; each outer border starts at its region's first pixel in raster order."""
    grid = np.pad(binary.astype(bool), 1)
    background, _ = ndimage.label(~grid)  # 4-connected background; the frame is one component
    filled = grid | (background != background[0, 0])
    regions, count = ndimage.label(filled, structure=np.ones((3, 3), bool))
    if count == 0:
        return []
    flat = regions.ravel()
    order = np.flatnonzero(flat)
    _, first = np.unique(flat[order], return_index=True)
    starts = np.sort(order[first])
    contours = []
    for start in starts[::-1]:
        y0, x0 = divmod(int(start), grid.shape[1])
        points = _trace(filled, y0, x0)
        contours.append(np.asarray(points, np.int64) - 1)
    return contours


def polygon_centroid(points: np.ndarray) -> Tuple[int, int]:
    """(x, y) of a contour as the authors take it: ``int(m10 / m00)``, ``int(m01 / m00)`` from
    OpenCV's polygon moments (Green's formula in double, OpenCV's constants); a polygon without
    area: the truncated mean of its points."""
    x = points[:, 0].astype(np.float64).tolist()
    y = points[:, 1].astype(np.float64).tolist()
    a00 = a10 = a01 = 0.0
    xp, yp = x[-1], y[-1]
    for xi, yi in zip(x, y):
        dxy = xp * yi - xi * yp
        a00 += dxy
        a10 += dxy * (xp + xi)
        a01 += dxy * (yp + yi)
        xp, yp = xi, yi
    if abs(a00) > np.finfo(np.float32).eps:
        half, sixth = (0.5, 0.16666666666666666) if a00 > 0 else (-0.5, -0.16666666666666666)
        m00 = a00 * half
        if m00 != 0:
            return int(a10 * sixth / m00), int(a01 * sixth / m00)
    return int(np.mean(points[:, 0])), int(np.mean(points[:, 1]))


def seed_markers(distance: np.ndarray, peak_threshold: float) -> np.ndarray:
    """One labelled seed pixel per outer contour of ``distance > peak_threshold`` (label = contour
    index + 1; contours of fewer than three points give none)."""
    markers = np.zeros(distance.shape, dtype=np.int32)
    for i, contour in enumerate(outer_contours(distance > peak_threshold)):
        if len(contour) < 3:
            continue
        x, y = polygon_centroid(contour)
        markers[min(max(0, y), markers.shape[0] - 1), min(max(0, x), markers.shape[1] - 1)] = i + 1
    return markers


def labels_from_distance_map(distance: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """(H,W) distance map -> uint32 labels 1..N ordered by seed (scikit-image's watershed of the
    negative map from the seeds, inside ``map > fill_threshold``, then sequential labels)."""
    p = dict(SAMCELL_DEFAULTS, **dict(params))
    distance = np.asarray(distance, dtype=np.float32)
    markers = seed_markers(distance, float(p["peak_threshold"]))
    mask = distance > float(p["fill_threshold"])
    if not markers.any():
        return np.zeros(distance.shape, np.uint32)
    labels = watershed(-distance.astype(np.float64), markers, mask)
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.uint32)


# ================================================================================================
# the network and the package entry points
# ================================================================================================

def resized_shape(height: int, width: int, long_side: int) -> Tuple[int, int]:
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class SamcellNet(nn.Module):
    """SAM used without prompts; ``state_dict()`` keys ``sam.<segment-anything key>``."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        self.cfg = Config(config)
        self.sam = Sam(self.cfg)
        self.eval()

    def distance(self, pixels: torch.Tensor) -> torch.Tensor:
        """SAM-normalised (B,3,S,S) -> sigmoid of the first multimask output (B,1,S/4,S/4)."""
        sam = self.sam
        embeddings = sam.image_encoder(pixels)
        image_pe = sam.prompt_encoder.get_dense_pe()
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            1, -1, *sam.prompt_encoder.image_embedding_size)
        sparse = torch.empty((1, 0, self.cfg.prompt_embed_dim), device=pixels.device, dtype=pixels.dtype)
        logits = [sam.mask_decoder(e[None], image_pe, sparse, dense, True)[0][:, 0:1] for e in embeddings]
        return torch.sigmoid(torch.cat(logits))

    @torch.no_grad()
    def crop_maps(self, crops: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Distance maps of same-shape uint8 crops, each resized back to its crop's size."""
        size = self.cfg.img_size
        stack = torch.from_numpy(np.stack([enhance_crop(c) for c in crops]))[:, None].expand(-1, 3, -1, -1)
        h, w = resized_shape(stack.shape[-2], stack.shape[-1], size)
        if (h, w) != tuple(stack.shape[-2:]):  # torchvision's uint8 bilinear resize (SamProcessor)
            stack = F.interpolate(stack.contiguous(), size=[h, w], mode="bilinear", align_corners=False,
                                  antialias=True)
        device = self.sam.pixel_mean.device
        pixels = (stack.float().to(device) - self.sam.pixel_mean) / self.sam.pixel_std
        maps = self.distance(F.pad(pixels, (0, size - w, 0, size - h)))[:, 0].float().cpu().numpy()
        out = []
        for crop, values in zip(crops, maps):
            if values.shape != (CROP, CROP):
                values = resize_linear(values, CROP, CROP)
            if values.shape != crop.shape:
                values = resize_linear(values, crop.shape[0], crop.shape[1])
            out.append(values)
        return out

    def distance_map(self, gray: np.ndarray) -> np.ndarray:
        """(H,W) uint8 image -> (H,W) float32 distance map (crops, blending)."""
        crops, windows = split(gray)
        maps: List[np.ndarray] = []
        batch: List[np.ndarray] = []
        for crop in crops:  # runs of at most BATCH consecutive crops of one shape
            if batch and (len(batch) == BATCH or batch[0].shape != crop.shape):
                maps += self.crop_maps(batch)
                batch = []
            batch.append(crop)
        maps += self.crop_maps(batch)
        return merge(maps, windows, gray.shape, crops[0].shape)


def _gray_of(item: torch.Tensor) -> np.ndarray:
    """One (C,H,W) tensor with C in 1..4 -> SAMCell's 8-bit gray plane."""
    array = as_8bit_if_integral(item.detach().cpu().numpy())
    return to_gray_uint8(array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1))


class SamcellInstanceSegmentation(SamcellNet):
    """``(B, C, H, W)`` image (C = 1 gray, 2: first channel, 3/4: RGB(A)) -> ``(B, 1, H, W)`` uint32
    labels: SAMCell's full pipeline. A float input with only integer values in 0..255 is 8-bit."""

    def __init__(self, config: Mapping[str, Any], params: Optional[Mapping[str, Any]] = None):
        super().__init__(config)
        unknown = sorted(set(dict(params or {})) - set(SAMCELL_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown SAMCell parameter(s) {unknown}")
        self.params = dict(SAMCELL_DEFAULTS, **dict(params or {}))

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4:
            raise ValueError(f"expected a (batch, channel, y, x) image, got shape {tuple(image.shape)}")
        labels = [labels_from_distance_map(self.distance_map(_gray_of(item)), self.params) for item in image]
        return torch.from_numpy(np.stack(labels).astype(np.uint32))[:, None]


class SamcellDistanceNetwork(SamcellNet):
    """One block ``(B, 1, 256, 256)`` of 8-bit gray values (0..255, any float or integer type) ->
    ``(B, 1, 256, 256)`` distance map: CLAHE, min-max, resize, SAM normalisation, SAM, sigmoid,
    resize back. A blockwise runner with a 32 px halo reproduces SAMCell's crops without blending."""

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 1 or tuple(image.shape[-2:]) != (CROP, CROP):
            raise ValueError(f"expected a (batch, 1, {CROP}, {CROP}) block, got shape {tuple(image.shape)}")
        blocks = np.clip(np.rint(image[:, 0].detach().cpu().numpy().astype(np.float64)), 0, 255).astype(np.uint8)
        maps = self.crop_maps(list(blocks))
        return torch.from_numpy(np.stack(maps))[:, None]
