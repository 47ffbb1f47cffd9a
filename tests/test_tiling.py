import numpy as np
import pytest
from scipy import ndimage

from samzoo.errors import InputError
from samzoo.segmentation.tiling import TileGrid, apply_tiled, iter_tiles, stitch_into


def test_inner_blocks_partition_the_image_and_outer_blocks_add_the_halo():
    shape, tile, halo = (50, 37), (16, 12), (4, 3)
    grid = TileGrid(shape, tile, halo)
    assert grid.grid_shape == (4, 4) and len(grid) == 16
    coverage = np.zeros(shape, int)
    for t in grid:
        coverage[t.inner] += 1
        for inner, outer, local, size, h in zip(t.inner, t.outer, t.inner_local, shape, halo):
            assert outer.start == max(inner.start - h, 0) and outer.stop == min(inner.stop + h, size)
            assert local.start == inner.start - outer.start and local.stop - local.start == inner.stop - inner.start
    assert (coverage == 1).all()
    last = grid.tile(len(grid) - 1)
    assert last.grid_position == (3, 3) and last.inner == (slice(48, 50), slice(36, 37))
    assert last.outer_shape == (6, 4) and last.inner_shape == (2, 1)
    assert [t.index for t in iter_tiles(shape, tile, 2)] == list(range(16))


def test_tile_larger_than_image_is_one_clipped_tile():
    (tile,) = list(TileGrid((20, 30), (64, 64), 16))
    assert tile.outer == tile.inner == (slice(0, 20), slice(0, 30))


def _local_filter(block):
    """A local operation (3x3 mean then 5x5 max, radius 3) returning channel-first outputs."""
    gray = block.mean(axis=-1)
    smooth = ndimage.uniform_filter(gray, 3, mode="nearest")
    return np.stack([smooth, ndimage.maximum_filter(smooth, 5, mode="nearest")]).astype(np.float32)


def test_tiled_equals_untiled_for_a_local_function():
    image = np.random.default_rng(1).random((70, 90, 3)).astype(np.float32)
    full = _local_filter(image)
    tiled = apply_tiled(_local_filter, image, (32, 32), 3)
    assert tiled.shape == (2, 70, 90) and tiled.dtype == np.float32
    np.testing.assert_array_equal(tiled, full)
    # without enough halo the tile borders show: the test can fail
    assert not np.array_equal(apply_tiled(_local_filter, image, (32, 32), 1), full)


def test_large_image_is_processed_one_tile_at_a_time():
    image = np.random.default_rng(2).random((4096, 4096), dtype=np.float32)
    tile, halo = (1024, 1024), (8, 8)
    seen = []

    def cheap(block):
        seen.append(block.shape)
        return ndimage.uniform_filter(block, 3, mode="nearest")

    tiled = apply_tiled(cheap, image, tile, halo)
    assert len(seen) == 16
    assert max(s[0] for s in seen) == tile[0] + 2 * halo[0] and max(s[1] for s in seen) == tile[1] + 2 * halo[1]
    np.testing.assert_array_equal(tiled, ndimage.uniform_filter(image, 3, mode="nearest"))


def test_stitch_into_writes_only_the_inner_block():
    grid = TileGrid((20, 20), (10, 10), 2)
    out = np.zeros((3, 20, 20), np.int32)
    tile = grid.tile(3)  # bottom right
    stitch_into(out, np.full((3,) + tile.outer_shape, 7, np.int32), tile)
    assert (out[:, 10:, 10:] == 7).all() and out[:, :10].sum() == 0 and out[:, :, :10].sum() == 0


@pytest.mark.parametrize(
    "args, match",
    [
        (((64, 64), (16, 16), 9), "more than half"),
        (((64, 64), (16,), 2), "same number of axes"),
        (((64, 64), (0, 16), 2), ">= 1"),
        (((64, 64), (16, 16), -1), ">= 0"),
        (((64, 64), (16.0, 16), 2), "integers"),
        (((), (), ()), "non-empty"),
        ((None, (16, 16), 2), "sequence"),
    ],
)
def test_grid_validation(args, match):
    with pytest.raises(InputError, match=match):
        TileGrid(*args)


def test_stitch_and_apply_validation():
    grid = TileGrid((20, 20), (10, 10), 2)
    tile = grid.tile(0)
    with pytest.raises(InputError, match="outer block shape"):
        stitch_into(np.zeros((20, 20)), np.zeros((10, 10)), tile)
    with pytest.raises(InputError, match="leading axes"):
        stitch_into(np.zeros((2, 20, 20)), np.zeros((3,) + tile.outer_shape), tile)
    with pytest.raises(InputError, match="outside"):
        stitch_into(np.zeros((5, 5)), np.zeros(tile.outer_shape), tile)
    with pytest.raises(InputError, match="tile index"):
        grid.tile(4)
    with pytest.raises(InputError, match="spatial_ndim"):
        apply_tiled(lambda b: b, np.zeros((8, 8)), (4, 4), spatial_ndim=3)
    with pytest.raises(InputError, match="outer block shape"):
        apply_tiled(lambda b: b[:-1], np.zeros((8, 8)), (4, 4), 1)


@pytest.mark.parametrize("shape", [(50, 37), (48, 36), (20, 13)])
def test_fit_edge_grid_is_bioimageio_cores_block_layout(shape):
    """fit_edge: windows of tile + 2 halo whose inner parts start as bioimageio.core's do
    (``min(p, size - tile)`` for p in 0, tile, ...), later blocks owning their overlap (core writes
    blocks in order); windows past the image are the image padded ``symmetric``."""
    from samzoo.segmentation.tiling import crop_padding, pad_window

    tile, halo = (16, 12), (4, 3)
    grid = TileGrid(shape, tile, halo, fit_edge=True)
    starts = [[max(min(p, s - t), 0) for p in range(0, s, t)] for s, t in zip(shape, tile)]
    owner = np.full(shape, -1)
    for index, (r, c) in enumerate((r, c) for r in starts[0] for c in starts[1]):
        owner[r:r + tile[0], c:c + tile[1]] = index
    image = np.random.default_rng(0).random((*shape, 2)).astype(np.float32)
    padded_image = np.pad(image, ((halo[0] + tile[0],) * 2, (halo[1] + tile[1],) * 2, (0, 0)), mode="symmetric")
    out = np.full((2, *shape), np.nan, np.float32)
    for t in grid:
        assert (owner[t.inner] == t.index).all() and t.inner_shape[0] * t.inner_shape[1] > 0
        window = pad_window(image[t.outer], t.padding)
        assert window.shape[:2] == (tile[0] + 2 * halo[0], tile[1] + 2 * halo[1])
        r0 = (starts[0][t.grid_position[0]] - halo[0]) + halo[0] + tile[0]
        c0 = (starts[1][t.grid_position[1]] - halo[1]) + halo[1] + tile[1]
        np.testing.assert_array_equal(window, padded_image[r0:r0 + window.shape[0], c0:c0 + window.shape[1]])
        stitch_into(out, crop_padding(np.moveaxis(window, -1, 0), t.padding), t)
    np.testing.assert_array_equal(out, np.moveaxis(image, -1, 0))
