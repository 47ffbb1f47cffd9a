import numpy as np
import pytest

from samzoo.errors import InputError
from samzoo.io import read_image
from samzoo.visualize import (
    BOX_COLOR,
    NEGATIVE_COLOR,
    POSITIVE_COLOR,
    label_colors,
    overlay,
    save_overlay,
)


def _scene():
    image = np.tile(np.linspace(0, 4000, 64), (48, 1)).astype(np.uint16)
    labels = np.zeros((48, 64), np.uint32)
    labels[5:20, 5:25] = 1
    labels[5:20, 25:45] = 2  # touches object 1
    labels[30:45, 40:60] = 7
    return image, labels


def test_overlay_colours_objects_and_keeps_background_gray():
    image, labels = _scene()
    out = overlay(image, labels)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    background = out[labels == 0]
    assert (background[:, 0] == background[:, 1]).all() and (background[:, 1] == background[:, 2]).all()
    assert background[:, 0].min() == 0 and background[:, 0].max() == 255  # percentile stretch
    inside = out[12, 15].astype(int)
    assert np.ptp(inside) > 10  # tinted, not gray
    # boundaries in full object colour, also between the two touching objects
    colors = {i: c for i, c in zip([1, 2, 7], label_colors(np.array([1, 2, 7])))}
    np.testing.assert_array_equal(out[5, 15], colors[1])
    np.testing.assert_array_equal(out[12, 24], colors[1])
    np.testing.assert_array_equal(out[12, 25], colors[2])
    no_edges = overlay(image, labels, boundaries=False)
    assert not np.array_equal(no_edges[5, 15], colors[1])


def test_alpha_zero_shows_only_the_image_and_alpha_one_only_colours():
    image, labels = _scene()
    plain = overlay(image, None)
    np.testing.assert_array_equal(overlay(image, labels, alpha=0.0, boundaries=False), plain)
    solid = overlay(image, labels, alpha=1.0, boundaries=False)
    np.testing.assert_array_equal(solid[labels == 7], np.tile(label_colors(np.array([7])), (15 * 20, 1)))


def test_colours_are_deterministic_per_id_and_distinct():
    a = label_colors(np.array([3, 9, 12]))
    b = label_colors(np.arange(1, 13))
    np.testing.assert_array_equal(a, b[[2, 8, 11]])  # same id, same colour, whatever else is present
    np.testing.assert_array_equal(label_colors(np.arange(50), seed=4), label_colors(np.arange(50), seed=4))
    assert not np.array_equal(label_colors(np.arange(50), seed=4), label_colors(np.arange(50), seed=5))
    many = label_colors(np.arange(1, 101)).astype(int)
    neighbours = np.abs(np.diff(many, axis=0)).sum(axis=1)
    assert neighbours.min() > 60  # consecutive ids clearly differ
    assert len({tuple(c) for c in many}) == 100
    huge = label_colors(np.array([2**40, 2**40 + 1], dtype=np.uint64))
    assert huge.shape == (2, 3) and not np.array_equal(huge[0], huge[1])


def test_prompts_are_drawn():
    image, labels = _scene()
    out = overlay(image, labels, points=[[10, 25], [20, 40]], point_labels=[1, 0], boxes=[[2, 2, 62, 46]])
    np.testing.assert_array_equal(out[25, 10], POSITIVE_COLOR)
    np.testing.assert_array_equal(out[40, 20], NEGATIVE_COLOR)
    np.testing.assert_array_equal(out[2, 30], BOX_COLOR)
    np.testing.assert_array_equal(out[30, 62], BOX_COLOR)
    np.testing.assert_array_equal(out[3, 30], BOX_COLOR)  # two pixels wide
    # default point label is positive; a single box may be flat
    out = overlay(image, labels, points=np.array([[10.2, 25.4]]), boxes=np.array([1, 1, 10, 10]))
    np.testing.assert_array_equal(out[25, 10], POSITIVE_COLOR)
    np.testing.assert_array_equal(out[1, 5], BOX_COLOR)
    np.testing.assert_array_equal(out[10, 5], BOX_COLOR)
    assert not np.array_equal(out[0, 5], BOX_COLOR) and not np.array_equal(out[11, 5], BOX_COLOR)
    flat = overlay(image, labels, boxes=[[5, 20, 30, 20]])
    np.testing.assert_array_equal(flat[20, 5:31], np.tile(BOX_COLOR, (26, 1)))
    # boxes reaching past the image are clipped, not an error
    assert overlay(image, labels, boxes=[[-5, -5, 100, 100]]).shape == (48, 64, 3)


def test_volume_shows_the_middle_slice():
    image, labels = _scene()
    volume = np.stack([image] * 5)
    vol_labels = np.zeros((5,) + labels.shape, np.uint32)
    vol_labels[2] = labels
    np.testing.assert_array_equal(overlay(volume, vol_labels), overlay(image, labels))
    # 3 slices would be read as channels in 2D; 3D labels make it a volume
    assert overlay(np.stack([image] * 3), vol_labels[1:4]).shape == (48, 64, 3)


def test_save_overlay_writes_png(tmp_path):
    image, labels = _scene()
    path = save_overlay(tmp_path / "out" / "o.png", image, labels, alpha=0.3)
    np.testing.assert_array_equal(read_image(path), overlay(image, labels, alpha=0.3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": np.zeros((10, 10), np.uint8)}, "do not match"),
        ({"labels": np.zeros((48, 64), np.float32)}, "integer dtype"),
        ({"labels": np.full((48, 64), -1)}, "negative"),
        ({"labels": np.zeros((1, 1, 48, 64), np.uint8)}, "2D or 3D"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": "0.4"}, "alpha"),
        ({"points": [[100, 5]]}, "outside"),
        ({"points": [[1, 2, 3]]}, r"\(N, 2\)"),
        ({"points": [[np.nan, 2]]}, "NaN"),
        ({"points": [[1, 2]], "point_labels": [1, 0]}, "1 points but 2"),
        ({"points": [[1, 2]], "point_labels": [2]}, "positive"),
        ({"point_labels": [1]}, "without points"),
        ({"boxes": [[10, 10, 5, 20]]}, "y0 <= y1"),
        ({"boxes": [[1, 2, 3]]}, r"\(N, 4\)"),
        ({"boxes": [[np.inf, 2, 3, 4]]}, "NaN"),
    ],
)
def test_bad_arguments(kwargs, match):
    image, labels = _scene()
    kwargs = {"labels": labels, **kwargs}
    with pytest.raises(InputError, match=match):
        overlay(image, **kwargs)
