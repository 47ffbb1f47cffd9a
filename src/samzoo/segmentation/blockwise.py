"""Blockwise instance segmentation of arrays larger than memory, with labels consistent across blocks.

Why not the in-memory path: a 20,000² image holds 1.6 GB of uint32 labels and 4.8 GB of float32
decoder maps; an EM volume many times that. Here every step touches one block (plus a halo) at
a time, so peak memory is set by the block size, not the image; intermediate results live in a
zarr scratch store next to the output, and labels are written chunk by chunk.

Passes (each a loop over blocks = one model tile of one plane; ``Executor`` runs them in this
process or on a dask.distributed cluster, see ``distributed``):

1. maps: the family's decoder maps of every model window of ``TileGrid(fit_edge=True)``
   (bioimageio.core's layout, the same as ``segment``'s tiling: the last window moved back to the
   image edge, windows past the image padded symmetric), each kept whole in the scratch store;
   then each block's core is blended from the windows over it with ``tiling.blend_weights``,
   exactly as ``segment`` blends the whole plane (``blend_tiles=False``: each block's core is
   pasted from the window that owns it). Normalisation uses whole-plane statistics computed first.
2. seeds: the family's seed mask on each core (maps read with ``context`` pixels around it, so
   smoothing sees what it sees on the whole image), 8-connected components per block, then the
   components touching across block borders are joined (union-find over the border pairs) and
   numbered by their first pixel in raster order -- exactly as ``ndimage.label`` numbers them on
   the whole plane.
3. watershed: each core is flooded from the global seeds within ``label_halo`` pixels around
   it; with ``min_size`` the small objects are erased and flooded again, as ``ais._remove_small``.
4. (volumes) objects of adjacent slices are linked by the rule of ``volume.merge_slices``,
   from overlap and size counts collected per block; then one pass writes the final ids.

Why seeds + watershed over stitched maps rather than segmenting blocks and merging objects cut
by borders: the maps are stitched exactly (blended or pasted, with the in-memory tiled path's
arithmetic), and seed labelling across borders is exact, so the only
difference to one watershed over the whole plane is a flood that would reach a core pixel along
a path leaving the ``label_halo`` window -- impossible for objects smaller than the halo.
Block-merge heuristics instead change labels wherever an object crosses a border.
``tests/test_blockwise.py`` checks identical labels against ``segment``.

Family contract (``BlockModel``, made by ``FamilySpec.block_model``): ``n_maps``, ``img_size``,
``context``, ``min_size``, ``tiling``, ``intensity_stats``, ``predict_maps`` and
``watershed_inputs`` (μSAM: ``families/microsam/blocks.py``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import watershed
from tqdm.auto import tqdm

from ..errors import InputError
from ..stores import ArraySource, LabelWriter, Location, create_labels, mark_complete, output_state, remove_output
from .preprocess import _layout_3d
from .tiling import TileGrid, blend_weights, crop_padding, pad_window
from .volume import match_from_counts

_EIGHT = np.ones((3, 3), dtype=bool)


class BlockModel(Protocol):
    """What a model family provides for blockwise segmentation (μSAM: ``AisBlockModel``).

    Maps are any per-pixel float maps (``n_maps`` channels) from which the family's labels follow
    by a seeded watershed: ``watershed_inputs(maps)`` -> (foreground mask, seed mask, height
    map), each needing at most ``context`` pixels of maps around a pixel. ``tiling`` gives the
    block grid (tile, halo) with ``img_size`` the model's input side; ``intensity_stats`` the
    whole-plane values its normalisation needs; ``min_size`` objects smaller are flooded away.
    For whole images (batches): ``fits_whole(shape)`` and ``labels_from_maps(maps)``.
    """

    family: str
    n_maps: int
    img_size: int
    context: int
    min_size: int
    batch_size: int

    def tiling(self, tile_shape=None, halo=None) -> tuple[tuple[int, int], tuple[int, int]]: ...

    def fits_whole(self, shape: tuple[int, ...]) -> bool: ...

    def labels_from_maps(self, maps: np.ndarray) -> np.ndarray: ...

    def intensity_stats(self, read: Callable[[slice, slice], np.ndarray], shape: tuple[int, ...],
                        dtype: np.dtype) -> dict[str, Any]: ...

    def predict_maps(self, blocks: Sequence[np.ndarray], stats: Sequence[dict[str, Any]]) -> list[np.ndarray]: ...

    def watershed_inputs(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


# ------------------------------------------------------------------------------------ executors


class SerialExecutor:
    """Runs block tasks one after the other in this process."""

    workers = 1

    def share(self, value: Any) -> Any:
        return value

    def map(self, function: Callable, items: Sequence[Any], *, desc: str, progress: bool, **kwargs) -> list[Any]:
        return [function(item, **kwargs) for item in tqdm(items, desc=desc, disable=not progress, leave=False)]


def _resolve(value: Any) -> Any:
    return value


# ------------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class Layout:
    """How the array's axes are read: ``planes`` 2D planes (volume slices, or 1) of ``plane_shape``,
    ``channels`` True for (H, W, C) images."""

    volume: bool
    channels: bool
    planes: int
    plane_shape: tuple[int, int]

    @property
    def labels_shape(self) -> tuple[int, ...]:
        return ((self.planes,) if self.volume else ()) + self.plane_shape

    @property
    def axes(self) -> str:
        return "zyx" if self.volume else "yx"

    def index(self, plane: int, rows: slice, cols: slice, *, for_labels: bool = False) -> tuple:
        """Index of a plane's (rows, cols) block in the input (or, ``for_labels``, in the labels)."""
        lead = (plane,) if self.volume else ()
        tail = (slice(None),) if (self.channels and not for_labels) else ()
        return lead + (rows, cols) + tail


