"""The Otsu + watershed baseline must be a decent reference on clean-ish images of both polarities."""

from __future__ import annotations

import numpy as np
import pytest

from samzoo.errors import InputError
from samzoo.evaluation.baseline import detect_polarity, otsu_watershed, to_grayscale
from samzoo.evaluation.metrics import mean_segmentation_accuracy
from samzoo.training.synthetic import SyntheticConfig, generate_sample


def _config(style: str, density: tuple[float, float]) -> SyntheticConfig:
    return SyntheticConfig(
        shape=(256, 256),
        styles={style: 1.0},
        kinds={"nuclei": 1.0},
        radius_range=(8.0, 14.0),
        density_range=density,
        debris_probability=0.0,
        empty_probability=0.0,
        mitosis_probability=0.0,
        photons_range=(100.0, 1000.0),
        blur_range=(0.0, 1.5),
    )


def test_fluorescence_nuclei_reach_a_reasonable_msa() -> None:
    config = _config("fluorescence", (0.15, 0.3))
    scores = []
    for seed in range(3):
        image, labels = generate_sample(np.random.default_rng(seed), config)
        prediction = otsu_watershed(image)
        assert prediction.dtype == np.uint32 and prediction.shape == labels.shape
        scores.append(mean_segmentation_accuracy(labels, prediction)[0])
    assert np.mean(scores) > 0.6, scores


def test_touching_nuclei_are_split() -> None:
    # two overlapping discs: one threshold component, two watershed objects
    yy, xx = np.mgrid[:96, :96]
    labels = np.zeros((96, 96), dtype=np.uint32)
    labels[(yy - 48) ** 2 + (xx - 34) ** 2 < 14**2] = 1
    labels[(yy - 48) ** 2 + (xx - 60) ** 2 < 14**2] = 2
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    prediction = otsu_watershed(image)
    assert prediction.max() == 2
    assert mean_segmentation_accuracy(labels, prediction)[0] > 0.7


def test_brightfield_dark_objects_are_still_found() -> None:
    config = _config("brightfield", (0.1, 0.2))
    for seed in (0, 1):
        image, labels = generate_sample(np.random.default_rng(seed), config)
        prediction = otsu_watershed(image)
        n_true, n_pred = int(labels.max()), int(prediction.max())
        assert 0.5 * n_true <= n_pred <= 2 * n_true, (seed, n_true, n_pred)
        assert mean_segmentation_accuracy(labels, prediction)[0] > 0.4


def test_polarity_rule_and_override() -> None:
    image = np.full((64, 64), 0.2, dtype=np.float32)
    image[10:30, 10:30] = 0.9
    assert detect_polarity(image, 0.5) == "bright"
    assert detect_polarity(1.0 - image, 0.5) == "dark"
    # crowded: objects cover most of the field, the background peak still decides
    crowded = np.full((64, 64), 0.1, dtype=np.float32)
    crowded[:, :40] = np.linspace(0.6, 1.0, 40)[None, :]
    assert detect_polarity(crowded, 0.4) == "bright"
    dark_objects = 255 - np.where(image > 0.5, 220, 30).astype(np.uint8)
    assert otsu_watershed(dark_objects).max() == 1
    assert otsu_watershed(dark_objects, polarity="dark").max() == 1
    with pytest.raises(InputError):
        otsu_watershed(dark_objects, polarity="up")  # type: ignore[arg-type]


def test_rgb_channel_first_and_constant_images() -> None:
    image = np.zeros((64, 64), dtype=np.uint16)
    image[20:40, 20:40] = 1000
    rgb = np.stack([image] * 3, axis=-1)
    assert otsu_watershed(rgb).max() == 1
    assert otsu_watershed(np.moveaxis(rgb, -1, 0)).max() == 1
    np.testing.assert_array_equal(to_grayscale(rgb), image.astype(np.float32))
    assert otsu_watershed(np.full((32, 32), 7, dtype=np.uint8)).max() == 0


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 3, 4, 5)), np.zeros((4, 4)), np.full((16, 16), np.nan), np.zeros((16, 16), dtype=bool)],
)
def test_bad_images_raise_input_error(bad: np.ndarray) -> None:
    with pytest.raises(InputError):
        otsu_watershed(bad)
