"""Cellpose's flow dynamics, flows from labels, and mask clean-up, in torch/numpy/scipy only.

Why our own and not ``cellpose.dynamics``: the instance-label BioImage.IO package must run where
only torch, numpy and scipy are installed, and samzoo runs the very same code in-house, so package
and ``samzoo segment`` cannot drift apart. cellpose's module also needs opencv, fastremap,
fill-voids, tifffile and (through ``cellpose.transforms``) a working torchvision. The algorithm
follows cellpose 4 step for step -- same float32 Euler integration through ``grid_sample``, same
histogram seeding and growth, same diffusion flows for the flow-error QC -- so labels agree with
``CellposeModel.eval`` (tests compare them on the same flows and on the same network weights).

Steps of :func:`compute_masks` (2D and 3D):
1. pixels with ``cellprob > cellprob_threshold`` follow the flow ``dP / 5`` for ``niter`` Euler
   steps (bilinear interpolation, positions clamped to the image);
2. a histogram of the end points is seeded at local maxima (5x5) holding more than 10 end points;
   each seed grows five times (3x3) within an 11x11 window through bins holding more than 2;
   every pixel takes the label of the bin it ended in; masks over ``max_size_fraction`` of the
   image are dropped;
3. 2D only: masks whose own diffusion flows differ from the predicted ones by more than
   ``flow_threshold`` (mean squared error) are dropped;
4. holes are filled and masks smaller than ``min_size`` pixels dropped.

This file imports only torch, numpy and scipy: it is shipped inside packages.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

HISTOGRAM_PAD = 20


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels 1..n in order of first appearance (C order), 0 kept.

    The same numbering as ``fastremap.renumber``, which cellpose uses. Non-negative integer labels
    up to a few times the pixel count go through a lookup table (one pass, no sort)."""
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if labels.dtype.kind not in "ui" or (flat.size and int(flat.min()) < 0) or top > 4 * flat.size + 1024:
        return _renumber_sorted(labels)
    first = np.full(top + 1, flat.size, np.int64)
    np.minimum.at(first, flat, np.arange(flat.size))
    present = np.nonzero(first[1:] < flat.size)[0] + 1
    lut = np.zeros(top + 1, labels.dtype)
    lut[present[np.argsort(first[present], kind="stable")]] = np.arange(1, len(present) + 1, dtype=labels.dtype)
    return lut[labels]


def _renumber_sorted(labels: np.ndarray) -> np.ndarray:
    values, first = np.unique(labels, return_index=True)  # values sorted
    nonzero = values != 0
    new = np.zeros(len(values), dtype=labels.dtype)
    appearance = np.argsort(first[nonzero], kind="stable")
    new_nonzero = np.empty(int(nonzero.sum()), dtype=labels.dtype)
    new_nonzero[appearance] = np.arange(1, len(appearance) + 1, dtype=labels.dtype)
    new[nonzero] = new_nonzero
    return new[np.searchsorted(values, labels)]