def layout_of(shape: tuple[int, ...], is_volume: bool | None) -> Layout:
    """2D ``(H, W)``, ``(H, W, C)`` with C <= 4, or a volume ``(Z, H, W)``."""
    if len(shape) == 2:
        return Layout(False, False, 1, (shape[0], shape[1]))
    if len(shape) == 3:
        kind = _layout_3d(tuple(shape), is_volume)
        if kind == "volume":
            return Layout(True, False, shape[0], (shape[1], shape[2]))
        if kind == "last":
            return Layout(False, True, 1, (shape[0], shape[1]))
        raise InputError(f"array of shape {shape}: channel-first images are not supported blockwise; "
                         "store them as (H, W, C) or pass a (Z, H, W) volume with --volume")
    raise InputError(f"blockwise segmentation takes (H, W), (H, W, C) or (Z, H, W) arrays, got shape {shape}")


@dataclass(frozen=True)
class Block:
    index: int
    plane: int
    rows: slice
    cols: slice


@dataclass(frozen=True)
class Context:
    """Everything a block task needs; small and picklable (the model travels separately)."""

    source: ArraySource
    layout: Layout
    scratch: str
    tile_shape: tuple[int, int]
    halo: tuple[int, int]
    label_halo: int
    n_maps: int
    torch_threads: int | None = None


@dataclass(frozen=True)
class ModelTile:
    """One model window of one plane: ``index`` is its row in the scratch ``tile_maps`` store,
    ``tile`` its index in the plane's ``TileGrid(fit_edge=True)``."""

    index: int
    plane: int
    tile: int


def _expand(s: slice, by: int, size: int) -> slice:
    return slice(max(s.start - by, 0), min(s.stop + by, size))


def _local(inner: slice, outer: slice) -> slice:
    return slice(inner.start - outer.start, inner.stop - outer.start)


def _scratch(ctx: Context, name: str):
    import zarr

    return zarr.open_array(str(Path(ctx.scratch) / name), mode="r+")


def _set_threads(ctx: Context) -> None:
    if ctx.torch_threads:
        import torch

        if torch.get_num_threads() != ctx.torch_threads:
            torch.set_num_threads(ctx.torch_threads)


# ------------------------------------------------------------------------------------ block tasks
# Module-level functions of (block, ctx, ...): dask pickles them by name. Each writes only its
# own block's core, so concurrent tasks never touch the same chunk, and rerunning one (after a
# worker failure) rewrites the same values.


def _task_stats(plane: int, ctx: Context, model: BlockModel) -> dict[str, Any]:
    layout, source = ctx.layout, ctx.source
    return model.intensity_stats(lambda r, c: source.read(layout.index(plane, r, c)),
                                 layout.plane_shape, source.dtype)


