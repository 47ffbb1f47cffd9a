"""SAMCell's BioImage.IO packages. The standalone pipeline shipped inside them (numpy/scipy versions
of SAMCell's OpenCV and scikit-image steps) equals samzoo's own SAMCell code step by step and end to
end on the same weights; both package kinds pass bioimageio.core's test_model; the instance package
gives `samzoo segment`'s labels on images other than its test image; `samzoo package` writes them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

import samzoo  # noqa: F401  (applies the torchvision fix before samcell.preprocess imports it)
from samzoo.families.microsam.config import PRESETS
from samzoo.families.samcell import postprocess, preprocess, standalone, tiling
from samzoo.families.samcell.model import SamcellModel
from samzoo.families.samcell.packaging import architecture_source, package_samcell
from samzoo.families.samcell.postprocess import SamcellParams
from samzoo.families.samcell.segment import distance_map, segment_image
from _runtime_format import assert_shared_runtime_format
from _imports import unguarded_import_roots


def textured(shape, seed: int, low: int = 20, span: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random(shape), 3)
    return np.round((image - image.min()) / np.ptp(image) * span + low).astype(np.uint8)


def random_samcell(seed: int = 0) -> SamcellModel:
    """A small random SAMCell (samzoo's "test" SAM, 128 px input) whose distance maps vary across
    the image, with thresholds that find many cells in them."""
    torch.manual_seed(seed)
    model = SamcellModel(PRESETS["test"].replace(ais_decoder=False, normalization="minmax"),
                         metadata={"name": "samcell random test"})
    with torch.no_grad():
        for name, param in model.sam.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.05)
    values = distance_map(textured((256, 256), 99), model)
    model.params = SamcellParams(peak_threshold=float(np.quantile(values, 0.8)),
                                 fill_threshold=float(np.quantile(values, 0.3))).to_dict()
    return model


@pytest.fixture(scope="module")
def model():
    return random_samcell()


# ---- the standalone file, step by step, against samzoo's SAMCell code (OpenCV / scikit-image) ----

@pytest.mark.parametrize("shape", [(256, 256), (240, 256), (97, 131), (300, 70), (17, 9)])
def test_crop_enhancement_equals_opencv(shape):
    """CLAHE + min-max: the numpy version gives OpenCV's bytes (samzoo's preprocess.enhance_crop)."""
    for seed in range(3):
        crop = textured(shape, seed, low=seed * 3, span=60 + 60 * seed)
        np.testing.assert_array_equal(standalone.clahe(crop), cv2.createCLAHE(1.0, (8, 8)).apply(crop))
        np.testing.assert_array_equal(standalone.enhance_crop(crop), preprocess.enhance_crop(crop))


def test_minmax_equals_opencv_for_every_range():
    for low in range(0, 256, 5):
        for high in range(low, 256, 3):
            values = np.tile(np.arange(low, high + 1, dtype=np.uint8), 5)[None]  # 2D: as a crop
            np.testing.assert_array_equal(standalone.minmax_uint8(values),
                                          cv2.normalize(values, None, 0, 255, cv2.NORM_MINMAX))


@pytest.mark.parametrize("source", [(256, 256), (64, 64), (32, 32)])
def test_resize_equals_opencv(source):
    """Equal up to one float32 rounding step: OpenCV's AVX-512 path (Xeon) fuses multiply-adds,
    its AVX2 path (EPYC) gives bit-identical values."""
    values = np.random.default_rng(1).random(source).astype(np.float32)
    for target in [(256, 256), (240, 256), (256, 97), (128, 128), (31, 33), (512, 300)]:
        np.testing.assert_allclose(standalone.resize_linear(values, *target),
                                   cv2.resize(values, target[::-1], interpolation=cv2.INTER_LINEAR), rtol=0, atol=2e-7)


def test_contours_and_seeds_equal_opencv():
    """Outer contours (order, simplified points), centroids and seed markers as OpenCV gives them,
    on masks with holes, islands in holes, single pixels and one-pixel lines."""
    for seed in range(120):
        rng = np.random.default_rng(seed)
        shape = tuple(int(s) for s in rng.integers(5, 80, 2))
        if seed % 3 == 0:
            mask = rng.random(shape) > 0.7
        else:
            smooth = ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.3, 3))
            mask = smooth > np.quantile(smooth, rng.uniform(0.3, 0.9))
        expected, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        got = standalone.outer_contours(mask)
        assert len(got) == len(expected)
        for ours, theirs in zip(got, expected):
            np.testing.assert_array_equal(ours, theirs[:, 0])
        distance = np.where(mask, 0.9, 0.1).astype(np.float32)
        np.testing.assert_array_equal(standalone.seed_markers(distance, 0.5), postprocess.seed_markers(distance, 0.5))


@pytest.mark.parametrize("seed", range(4))
def test_watershed_equals_scikit_image_on_plateaus(seed):
    """Quantised maps: many equal heights and equal marker heights, where the flooding order of
    scikit-image's heap decides the labels."""
    from skimage.segmentation import watershed

    rng = np.random.default_rng(seed)
    heights = np.round(ndimage.gaussian_filter(rng.random((150, 170)), 2.5) * 200) / 200
    markers = postprocess.seed_markers(heights.astype(np.float32), float(np.quantile(heights, 0.8)))
    mask = heights > np.quantile(heights, 0.3)
    assert markers.max() > 20
    from samzoo.families.microsam.bioimageio_architecture import flood_watershed  # the path without scikit-image

    np.testing.assert_array_equal(flood_watershed(-heights, markers, mask), watershed(-heights, markers, mask=mask))