def _max_pool_same(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Max over a kernel^ndim neighbourhood, same size (borders see only what lies inside)."""
    ndim = x.dim() - 1  # x: (N, *spatial)
    pool = F.max_pool2d if ndim == 2 else F.max_pool3d
    return pool(x.unsqueeze(1), kernel, stride=1, padding=kernel // 2).squeeze(1)


# ----------------------------------------------------------------------------------------------
# 1. Euler integration


def follow_flows(dP: np.ndarray, inds: tuple[np.ndarray, ...], niter: int = 200) -> torch.Tensor:
    """Final positions (ndim, n) after ``niter`` Euler steps of the pixels ``inds`` along ``dP``.

    Positions are normalised to grid_sample's [-1, 1] with (size - 1) as cellpose does; the
    arithmetic is float32 in the same order, so end points equal cellpose's."""
    shape = dP.shape[1:]
    ndim = len(shape)
    n = len(inds[0])
    pt = torch.zeros((*[1] * ndim, n, ndim), dtype=torch.float32)
    im = torch.zeros((1, ndim, *shape), dtype=torch.float32)
    for d in range(ndim):  # grid_sample wants (x, y[, z]) order
        pt[..., ndim - d - 1] = torch.from_numpy(np.asarray(inds[d])).to(torch.float32)
        im[0, ndim - d - 1] = torch.from_numpy(np.ascontiguousarray(dP[d])).to(torch.float32)
    extent = np.array(shape)[::-1].astype("float") - 1
    for k in range(ndim):
        im[:, k] *= 2.0 / extent[k]
        pt[..., k] /= extent[k]
    pt *= 2
    pt -= 1
    # (1, ndim, *[1]*(ndim-1), n) -> the layout of pt; the same float32 additions as cellpose's
    # per-axis loop, done for all axes in one pass
    order = (0, *range(2, ndim + 2), 1)
    for _ in range(niter):
        step = F.grid_sample(im, pt, align_corners=False)
        pt += step.permute(order)
        pt.clamp_(-1.0, 1.0)
    pt += 1
    pt *= 0.5
    for k in range(ndim):
        pt[..., k] *= extent[k]
    return pt.reshape(n, ndim)[:, list(range(ndim))[::-1]].T


# ----------------------------------------------------------------------------------------------
# 2. histogram seeding


def masks_from_endpoints(pt: torch.Tensor, inds: tuple[np.ndarray, ...], shape: tuple[int, ...],
                         max_size_fraction: float = 0.4) -> np.ndarray:
    """Instance labels from the integer end points ``pt`` (ndim, n) of the pixels ``inds``."""
    ndim = len(shape)
    pad = HISTOGRAM_PAD
    pt = pt + pad
    pt = torch.clamp(pt, min=0)
    for d in range(ndim):
        pt[d] = torch.clamp(pt[d], max=shape[d] + pad - 1)
    hshape = tuple(int(s) + 2 * pad for s in shape)
    flat_strides = [int(np.prod(hshape[d + 1:])) for d in range(ndim)]
    flat = sum(pt[d].long() * flat_strides[d] for d in range(ndim))
    hist = torch.bincount(flat, minlength=int(np.prod(hshape))).to(torch.float32).reshape(hshape)
    peak = _max_pool_same(hist.unsqueeze(0), 5).squeeze(0)
    seeds = torch.nonzero((hist - peak > -1e-6) * (hist > 10))
    dtype = np.uint16
    if len(seeds) == 0:
        return np.zeros(shape, dtype)
    counts = hist[tuple(seeds.T)]
    seeds = seeds[counts.argsort()]  # bigger seeds win overlaps below (same order as cellpose)
    n_seeds = len(seeds)
    offsets = torch.arange(-5, 6)
    grid = torch.meshgrid(ndim * [offsets], indexing="ij")
    window = sum(grid[d] * flat_strides[d] for d in range(ndim)).flatten()
    seed_flat = sum(seeds[:, d] * flat_strides[d] for d in range(ndim))
    local = hist.reshape(-1)[window[None, :] + seed_flat[:, None]].reshape(n_seeds, *[11] * ndim)
    grown = torch.zeros((n_seeds, *[11] * ndim))
    grown[(slice(None),) + (5,) * ndim] = 1
    for _ in range(5):
        grown = _max_pool_same(grown, 3) * (local > 2)
    pixels = torch.nonzero(grown)
    owner = pixels[:, 0]
    pos = pixels[:, 1:] + seeds[owner] - 5
    flat_pos = sum(pos[:, d] * flat_strides[d] for d in range(ndim))
    label_of_bin = torch.zeros(int(np.prod(hshape)), dtype=torch.int64)
    label_of_bin.scatter_reduce_(0, flat_pos, owner + 1, reduce="amax", include_self=False)
    labels_flat = label_of_bin[flat].numpy()
    if n_seeds >= 2 ** 16:
        dtype = np.uint32
    masks = np.zeros(shape, dtype)
    masks[inds] = labels_flat
    values, sizes = np.unique(masks, return_counts=True)
    big = values[sizes > np.prod(shape) * max_size_fraction]
    big = big[big != 0]
    if len(big):
        masks[np.isin(masks, big)] = 0
    return renumber(masks)


# ----------------------------------------------------------------------------------------------
# flows from labels (training targets and the flow-error QC)


def _mask_centers(labels: np.ndarray, slices: list) -> tuple[np.ndarray, np.ndarray]:
    """Per label: the pixel at its rounded mean position, or the mask pixel nearest to it; and the
    label's bounding-box extent (sum of sides + 2), which sets the diffusion length.

    Means of all labels at once by ``bincount`` (integer sums, so the same rounding as cellpose's
    per-mask ``center_of_mass``); only labels whose mean pixel lies outside the mask (non-convex
    shapes, a few per image) look for the nearest pixel one by one."""
    n = len(slices)
    starts = np.array([[s.start for s in slc] for slc in slices], np.int64)
    extents = np.array([sum(s.stop - s.start for s in slc) + 2 for slc in slices], np.int64)
    flat = labels.ravel()
    inside = flat > 0
    owner = flat[inside].astype(np.int64) - 1
    coords = np.nonzero(labels.reshape(labels.shape))
    counts = np.bincount(owner, minlength=n)
    centers = np.zeros((n, labels.ndim), np.int64)
    for d, c in enumerate(coords):
        local = c.astype(np.int64) - starts[owner, d]
        centers[:, d] = starts[:, d] + np.round(np.bincount(owner, weights=local, minlength=n) / counts).astype(np.int64)
    missed = np.nonzero(labels[tuple(centers.T)] != np.arange(1, n + 1))[0]
    for i in missed:
        slc = slices[i]
        local_coords = np.nonzero(labels[slc] == i + 1)
        mean = centers[i] - starts[i]
        nearest = sum((c - m) ** 2 for c, m in zip(local_coords, mean)).argmin()
        centers[i] = [s.start + c[nearest] for s, c in zip(slc, local_coords)]
    return centers, extents


def masks_to_flows(labels: np.ndarray, niter: int | None = None) -> np.ndarray:
    """Unit flow field (2, Ly, Lx) pointing towards each mask's centre, by heat diffusion.

    Heat is injected at the centre pixel every step and averaged over the 3x3 neighbours of the
    same mask (``2 * largest extent`` steps); the flow is the normalised central-difference
    gradient. This is cellpose's ``masks_to_flows_gpu``; ``labels`` must be numbered 1..n.

    The averaging runs on the dense image as nine shifted views weighted 0/1 (same mask or not),
    summed in cellpose's neighbour order: products with 0/1 are exact, so the result equals
    cellpose's gather over mask pixels, at a fraction of its memory traffic."""
    if labels.ndim != 2:
        raise ValueError(f"masks_to_flows takes a 2D label image, got {labels.ndim}D")
    flows = np.zeros((2, *labels.shape))
    if labels.max() == 0:
        return flows
    slices = ndimage.find_objects(labels)
    if any(s is None for s in slices):
        raise ValueError("labels must be numbered 1..n without gaps (renumber them first)")
    padded = np.pad(labels.astype(np.int64), 1)
    ly, lx = padded.shape
    offsets = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))
    inner = padded[1:-1, 1:-1]
    dtype = torch.float32 if ly * lx > 4e7 else torch.float64
    same = np.stack([(padded[1 + dy:ly - 1 + dy, 1 + dx:lx - 1 + dx] == inner) & (inner != 0) for dy, dx in offsets])
    weights = torch.from_numpy(same).to(dtype)
    centers, extents = _mask_centers(labels, slices)
    seed_y, seed_x = torch.from_numpy(centers[:, 0] + 1), torch.from_numpy(centers[:, 1] + 1)
    steps = int(2 * extents.max()) if niter is None else int(niter)
    heat = torch.zeros((ly, lx), dtype=dtype)
    views = [heat[1 + dy:ly - 1 + dy, 1 + dx:lx - 1 + dx] for dy, dx in offsets]
    total = torch.empty((ly - 2, lx - 2), dtype=dtype)
    for _ in range(steps):
        heat[seed_y, seed_x] += 1
        torch.mul(views[0], weights[0], out=total)
        for view, weight in zip(views[1:], weights[1:]):
            total.addcmul_(view, weight)
        torch.div(total, 9, out=views[0])
    y, x = np.nonzero(inner)
    grad_y = (heat[y + 2, x + 1] - heat[y, x + 1]).numpy().astype(np.float64)
    grad_x = (heat[y + 1, x + 2] - heat[y + 1, x]).numpy().astype(np.float64)
    mu = np.stack((grad_y, grad_x))
    mu /= 1e-60 + (mu ** 2).sum(axis=0) ** 0.5
    flows[:, y, x] = mu
    return flows