def _model_grid(ctx: Context) -> TileGrid:
    """The model windows of a plane (bioimageio.core's layout, as ``segment`` tiles)."""
    return TileGrid(ctx.layout.plane_shape, ctx.tile_shape, ctx.halo, fit_edge=True)


def _task_maps(blocks: Sequence[Block], ctx: Context, model: BlockModel, stats: list[dict[str, Any]]) -> int:
    """Decoder maps of a group of blocks (one encoder batch); returns the number of blocks done."""
    _set_threads(ctx)
    layout = ctx.layout
    grid = _model_grid(ctx)
    parts = [(b, t) for b in blocks for t in _model_tiles(grid, b)]
    raw = [pad_window(np.asarray(ctx.source.read(layout.index(b.plane, *t.outer))), t.padding) for b, t in parts]
    maps = model.predict_maps(raw, [stats[b.plane] for b, _ in parts])
    store, done = _scratch(ctx, "maps"), _scratch(ctx, "maps_done")
    cores: dict[int, np.ndarray] = {}
    for (b, t), m in zip(parts, maps):
        core = cores.setdefault(b.index, np.zeros((m.shape[0], b.rows.stop - b.rows.start,
                                                   b.cols.stop - b.cols.start), dtype=store.dtype))
        m = crop_padding(m, t.padding)
        rows = slice(max(b.rows.start, t.inner[0].start), min(b.rows.stop, t.inner[0].stop))
        cols = slice(max(b.cols.start, t.inner[1].start), min(b.cols.stop, t.inner[1].stop))
        core[:, _local(rows, b.rows), _local(cols, b.cols)] = m[:, _local(rows, t.outer[0]), _local(cols, t.outer[1])]
    for b in blocks:
        store[(slice(None),) + layout.index(b.plane, b.rows, b.cols, for_labels=True)] = cores[b.index]
        done[b.index] = 1  # after the data: a block marked done is complete
    return len(blocks)


def _task_tile_maps(tiles: Sequence[ModelTile], ctx: Context, model: BlockModel, stats: list[dict[str, Any]]) -> int:
    """Decoder maps of a group of model windows (one encoder batch), each kept whole (its outer
    block inside the image) in the ``tile_maps`` store for the blend pass; returns the count."""
    _set_threads(ctx)
    layout, grid = ctx.layout, _model_grid(ctx)
    windows = [grid.tile(m.tile) for m in tiles]
    raw = [pad_window(np.asarray(ctx.source.read(layout.index(m.plane, *t.outer))), t.padding)
           for m, t in zip(tiles, windows)]
    maps = model.predict_maps(raw, [stats[m.plane] for m in tiles])
    store, done = _scratch(ctx, "tile_maps"), _scratch(ctx, "tiles_done")
    for m, t, values in zip(tiles, windows, maps):
        oh, ow = t.outer_shape
        store[m.index, :, :oh, :ow] = crop_padding(values, t.padding)
        done[m.index] = 1  # after the data: a window marked done is complete
    return len(tiles)


def _covering_tiles(grid: TileGrid, block: Block) -> list:
    """The model windows whose outer block overlaps ``block``, in grid order (the order in which
    ``tiling.BlendedMap`` adds them, so the float sums are the same)."""
    found = []
    r0, c0 = block.rows.start // grid.tile_shape[0], block.cols.start // grid.tile_shape[1]
    for r in range(max(r0 - 2, 0), min(r0 + 3, grid.grid_shape[0])):
        for c in range(max(c0 - 2, 0), min(c0 + 3, grid.grid_shape[1])):
            tile = grid.tile(int(np.ravel_multi_index((r, c), grid.grid_shape)))
            rows, cols = tile.outer
            if rows.start < block.rows.stop and block.rows.start < rows.stop \
                    and cols.start < block.cols.stop and block.cols.start < cols.stop:
                found.append(tile)
    return found


