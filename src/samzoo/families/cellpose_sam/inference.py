"""Cellpose-SAM inference as ``CellposeModel.eval`` runs it (cellpose 4.2), image -> labels.

1. channels: (H, W), (H, W, C) or (C, H, W) with C <= 4; the first three channels are used and
   fewer count as zeros (the network ignores channel order, by training);
2. per-channel normalisation, 1st percentile -> 0, 99th -> 1 (percentiles from a strided subsample
   for images over 224^3 pixels, constant channels -> 0), not clipped;
3. optional rescaling by 30 / diameter (bilinear);
4. padding to a multiple of 16 (>= 256, >= 8 px each side), 256-px tiles with ``tile_overlap``
   (10 %) overlap, averaged with a logistic taper; with ``augment`` tiles overlap by half and are
   flipped, then un-flipped with the flow signs corrected;
5. the flow dynamics (``dynamics.compute_masks``) at the original size, hole filling, ``min_size``.

Volumes: slice by slice with masks stitched across slices by IoU (``stitch_threshold``), or
cellpose's 3D mode (``flow3d``): the network runs on YX, ZY and ZX slices, flows and cell
probabilities are summed per axis and the dynamics run in 3D.

Network outputs stay float32 (cellpose defaults to bfloat16 weights, which changes results by
rounding and is slow on CPUs without bf16 units).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm.auto import tqdm

from ...errors import InputError
from . import dynamics
from .model import CellposeSamModel
from .params import CpsamParams, resolve_params

PAD_DIV = 16


# ----------------------------------------------------------------------------------------------
# 1-2. channels and normalisation


def channels_last(image: np.ndarray) -> np.ndarray:
    """A 2D image as float32 (H, W, C<=3)."""
    data = np.asarray(image)
    if data.dtype.kind not in "biuf":
        raise InputError(f"unsupported image dtype {data.dtype}; expected bool, integer or float")
    if data.ndim == 2:
        data = data[..., None]
    elif data.ndim == 3:
        if data.shape[-1] <= 4:
            pass
        elif data.shape[0] <= 4:
            data = np.moveaxis(data, 0, -1)
        else:
            raise InputError(f"image of shape {data.shape} has no channel axis of size 1-4 (first or last)")
    else:
        raise InputError(f"expected a 2D image (H, W[, C]), got shape {data.shape}")
    if min(data.shape[:2]) < 8:
        raise InputError(f"image of shape {data.shape} is too small (sides must be at least 8 px)")
    data = data[..., :3].astype(np.float32)
    if not np.isfinite(data).all():
        raise InputError("image contains NaN or infinite values")
    return data


def _percentiles(channel: np.ndarray, low: float, high: float) -> tuple[float, float]:
    if channel.size > 224 ** 3:  # cellpose's subsample for big images
        step = [max(1, s // 224) for s in channel.shape]
        if channel.ndim == 3:
            step[0] = max(1, channel.shape[0] // 50)
        channel = channel[tuple(slice(None, None, s) for s in step)]
    return float(np.percentile(channel, low)), float(np.percentile(channel, high))


def normalize(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Per channel (last axis) over all other axes: ``low`` percentile -> 0, ``high`` -> 1."""
    out = image.astype(np.float32, copy=True)
    for c in range(out.shape[-1]):
        channel = out[..., c]
        if np.ptp(channel) > 0:
            lo, hi = _percentiles(channel, low, high)
            if hi - lo > 1e-3:
                channel -= np.float32(lo)
                channel /= np.float32(hi - lo)
                continue
        channel[...] = 0
    return out


# ----------------------------------------------------------------------------------------------
# 3-4. tiles


def pad_amounts(size: int, tile: int) -> tuple[int, int]:
    """Padding before/after one axis: to a multiple of 16 plus 8 px per side, at least ``tile``."""
    if size >= tile:
        extra = int(PAD_DIV * np.ceil(size / PAD_DIV) - size)
    else:
        extra = max(0, tile - size - PAD_DIV)
    return PAD_DIV // 2 + extra // 2, PAD_DIV // 2 + extra - extra // 2


def taper_mask(tile: int, sigma: float = 7.5) -> np.ndarray:
    """Tile weights: a logistic fall-off centred 20 px inside each edge."""
    size = max(224, tile)
    x = np.arange(size)
    x = np.abs(x - x.mean())
    ramp = 1 / (1 + np.exp((x - (size / 2 - 20)) / sigma))
    mask = ramp * ramp[:, None]
    start = size // 2 - tile // 2
    return mask[start:start + tile, start:start + tile]


def tile_starts(size: int, tile: int, overlap: float, augment: bool) -> np.ndarray:
    if augment:
        n = max(2, int(np.ceil(2.0 * size / tile)))
    else:
        overlap = min(0.5, max(0.05, overlap))
        n = 1 if size <= tile else int(np.ceil((1.0 + 2 * overlap) * size / tile))
    return np.linspace(0, size - tile, n).astype(int)