# ----------------------------------------------------------------------------------------------
# 3. flow-error QC and 4. clean-up


def flow_errors(labels: np.ndarray, dP: np.ndarray) -> np.ndarray:
    """Per mask (1..n): mean squared difference between its diffusion flows and ``dP / 5``."""
    err = ((masks_to_flows(labels) - dP / 5.0) ** 2).sum(axis=0)
    n = int(labels.max())
    sums = np.bincount(labels.ravel(), weights=err.ravel(), minlength=n + 1)[1:]
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return sums / np.maximum(counts, 1)


def remove_bad_flow_masks(labels: np.ndarray, dP: np.ndarray, threshold: float = 0.4) -> np.ndarray:
    bad = 1 + np.nonzero(flow_errors(labels, dP) > threshold)[0]
    if len(bad):
        labels[np.isin(labels, bad)] = 0
    return renumber(labels)


def _label_sizes(labels: np.ndarray) -> np.ndarray:
    """Pixel count per label value 0..max (labels are non-negative integers)."""
    return np.bincount(labels.ravel())


def remove_small_masks(labels: np.ndarray, min_size: int) -> np.ndarray:
    sizes = _label_sizes(labels)
    small = np.nonzero(sizes < min_size)[0]
    small = small[(small != 0) & (sizes[small] > 0)]
    if len(small):
        labels = labels.copy()
        labels[np.isin(labels, small)] = 0
    return renumber(labels)