def _task_blend(block: Block, ctx: Context) -> None:
    """A block's core of the blended maps: the weighted mean of every window covering it
    (``tiling.blend_weights``), exactly as ``BlendedMap`` computes it on the whole plane."""
    grid = _model_grid(ctx)
    tile_store = _scratch(ctx, "tile_maps")
    shape = (block.rows.stop - block.rows.start, block.cols.stop - block.cols.start)
    total = np.zeros((ctx.n_maps, *shape), dtype=np.float32)
    weight = np.zeros(shape, dtype=np.float32)
    for tile in _covering_tiles(grid, block):
        rows = slice(max(block.rows.start, tile.outer[0].start), min(block.rows.stop, tile.outer[0].stop))
        cols = slice(max(block.cols.start, tile.outer[1].start), min(block.cols.stop, tile.outer[1].stop))
        in_tile = (_local(rows, tile.outer[0]), _local(cols, tile.outer[1]))
        in_block = (_local(rows, block.rows), _local(cols, block.cols))
        values = np.asarray(tile_store[(block.plane * len(grid) + tile.index, slice(None)) + in_tile], dtype=np.float32)
        weights = blend_weights(tile, ctx.layout.plane_shape, ctx.halo)[in_tile]
        total[(slice(None),) + in_block] += values * weights
        weight[in_block] += weights
    store, done = _scratch(ctx, "maps"), _scratch(ctx, "maps_done")
    store[(slice(None),) + ctx.layout.index(block.plane, block.rows, block.cols, for_labels=True)] = total / weight
    done[block.index] = 1


