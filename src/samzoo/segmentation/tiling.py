"""Tile grid with halo, for images too large to encode at once.

Why: SAM encodes a 1024x1024 input; a 4096x4096 image shrunk to that size loses small cells, and
its features for the whole image would not fit in memory on small machines. Instead the image is
cut into tiles; each tile is processed together with a *halo* of surrounding context (the outer
block), and only the tile's own part (the inner block) of the result is kept, so that predictions
near tile borders still see their neighbourhood. The per-pixel decoder outputs are stitched into
full-size maps and the watershed (``ais``) then runs once on those maps, so objects crossing tile
borders are never cut. Only one tile's features exist at a time.

Geometry: inner blocks partition the image on a regular grid of ``tile_shape`` (the last row and
column may be smaller); the outer block is the inner block grown by ``halo`` on every side and
clipped to the image, so blocks at the image border have less context on the outside.

``fit_edge=True`` gives bioimageio.core's block layout instead (what a consumer of a package that
declares block and halo computes): every model window is ``tile + 2 * halo`` at native
resolution; the last window on an axis is moved back so it ends at the image edge (its inner
block then overlaps the previous one, and -- as core writes blocks in order -- owns the overlap);
and where a window reaches past the image, ``Tile.padding`` says how much to pad the clipped
``outer`` block (core pads ``symmetric``) to get the full window. ``inner`` stays a partition of
the image (the part of the image each tile's result is kept for).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError


@dataclass(frozen=True)
class Tile:
    """One tile: ``outer`` and ``inner`` are slices in image coordinates, ``inner_local`` selects
    the inner block inside the outer block (i.e. in a prediction made on ``image[outer]``)."""

    index: int
    grid_position: tuple[int, ...]
    outer: tuple[slice, ...]
    inner: tuple[slice, ...]
    inner_local: tuple[slice, ...]
    padding: tuple[tuple[int, int], ...] = ()

    @property
    def outer_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.outer)

    @property
    def inner_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.inner)


def _positive_ints(name: str, values: Sequence[int], minimum: int) -> tuple[int, ...]:
    try:
        items = tuple(values)
    except TypeError:
        raise InputError(f"{name} must be a sequence of integers, got {values!r}") from None
    if not items or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise InputError(f"{name} must be a non-empty sequence of integers, got {values!r}")
    if any(v < minimum for v in items):
        raise InputError(f"{name} values must be >= {minimum}, got {items}")
    return tuple(int(v) for v in items)


class TileGrid:
    """The tiles covering an image of ``shape`` (spatial axes only, e.g. ``(H, W)``).

    ``halo`` may be at most half the tile per axis: beyond that each block is mostly context and
    the work more than doubles, which is almost always swapped arguments, not intent.
    """

    def __init__(self, shape: Sequence[int], tile_shape: Sequence[int], halo: Sequence[int] | int = 0,
                 *, fit_edge: bool = False) -> None:
        self.fit_edge = bool(fit_edge)
        self.shape = _positive_ints("shape", shape, 1)
        self.tile_shape = _positive_ints("tile_shape", tile_shape, 1)
        halo_values = (halo,) * len(self.shape) if isinstance(halo, (int, np.integer)) else halo
        self.halo = _positive_ints("halo", halo_values, 0)
        if not len(self.shape) == len(self.tile_shape) == len(self.halo):
            raise InputError(
                f"shape {self.shape}, tile_shape {self.tile_shape} and halo {self.halo} need the same number of axes"
            )
        too_big = [(t, h) for t, h in zip(self.tile_shape, self.halo) if 2 * h > t]
        if too_big:
            raise InputError(
                f"halo {self.halo} is more than half of tile_shape {self.tile_shape}; swapped arguments?"
            )
        self.grid_shape = tuple(math.ceil(s / t) for s, t in zip(self.shape, self.tile_shape))

    def __len__(self) -> int:
        return math.prod(self.grid_shape)

    def __repr__(self) -> str:
        return (f"TileGrid(shape={self.shape}, tile_shape={self.tile_shape}, halo={self.halo}"
                + (", fit_edge=True)" if self.fit_edge else ")"))

    def tile(self, index: int) -> Tile:
        """Tile number ``index`` in row-major order over the grid."""
        if not 0 <= index < len(self):
            raise InputError(f"tile index {index} outside 0..{len(self) - 1}")
        position = tuple(int(p) for p in np.unravel_index(index, self.grid_shape))
        outer, inner, local, padding = [], [], [], []
        for p, n, size, tile, halo in zip(position, self.grid_shape, self.shape, self.tile_shape, self.halo):
            start, stop = p * tile, min((p + 1) * tile, size)
            if self.fit_edge:
                last_start = max(size - tile, 0)  # the last window ends at the image edge
                window_start = last_start if p == n - 1 else start
                if p == n - 1:
                    start = last_start
                elif p == n - 2:
                    stop = min(stop, last_start)
                want_start, want_stop = window_start - halo, window_start + tile + halo
            else:
                want_start, want_stop = start - halo, stop + halo
            outer_start, outer_stop = max(want_start, 0), min(want_stop, size)
            inner.append(slice(start, stop))
            outer.append(slice(outer_start, outer_stop))
            local.append(slice(start - outer_start, stop - outer_start))
            padding.append((outer_start - want_start, want_stop - outer_stop) if self.fit_edge else (0, 0))
        return Tile(index, position, tuple(outer), tuple(inner), tuple(local), tuple(padding))

    def __iter__(self) -> Iterator[Tile]:
        return (self.tile(i) for i in range(len(self)))


def pad_window(block: np.ndarray, padding: Sequence[tuple[int, int]]) -> np.ndarray:
    """A clipped ``outer`` block padded to its full window (``Tile.padding`` on the leading spatial
    axes, trailing axes such as channels untouched), ``symmetric`` as bioimageio.core pads."""
    if not any(before or after for before, after in padding):
        return block
    widths = [tuple(int(v) for v in p) for p in padding] + [(0, 0)] * (block.ndim - len(padding))
    return np.pad(block, widths, mode="symmetric")


def crop_padding(prediction: np.ndarray, padding: Sequence[tuple[int, int]]):
    """The part of a prediction on a padded window (spatial axes trailing) inside the image."""
    if not any(before or after for before, after in padding):
        return prediction
    lead = (slice(None),) * (prediction.ndim - len(padding))
    return prediction[lead + tuple(slice(b, prediction.shape[prediction.ndim - len(padding) + i] - a)
                                   for i, (b, a) in enumerate(padding))]


def iter_tiles(
    shape: Sequence[int], tile_shape: Sequence[int], halo: Sequence[int] | int = 0
) -> Iterator[Tile]:
    """Iterate over the tiles of ``TileGrid(shape, tile_shape, halo)``."""
    return iter(TileGrid(shape, tile_shape, halo))


def stitch_into(out: np.ndarray, tile_prediction: np.ndarray, tile: Tile) -> None:
    """Write the inner part of a prediction made on the tile's outer block into ``out``.

    The spatial axes are the trailing ones; leading axes (e.g. decoder channels) must agree, so
    ``out`` of shape ``(3, H, W)`` takes predictions of shape ``(3, *tile.outer_shape)``.
    """
    if not (hasattr(out, "shape") and hasattr(out, "ndim") and hasattr(out, "__setitem__")):
        raise InputError(f"output must be a writable array, got {type(out).__name__}")
    ndim = len(tile.outer)
    prediction = np.asarray(tile_prediction)
    if prediction.ndim < ndim or tuple(prediction.shape[prediction.ndim - ndim :]) != tile.outer_shape:
        raise InputError(
            f"tile prediction of shape {prediction.shape} does not end with the outer block shape {tile.outer_shape}"
        )
    if out.ndim != prediction.ndim or out.shape[: out.ndim - ndim] != prediction.shape[: prediction.ndim - ndim]:
        raise InputError(
            f"output of shape {out.shape} and tile prediction of shape {prediction.shape} differ in their leading axes"
        )
    spatial = out.shape[out.ndim - ndim :]
    if any(s.stop > size for s, size in zip(tile.inner, spatial)):
        raise InputError(f"tile {tile.inner} lies outside the output's spatial shape {spatial}")
    lead = (slice(None),) * (out.ndim - ndim)
    out[lead + tile.inner] = prediction[lead + tile.inner_local]


def apply_tiled(
    function: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile_shape: Sequence[int],
    halo: Sequence[int] | int = 0,
    *,
    spatial_ndim: int = 2,
    progress: bool = False,
) -> np.ndarray:
    """Run ``function`` on each outer block of ``image`` and stitch the inner parts.

    The first ``spatial_ndim`` axes of ``image`` are spatial (so an ``(H, W, 3)`` image is cut
    along H and W); ``function`` receives ``image[tile.outer]`` and returns an array whose
    trailing axes are the outer block's spatial shape (e.g. ``(3, h, w)`` decoder outputs). The
    output is allocated from the first result, so only one tile's intermediate results exist at a
    time. For any ``function`` whose output at a pixel depends only on inputs within ``halo``, the
    result equals running ``function`` on the whole image.
    """
    image = np.asarray(image)
    if not 1 <= spatial_ndim <= image.ndim:
        raise InputError(f"spatial_ndim {spatial_ndim} does not fit an image with {image.ndim} axes")
    grid = TileGrid(image.shape[:spatial_ndim], tile_shape, halo)
    out: np.ndarray | None = None
    for tile in tqdm(grid, total=len(grid), desc="tiles", disable=not progress):
        prediction = np.asarray(function(image[tile.outer]))
        if out is None:
            leading = prediction.shape[: max(prediction.ndim - spatial_ndim, 0)]
            out = np.zeros(leading + grid.shape, dtype=prediction.dtype)
        stitch_into(out, prediction, tile)
    assert out is not None  # a grid always has at least one tile
    return out



def blend_weights(tile: Tile, shape: Sequence[int], halo: Sequence[int], floor: float = 1e-3) -> np.ndarray:
    """Per-pixel weights over a tile's outer block for blending overlapping tile predictions.

    Along each axis the weight ramps linearly from ``floor`` at an outer edge that has a
    neighbouring tile to 1 at ``2 * halo`` inside it (the width of the overlap with that
    neighbour), and is 1 at an image border. Neighbouring outer blocks overlap by ``2 * halo``,
    so a blended map crosses from one tile's prediction to the next one's gradually instead of
    switching at the inner-block edge, which is what makes tile seams invisible.
    """
    factors = []
    for axis, (outer, size, h) in enumerate(zip(tile.outer, shape, halo)):
        n = outer.stop - outer.start
        ramp = np.ones(n, dtype=np.float32)
        width = 2 * int(h)
        if width > 0:
            position = np.arange(n, dtype=np.float32)
            rising = np.clip((position + 0.5) / width, floor, 1.0)
            if outer.start > 0:
                ramp = np.minimum(ramp, rising)
            if outer.stop < size:
                ramp = np.minimum(ramp, rising[::-1])
        shape_1d = [1] * len(tile.outer)
        shape_1d[axis] = n
        factors.append(ramp.reshape(shape_1d))
    weights = factors[0]
    for factor in factors[1:]:
        weights = weights * factor
    return weights


class BlendedMap:
    """Accumulates weighted tile predictions (``(C, *outer_shape)``) into a ``(C, *shape)`` map:
    ``add`` each tile's prediction on its outer block, ``result`` divides by the summed weights."""

    def __init__(self, channels: int, shape: Sequence[int], halo: Sequence[int]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.halo = tuple(int(h) for h in halo)
        self.total = np.zeros((channels, *self.shape), dtype=np.float32)
        self.weight = np.zeros(self.shape, dtype=np.float32)

    def add(self, prediction: np.ndarray, tile: Tile) -> None:
        prediction = np.asarray(prediction, dtype=np.float32)
        if prediction.shape[1:] != tile.outer_shape or prediction.shape[0] != self.total.shape[0]:
            raise InputError(f"tile prediction of shape {prediction.shape} does not fit "
                             f"({self.total.shape[0]}, *{tile.outer_shape})")
        weights = blend_weights(tile, self.shape, self.halo)
        self.total[(slice(None), *tile.outer)] += prediction * weights
        self.weight[tile.outer] += weights

    def result(self) -> np.ndarray:
        if (self.weight <= 0).any():
            raise InputError("some pixels are covered by no tile")
        return self.total / self.weight
