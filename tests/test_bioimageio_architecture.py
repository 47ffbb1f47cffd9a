"""The self-contained architecture file that every package ships gives exactly what samzoo's own
inference gives on the same weights (labels, masks), imports only torch/numpy/scipy, and keeps
segment-anything's / micro-sam's state-dict layout."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from samzoo import SamzooModel, preset
from samzoo.families.microsam import bioimageio_architecture as arch
from samzoo.families.microsam.ais import AisParams, watershed_from_prediction, watershed_inputs
from samzoo.families.microsam.ais_decoder import decoder_state
from samzoo.families.microsam.packaging.weights import normalized_input, packaged_state, prompt_masks
from samzoo.packaging.samples import synthetic_sample
from samzoo.segmentation.api import segment
from _imports import GUARDED, unguarded_import_roots

ARCH_PATH = arch.__file__


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = SamzooModel(preset("test"))
    image, _ = synthetic_sample(128, seed=5)
    with torch.no_grad():
        maps = m(normalized_input(m, image[..., None]))[0].numpy()
    q = lambda a, p: float(np.clip(np.quantile(a, p), 0.01, 1.0))  # noqa: E731  (a random model finds objects)
    m.ais_params = {"foreground_threshold": q(maps[0], 0.4), "center_distance_threshold": q(maps[1], 0.35),
                    "boundary_distance_threshold": q(maps[2], 0.35), "min_size": 4}
    return m


def _random_maps(shape, seed):
    rng = np.random.default_rng(seed)
    maps = rng.random((3, *shape)).astype(np.float32)
    return np.stack([ndimage.gaussian_filter(m, 3) for m in maps]).clip(0, 1)


@pytest.mark.parametrize("seed", range(4))
def test_packaged_ais_post_processing_equals_samzoo(seed):
    """``watershed_from_maps`` (the packaged AIS) gives samzoo's AIS labels (scikit-image's
    watershed) on smooth maps, with and without small-object removal."""
    maps = _random_maps((97, 131), seed)
    maps = (maps - maps.min()) / (maps.max() - maps.min())
    params = AisParams(foreground_threshold=0.45, center_distance_threshold=0.55,
                       boundary_distance_threshold=0.55, min_size=[0, 12, 40, 5][seed],
                       foreground_smoothing=[1.0, 0.0, 2.0, 1.0][seed])
    expected = watershed_from_prediction(maps, params)
    got = arch.watershed_from_maps(maps, params.to_dict())
    assert expected.max() > 3  # a real segmentation, not an empty one
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.uint32


# ---- the packaged watershed against scikit-image's, byte for byte, where flooding order matters:
# quantised maps (many equal heights), constant plateaus and seeds that tie ----

def _quantised(maps: np.ndarray, levels: int) -> np.ndarray:
    return (np.round(maps * (levels - 1)) / (levels - 1)).astype(np.float32)


def _target_maps(seed: int) -> np.ndarray:
    """Decoder-like maps: μSAM's AIS training target (foreground, center and boundary distances)
    of a synthetic image's labels -- what a well-trained decoder outputs."""
    from samzoo.families.microsam.training.targets import ais_target

    _, labels = synthetic_sample(160, seed=seed)
    return ais_target(labels)[1]


def _model_maps(model, seed: int) -> np.ndarray:
    """The random-weight test model's decoder maps of a synthetic image."""
    image, _ = synthetic_sample(128, seed=seed)
    with torch.no_grad():
        return model(normalized_input(model, image[..., None]))[0].numpy()