@pytest.mark.parametrize("seed", range(4))
def test_labels_from_distance_map_equal_samzoo(seed):
    rng = np.random.default_rng(seed)
    distance = ndimage.gaussian_filter(rng.random((150, 170)), 2.5).astype(np.float32)
    distance = (distance - distance.min()) / np.ptp(distance)
    params = SamcellParams(peak_threshold=[0.47, 0.6, 0.55, 0.7][seed], fill_threshold=[0.09, 0.3, 0.4, 0.2][seed])
    expected = postprocess.labels_from_distance_map(distance, params)
    assert expected.max() > 5
    np.testing.assert_array_equal(standalone.labels_from_distance_map(distance, params.to_dict()), expected)


def test_gray_conversion_and_tiling_equal_samzoo():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 65535, (40, 50), dtype=np.uint16),
              rng.random((40, 50, 2)).astype(np.float32), rng.random((3, 40, 50)), textured((40, 50), 1)]
    for image in images:
        np.testing.assert_array_equal(standalone.to_gray_uint8(image), preprocess.to_gray_uint8(image))
    for shape in [(300, 400), (256, 256), (180, 90), (520, 300), (64, 100), (50, 40)]:
        crops, windows = tiling.split(textured(shape, 2))
        ours, our_windows = standalone.split(textured(shape, 2))
        assert [tuple(w.__dict__.values()) for w in windows] == our_windows
        assert all(np.array_equal(a, b) for a, b in zip(crops, ours))
        maps = [rng.random(c.shape).astype(np.float32) for c in crops]
        np.testing.assert_array_equal(standalone.merge(maps, our_windows, shape, ours[0].shape),
                                      tiling.merge(maps, windows, shape, crops[0].shape))


EDGE_SIDES = (1, 2, 63, 64, 100, 191, 192, 193, 255, 256, 257, 258, 383, 384, 385, 449, 450, 513, 701)
# a shorter side just over 2 overlaps: strides of 1 or 2 px (thousands of crops), so only small partners
EDGE_SHAPES = [(h, w) for h in EDGE_SIDES for w in EDGE_SIDES] + [(65, 65), (66, 70), (70, 66), (65, 2)]


def test_crop_layouts_agree_and_cover_the_image_at_edge_sizes():
    """samzoo's and the packaged crop layouts are one behaviour at the sizes where the authors'
    clamps could act (one crop at <= 2 overlaps, crop = shorter side, strides ending exactly at
    the edge): every window starts inside the image, is not empty, and together they cover it."""
    for height, width in EDGE_SHAPES:
        size, pad, windows = tiling.crop_layout((height, width))
        assert standalone.crop_layout((height, width)) == (size, pad, [tuple(w.__dict__.values()) for w in windows])
        covered = np.zeros((height, width), bool)
        for w in windows:
            assert 0 <= w.y < height and 0 <= w.x < width and w.height > 0 and w.width > 0, (height, width, w)
            assert w.y == max(0, w.padded_y - pad) and w.x == max(0, w.padded_x - pad)
            covered[w.y:w.y + w.height, w.x:w.x + w.width] = True
        assert covered.all(), (height, width)


def _standalone_net(model):
    net = standalone.SamcellInstanceSegmentation(model.config.to_dict(), model.params)
    net.load_state_dict({f"sam.{k}": v for k, v in model.sam.state_dict().items()}, strict=True)
    return net


def test_standalone_pipeline_equals_samzoo_segment(model):
    """Same weights: distance maps bit for bit, labels identical (narrow crops, small images, RGB)."""
    net = _standalone_net(model)
    rgb = np.stack([textured((260, 300), 7), textured((260, 300), 8), textured((260, 300), 9)], -1)
    for image in [textured((300, 400), 1), textured((180, 90), 3), rgb]:
        gray = standalone.to_gray_uint8(image)
        np.testing.assert_array_equal(net.distance_map(gray), distance_map(image, model))
        expected = segment_image(image, model, progress=False)
        assert expected.max() > 10
        chw = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
        got = net(torch.from_numpy(chw.astype(np.float32))[None])[0, 0].numpy()
        np.testing.assert_array_equal(got, expected)