def _flip_axes(j: int, i: int) -> tuple[int, ...]:
    """Test-time augmentation: which spatial axes tile (j, i) is flipped along (cellpose's pattern)."""
    return {(0, 0): (), (0, 1): (1,), (1, 0): (2,), (1, 1): (1, 2)}[(j % 2, i % 2)]


@torch.no_grad()
def run_network(model: CellposeSamModel, image: np.ndarray, params: CpsamParams,
                progress: bool = False) -> np.ndarray:
    """Normalised (H, W, C) image -> (3, H, W) float32: Y flow, X flow, cell-probability logit."""
    tile = model.config.img_size
    height, width = image.shape[:2]
    (top, bottom), (left, right) = pad_amounts(height, tile), pad_amounts(width, tile)
    padded = np.pad(image.transpose(2, 0, 1), ((0, 0), (top, bottom), (left, right)))
    ly, lx = padded.shape[1:]
    ys = tile_starts(ly, tile, params.tile_overlap, params.augment)
    xs = tile_starts(lx, tile, params.tile_overlap, params.augment)
    boxes = [(j, i, y, x) for j, y in enumerate(ys) for i, x in enumerate(xs)]
    source = torch.from_numpy(padded)
    device = model.device
    mask = torch.from_numpy(taper_mask(tile).astype(np.float32))
    total = torch.zeros((3, ly, lx))
    weight = torch.zeros((ly, lx), dtype=torch.float64)
    model.eval()
    for start in tqdm(range(0, len(boxes), params.batch_size), desc="tiles", disable=not progress,
                      leave=False):
        chunk = boxes[start:start + params.batch_size]
        batch = []
        for j, i, y, x in chunk:
            patch = source[:, y:y + tile, x:x + tile]
            flips = _flip_axes(j, i) if params.augment else ()
            batch.append(patch.flip([a for a in flips]) if flips else patch)
        out = model.net(torch.stack(batch).to(device)).float().cpu()
        for (j, i, y, x), pred in zip(chunk, out):
            flips = _flip_axes(j, i) if params.augment else ()
            if flips:
                pred = pred.flip(list(flips))
                for axis in flips:  # a flip along Y reverses the Y flow (channel 0), X the X flow
                    pred[axis - 1] *= -1
            total[:, y:y + tile, x:x + tile] += pred * mask
            weight[y:y + tile, x:x + tile] += mask.double()
    result = (total / weight.float()).numpy()
    return result[:, top:ly - bottom, left:lx - right]