def _model_tiles(grid: TileGrid, block: Block) -> list:
    """The model tiles (bioimageio.core's layout, ``TileGrid(fit_edge=True)``) whose inner parts
    cover ``block`` (a cell of the regular block grid): the one at the same grid position, plus,
    next to the image end, the last tile moved back to the edge, which owns part of the block."""
    found = []
    starts = [block.rows.start // grid.tile_shape[0], block.cols.start // grid.tile_shape[1]]
    for r in range(starts[0], min(starts[0] + 2, grid.grid_shape[0])):
        for c in range(starts[1], min(starts[1] + 2, grid.grid_shape[1])):
            tile = grid.tile(int(np.ravel_multi_index((r, c), grid.grid_shape)))
            (ti_r, ti_c) = tile.inner
            if ti_r.start < block.rows.stop and block.rows.start < ti_r.stop \
                    and ti_c.start < block.cols.stop and block.cols.start < ti_c.stop:
                found.append(tile)
    return found


def _read_maps(ctx: Context, plane: int, rows: slice, cols: slice) -> np.ndarray:
    store = _scratch(ctx, "maps")
    return np.asarray(store[(slice(None),) + ctx.layout.index(plane, rows, cols, for_labels=True)])


def _watershed_inputs_around(ctx: Context, model: BlockModel, plane: int, rows: slice, cols: slice):
    """Mask, seeds and height map on (rows, cols), from maps read with the family's context."""
    height, width = ctx.layout.plane_shape
    r, c = _expand(rows, model.context, height), _expand(cols, model.context, width)
    mask, seeds, heightmap = model.watershed_inputs(_read_maps(ctx, plane, r, c))
    crop = (_local(rows, r), _local(cols, c))
    return mask[crop], seeds[crop], heightmap[crop]


def _task_seeds(block: Block, ctx: Context, model: BlockModel) -> tuple[int, np.ndarray]:
    """Local seed components of the core -> (count, first-pixel key of each component)."""
    _, seeds, _ = _watershed_inputs_around(ctx, model, block.plane, block.rows, block.cols)
    local, count = ndimage.label(seeds, structure=_EIGHT)
    _scratch(ctx, "seeds_local")[ctx.layout.index(block.plane, block.rows, block.cols, for_labels=True)] = local
    ids, first = np.unique(local.ravel(), return_index=True)
    width = ctx.layout.plane_shape[1]
    y, x = np.divmod(first[ids > 0], local.shape[1])
    plane_pixels = ctx.layout.plane_shape[0] * width
    keys = block.plane * plane_pixels + (y + block.rows.start) * width + (x + block.cols.start)
    return int(count), keys.astype(np.int64)


def _task_seed_edges(block: Block, ctx: Context, offsets: np.ndarray, n_cols: int) -> np.ndarray:
    """Pairs of nodes (block offset + local id) of seed components that touch across the core's
    bottom and right borders (8-connectivity), as (K, 2) int64."""
    height, width = ctx.layout.plane_shape
    th, tw = ctx.tile_shape
    rows = slice(block.rows.start, min(block.rows.stop + 1, height))
    cols = slice(max(block.cols.start - 1, 0), min(block.cols.stop + 1, width))
    local = np.asarray(_scratch(ctx, "seeds_local")[ctx.layout.index(block.plane, rows, cols, for_labels=True)])
    by = (np.arange(rows.start, rows.stop) // th)[:, None]
    bx = (np.arange(cols.start, cols.stop) // tw)[None, :]
    plane_blocks = int(np.ceil(height / th)) * n_cols
    owner = block.plane * plane_blocks + by * n_cols + bx
    node = np.where(local > 0, offsets[owner] + local, 0).astype(np.int64)
    pairs = []
    h, w = node.shape
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        x0, x1 = max(-dx, 0), w - max(dx, 0)
        a, b = node[: h - dy, x0:x1], node[dy:, x0 + dx: x1 + dx]
        touching = (a > 0) & (b > 0) & (a != b)
        if touching.any():
            pairs.append(np.stack([a[touching], b[touching]], axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def _task_seed_ids(block: Block, ctx: Context, lookup: np.ndarray) -> None:
    """Write the core's global seed ids (``lookup`` maps this block's local ids)."""
    index = ctx.layout.index(block.plane, block.rows, block.cols, for_labels=True)
    local = np.asarray(_scratch(ctx, "seeds_local")[index])
    _scratch(ctx, "seeds")[index] = lookup[local]


def _task_watershed(block: Block, ctx: Context, model: BlockModel, markers_from: str, target: str,
                    small: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flood the core from the markers within ``label_halo``; write it; return (ids, sizes)."""
    height, width = ctx.layout.plane_shape
    rows, cols = _expand(block.rows, ctx.label_halo, height), _expand(block.cols, ctx.label_halo, width)
    mask, _, heightmap = _watershed_inputs_around(ctx, model, block.plane, rows, cols)
    markers = np.asarray(_scratch(ctx, markers_from)[ctx.layout.index(block.plane, rows, cols, for_labels=True)])
    if small is not None:
        markers = np.where(np.isin(markers, small), 0, markers)
    labels = watershed(heightmap, markers=markers, mask=mask)
    core = labels[_local(block.rows, rows), _local(block.cols, cols)].astype(np.uint32, copy=False)
    _scratch(ctx, target)[ctx.layout.index(block.plane, block.rows, block.cols, for_labels=True)] = core
    ids, sizes = np.unique(core, return_counts=True)
    keep = ids > 0
    return ids[keep].astype(np.int64), sizes[keep].astype(np.int64)


def _task_overlaps(block: Block, ctx: Context, source_name: str) -> np.ndarray:
    """(K, 3) int64 rows (id in plane z, id in plane z+1, overlapping pixels) of the core."""
    store = _scratch(ctx, source_name)
    lower = np.asarray(store[ctx.layout.index(block.plane, block.rows, block.cols, for_labels=True)])
    upper = np.asarray(store[ctx.layout.index(block.plane + 1, block.rows, block.cols, for_labels=True)])
    both = (lower > 0) & (upper > 0)
    if not both.any():
        return np.empty((0, 3), dtype=np.int64)
    pairs, counts = np.unique(np.stack([lower[both], upper[both]], axis=1).astype(np.int64), axis=0,
                              return_counts=True)
    return np.concatenate([pairs, counts[:, None]], axis=1)


def _task_write(block: Block, ctx: Context, source_name: str, lookup: np.ndarray, writer: LabelWriter) -> None:
    index = ctx.layout.index(block.plane, block.rows, block.cols, for_labels=True)
    ids = np.asarray(_scratch(ctx, source_name)[index])
    writer.write(index, lookup[ids].astype(np.uint32, copy=False))


# ------------------------------------------------------------------------------------ driver


@dataclass
class BlockwiseResult:
    output: Location
    shape: tuple[int, ...]
    n_objects: int
    n_blocks: int
    seconds: float
    resumed_maps: int = 0
    """Map tasks' units taken from an interrupted earlier run: model windows (blending) or blocks."""
    skipped: bool = False
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


def _create_scratch(path: Path, layout: Layout, tile: tuple[int, int], n_maps: int, n_blocks: int,
                    fingerprint: dict[str, Any], maps_dtype: str, windows: tuple[int, tuple[int, int]] | None = None
                    ) -> None:
    """Scratch arrays; an existing scratch store of the same job is kept (resume). ``windows``
    (count, window shape): also a store of whole model windows, one chunk each (blending)."""
    import zarr

    marker = path / "samzoo_job.json"
    if marker.is_file() and json.loads(marker.read_text()) == fingerprint:
        return
    if path.exists():
        shutil.rmtree(path)
    lead = (1,) if layout.volume else ()
    shape, chunks = layout.labels_shape, lead + tile
    zarr.create_array(str(path / "maps"), shape=(n_maps,) + shape, chunks=(n_maps,) + chunks, dtype=maps_dtype,
                      fill_value=0)
    for name in ("seeds_local", "seeds", "labels", "labels_sized"):
        zarr.create_array(str(path / name), shape=shape, chunks=chunks, dtype="uint32", fill_value=0)
    zarr.create_array(str(path / "maps_done"), shape=(n_blocks,), chunks=(1,), dtype="uint8", fill_value=0)
    if windows is not None:
        count, window = windows
        zarr.create_array(str(path / "tile_maps"), shape=(count, n_maps) + window, chunks=(1, n_maps) + window,
                          dtype=maps_dtype, fill_value=0)
        zarr.create_array(str(path / "tiles_done"), shape=(count,), chunks=(1,), dtype="uint8", fill_value=0)
    marker.write_text(json.dumps(fingerprint))


def _blocks(layout: Layout, tile: tuple[int, int]) -> tuple[list[Block], int]:
    grid = TileGrid(layout.plane_shape, tile, 0)
    n_cols = int(np.ceil(layout.plane_shape[1] / tile[1]))
    blocks = []
    for plane in range(layout.planes):
        for t in grid:
            blocks.append(Block(len(blocks), plane, t.inner[0], t.inner[1]))
    return blocks, n_cols


def block_tiling(model: BlockModel, plane_shape: tuple[int, int], tile_shape=None, halo=None
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    """The family's tiling used as block grid (always tiled).

    A block whose outer part (tile + 2 x halo) is smaller than the model's input would be
    upscaled for every tile: that is almost always a mistake (wrong units, chunking), so refused.
    """
    tile, halo_ = model.tiling(tile_shape, halo)
    outer = (tile[0] + 2 * halo_[0], tile[1] + 2 * halo_[1])
    if min(outer) < model.img_size:
        raise InputError(f"blocks of {tile[0]}x{tile[1]} px with halo {halo_[0]}x{halo_[1]} are smaller than the "
                         f"model's {model.img_size} px input; use --tile-shape/--halo with tile + 2 x halo >= "
                         f"{model.img_size}")
    return tile, halo_


def segment_blockwise(
    source: ArraySource,
    output: Location,
    model: BlockModel,
    *,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    label_halo: int | None = None,
    is_volume: bool | None = None,
    min_overlap: float = 0.5,
    executor: Any = None,
    fingerprint: dict[str, Any] | None = None,
    overwrite: bool = False,
    scratch: str | Path | None = None,
    keep_scratch: bool = False,
    maps_dtype: str = "float32",
    progress: bool = True,
    torch_threads: int | None = None,
    zarr_format: int = 3,
    blend_tiles: bool = True,
) -> BlockwiseResult:
    """Segment ``source`` block by block into the label store ``output`` (see the module docstring).

    ``tile_shape``/``halo``: the model tiling (default: one model input per block);
    ``label_halo``: watershed context around each block (default: the larger of 2 x halo and
    128 px; objects reaching further than this from a block may differ from one whole-plane
    watershed); ``executor``: ``SerialExecutor()`` (default) or ``distributed.DaskExecutor``;
    ``fingerprint``: what identifies this job (an existing output with another fingerprint is
    refused unless ``overwrite``; a complete one with the same is skipped; a partial one is
    resumed); ``scratch``: folder for intermediate maps (default: next to the output);
    ``blend_tiles``: blend the model windows' maps across their overlaps, as ``segment`` does by
    default (False: paste each window's core, as a bioimageio.core consumer of the package does).
    """
    start = time.perf_counter()
    executor = executor or SerialExecutor()
    layout = layout_of(source.shape, is_volume)
    tile, halo_ = block_tiling(model, layout.plane_shape, tile_shape, halo)
    label_halo = max(2 * max(halo_), 128) if label_halo is None else int(label_halo)
    if label_halo < model.context:
        raise InputError(f"label_halo {label_halo} is smaller than the {model.context} px the watershed inputs need")
    job = {"input": str(source.location), "shape": list(source.shape), "volume": layout.volume,
           "tile_shape": list(tile), "halo": list(halo_), "label_halo": label_halo, **(fingerprint or {})}
    if blend_tiles:  # pasted stores written before blending existed keep their fingerprint
        job["blend_tiles"] = True
    state = output_state(output, job)
    if state == "different":
        if not overwrite:
            raise InputError(f"output {output} already holds other data (not this job's labels); "
                             "pass --overwrite to replace it or choose another output")
        remove_output(output)
    if state == "complete" and not overwrite:
        return BlockwiseResult(output, layout.labels_shape, -1, 0, 0.0, skipped=True)
    if state == "complete":
        remove_output(output)
    if not executor_supports(executor, output):
        raise InputError(f"{output}: HDF5 files take one writer at a time; write to .zarr or .n5 with --workers")

    blocks, n_cols = _blocks(layout, tile)
    scratch_path = Path(scratch) if scratch else output.path.with_name(output.path.name + ".samzoo-scratch")
    n_windows = len(TileGrid(layout.plane_shape, tile, halo_, fit_edge=True))
    window = (tile[0] + 2 * halo_[0], tile[1] + 2 * halo_[1])
    _create_scratch(scratch_path, layout, tile, model.n_maps, len(blocks), {**job, "maps_dtype": maps_dtype},
                    maps_dtype, (layout.planes * n_windows, window) if blend_tiles else None)
    writer = create_labels(output, layout.labels_shape, ((1,) if layout.volume else ()) + tile, fingerprint=job,
                           axes=layout.axes, zarr_format=zarr_format, multiscales=source.ome_multiscales())
    ctx = Context(source, layout, str(scratch_path), tile, halo_, label_halo, model.n_maps, torch_threads)
    shared_model = executor.share(model)
    timings: dict[str, float] = {}

    def timed(name: str, function: Callable, items: Sequence[Any], **kwargs) -> list[Any]:
        t0 = time.perf_counter()
        result = executor.map(function, items, desc=name, progress=progress, ctx=ctx, **kwargs)
        timings[name] = round(time.perf_counter() - t0, 3)
        return result

    # 1. maps (resumable: blocks marked done in the scratch store are skipped)
    stats = timed("statistics", _task_stats, list(range(layout.planes)), model=shared_model)
    import zarr

    done = np.asarray(zarr.open_array(str(scratch_path / "maps_done"), mode="r")[:]).astype(bool)
    todo = [b for b in blocks if not done[b.index]]
    batch = max(1, int(getattr(model, "batch_size", 1)))
    if blend_tiles:  # every window once, then each block's core blended from the windows over it
        windows_done = np.asarray(zarr.open_array(str(scratch_path / "tiles_done"), mode="r")[:]).astype(bool)
        windows_todo = [ModelTile(p * n_windows + t, p, t) for p in range(layout.planes) for t in range(n_windows)
                        if not windows_done[p * n_windows + t]]
        groups = [windows_todo[i: i + batch] for i in range(0, len(windows_todo), batch)]
        timed("maps", _task_tile_maps, groups, model=shared_model, stats=stats)
        timed("blend", _task_blend, todo)
        resumed = int(windows_done.sum())
    else:
        resumed = len(blocks) - len(todo)
        groups = [todo[i: i + batch] for i in range(0, len(todo), batch)]
        timed("maps", _task_maps, groups, model=shared_model, stats=stats)

    # 2. seeds: local components, border joins, global ids numbered by first pixel
    seeds = timed("seeds", _task_seeds, blocks, model=shared_model)
    counts = np.array([c for c, _ in seeds], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_nodes = int(counts.sum()) + 1
    keys = np.concatenate([[-1]] + [k for _, k in seeds]).astype(np.int64)
    edges_list = timed("seed borders", _task_seed_edges, blocks, offsets=executor.share(offsets), n_cols=n_cols)
    edges = np.concatenate(edges_list) if edges_list else np.empty((0, 2), dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    first = np.full(int(component.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, component[1:], keys[1:])
    present = np.flatnonzero(first < np.iinfo(np.int64).max)
    rank = np.zeros(first.size, dtype=np.uint32)
    rank[present[np.argsort(first[present])]] = np.arange(1, present.size + 1, dtype=np.uint32)
    node_id = rank[component]
    node_id[0] = 0
    lookups = []
    for b in blocks:
        table = node_id[offsets[b.index]: offsets[b.index] + counts[b.index] + 1].copy()
        table[0] = 0
        lookups.append(table)
    timed("seed ids", _task_seed_ids_indexed, list(zip(blocks, lookups)))
    n_seeds = int(present.size)

    # 3. watershed (+ small objects erased and flooded again)
    sizes = np.zeros(n_seeds + 1, dtype=np.int64)
    for ids, counts_ in timed("watershed", _task_watershed, blocks, model=shared_model, markers_from="seeds",
                              target="labels"):
        np.add.at(sizes, ids, counts_)
    final_store = "labels"
    if model.min_size > 0:
        small = np.flatnonzero((sizes > 0) & (sizes < model.min_size))
        if small.size:
            sizes[:] = 0
            for ids, counts_ in timed("small objects", _task_watershed, blocks, model=shared_model,
                                      markers_from="labels", target="labels_sized", small=executor.share(small)):
                np.add.at(sizes, ids, counts_)
            final_store = "labels_sized"
    present_ids = np.flatnonzero(sizes > 0)
    lookup = np.zeros(n_seeds + 1, dtype=np.uint32)
    lookup[present_ids] = np.arange(1, present_ids.size + 1, dtype=np.uint32)
    n_objects = int(present_ids.size)

    # 4. volumes: link objects of adjacent slices (volume.merge_slices' rule)
    if layout.volume and layout.planes > 1:
        pairs = [b for b in blocks if b.plane < layout.planes - 1]
        rows = timed("slice links", _task_overlaps, pairs, source_name=final_store)
        overlaps = np.concatenate(rows) if rows else np.empty((0, 3), dtype=np.int64)
        lookup, n_objects = _link_slices(overlaps, sizes, lookup, n_seeds, min_overlap)

    timed("write", _task_write, blocks, source_name=final_store, lookup=executor.share(lookup), writer=writer)
    mark_complete(writer, {"samzoo_objects": n_objects})
    if not keep_scratch:
        shutil.rmtree(scratch_path, ignore_errors=True)
    return BlockwiseResult(output, layout.labels_shape, n_objects, len(blocks), time.perf_counter() - start,
                           resumed_maps=resumed, timings=timings)


def _task_seed_ids_indexed(item: tuple[Block, np.ndarray], ctx: Context) -> None:
    block, lookup = item
    _task_seed_ids(block, ctx, lookup)


def _link_slices(overlaps: np.ndarray, sizes: np.ndarray, lookup: np.ndarray, n_ids: int,
                 min_overlap: float) -> tuple[np.ndarray, int]:
    """Final ids of a volume: 2D objects joined across slices, numbered by their lowest 2D id
    (2D ids are ordered by slice, then first seed pixel: ``merge_slices``' numbering)."""
    if overlaps.size:
        keys, inverse = np.unique(overlaps[:, :2], axis=0, return_inverse=True)
        summed = np.bincount(inverse.ravel(), weights=overlaps[:, 2]).astype(np.int64)
        pairs = match_from_counts(keys[:, 0], keys[:, 1], summed, sizes, sizes, min_overlap)
    else:
        pairs = np.empty((0, 2), dtype=np.int64)
    n_nodes = n_ids + 1
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    alive = np.flatnonzero(lookup > 0)
    first = np.full(int(component.max()) + 1, n_nodes, dtype=np.int64)
    np.minimum.at(first, component[alive], alive)
    present = np.flatnonzero(first < n_nodes)
    rank = np.zeros(first.size, dtype=np.uint32)
    rank[present[np.argsort(first[present])]] = np.arange(1, present.size + 1, dtype=np.uint32)
    final = np.where(lookup > 0, rank[component], 0).astype(np.uint32)
    return final, int(present.size)


def executor_supports(executor: Any, output: Location) -> bool:
    return getattr(executor, "workers", 1) == 1 or output.kind != "hdf5"
