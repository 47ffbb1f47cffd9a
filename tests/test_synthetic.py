"""The synthetic generator: deterministic, consistent labels, the promised variety, fast."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from samzoo.errors import InputError
from samzoo.training.synthetic import (
    STYLES,
    SyntheticConfig,
    generate_dataset,
    generate_sample,
    write_dataset,
)

SMALL = (128, 128)


def _config(**kwargs) -> SyntheticConfig:
    defaults = dict(shape=SMALL, empty_probability=0.0)
    defaults.update(kwargs)
    return SyntheticConfig(**defaults)


def test_same_seed_same_sample_and_different_seeds_differ() -> None:
    config = _config()
    image_a, labels_a = generate_sample(np.random.default_rng(3), config)
    image_b, labels_b = generate_sample(np.random.default_rng(3), config)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    image_c, labels_c = generate_sample(np.random.default_rng(4), config)
    assert image_a.shape != image_c.shape or not np.array_equal(image_a, image_c)


def test_dataset_sample_depends_only_on_seed_and_index() -> None:
    config = _config()
    short = list(generate_dataset(2, seed=11, config=config))
    longer = list(generate_dataset(4, seed=11, config=config))
    for (img_s, lab_s), (img_l, lab_l) in zip(short, longer[:2], strict=True):
        np.testing.assert_array_equal(img_s, img_l)
        np.testing.assert_array_equal(lab_s, lab_l)
    other = next(generate_dataset(1, seed=12, config=config))
    assert not np.array_equal(other[1], short[0][1]) or not np.array_equal(other[0], short[0][0])


def test_labels_are_clean_instance_maps() -> None:
    config = _config(shape=(192, 192), density_range=(0.3, 0.6), overlap_range=(0.1, 0.3))
    for seed in range(8):
        image, labels = generate_sample(np.random.default_rng(seed), config)
        assert labels.dtype == np.uint32 and labels.shape == config.shape
        assert image.shape[:2] == config.shape
        ids = np.unique(labels)
        ids = ids[ids > 0]
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.min() >= config.min_object_pixels
        slices = ndi.find_objects(labels)
        for object_id, box in enumerate(slices, start=1):
            _, n_pieces = ndi.label(labels[box] == object_id)
            assert n_pieces == 1, f"seed {seed}: object {object_id} is in {n_pieces} pieces"


def test_crowded_images_have_touching_objects_and_border_cuts() -> None:
    config = _config(shape=(192, 192), density_range=(0.5, 0.5), radius_range=(8, 10), clump_probability=1.0)
    touching = border = 0
    for seed in range(4):
        _, labels = generate_sample(np.random.default_rng(seed), config)
        right = labels[:, :-1], labels[:, 1:]
        touching += int(np.count_nonzero((right[0] > 0) & (right[1] > 0) & (right[0] != right[1])))
        border += len(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))) - 1
    assert touching > 0
    assert border > 0


def _inside_outside(image: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    gray = image.astype(np.float64)
    if gray.ndim == 3:
        gray = gray.mean(axis=-1)
    core = ndi.binary_erosion(labels > 0, iterations=1)
    far = ~ndi.binary_dilation(labels > 0, iterations=3)
    return float(gray[core].mean()), float(gray[far].mean())


@pytest.mark.parametrize(("style", "objects_brighter"), [("fluorescence", True), ("brightfield", False), ("he", False)])
def test_image_matches_labels_per_style(style: str, objects_brighter: bool) -> None:
    config = _config(
        styles={style: 1.0},
        kinds={"nuclei": 1.0},
        density_range=(0.15, 0.3),
        radius_range=(6, 12),
        photons_range=(200, 2000),
        debris_probability=0.0,
    )
    for seed in range(4):
        image, labels = generate_sample(np.random.default_rng(seed), config)
        assert labels.max() > 0
        inside, outside = _inside_outside(image, labels)
        assert (inside > outside) == objects_brighter, f"{style} seed {seed}: {inside} vs {outside}"


def test_styles_and_dtypes() -> None:
    for style in STYLES:
        image, _ = generate_sample(np.random.default_rng(0), _config(styles={style: 1.0}))
        if style == "he":
            assert image.shape == (*SMALL, 3) and image.dtype == np.uint8
        else:
            assert image.ndim == 2
    for dtype in ("uint8", "uint16", "float32"):
        config = _config(styles={"fluorescence": 1.0}, dtypes={dtype: 1.0})
        image, _ = generate_sample(np.random.default_rng(1), config)
        assert image.dtype == np.dtype(dtype)
        assert np.all(np.isfinite(image.astype(np.float64)))


def test_default_config_gives_varied_samples() -> None:
    sizes, counts, dtypes, looks = [], [], set(), set()
    config = _config(shape=(256, 256))
    for image, labels in generate_dataset(24, seed=5, config=config):
        n = int(labels.max())
        counts.append(n)
        if n:
            sizes.append(np.sqrt(np.bincount(labels.ravel())[1:].mean() / np.pi))
        dtypes.add(image.dtype.name)
        looks.add("rgb" if image.ndim == 3 else "gray")
    assert max(sizes) > 3 * min(sizes)  # radius range spans small and large objects
    assert max(counts) > 4 * max(1, min(counts))  # sparse to crowded
    assert len(dtypes) >= 2 and looks == {"rgb", "gray"}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(shape=(8, 8)),
        dict(radius_range=(10, 5)),
        dict(density_range=(0.1, 1.5)),
        dict(styles={"confocal": 1.0}),
        dict(styles={"fluorescence": 0.0}),
        dict(mitosis_probability=2.0),
        dict(max_objects=0),
    ],
)
def test_bad_config_raises_input_error(kwargs: dict) -> None:
    with pytest.raises(InputError):
        SyntheticConfig(**kwargs)


def test_bad_arguments_raise_input_error(tmp_path) -> None:
    with pytest.raises(InputError):
        generate_sample(42, _config())  # type: ignore[arg-type]
    with pytest.raises(InputError):
        list(generate_dataset(-1, seed=0))
    with pytest.raises(InputError):
        write_dataset(tmp_path, 1, seed=-3)


def test_write_dataset_round_trips(tmp_path) -> None:
    config = _config()
    written = write_dataset(tmp_path / "data", 3, seed=9, config=config)
    assert [p.name for p, _ in written] == ["0000.tif", "0001.tif", "0002.tif"]
    for (image_path, label_path), (image, labels) in zip(written, generate_dataset(3, 9, config), strict=True):
        np.testing.assert_array_equal(tifffile.imread(image_path), image)
        np.testing.assert_array_equal(tifffile.imread(label_path), labels)
    leftovers = [p for p in (tmp_path / "data").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_generation_is_fast_enough() -> None:
    # not a benchmark: a loose bound that catches an accidental slow path (budget ~0.1 s/sample)
    rng = np.random.default_rng(0)
    generate_sample(rng, SyntheticConfig())  # warm-up (imports, FFT plans)
    start = time.process_time()
    for _ in range(6):
        generate_sample(rng, SyntheticConfig())
    assert (time.process_time() - start) / 6 < 0.5