def test_architecture_file_needs_only_torch_numpy_scipy(tmp_path, model):
    """The generated file imports nothing else and runs with samzoo, OpenCV, scikit-image,
    torchvision and transformers made unimportable."""
    source = architecture_source()
    modules = unguarded_import_roots(source)
    assert modules <= {"__future__", "heapq", "math", "typing", "numpy", "torch", "scipy"}, modules
    path = tmp_path / "samcell_architecture.py"
    path.write_text(source)
    weights = tmp_path / "w.pt"
    torch.save({f"sam.{k}": v for k, v in model.sam.state_dict().items()}, weights)
    image = textured((260, 280), 4)
    np.save(tmp_path / "image.npy", image)
    code = f"""
import sys
for name in ("samzoo", "cv2", "skimage", "torchvision", "transformers", "segment_anything"):
    sys.modules[name] = None
import importlib.util, json, numpy as np, torch
spec = importlib.util.spec_from_file_location("arch", {str(path)!r}); arch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arch)
net = arch.SamcellInstanceSegmentation(json.loads({json.dumps(model.config.to_dict())!r}), {model.params!r})
net.load_state_dict(torch.load({str(weights)!r}, weights_only=True))
labels = net(torch.from_numpy(np.load({str(tmp_path / 'image.npy')!r}).astype(np.float32))[None, None])[0, 0].numpy()
np.save({str(tmp_path / 'labels.npy')!r}, labels)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), segment_image(image, model, progress=False))


# ---- the packages ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def packages(model, tmp_path_factory):
    return package_samcell(model, tmp_path_factory.mktemp("samcell-packages"))


@pytest.mark.slow
def test_packages_pass_test_model_and_give_samzoo_labels(model, packages):
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict, test_model

    assert set(packages) == {"instance", "network"}
    measured = {}
    for kind, path in packages.items():
        start = time.perf_counter()
        summary = test_model(path)
        assert summary.status == "passed", summary.format()[-3000:]
        measured[kind] = {"test_model_s": round(time.perf_counter() - start, 1),
                          "size_mb": round(path.stat().st_size / 1e6, 2)}
        with zipfile.ZipFile(path) as zf:
            assert "samcell_architecture.py" in zf.namelist()
        assert_shared_runtime_format(path)

    # instance: samzoo segment's labels on images that are not the test image (8-bit, 16-bit)
    sixteen = (textured((300, 330), 12).astype(np.uint16) * 250 + 1000).astype(np.uint16)
    for image in [textured((300, 400), 11), sixteen]:
        result = predict(model=packages["instance"], inputs={"image": image.astype(np.float32)[None, None]})
        labels = np.asarray(result.members["labels"].data)[0, 0]
        expected = segment_image(image, model, progress=False)
        assert expected.max() > 10
        np.testing.assert_array_equal(labels, expected)

    # network: bioimageio.core runs it blockwise (256 px blocks, 32 px halo) on a larger image
    image = textured((300, 400), 11)
    pipeline = create_prediction_pipeline(load_model_description(packages["network"]))
    result = predict(model=pipeline, inputs={"image": image.astype(np.float32)[None, None]}, blocksize_parameter=0)
    blockwise = np.asarray(result.members["distance"].data)[0, 0]
    assert blockwise.shape == image.shape and np.isfinite(blockwise).all()
    blended = distance_map(image, model)
    # not equal by design (halo-cut blocks at other places than SAMCell's blended crops), but the same map
    measured["network_blockwise_vs_blended_map_correlation"] = round(float(np.corrcoef(blockwise.ravel(),
                                                                                        blended.ravel())[0, 1]), 3)
    assert measured["network_blockwise_vs_blended_map_correlation"] > 0.5, measured
    print(f"\nSAMCell packages: {json.dumps(measured)}")


def test_package_cli_writes_samcell_packages(model, tmp_path, capsys):
    from samzoo.cli import main

    from samzoo.families import get_family

    checkpoint = get_family("samcell").save(model, tmp_path / "samcell.pt")
    assert main(["package", "-m", str(checkpoint), "-o", str(tmp_path / "out"), "--kinds", "instance"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["samcell-random-test-instance.zip"], written
    with zipfile.ZipFile(tmp_path / "out" / written[0]) as zf:
        labels = np.load(zf.open("test_output.npy"))
        image = np.load(zf.open("test_input.npy"))
    np.testing.assert_array_equal(labels[0, 0], segment_image(image[0, 0].astype(np.uint8), model, progress=False))
    capsys.readouterr()
    assert main(["info", str(tmp_path / "out" / written[0])]) == 0  # the package says its family
    assert "family:       samcell" in capsys.readouterr().out


def test_package_refuses_what_samcell_cannot_write(model, tmp_path, capsys):
    from conftest import one_line_exit_2

    from samzoo.families import get_family

    checkpoint = get_family("samcell").save(model, tmp_path / "samcell.pt")
    one_line_exit_2(capsys, ["package", "-m", str(checkpoint), "-o", str(tmp_path / "o1"), "--formats", "onnx"],
                    "pytorch_state_dict", "onnx")
    one_line_exit_2(capsys, ["package", "-m", str(checkpoint), "-o", str(tmp_path / "o2"), "--kinds", "ais"],
                    "SAMCell", "ais")
