"""segment / segment_from_prompts: modes, parameters, tiling and stitching, volumes, 4096 px."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from scipy import ndimage

from samzoo import InputError
from samzoo.families.microsam.ais import AisParams
from samzoo.families.microsam.segment import resolve_ais_params
from samzoo.segmentation.api import segment, segment_from_prompts
from samzoo.families.microsam.predictor import Predictor

from conftest import disk_image, disk_labels

pytestmark = pytest.mark.usefixtures("isolated_cache")


def make_pixel_model(model):
    """Patch a model so that its 'embedding' is the normalised image itself and its AIS decoder
    derives the three maps from it locally (foreground = bright; distances from a Euclidean
    distance transform capped at 8 px). Every output pixel depends only on inputs within 8 px,
    so a tiled run with halo >= 8 must equal the untiled one exactly."""

    def embed(images):
        return images.float(), tuple(images.shape[-2:])

    def decode_ais(embedding, input_shape, original_shape, float32=False):
        gray = embedding[0].mean(0).numpy()
        foreground = gray > 127.5
        distance = np.clip(ndimage.distance_transform_edt(foreground) / 8.0, 0, 1)
        maps = np.stack([foreground.astype(np.float32), 1 - distance, 1 - distance]).astype(np.float32)
        assert maps.shape[1:] == tuple(original_shape)
        return torch.from_numpy(maps)[None]

    model.embed = embed
    model.decode_ais = decode_ais
    return model


def test_segment_ais_basic(tiny_model, disks):
    labels = segment(disks[0], tiny_model, progress=False)
    assert labels.shape == disks[0].shape and labels.dtype == np.uint32


def test_tiled_ais_equals_untiled_and_keeps_crossing_objects(fresh_model):
    # disks centred on tile borders (tiles of 96 px, halo 16) and on a 4-tile corner
    centers = ((96, 96), (48, 96), (150, 192), (192, 40), (30, 300))
    image = disk_image((220, 330), centers, radius=10)
    model = make_pixel_model(fresh_model)
    tiled = segment(image, model, progress=False, ais_params={"min_size": 0})
    whole = segment(image, model, tile_shape=(220, 330), progress=False)
    predictor = Predictor(model).set_image(image)
    assert predictor.is_tiled and len(predictor.grid) == 12
    np.testing.assert_array_equal(tiled, whole)
    truth = disk_labels(image.shape, centers, 8)  # the disks' interiors (edges blur in smoothing)
    assert tiled.max() == len(centers)
    for i in range(1, len(centers) + 1):  # each disk is one object, not cut at the tile borders
        assert np.unique(tiled[truth == i]).size == 1 and tiled[truth == i][0] > 0


def test_ais_params_precedence(fresh_model):
    fresh_model.ais_params = {"foreground_threshold": 0.7, "min_size": 5, "unknown_from_micro_sam": 1}
    params = resolve_ais_params(fresh_model, None)
    assert params.foreground_threshold == 0.7 and params.min_size == 5 and params.boundary_distance_threshold == 0.5
    params = resolve_ais_params(fresh_model, {"min_size": 9})
    assert params.foreground_threshold == 0.7 and params.min_size == 9
    assert resolve_ais_params(fresh_model, AisParams(min_size=3)) == AisParams(min_size=3)
    with pytest.raises(InputError, match="unknown AIS parameter"):
        resolve_ais_params(fresh_model, {"min_sise": 9})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "sam"}, "mode must be one of"),
        ({"ais_params": {"foo": 1}}, "unknown AIS parameter"),
        ({"mode": "amg", "amg_params": {"foo": 1}}, "unknown AMG parameter"),
        ({"mode": "amg", "ais_params": {"min_size": 1}}, "ais_params apply"),
        ({"tile_shape": 0}, "tile_shape"),
    ],
)
def test_segment_rejects_bad_arguments(tiny_model, disks, kwargs, message):
    with pytest.raises(InputError, match=message):
        segment(disks[0], tiny_model, progress=False, **kwargs)


def test_segment_rejects_bad_images(tiny_model):
    for bad, message in [
        (np.zeros((0, 10)), "empty"),
        (np.full((32, 32), np.nan), "NaN"),
        (np.zeros((2, 3, 32, 32)), "4D"),
        (np.zeros((2, 2, 2, 32, 32)), "5D"),
    ]:
        with pytest.raises(InputError, match=message):
            segment(bad, tiny_model, progress=False)


def test_segment_volume_merges_slices(fresh_model):
    centers = ((30, 40), (60, 90))
    volume = np.stack([disk_image((96, 128), centers, 12, seed=s) for s in range(3)])
    model = make_pixel_model(fresh_model)
    labels = segment(volume, model, progress=False, is_volume=True)
    assert labels.shape == volume.shape and labels.dtype == np.uint32
    assert labels.max() == 2  # the same two disks in every slice -> two 3D objects
    assert set(np.unique(labels[:, 30, 40])) == {labels[0, 30, 40]}


def test_segment_uses_embedding_cache(fresh_model, disks, isolated_cache):
    calls = [0]
    fresh_model.sam.image_encoder.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    first = segment(disks[0], fresh_model, embedding_cache=True, progress=False)
    second = segment(disks[0], fresh_model, embedding_cache=True, progress=False)
    assert calls[0] == 1
    np.testing.assert_array_equal(first, second)
    assert list((isolated_cache / "embeddings").rglob("manifest.json"))


def test_segment_from_prompts(tiny_model, disks):
    image = disks[0]
    labels = segment_from_prompts(image, tiny_model, boxes=[[25, 15, 55, 45], [75, 45, 105, 75]], progress=False)
    assert labels.dtype == np.uint32 and set(np.unique(labels)) <= {0, 1, 2}
    labels = segment_from_prompts(image, tiny_model, points=[[40, 30], [10, 10]], point_labels=[1, 0],
                                  progress=False)
    assert set(np.unique(labels)) <= {0, 1}
    # points are grouped with the box that contains them
    labels = segment_from_prompts(image, tiny_model, points=[[40, 30], [90, 60]],
                                  boxes=[[25, 15, 55, 45], [75, 45, 105, 75]], progress=False)
    assert labels.shape == image.shape
    with pytest.raises(InputError, match="none of the 2 boxes"):
        segment_from_prompts(image, tiny_model, points=[[5, 90]], boxes=[[25, 15, 55, 45], [75, 45, 105, 75]])
    with pytest.raises(InputError, match="all negative"):
        segment_from_prompts(image, tiny_model, points=[[5, 90]], point_labels=[0])
    with pytest.raises(InputError, match="2D"):
        segment_from_prompts(np.zeros((5, 32, 32), np.uint8), tiny_model, points=[[5, 5]])


def test_4096_image_runs_tile_by_tile(fresh_model):
    """A 4096 x 4096 image runs, holding at most one tile's embedding at any time."""
    image = np.random.default_rng(0).integers(0, 255, (4096, 4096), dtype=np.uint8)
    live: set[int] = set()
    peak, calls = [0], [0]

    def hook(module, inputs, output):
        calls[0] += 1
        live.add(id(output))
        weakref.finalize(output, live.discard, id(output))
        peak[0] = max(peak[0], len(live))

    fresh_model.sam.image_encoder.register_forward_hook(hook)
    labels = segment(image, fresh_model, tile_shape=1024, halo=64, progress=False)
    assert labels.shape == (4096, 4096) and labels.dtype == np.uint32
    assert calls[0] == 16
    assert peak[0] == 1  # when a tile is encoded, no other tile's embedding is alive
    assert not live  # and none is kept afterwards
