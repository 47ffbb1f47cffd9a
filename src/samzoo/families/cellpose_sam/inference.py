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

from ...devices import keep_freed_cpu_memory
from ...errors import InputError
from . import dynamics
from .model import CellposeSamModel
from .params import CpsamParams, resolve_params
from .pipeline import flows_to_labels, normalize, predict_tiles


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


# ----------------------------------------------------------------------------------------------
# 3-4. tiles


@torch.no_grad()
def run_network(model: CellposeSamModel, image: np.ndarray, params: CpsamParams,
                progress: bool = False) -> np.ndarray:
    """Normalised (H, W, C) image -> (3, H, W) float32: Y flow, X flow, cell-probability logit."""
    model.eval()
    if next(model.net.parameters()).device.type == "cpu":
        keep_freed_cpu_memory()  # no fresh zeroed pages for every tile (see its docstring)
    bar = (lambda it: tqdm(it, desc="tiles", leave=False)) if progress else None
    return predict_tiles(model.net, image, params.tile_overlap, params.augment, params.batch_size, progress=bar)


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
    return flows_to_labels(flows, niter=params.steps, cellprob_threshold=params.cellprob_threshold,
                           flow_threshold=params.flow_threshold, max_size_fraction=params.max_size_fraction,
                           min_size=params.min_size)


def segment_image(image: np.ndarray, model: CellposeSamModel, *, params: "CpsamParams | dict[str, Any] | None" = None,
                  tile_shape: Any = None, halo: Any = None, progress: bool = True, **options: Any) -> np.ndarray:
    """One 2D image -> uint32 labels with the model's stored parameters, ``params`` overriding.

    ``tile_shape``/``halo`` are accepted for the shared API but the tiling is cellpose's (256 px,
    ``tile_overlap``); a different tile shape is an error rather than silently ignored."""
    # options of other families that the shared CLI passes with their neutral values are accepted
    neutral = {"mode": ("ais", None), "ais_params": (None,), "amg_params": (None,)}
    options.pop("embedding_cache", None)  # no image embeddings to cache in this family
    unknown = sorted(k for k, v in options.items() if k not in neutral or v not in neutral[k])
    if unknown:
        raise InputError(f"option(s) {', '.join(unknown)} do not apply to Cellpose-SAM models (use params)")
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

