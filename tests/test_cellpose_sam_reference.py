"""Cellpose-SAM against the reference implementation (cellpose 4.x, a test-only dependency).

Same random weights in cellpose's exact public layout -> same network outputs; same pipeline
(normalisation, tiles, taper, flips, rescaling) -> same flows; same flows -> same labels."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

import samzoo  # noqa: F401  (torchvision fix before cellpose imports torchvision)
from samzoo.evaluation.metrics import mean_segmentation_accuracy
from samzoo.families.cellpose_sam import build, load, save_checkpoint
from samzoo.families.cellpose_sam import dynamics as own_dynamics
from samzoo.families.cellpose_sam.checkpoint import cellpose_state_dict
from samzoo.families.cellpose_sam.inference import labels_from_flows, predict_flows
from samzoo.families.cellpose_sam.params import CpsamParams

cellpose_models = pytest.importorskip("cellpose.models", reason="cellpose (test-only dependency) not installed")
from cellpose import dynamics as cp_dynamics  # noqa: E402
from cellpose import utils as cp_utils  # noqa: E402
from cellpose.vit import CPSAM  # noqa: E402


def _blobs(shape, n, seed, radius=(6, 14)):
    """Touching and separate ellipses: labels plus a noisy image of them."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int64)
    for i in range(1, n + 1):
        r, c = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10)
        a, b = rng.uniform(*radius, size=2)
        labels[((rows - r) / a) ** 2 + ((cols - c) / b) ** 2 <= 1] = i
    labels = own_dynamics.renumber(labels)
    image = (labels > 0) * 150.0 + 20 + rng.normal(0, 10, shape)
    return labels, image.astype(np.float32)


@pytest.fixture(scope="session")
def cpsam_random_file(tmp_path_factory):
    """One random-weight file with cpsam's exact public layout (1.2 GB), written once per session."""
    torch.manual_seed(0)
    model = build("cpsam")
    return save_checkpoint(model, tmp_path_factory.mktemp("cpsam") / "cpsam_random", cellpose_layout=True)


@pytest.mark.slow
def test_vit_l_network_equals_cellpose_on_public_layout(cpsam_random_file):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ref = CPSAM()
        ref.load_model(str(cpsam_random_file), device=torch.device("cpu"), strict=True)
        ref.eval()
        ours = load(cpsam_random_file)
        x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = ref(x)[0]
            got = ours(x)
            expected_1ch = ref(x[:, :1])[0]
            got_1ch = ours(x[:, :1])
    finally:
        torch.set_num_threads(threads)
    assert (got - expected).abs().max() < 1e-4
    assert (got_1ch - expected_1ch).abs().max() < 1e-4
    assert expected.abs().max() > 0.1  # a real comparison, not of zeros


def _cellpose_with(model):
    """cellpose's own CellposeModel/CPSAM code running ``model``'s (small) architecture and weights:
    CPSAM.forward and CellposeModel.eval unchanged, only the ViT built at the small size."""
    from segment_anything.modeling import ImageEncoderViT

    c = model.config
    net = CPSAM.__new__(CPSAM)
    torch.nn.Module.__init__(net)
    net._dtype, net.rdrop, net.nout, net.ps = torch.float32, 0.0, c.nout, c.patch_size
    net.encoder = ImageEncoderViT(img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.embed_dim,
                                  depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
                                  out_chans=c.neck_dim, qkv_bias=True,
                                  norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                  window_size=0, global_attn_indexes=())
    for block, rows in zip(net.encoder.blocks, c.rel_pos_rows):
        block.attn.rel_pos_h = torch.nn.Parameter(torch.zeros(rows, c.head_dim))
        block.attn.rel_pos_w = torch.nn.Parameter(torch.zeros(rows, c.head_dim))
    channels = c.nout * c.patch_size ** 2
    net.out = torch.nn.Conv2d(c.neck_dim, channels, 1)
    net.W2 = torch.nn.Parameter(torch.zeros(channels, c.nout, c.patch_size, c.patch_size), requires_grad=False)
    net.diam_labels = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    net.diam_mean = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    net.load_state_dict(cellpose_state_dict(model), strict=True)
    cp = cellpose_models.CellposeModel.__new__(cellpose_models.CellposeModel)
    cp.device, cp.gpu, cp.backbone, cp.net = torch.device("cpu"), False, "sam_vitl", net.eval()
    return cp


