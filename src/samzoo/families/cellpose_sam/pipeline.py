"""Cellpose's image -> labels pipeline around the network, in torch/numpy/scipy only.

Normalisation, padding, 256-px tiles with a logistic taper (and flip test-time augmentation),
then the flow dynamics. samzoo's inference (``inference``) runs these functions, and the
instance-label BioImage.IO package ships this file (concatenated with ``network`` and
``dynamics``; lines marked ``# package: drop`` are removed there), so both run the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from .dynamics import compute_masks, fill_holes_and_remove_small_masks  # package: drop
from .network import CpsamNet  # package: drop

PAD_DIV = 16


def _percentiles(channel: np.ndarray, low: float, high: float) -> tuple[float, float]:
    if channel.size > 224 ** 3:  # cellpose's strided subsample for big images
        step = [max(1, s // 224) for s in channel.shape]
        if channel.ndim == 3:
            step[0] = max(1, channel.shape[0] // 50)
        channel = channel[tuple(slice(None, None, s) for s in step)]
    return float(np.percentile(channel, low)), float(np.percentile(channel, high))


def normalize(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Per channel (last axis) over all other axes: ``low`` percentile -> 0, ``high`` -> 1;
    constant channels (or a range under 1e-3) -> 0. Not clipped."""
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
    if augment:  # tiles overlap by half
        n = max(2, int(np.ceil(2.0 * size / tile)))
    else:
        overlap = min(0.5, max(0.05, overlap))
        n = 1 if size <= tile else int(np.ceil((1.0 + 2 * overlap) * size / tile))
    return np.linspace(0, size - tile, n).astype(int)


def flip_axes(j: int, i: int) -> tuple[int, ...]:
    """Test-time augmentation: the (C, Y, X) axes tile (row j, column i) is flipped along."""
    return {(0, 0): (), (0, 1): (1,), (1, 0): (2,), (1, 1): (1, 2)}[(j % 2, i % 2)]


@torch.no_grad()
def predict_tiles(net: nn.Module, image: np.ndarray, tile_overlap: float = 0.1, augment: bool = False,
                  batch_size: int = 8, progress: Callable[[Iterable], Iterable] | None = None) -> np.ndarray:
    """Normalised (H, W, C<=3) image -> (3, H, W) float32 network outputs, tiles averaged.

    ``batch_size`` tiles are read together and, on a GPU, go through the network as one batch."""
    tile = net.img_size
    height, width = image.shape[:2]
    (top, bottom), (left, right) = pad_amounts(height, tile), pad_amounts(width, tile)
    padded = torch.from_numpy(np.pad(image.transpose(2, 0, 1), ((0, 0), (top, bottom), (left, right))))
    ly, lx = padded.shape[1:]
    ys, xs = tile_starts(ly, tile, tile_overlap, augment), tile_starts(lx, tile, tile_overlap, augment)
    boxes = [(j, i, y, x) for j, y in enumerate(ys) for i, x in enumerate(xs)]
    mask = torch.from_numpy(taper_mask(tile).astype(np.float32))
    total = torch.zeros((3, ly, lx))
    weight = torch.zeros((ly, lx), dtype=torch.float64)
    device = next(net.parameters()).device
    starts = range(0, len(boxes), batch_size)
    for start in (progress(starts) if progress is not None else starts):
        chunk = boxes[start:start + batch_size]
        flips = [flip_axes(j, i) if augment else () for j, i, _, _ in chunk]
        batch = [padded[:, y:y + tile, x:x + tile] for _, _, y, x in chunk]
        batch = [t.flip(list(f)) if f else t for t, f in zip(batch, flips)]
        if device.type == "cpu":
            # one tile per forward on a CPU: with 8 stacked ViT-L tiles the activations (and the
            # attention masks) leave the cache, and the memory-bound ops make each tile ~30 % slower
            # (measured: 17.5 vs 13.2 s per tile, 1 thread); a GPU gets the stacked batch
            out = torch.cat([net(tile_input[None]) for tile_input in batch]).float()
        else:
            out = net(torch.stack(batch).to(device)).float().cpu()
        for (_, _, y, x), pred, f in zip(chunk, out, flips):
            if f:
                pred = pred.flip(list(f))
                for axis in f:  # a flip along Y reverses the Y flow (channel 0), along X the X flow
                    pred[axis - 1] *= -1
            total[:, y:y + tile, x:x + tile] += pred * mask
            weight[y:y + tile, x:x + tile] += mask.double()
    result = (total / weight.float()).numpy()
    return result[:, top:ly - bottom, left:lx - right]


def flows_to_labels(flows: np.ndarray, niter: int = 200, cellprob_threshold: float = 0.0,
                    flow_threshold: float = 0.4, max_size_fraction: float = 0.4, min_size: int = 15) -> np.ndarray:
    """(3 | 4, *shape) network outputs (flows..., logit) -> uint32 labels (2D or 3D)."""
    labels = compute_masks(flows[:-1], flows[-1], niter=niter, cellprob_threshold=cellprob_threshold,
                           flow_threshold=flow_threshold, max_size_fraction=max_size_fraction)
    return fill_holes_and_remove_small_masks(labels, min_size=min_size).astype(np.uint32)


class CpsamInstanceSegmentation(nn.Module):
    """Raw (1, C<=3, H, W) image -> (1, 1, H, W) instance labels (float32 values 0..n), the whole
    Cellpose-SAM pipeline at native resolution (no rescaling). Weights: ``net.*``."""

    def __init__(self, cellprob_threshold: float = 0.0, flow_threshold: float = 0.4, min_size: int = 15,
                 max_size_fraction: float = 0.4, niter: int = 200, tile_overlap: float = 0.1,
                 augment: bool = False, batch_size: int = 8, **network: object):
        super().__init__()
        self.net = CpsamNet(**network)
        self.options = dict(cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold,
                            min_size=min_size, max_size_fraction=max_size_fraction, niter=niter)
        self.tiling = dict(tile_overlap=tile_overlap, augment=augment, batch_size=batch_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[0] != 1 or not 1 <= image.shape[1] <= 3:
            raise ValueError(f"expected one image shaped (1, C<=3, H, W), got {tuple(image.shape)}")
        data = normalize(image[0].detach().cpu().numpy().transpose(1, 2, 0).astype(np.float32))
        flows = predict_tiles(self.net, data, **self.tiling)
        labels = flows_to_labels(flows, **self.options)
        return torch.from_numpy(labels.astype(np.float32))[None, None]