def fill_holes_and_remove_small_masks(labels: np.ndarray, min_size: int = 15) -> np.ndarray:
    """Drop masks under ``min_size`` pixels, fill each mask's holes (in label order; a hole may
    swallow a smaller mask inside it, as in cellpose), drop small masks again."""
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D or 3D, got {labels.ndim}D")
    if min_size > 0:
        labels = remove_small_masks(labels, min_size)
    j = 0
    for i, slc in enumerate(ndimage.find_objects(labels)):
        if slc is not None:
            filled = ndimage.binary_fill_holes(labels[slc] == i + 1)
            labels[slc][filled] = j + 1
            j += 1
    if min_size > 0:
        labels = remove_small_masks(labels, min_size)
    return labels


def compute_masks(dP: np.ndarray, cellprob: np.ndarray, niter: int = 200, cellprob_threshold: float = 0.0,
                  flow_threshold: float = 0.4, max_size_fraction: float = 0.4) -> np.ndarray:
    """Instance labels from flows ``dP`` ((2|3), *shape) and cell-probability logits (*shape).

    Steps 1-3 of the module docstring; the flow-error QC runs for 2D only (as cellpose) and is
    off for ``flow_threshold`` <= 0. Hole filling and ``min_size`` are left to the caller."""
    foreground = cellprob > cellprob_threshold
    if not foreground.any():
        return np.zeros(cellprob.shape, np.uint16)
    inds = np.nonzero(foreground)
    end = follow_flows(dP * foreground / 5.0, inds, niter=niter).int()
    masks = masks_from_endpoints(end, inds, cellprob.shape, max_size_fraction=max_size_fraction)
    if cellprob.ndim == 2 and masks.max() > 0 and flow_threshold is not None and flow_threshold > 0:
        masks = remove_bad_flow_masks(masks, dP, threshold=flow_threshold)
    if masks.max() < 2 ** 16 and masks.dtype != np.uint16:
        masks = masks.astype(np.uint16)
    return masks
