import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from samzoo.errors import InputError
from samzoo.families.microsam.ais import AisParams, watershed_from_decoder_outputs, watershed_from_prediction


def disks_touching(shape, centers, radii):
    """Ground-truth labels of disks; where disks overlap, each pixel goes to the nearest center,
    so neighbouring objects touch along a straight line (the hard case for a plain threshold)."""
    yy, xx = np.indices(shape)
    distances = np.stack([np.hypot(yy - cy, xx - cx) / r for (cy, cx), r in zip(centers, radii)])
    nearest = distances.argmin(axis=0)
    inside = distances.min(axis=0) <= 1.0
    return np.where(inside, nearest + 1, 0).astype(np.int32)


def decoder_outputs(labels):
    """Ideal decoder outputs per the μSAM convention: fg; center distance (0 center .. 1 boundary);
    boundary distance (0 deep inside .. 1 boundary); both distances 1 on the background."""
    foreground = (labels > 0).astype(np.float32)
    center = np.ones(labels.shape, np.float32)
    boundary = np.ones(labels.shape, np.float32)
    for obj in range(1, labels.max() + 1):
        mask = labels == obj
        cy, cx = ndimage.center_of_mass(mask)
        yy, xx = np.nonzero(mask)
        dist_center = np.hypot(yy - cy, xx - cx)
        center[yy, xx] = dist_center / dist_center.max()
        inner = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        boundary[yy, xx] = 1.0 - inner[yy, xx] / inner.max()
    return foreground, center, boundary


def best_iou(truth_mask, labels):
    ids, counts = np.unique(labels[truth_mask], return_counts=True)
    counts, ids = counts[ids > 0], ids[ids > 0]
    if ids.size == 0:
        return 0.0
    best = ids[counts.argmax()]
    predicted = labels == best
    return (truth_mask & predicted).sum() / (truth_mask | predicted).sum()


def test_touching_objects_are_separated():
    truth = disks_touching((96, 128), [(30, 30), (30, 58), (70, 90), (62, 60)], [18, 16, 20, 12])
    # they really touch: a foreground threshold alone would merge them
    assert ndimage.label(truth > 0)[1] < truth.max()
    labels = watershed_from_decoder_outputs(*decoder_outputs(truth), AisParams())
    assert labels.dtype == np.uint32 and labels.shape == truth.shape
    assert set(np.unique(labels)) == set(range(labels.max() + 1))
    assert labels.max() == truth.max()
    for obj in range(1, truth.max() + 1):
        assert best_iou(truth == obj, labels) > 0.85


def test_prediction_array_gives_same_result():
    truth = disks_touching((64, 64), [(20, 20), (40, 40)], [14, 14])
    fg, center, boundary = decoder_outputs(truth)
    params = AisParams(distance_smoothing=1.0)
    np.testing.assert_array_equal(
        watershed_from_prediction(np.stack([fg, center, boundary]), params),
        watershed_from_decoder_outputs(fg, center, boundary, params),
    )


def test_seedless_foreground_and_empty_input_stay_background():
    shape = (40, 40)
    fg = np.zeros(shape, np.float32)
    fg[10:20, 10:20] = 1.0
    flat = np.ones(shape, np.float32)  # no pixel is near a center: no seeds
    assert not watershed_from_decoder_outputs(fg, flat, flat).any()
    assert not watershed_from_decoder_outputs(np.zeros(shape), flat, flat).any()


def test_min_size_merges_small_neighbours_and_drops_isolated_debris():
    truth = disks_touching((80, 80), [(40, 30), (40, 52), (10, 70)], [20, 6, 4])
    fg, center, boundary = decoder_outputs(truth)
    params = AisParams(foreground_smoothing=0.0, distance_smoothing=0.0)
    labels = watershed_from_decoder_outputs(fg, center, boundary, params)
    assert labels.max() == 3
    small_size = max((labels == i).sum() for i in np.unique(labels[truth >= 2]) if i)
    filtered = watershed_from_decoder_outputs(fg, center, boundary, params.replace(min_size=small_size + 1))
    assert filtered.max() == 1
    # the touching small object was absorbed by the big one, the isolated one became background
    assert (filtered[(truth == 1) | (truth == 2)] == 1).mean() > 0.97
    assert not filtered[truth == 3].any()