def _resize(array: np.ndarray, shape: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """(C, H, W) -> (C, *shape); bilinear with half-pixel centres and no antialiasing (as OpenCV's
    INTER_LINEAR, which cellpose uses), or nearest for labels."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None]
    if mode == "nearest":
        return F.interpolate(tensor.float(), size=shape, mode="nearest")[0].numpy().astype(array.dtype)
    return F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False)[0].numpy()


def predict_flows(model: CellposeSamModel, image: np.ndarray, params: CpsamParams,
                  progress: bool = False, normalized: bool = False) -> np.ndarray:
    """Network outputs (3, H, W) for a 2D image at its own size (rescaled by 30/diameter inside)."""
    data = channels_last(image) if not normalized else image
    if not normalized:
        data = normalize(data)
    height, width = data.shape[:2]
    if params.rescale != 1.0:
        size = (int(height * params.rescale), int(width * params.rescale))
        if min(size) < 1:
            raise InputError(f"diameter {params.diameter} is too large for a {height}x{width} image")
        data = _resize(data.transpose(2, 0, 1), size).transpose(1, 2, 0)
    flows = run_network(model, data, params, progress=progress)
    if params.rescale != 1.0:
        flows = _resize(flows, (height, width))
    return flows


def labels_from_flows(flows: np.ndarray, params: CpsamParams) -> np.ndarray:
    """(3 | 4, *shape) network outputs (flows..., logit) -> uint32 labels (2D or 3D)."""
    labels = dynamics.compute_masks(flows[:-1], flows[-1], niter=params.steps,
                                    cellprob_threshold=params.cellprob_threshold,
                                    flow_threshold=params.flow_threshold,
                                    max_size_fraction=params.max_size_fraction)
    labels = dynamics.fill_holes_and_remove_small_masks(labels, min_size=params.min_size)
    return labels.astype(np.uint32)


def segment_image(image: np.ndarray, model: CellposeSamModel, *, params: "CpsamParams | dict[str, Any] | None" = None,
                  tile_shape: Any = None, halo: Any = None, progress: bool = True, **options: Any) -> np.ndarray:
    """One 2D image -> uint32 labels with the model's stored parameters, ``params`` overriding.

    ``tile_shape``/``halo`` are accepted for the shared API but the tiling is cellpose's (256 px,
    ``tile_overlap``); a different tile shape is an error rather than silently ignored."""
    if options:
        raise InputError(f"unknown option(s) for Cellpose-SAM: {', '.join(sorted(options))}")
    if tile_shape is not None and tuple(np.broadcast_to(tile_shape, 2)) != (model.config.img_size,) * 2:
        raise InputError(f"Cellpose-SAM tiles at {model.config.img_size} px (its input size); "
                         "set params tile_overlap instead of tile_shape/halo")
    chosen = resolve_params(model.params, params)
    return labels_from_flows(predict_flows(model, image, chosen, progress=progress), chosen)


# ----------------------------------------------------------------------------------------------
# volumes


def stitch_slices(labels: np.ndarray, threshold: float) -> np.ndarray:
    """Join masks of consecutive slices whose IoU is at least ``threshold`` (cellpose's stitch3D):
    each mask of slice z+1 takes the label of its best-overlapping mask of slice z, else a new one."""
    out = labels.astype(np.uint32, copy=True)
    next_label = int(out[0].max()) + 1
    for z in range(1, len(out)):
        prev, cur = out[z - 1], labels[z].astype(np.int64)
        new = np.zeros_like(out[z])
        n_cur = int(cur.max())
        if n_cur == 0:
            out[z] = new
            continue
        prev_ids, prev_inv = np.unique(prev, return_inverse=True)
        overlap = np.zeros((n_cur + 1, len(prev_ids)))
        np.add.at(overlap, (cur.ravel(), prev_inv.ravel()), 1)
        area_cur = overlap.sum(1, keepdims=True)
        area_prev = overlap.sum(0, keepdims=True)
        iou = overlap / np.maximum(area_cur + area_prev - overlap, 1)
        iou[:, prev_ids == 0] = 0
        for m in range(1, n_cur + 1):
            if area_cur[m, 0] == 0:
                continue
            best = int(iou[m].argmax())
            if iou[m, best] >= threshold and prev_ids[best] != 0:
                new[cur == m] = prev_ids[best]
            else:
                new[cur == m] = next_label
                next_label += 1
        out[z] = new
    return out


def segment_volume(volume: np.ndarray, model: CellposeSamModel, *,
                   params: "CpsamParams | dict[str, Any] | None" = None, progress: bool = True) -> np.ndarray:
    """(Z, H, W[, C]) -> uint32 3D labels: stitched slices, or 3D dynamics with ``flow3d``.

    The stack is normalised as a whole (cellpose's norm3D), so slices share one intensity scale."""
    chosen = resolve_params(model.params, params)
    data = np.asarray(volume)
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4 or data.shape[-1] > 4:
        raise InputError(f"expected a volume (Z, H, W[, C<=4]), got shape {np.asarray(volume).shape}")
    data = normalize(data[..., :3].astype(np.float32))
    if chosen.flow3d:
        flows = np.zeros((4, *data.shape[:3]), np.float32)
        # planes of each orientation: (axes of the plane's (rows, cols)) -> volume axes
        for plane_axis, (row_axis, col_axis) in ((0, (1, 2)), (1, (0, 2)), (2, (0, 1))):
            planes = np.moveaxis(data, plane_axis, 0)
            for k in tqdm(range(planes.shape[0]), desc=f"3D flows (axis {plane_axis})", disable=not progress):
                out = run_network(model, planes[k], chosen)
                index = [slice(None)] * 3
                index[plane_axis] = k
                flows[(1 + row_axis, *index)] += out[0]
                flows[(1 + col_axis, *index)] += out[1]
                flows[(0, *index)] += out[2]
        dP, cellprob = flows[1:], flows[0]
        if chosen.flow3d_smooth > 0:
            dP = ndimage.gaussian_filter(dP, (0, *([chosen.flow3d_smooth] * 3)))
        labels = dynamics.compute_masks(dP, cellprob, niter=chosen.steps,
                                        cellprob_threshold=chosen.cellprob_threshold, flow_threshold=0.0,
                                        max_size_fraction=chosen.max_size_fraction)
        return dynamics.fill_holes_and_remove_small_masks(labels, chosen.min_size).astype(np.uint32)
    per_slice = chosen.replace(min_size=-1) if chosen.stitch_threshold > 0 else chosen
    slices = [labels_from_flows(predict_flows(model, data[z], per_slice, normalized=True), per_slice)
              for z in tqdm(range(len(data)), desc="slices", disable=not progress)]
    stack = np.stack(slices)
    if chosen.stitch_threshold > 0:
        stack = stitch_slices(stack, chosen.stitch_threshold)
        stack = dynamics.fill_holes_and_remove_small_masks(stack, chosen.min_size)
    return stack.astype(np.uint32)


def segment(image: np.ndarray, model: CellposeSamModel, *, params: "CpsamParams | dict[str, Any] | None" = None,
            is_volume: bool = False, progress: bool = True) -> np.ndarray:
    """2D image or (with ``is_volume``) volume -> uint32 labels."""
    if is_volume:
        return segment_volume(image, model, params=params, progress=progress)
    return segment_image(image, model, params=params, progress=progress)