def _plateau_maps() -> np.ndarray:
    """Three flat discs on a flat background, each holding several separate seeds at one height:
    every marker and every pixel ties, so only the flooding order decides the labels."""
    yy, xx = np.mgrid[:90, :120]
    fg = np.zeros((90, 120), np.float32)
    center = np.ones((90, 120), np.float32)
    for cy, cx, r in ((30, 30, 22), (45, 80, 30), (75, 25, 12)):
        fg[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1.0
    center[::7, ::9] = 0.0  # isolated seed pixels, many per disc
    boundary = np.where(fg > 0, 0.25, 1.0).astype(np.float32)
    return np.stack([fg, center, boundary])


def _watershed_cases():
    """(name, maps, AIS parameters) -- maps in [0, 1], as the decoder gives them."""
    smooth = dict(foreground_smoothing=1.0, distance_smoothing=1.6)
    raw = dict(foreground_smoothing=0.0, distance_smoothing=0.0)
    cases = [("plateaus", _plateau_maps(), dict(raw, foreground_threshold=0.5,
                                                center_distance_threshold=0.5, boundary_distance_threshold=0.5))]
    for seed in range(3):
        maps = _random_maps((97, 131), seed)
        maps = (maps - maps.min()) / (maps.max() - maps.min())
        for levels in (8, 256):
            cases.append((f"random{seed}-{levels}levels", _quantised(maps, levels),
                          dict(raw, foreground_threshold=0.4, center_distance_threshold=0.6,
                               boundary_distance_threshold=0.6)))
    for seed in (3, 11, 21):
        cases.append((f"target{seed}-8levels", _quantised(_target_maps(seed), 8), dict(raw)))
        cases.append((f"target{seed}-smoothed", _target_maps(seed), dict(smooth)))
    return cases


WATERSHED_CASES = _watershed_cases()


@pytest.fixture
def pure_flood(monkeypatch):
    """The packaged post-processing as it runs without scikit-image (bioimage.io's runtime)."""
    monkeypatch.setattr(arch, "_scikit_image_watershed", lambda: None)


def test_packaged_watershed_uses_scikit_image_when_it_imports():
    from skimage.segmentation import watershed

    assert arch._scikit_image_watershed() is watershed


@pytest.mark.parametrize("case", WATERSHED_CASES, ids=[c[0] for c in WATERSHED_CASES])
def test_packaged_watershed_equals_scikit_image_byte_for_byte(case, pure_flood):
    """``arch.watershed`` with the inputs ``ais.py`` hands scikit-image (8-connected seed labels,
    foreground mask, 4-connected flooding of the smoothed boundary distances) gives the same
    array, dtype included; then the whole packaged post-processing equals samzoo's."""
    from skimage.segmentation import watershed

    _, maps, params = case
    ais_params = AisParams(**params)
    mask, seeds, boundary = watershed_inputs(maps[0], maps[1], maps[2], ais_params)
    markers, count = ndimage.label(seeds, structure=np.ones((3, 3), dtype=bool))
    assert count > 3
    expected = watershed(boundary, markers=markers, mask=mask)
    got = arch.flood_watershed(boundary, markers, mask)
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    for min_size in (0, 30):
        p = AisParams(**dict(params, min_size=min_size))
        assert arch.watershed_from_maps(maps, p.to_dict()).tobytes() == watershed_from_prediction(maps, p).tobytes()


@pytest.mark.parametrize("seed", (5, 13, 17))
def test_packaged_watershed_equals_scikit_image_on_model_maps(model, seed, pure_flood):
    """The test model's decoder maps of several images, as float32 and quantised to 8 levels."""
    from skimage.segmentation import watershed

    maps = _model_maps(model, seed)
    for values in (maps, _quantised(maps, 8)):
        params = AisParams(**model.ais_params)
        mask, seeds, boundary = watershed_inputs(values[0], values[1], values[2], params)
        markers, count = ndimage.label(seeds, structure=np.ones((3, 3), dtype=bool))
        assert count > 1
        expected = watershed(boundary, markers=markers, mask=mask)
        assert arch.flood_watershed(boundary, markers, mask).tobytes() == expected.tobytes()
        assert arch.watershed_from_maps(values, model.ais_params).tobytes() == \
            watershed_from_prediction(values, params).tobytes()


def test_state_dict_layout_is_segment_anything_and_micro_sam(model):
    built = arch.MicroSam(model.config.to_dict())
    ours = built.state_dict()
    assert ours.keys() == packaged_state(model).keys()
    assert {k[4:] for k in ours if k.startswith("sam.")} == set(model.sam.state_dict())
    assert {k[12:] for k in ours if k.startswith("ais_decoder.")} == set(decoder_state(model.ais_decoder))
    assert all(ours[k].shape == v.shape for k, v in packaged_state(model).items())


def _images():
    small, _ = synthetic_sample(128, seed=7)
    wide, _ = synthetic_sample(240, seed=8)
    large, _ = synthetic_sample(320, seed=9)  # > 128 px: tiled at native resolution
    rgb = np.stack([small, small[::-1], small[:, ::-1]]).astype(np.float32)
    return {"square": small, "non-square (resized)": wide[:100, :230], "tiled": large[:300, :260], "rgb": rgb}


@pytest.mark.parametrize("name", list(_images()))
def test_ais_labels_identical_to_samzoo(model, name):
    image = _images()[name]
    ais = arch.AisInstanceSegmentation(model.config.to_dict(), model.ais_params)
    ais.load_state_dict(packaged_state(model), strict=True)
    chw = image if image.ndim == 3 else image[None]
    got = ais(torch.from_numpy(chw.astype(np.float32))[None])[0, 0].numpy()
    hwc = np.moveaxis(chw, 0, -1) if chw.shape[0] == 3 else chw[0]
    expected = segment(hwc.astype(np.float32), model, mode="ais", progress=False)
    assert expected.max() > 0
    np.testing.assert_array_equal(got, expected)


def test_interactive_masks_identical_to_samzoo(model):
    image, labels = synthetic_sample(128, seed=12)
    net = arch.InteractiveSegmentation(model.config.to_dict())
    net.load_state_dict({k: v for k, v in packaged_state(model).items() if k.startswith("sam.")}, strict=True)
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    boxes = torch.tensor([[[10.0, 20.0, 60.0, 70.0], [64.0, 5.0, 120.0, 50.0]]])
    points = torch.tensor([[[[30.0, 40.0]], [[90.0, 30.0]]]])
    point_labels = torch.ones((1, 2, 1), dtype=torch.int64)
    masks, scores, embeddings = net(x, boxes, points, point_labels)
    with torch.no_grad():
        emb, input_shape = model.embed(normalized_input(model, image.astype(np.float32)[..., None]))
    exp_masks, exp_scores = prompt_masks(model, emb, input_shape, image.shape, boxes, points, point_labels)
    torch.testing.assert_close(embeddings, emb, rtol=0, atol=0)
    np.testing.assert_array_equal(masks.numpy(), exp_masks.numpy())
    torch.testing.assert_close(scores, exp_scores, rtol=0, atol=0)


def test_block_network_equals_samzoo_maps(model):
    """The ais_network block (S x S input) gives samzoo's decoder maps of that block."""
    size = model.config.img_size
    image, _ = synthetic_sample(size, seed=4)
    net = arch.AisNetwork(model.config.to_dict())
    net.load_state_dict(packaged_state(model), strict=True)
    x = normalized_input(model, image.astype(np.float32)[..., None])
    with torch.no_grad():
        got = net(x[:, :1])
        expected = model(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)  # one-piece vs strip head: rounding


def test_imports_only_torch_numpy_scipy():
    """scikit-image only inside the guarded fast path, which falls back when it does not import."""
    source = open(ARCH_PATH, encoding="utf-8").read()
    assert GUARDED in source
    roots = unguarded_import_roots(source)
    assert roots <= {"__future__", "heapq", "math", "typing", "numpy", "torch", "scipy"}, roots


def test_runs_with_samzoo_and_friends_unimportable(tmp_path):
    """Loaded as a plain file in a process where samzoo, scikit-image, torchvision, segment-anything
    and torch-em cannot be imported, it builds a model and segments."""
    script = f"""
import importlib.abc, importlib.util, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('samzoo', 'skimage', 'torchvision', 'segment_anything', 'torch_em'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location('packaged_arch', {str(ARCH_PATH)!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
import torch
cfg = dict(img_size=128, patch_size=16, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=[1],
           window_size=4, prompt_embed_dim=32, mask_decoder_mlp_dim=64, mask_decoder_heads=2,
           iou_head_hidden_dim=32, ais_initial_features=8, normalization='percentile')
out = mod.AisInstanceSegmentation(cfg, {{'foreground_threshold': 0.01}})(torch.rand(1, 1, 64, 80) * 1000)
assert out.shape == (1, 1, 64, 80) and out.numpy().dtype.name == 'uint32'
print('ok', tuple(out.shape))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok (1, 1, 64, 80)" in proc.stdout, proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------
# vit_t (MobileSAM's TinyViT): the architecture file's encoder equals samzoo's tiny_vit.py

TINY_VIT_SMALL = dict(img_size=128, prompt_embed_dim=32, mask_decoder_mlp_dim=64, mask_decoder_heads=2,
                      iou_head_hidden_dim=32, ais_initial_features=8, normalization="percentile",
                      embed_dim=64, depth=1, num_heads=4,
                      tiny_vit={"embed_dims": [16, 32, 48, 64], "depths": [1, 2, 1, 1], "num_heads": [1, 2, 3, 4],
                                "window_sizes": [7, 5, 6, 3], "num_classes": 10})


def _randomize_batchnorm(module: torch.nn.Module, seed: int) -> None:
    """BatchNorm statistics and affine terms away from their neutral init, so the test sees them."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def vit_t_model():
    torch.manual_seed(7)
    m = SamzooModel(preset("vit_t", **TINY_VIT_SMALL), metadata={"name": "tiny vit_t test model"})
    _randomize_batchnorm(m, 8)
    for p in m.sam.image_encoder.parameters():  # MBConv's last BN starts at 0: move every weight
        p.data.add_(torch.randn_like(p) * 0.02)
    m.eval()
    image, _ = synthetic_sample(128, seed=5)
    with torch.no_grad():
        maps = m(normalized_input(m, image[..., None]))[0].numpy()
    q = lambda a, p: float(np.clip(np.quantile(a, p), 0.01, 1.0))  # noqa: E731
    m.ais_params = {"foreground_threshold": q(maps[0], 0.4), "center_distance_threshold": q(maps[1], 0.35),
                    "boundary_distance_threshold": q(maps[2], 0.35), "min_size": 4}
    return m


def test_tiny_vit_state_dict_layout_is_mobile_sam(vit_t_model):
    """Full-size vit_t: the same keys and shapes as samzoo's tiny_vit.py (= mobile_sam.pt's, frozen
    in tests/data/mobile_sam_vit_t_encoder_keys.json); the small model loads strictly."""
    full = preset("vit_t")
    ours = arch.MicroSam(full.to_dict(), with_ais_decoder=False).sam.image_encoder.state_dict()
    from samzoo.families.microsam.tiny_vit import build_tiny_vit

    theirs = build_tiny_vit(full).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    built = arch.MicroSam(vit_t_model.config.to_dict())
    built.load_state_dict(packaged_state(vit_t_model), strict=True)


def test_tiny_vit_encoder_and_labels_identical_to_samzoo(vit_t_model):
    net = arch.AisInstanceSegmentation(vit_t_model.config.to_dict(), vit_t_model.ais_params)
    net.load_state_dict(packaged_state(vit_t_model), strict=True)
    x = torch.rand(2, 3, 128, 128) * 255
    with torch.no_grad():
        torch.testing.assert_close(net.sam.image_encoder(x), vit_t_model.sam.image_encoder(x), rtol=0, atol=0)
    for name in ("square", "non-square (resized)", "tiled"):
        image = _images()[name]
        got = net(torch.from_numpy(image.astype(np.float32))[None, None])[0, 0].numpy()
        expected = segment(image.astype(np.float32), vit_t_model, mode="ais", progress=False)
        assert expected.max() > 0, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.slow
def test_vit_t_model_packages_and_passes_bioimageio_test(vit_t_model, tmp_path):
    from bioimageio.core import test_model

    from samzoo.packaging import package_model

    image, _ = synthetic_sample(128, seed=5)
    card = {"name": "tiny vit_t test model", "description": "A random-weight vit_t model for tests.",
            "authors": [{"name": "samzoo developers"}], "license": "MIT", "tags": ["test"], "version": "0.1.0",
            "modality": "synthetic light microscopy", "training_data": {"description": "none (random weights)"},
            "architecture": {"type": "sam", "encoder": "tiny_vit (vit_t, reduced)", "decoder": "unetr"},
            "intended_use": "tests", "limitations": ["random weights"],
            "citations": [{"text": "Archit et al. Segment Anything for Microscopy. Nature Methods (2025)",
                           "doi": "10.1038/s41592-024-02580-4"},
                          {"text": "Kirillov et al. Segment Anything. ICCV (2023)", "doi": "10.48550/arXiv.2304.02643"}]}
    # ais (the watershed inside) and interactive (with its ONNX encoder / decoder); ais_network's
    # block network is the same encoder + decoder and adds only time here
    out = package_model(vit_t_model, tmp_path, card=card, sample_image=(image, None),
                        formats=("pytorch_state_dict", "onnx"), kinds=("ais", "interactive"))
    assert set(out) == {"ais", "interactive"}
    for kind, path in out.items():
        summary = test_model(path)
        failed = [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.status == "failed"]
        assert summary.status == "passed", (kind, failed)
