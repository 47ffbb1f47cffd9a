"""Seamless tiling (the default): decoder maps blended across tile overlaps, the image normalised once.

Measured with the shipped default model on a tiled synthetic nuclei image: shifting the image
against the tile grid changes the AIS labels by less than SHIFT_BOUND (1 - SA at IoU 0.5 between
the two results on their common area), and a tile of empty background yields no objects.
"""

from __future__ import annotations

import numpy as np
import pytest

from samzoo.evaluation.metrics import mean_segmentation_accuracy
from samzoo.segmentation.tiling import BlendedMap, TileGrid, blend_weights

SHIFT_BOUND = 0.05  # at most 5 % of the objects may change (IoU < 0.5) when the grid shifts by a few px


def test_blend_weights_partition_unity_and_constant_maps_stay_constant():
    shape, tile, halo = (50, 70), (20, 20), (4, 4)
    grid = TileGrid(shape, tile, halo)
    blended = BlendedMap(2, shape, halo)
    for t in grid:
        blended.add(np.full((2, *t.outer_shape), 3.0, dtype=np.float32), t)
        weights = blend_weights(t, shape, halo)
        assert weights.shape == t.outer_shape and weights.min() > 0 and weights.max() == 1.0
    np.testing.assert_allclose(blended.result(), 3.0, rtol=1e-6)
    # a map that is linear in x is reproduced exactly (weighted mean of identical values)
    ramp = np.arange(70, dtype=np.float32)[None, None].repeat(50, 1)
    blended = BlendedMap(1, shape, halo)
    for t in grid:
        blended.add(ramp[(slice(None), *t.outer)], t)
    np.testing.assert_allclose(blended.result(), ramp, rtol=1e-6)


@pytest.fixture(scope="module")
def default_model():
    import samzoo
    from samzoo.default_model import default_checkpoint_path

    return samzoo.load_checkpoint(default_checkpoint_path())


def _nuclei(shape, seed):
    from samzoo.training.synthetic import SyntheticConfig, generate_sample

    config = SyntheticConfig(shape=shape, styles={"fluorescence": 1.0}, kinds={"nuclei": 1.0}, radius_range=(8, 12),
                             density_range=(0.2, 0.25), empty_probability=0, debris_probability=0,
                             mitosis_probability=0, photons_range=(500, 1000))
    return generate_sample(np.random.default_rng(seed), config)


def test_shifting_the_image_against_the_tile_grid_changes_few_labels(default_model):
    import samzoo

    image, _ = _nuclei((420, 420), 3)
    first = samzoo.segment(image, default_model, progress=False)
    dy, dx = 5, 7
    shifted = samzoo.segment(image[dy:, dx:], default_model, progress=False)
    # compare away from the new image border (objects cut there legitimately differ)
    inner = (slice(16, -16), slice(16, -16))
    reference, shifted = first[dy:, dx:][inner], shifted[inner]
    sa50 = mean_segmentation_accuracy(reference, shifted)[1][0]
    assert len(np.unique(reference)) > 50  # a real test: many objects, several tiles (420 px > 256)
    print(f"shift ({dy}, {dx}): {len(np.unique(reference)) - 1} objects, changed fraction {1 - sa50:.4f}")
    assert 1 - sa50 < SHIFT_BOUND, f"{1 - sa50:.3f} of the objects changed"


def test_an_empty_background_tile_gives_no_objects(default_model):
    import samzoo

    image, labels = _nuclei((420, 420), 4)
    rng = np.random.default_rng(0)
    background = image[labels == 0]
    # the right part becomes background only: values drawn from the image's own background
    image[:, 220:] = rng.choice(background, size=image[:, 220:].shape)
    result = samzoo.segment(image, default_model, progress=False)
    assert result[:, :200].max() > 10  # the left part still has its nuclei
    assert not result[:, 240:].any()  # the empty tiles (and most of their halos) stay empty