def test_thresholds_change_the_result():
    truth = disks_touching((64, 64), [(32, 20), (32, 44)], [14, 14])
    outputs = decoder_outputs(truth)
    split = watershed_from_decoder_outputs(*outputs, AisParams())
    assert split.max() == 2
    # with a foreground threshold above every probability nothing is foreground
    fg = outputs[0] * 0.6
    assert not watershed_from_decoder_outputs(fg, *outputs[1:], AisParams(foreground_threshold=0.7)).any()


def test_params_defaults_and_round_trip():
    params = AisParams()
    assert params.to_dict() == {
        "center_distance_threshold": 0.5,
        "boundary_distance_threshold": 0.5,
        "foreground_threshold": 0.5,
        "foreground_smoothing": 1.0,
        "distance_smoothing": 1.6,
        "min_size": 0,
    }
    custom = AisParams(center_distance_threshold=0.3, min_size=25.0)
    assert custom.min_size == 25 and isinstance(custom.min_size, int)
    assert AisParams.from_dict(custom.to_dict()) == custom
    assert AisParams.from_dict({"min_size": 4}) == AisParams(min_size=4)
    changed = custom.replace(foreground_threshold=0.4)
    assert changed.foreground_threshold == 0.4 and custom.foreground_threshold == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        custom.min_size = 3


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"center_distance_threshold": 0.0}, r"\(0, 1\]"),
        ({"boundary_distance_threshold": 1.5}, r"\(0, 1\]"),
        ({"foreground_threshold": -0.1}, r"\(0, 1\]"),
        ({"foreground_smoothing": -1.0}, ">= 0"),
        ({"distance_smoothing": float("nan")}, "finite"),
        ({"min_size": -1}, ">= 0"),
        ({"min_size": 2.5}, "whole number"),
        ({"min_size": True}, "whole number"),
        ({"foreground_threshold": "0.5"}, "number"),
        ({"foreground_threshold": None}, "number"),
    ],
)
def test_params_validation(changes, match):
    with pytest.raises(InputError, match=match):
        AisParams(**changes)
    with pytest.raises(InputError, match=match):
        AisParams().replace(**changes)
    with pytest.raises(InputError, match=match):
        AisParams.from_dict(changes)


def test_unknown_parameter_keys_are_rejected():
    with pytest.raises(InputError, match="unknown AIS parameter"):
        AisParams.from_dict({"min_sizee": 3})
    with pytest.raises(InputError, match="unknown AIS parameter"):
        AisParams().replace(threshold=0.3)
    with pytest.raises(InputError, match="mapping"):
        AisParams.from_dict([("min_size", 3)])


def test_bad_decoder_outputs():
    good = np.full((16, 16), 0.5, np.float32)
    with pytest.raises(InputError, match="differ in shape"):
        watershed_from_decoder_outputs(good, good, good[:8])
    with pytest.raises(InputError, match="outside"):
        watershed_from_decoder_outputs(good * 10, good, good)
    with pytest.raises(InputError, match="NaN"):
        watershed_from_decoder_outputs(np.full((16, 16), np.nan), good, good)
    with pytest.raises(InputError, match="2D"):
        watershed_from_decoder_outputs(good[None], good[None], good[None])
    with pytest.raises(InputError, match="empty"):
        watershed_from_decoder_outputs(good[:0], good[:0], good[:0])
    with pytest.raises(InputError, match="real-valued"):
        watershed_from_decoder_outputs(good.astype(complex), good, good)
    with pytest.raises(InputError, match=r"\(3, H, W\)"):
        watershed_from_prediction(np.stack([good, good]))
    with pytest.raises(InputError, match="AisParams"):
        watershed_from_decoder_outputs(good, good, good, {"min_size": 3})
