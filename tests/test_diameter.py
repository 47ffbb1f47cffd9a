"""Object-diameter option: rescale so objects reach the model's trained size, labels back."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import disk_image, disk_labels
from samzoo.errors import InputError
from samzoo.evaluation.baseline import otsu_watershed
from samzoo.evaluation.metrics import mean_segmentation_accuracy
from samzoo.segmentation.diameter import (
    DEFAULT_OBJECT_DIAMETER,
    check_diameter,
    estimate_diameter,
    model_diameter_range,
    model_object_diameter,
    model_prompt_diameter,
    resize_image,
    segment_at_diameter,
)

CENTERS = ((60, 60), (60, 180), (180, 60), (180, 180))


def test_estimate_diameter_is_the_median_circle_diameter():
    labels = disk_labels((240, 240), CENTERS, 20)
    assert estimate_diameter(labels) == pytest.approx(40, rel=0.03)
    assert estimate_diameter(labels[:100, :100]) is None  # one object: no estimate


def test_explicit_and_automatic_diameter_rescale_and_return_labels_at_the_original_size():
    image = disk_image((240, 240), CENTERS, radius=40, noise=3)
    gt = disk_labels((240, 240), CENTERS, 40)
    seen_shapes = []

    def segment(data):
        seen_shapes.append(data.shape[:2])
        return otsu_watershed(data)

    labels, info = segment_at_diameter(segment, image, 80.0, 20.0)
    assert seen_shapes == [(60, 60)] and info["scale"] == pytest.approx(0.25)
    assert labels.shape == image.shape and labels.max() == 4
    assert mean_segmentation_accuracy(gt, labels)[1][0] == 1.0  # every object found at IoU 0.5
    seen_shapes.clear()
    labels, info = segment_at_diameter(segment, image, 0.0, 20.0)  # estimated from a first pass
    assert seen_shapes[0] == (240, 240) and info["estimated"] == pytest.approx(80, rel=0.1)
    assert seen_shapes[1] == (round(240 * info["scale"]),) * 2 and labels.shape == image.shape
    seen_shapes.clear()
    _, info = segment_at_diameter(segment, image, 0.0, 75.0)  # already the model's size: one pass
    assert len(seen_shapes) == 1 and info["scale"] == 1.0


def test_automatic_diameter_rescales_only_outside_the_trained_range_to_its_nearest_end():
    image = disk_image((240, 240), CENTERS, radius=40, noise=3)  # objects ~80 px
    passes = []

    def segment(data):
        passes.append(data.shape[:2])
        return otsu_watershed(data)

    _, info = segment_at_diameter(segment, image, 0.0, 20.0, (10.0, 100.0))  # inside: left alone
    assert len(passes) == 1 and info["scale"] == 1.0
    passes.clear()
    labels, info = segment_at_diameter(segment, image, 0.0, 20.0, (10.0, 40.0))  # above: to 40, not 20
    assert len(passes) == 2 and info["scale"] == pytest.approx(40.0 / info["estimated"])
    assert labels.shape == image.shape and labels.max() == 4


def test_model_diameter_range_from_metadata():
    class Ranged:
        metadata = {"object_diameter": {"median": 25.0, "low": 12.0, "high": 54.0}}

    class MedianOnly:
        metadata = {"object_diameter": {"median": 26.0}}

    class Inconsistent:
        metadata = {"object_diameter": {"median": 25.0, "low": 30.0, "high": 54.0}}

    assert model_diameter_range(Ranged()) == (12.0, 54.0)
    assert model_diameter_range(MedianOnly()) == pytest.approx((20.0, 33.8))  # AUTO_TOLERANCE around it
    assert model_diameter_range(Inconsistent()) == pytest.approx((25 / 1.3, 25 * 1.3))


def test_resize_keeps_integer_dtypes_and_bad_diameters_fail():
    image = (np.arange(64 * 64, dtype=np.uint16) % 4000).reshape(64, 64)
    assert resize_image(image, 0.5).dtype == np.uint16 and resize_image(image, 0.5).shape == (32, 32)
    assert check_diameter(None) is None and check_diameter(12) == 12.0
    for bad in (-1, float("nan"), "big", True):
        with pytest.raises(InputError, match="diameter"):
            check_diameter(bad)


def test_model_diameter_from_metadata(tiny_model):
    assert model_object_diameter(tiny_model) == DEFAULT_OBJECT_DIAMETER

    class WithMeta:
        metadata = {"object_diameter": {"median": 42.0}}

    assert model_object_diameter(WithMeta()) == 42.0


def test_prompt_diameter_is_the_stated_one_else_the_median(tiny_model):
    class Meta:
        def __init__(self, value):
            self.metadata = {"object_diameter": value}

    assert model_prompt_diameter(Meta({"median": 25.0, "prompt": 37.5})) == 37.5
    assert model_prompt_diameter(Meta({"median": 25.0})) == 25.0
    for broken in (0, -3, "big", float("nan"), None):  # a damaged value falls back to the median
        assert model_prompt_diameter(Meta({"median": 25.0, "prompt": broken})) == 25.0
    assert model_prompt_diameter(tiny_model) == DEFAULT_OBJECT_DIAMETER


def test_segment_with_diameter_through_the_api(tiny_model):
    import samzoo

    image = disk_image((96, 128))
    labels = samzoo.segment(image, tiny_model, diameter=15, progress=False)
    assert labels.shape == image.shape
    with pytest.raises(InputError, match="diameter"):
        samzoo.segment(image, tiny_model, diameter=-3, progress=False)


def test_cli_diameter(capsys, tmp_path, tiny_checkpoint):
    import tifffile

    from samzoo.cli import main

    tifffile.imwrite(tmp_path / "img.tif", disk_image((96, 128)))
    assert main(["segment", str(tmp_path / "img.tif"), "-o", str(tmp_path / "l.tif"), "--model",
                 str(tiny_checkpoint), "--diameter", "0", "-q", "--no-embedding-cache"]) == 0
    assert tifffile.imread(tmp_path / "l.tif").shape == (96, 128)
    code = main(["segment", str(tmp_path / "img.tif"), "-o", str(tmp_path / "m.tif"), "--model",
                 str(tiny_checkpoint), "--diameter", "-2", "-q"])
    assert code == 2 and "diameter must be >= 0" in capsys.readouterr().err


def test_build_real_records_the_trained_diameter_range(tiny_checkpoint, tmp_path):
    from samzoo import load_checkpoint
    from samzoo.families.microsam.training.build_real import build

    out = build(tiny_checkpoint, tmp_path / "m.pt", name="m", description="d", object_diameter=25.0,
                object_diameter_range=(12.0, 54.0))
    model = load_checkpoint(str(out))
    assert model.metadata["object_diameter"] == {"median": 25.0, "low": 12.0, "high": 54.0}
    assert model_diameter_range(model) == (12.0, 54.0)
    with pytest.raises(InputError, match="range must hold the median"):
        build(tiny_checkpoint, tmp_path / "n.pt", name="m", description="d", object_diameter=25.0,
              object_diameter_range=(30.0, 54.0))
    assert not (tmp_path / "n.pt").exists()
    out = build(tiny_checkpoint, tmp_path / "p.pt", name="m", description="d", object_diameter=25.0,
                prompt_diameter=37.5)
    assert load_checkpoint(str(out)).metadata["object_diameter"] == {"median": 25.0, "prompt": 37.5}
    with pytest.raises(InputError, match="prompt diameter must be > 0"):
        build(tiny_checkpoint, tmp_path / "q.pt", name="m", description="d", object_diameter=25.0,
              prompt_diameter=0.0)
    assert not (tmp_path / "q.pt").exists()