@pytest.fixture(scope="module")
def small_pair():
    torch.manual_seed(3)
    model = build("cpsam_test")
    with torch.no_grad():  # foreground everywhere and strong flows: random flows then make masks
        model.net.out.weight.mul_(20)
        model.net.out.bias[2::3].fill_(3.0)
    return model, _cellpose_with(model)


@pytest.mark.parametrize("case", [
    dict(shape=(200, 230), channels=1, params={}),
    dict(shape=(300, 420), channels=3, params={}),                      # 2x2 tiles, RGB
    dict(shape=(270, 260), channels=2, params={"augment": True}),       # flip TTA
    dict(shape=(180, 200), channels=1, params={"diameter": 45.0}),      # rescaled by 30/45
])
def test_pipeline_equals_cellpose_eval(small_pair, case):
    model, cp = small_pair
    rng = np.random.default_rng(sum(case["shape"]))
    image = rng.gamma(2.0, 40.0, (*case["shape"], case["channels"])).astype(np.float32)
    image = image[..., 0] if case["channels"] == 1 else image
    params = CpsamParams(flow_threshold=0.0).replace(**case["params"])
    kwargs = dict(flow_threshold=0.0, augment=params.augment, diameter=params.diameter or None)
    ref_labels, ref_flows, _ = cp.eval(image, channel_axis=None if case["channels"] == 1 else 2, **kwargs)
    flows = predict_flows(model, image, params)
    scale = np.abs(ref_flows[1]).max()
    assert np.abs(flows[:2] - ref_flows[1]).max() < 1e-4 * max(1.0, scale)
    assert np.abs(flows[2] - ref_flows[2]).max() < 1e-4 * max(1.0, np.abs(ref_flows[2]).max())
    # same flows -> same labels, exactly (cellpose's flows through samzoo's dynamics); labels from
    # samzoo's own flows are not compared here: random weights give chaotic flow fields in which
    # float rounding (1e-5) moves end points across histogram bins. Agreement on a trained model
    # (converging flows) is measured in benchmarks/cellpose_sam_speed.py.
    assert ref_labels.max() > 3
    own = labels_from_flows(np.concatenate([ref_flows[1], ref_flows[2][None]]), params)
    np.testing.assert_array_equal(own, ref_labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dynamics_equal_cellpose_on_the_same_flows(seed):
    labels, _ = _blobs((180, 220), 18, seed)
    rng = np.random.default_rng(seed)
    flows = (5 * cp_dynamics.masks_to_flows_gpu(labels)[0] + rng.normal(0, 0.7, (2, *labels.shape)))
    flows = flows.astype(np.float32)
    cellprob = (np.where(labels > 0, 2.0, -2.0) + rng.normal(0, 1.0, labels.shape)).astype(np.float32)
    for kwargs in (dict(), dict(cellprob_threshold=-0.5, flow_threshold=0.8), dict(niter=100, flow_threshold=0.0)):
        expected = cp_dynamics.compute_masks(flows, cellprob, **kwargs)
        expected = cp_utils.fill_holes_and_remove_small_masks(expected, min_size=15)
        got = own_dynamics.compute_masks(flows, cellprob, **kwargs)
        got = own_dynamics.fill_holes_and_remove_small_masks(got, 15)
        assert expected.max() > 5
        np.testing.assert_array_equal(got, expected)


def test_flow_targets_equal_cellpose():
    # Equal up to float64 summation order: samzoo adds the nine neighbours in cellpose's order,
    # cellpose's torch .sum(dim=0) reorders them for some pixel counts (differences ~1e-16).
    for shape, n, seed in (((150, 170), 12, 5), ((256, 300), 60, 6)):
        labels, _ = _blobs(shape, n, seed)
        expected = cp_dynamics.masks_to_flows_gpu(labels)[0]
        got = own_dynamics.masks_to_flows(labels)
        assert np.abs(expected).max() > 0.9
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
