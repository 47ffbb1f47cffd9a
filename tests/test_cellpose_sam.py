"""Cellpose-SAM family without the reference package: config, checkpoints, params, inference, dynamics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import samzoo
import samzoo.families.cellpose_sam
from samzoo.errors import CheckpointError, InputError
from samzoo.families import detect_family, get_family
from samzoo.families.cellpose_sam import build, load, preset, save_checkpoint
from samzoo.families.cellpose_sam.checkpoint import cellpose_state_dict, infer_config
from samzoo.families.cellpose_sam.dynamics import (compute_masks, fill_holes_and_remove_small_masks,
                                                   masks_to_flows, renumber)
from samzoo.families.cellpose_sam.inference import segment_image, segment_volume
from samzoo.families.cellpose_sam.pipeline import pad_amounts, tile_starts
from samzoo.families.cellpose_sam.network import CpsamNet
from samzoo.families.cellpose_sam.params import CpsamParams


def _disks(shape=(120, 140), centers=((30, 40), (80, 100), (40, 110)), radius=14):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint32)
    for i, (r, c) in enumerate(centers, 1):
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = i
    return labels


@pytest.fixture(scope="module")
def test_model():
    torch.manual_seed(0)
    return build("cpsam_test", name="cpsam-test-random")


def test_published_architecture_has_cellpose_parameter_count():
    # counted without building (1.2 GB): the state-dict shapes of the published layout
    config = preset("cpsam")
    net = torch.device("meta")
    with net:
        model = CpsamNet(**{k: v for k, v in config.to_dict().items() if k != "name"})
    total = sum(p.numel() for p in model.parameters())
    # 304,628,930 in cellpose's state dict minus W2 (192*3*8*8) and the two diameters
    assert total == 304_628_930 - 192 * 3 * 8 * 8 - 2
    assert model.encoder.blocks[5].attn.rel_pos_h.shape == (127, 64)
    assert model.encoder.blocks[0].attn.rel_pos_h.shape == (27, 64)
    assert model.encoder.pos_embed.shape == (1, 32, 32, 1024)


def test_output_shape_and_fewer_channels_are_zero_padding(test_model):
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        y = test_model(x)
        assert y.shape == (2, 3, 256, 256)
        one = test_model(x[:, :1])
        padded = test_model(torch.cat([x[:, :1], torch.zeros_like(x[:, :2])], 1))
    assert torch.allclose(one, padded, atol=1e-6)


def test_cellpose_layout_round_trip_with_module_prefix(tmp_path, test_model):
    state = {"module." + k: v for k, v in cellpose_state_dict(test_model).items()}
    path = tmp_path / "cpsam_dp"
    torch.save(state, path)
    loaded = samzoo.load_model(path)
    assert get_family("cellpose_sam").model_class is type(loaded)
    assert loaded.config.replace(name="x", layer_drop=0.0) == test_model.config.replace(name="x")
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(loaded(x), test_model(x))
    assert detect_family(state).name == "cellpose_sam"


def test_samzoo_checkpoint_keeps_params_and_metadata(tmp_path, test_model):
    test_model.params = {"cellprob_threshold": -0.5}
    try:
        path = save_checkpoint(test_model, tmp_path / "m.pt")
    finally:
        test_model.params = {}
    loaded = load(path)
    assert loaded.params == {"cellprob_threshold": -0.5}
    assert loaded.metadata["name"] == "cpsam-test-random"
    assert loaded.config == test_model.config


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("out.bias"), "1 missing: out.bias"),
    (lambda s: s.update({"encoder.extra": torch.zeros(1)}), "1 unexpected: encoder.extra"),
    (lambda s: s.update({"out.weight": torch.zeros(3, 3, 1, 1)}), "shape mismatches: out.weight"),
    (lambda s: s.update({"W2": s["W2"] * 2}), "W2 is not cellpose's fixed pixel-shuffle matrix"),
    (lambda s: s.update({"encoder.cls_token": torch.zeros(1, 1, 32)}), "Cellpose-DINO"),
])
def test_damaged_checkpoints_fail_with_one_line(tmp_path, test_model, damage, message):
    state = cellpose_state_dict(test_model)
    damage(state)
    path = tmp_path / "bad"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=message) as err:
        samzoo.load_model(path)
    assert "\n" not in str(err.value)


def test_infer_config_reads_heads_from_rel_pos_width(test_model):
    config = infer_config(cellpose_state_dict(test_model))
    assert (config.num_heads, config.embed_dim, config.depth, config.rel_pos_rows) == (2, 32, 2, (27, 127))


def test_params_validation_and_resolution():
    with pytest.raises(InputError, match="tile_overlap"):
        CpsamParams(tile_overlap=0.9)
    with pytest.raises(InputError, match="unknown Cellpose-SAM parameter"):
        CpsamParams().replace(bogus=1)
    assert CpsamParams(diameter=60).steps == 400 and CpsamParams().steps == 200


def test_tiling_matches_cellpose_rules():
    assert pad_amounts(240, 256) == (8, 8)  # 240 -> 256: one tile
    assert pad_amounts(512, 256) == (8, 8)
    assert pad_amounts(500, 256) == (14, 14)
    assert len(tile_starts(528, 256, 0.1, False)) == 3
    assert len(tile_starts(256, 256, 0.1, False)) == 1
    assert len(tile_starts(256, 256, 0.1, True)) == 2


def test_renumber_is_first_appearance_order():
    a = np.array([[5, 0, 3], [3, 7, 5]], np.uint16)
    assert renumber(a).tolist() == [[1, 0, 2], [2, 3, 1]]


def test_dynamics_recover_objects_from_their_own_flows():
    labels = _disks()
    flows = 5 * masks_to_flows(labels)
    cellprob = np.where(labels > 0, 3.0, -3.0)
    found = fill_holes_and_remove_small_masks(compute_masks(flows, cellprob), 15)
    assert found.max() == 3
    from samzoo.evaluation.metrics import mean_segmentation_accuracy

    assert mean_segmentation_accuracy(found.astype(np.uint32), labels)[0] > 0.9


def test_dynamics_3d_recover_a_ball():
    z, y, x = np.ogrid[:20, :30, :30]
    ball = ((z - 10) ** 2 + (y - 15) ** 2 + (x - 15) ** 2 <= 64).astype(np.uint32)
    flows = np.stack(np.gradient(-(((z - 10) ** 2 + (y - 15) ** 2 + (x - 15) ** 2) + 0.0 * ball)))
    flows = 5 * flows / (np.linalg.norm(flows, axis=0) + 1e-9)
    found = compute_masks(flows.astype(np.float32), np.where(ball > 0, 2.0, -2.0), niter=50)
    assert found.max() == 1 and ((found > 0) == (ball > 0)).mean() > 0.99


def test_segment_through_public_api(test_model):
    image = (np.random.default_rng(0).random((100, 130)) * 255).astype(np.uint8)
    labels = samzoo.segment(image, test_model, progress=False)
    assert labels.dtype == np.uint32 and labels.shape == image.shape
    with pytest.raises(InputError, match="unknown Cellpose-SAM parameter"):
        samzoo.segment(image, test_model, params={"threshold": 1}, progress=False)
    with pytest.raises(InputError, match="tiles at 256 px"):
        segment_image(image, test_model, tile_shape=512)


def test_volume_modes_run(test_model):
    volume = (np.random.default_rng(1).random((3, 10, 12)) * 255).astype(np.uint8)
    for params in ({"stitch_threshold": 0.5}, {"flow3d": True, "flow3d_smooth": 1.0}):  # 3 + 10 + 12 planes
        labels = segment_volume(volume, test_model, params=params, progress=False)
        assert labels.shape == volume.shape and labels.dtype == np.uint32


def test_tune_stores_best_params(test_model):
    labels = _disks((100, 120), ((30, 30), (70, 80)), 15)
    image = (labels > 0) * 200.0 + 10
    model = build("cpsam_test")
    with torch.no_grad():
        model.net.out.bias[2::3].fill_(-5.0)  # nothing is foreground at threshold 0 ...
    summary = samzoo.families.cellpose_sam.tune(model, [image], [labels], grid={"cellprob_threshold": (0.0, -10.0)},
                                                progress=False)
    from samzoo.evaluation.metrics import mean_segmentation_accuracy

    direct = {t: mean_segmentation_accuracy(labels, segment_image(image, model, params={"cellprob_threshold": t},
                                                                  progress=False))[0] for t in (0.0, -10.0)}
    assert summary["combinations"] == 2 and summary["msa"] == pytest.approx(max(direct.values()))
    assert model.params["cellprob_threshold"] == max(direct, key=direct.get)
    with pytest.raises(InputError, match="change the network outputs"):
        samzoo.families.cellpose_sam.tune(model, [image], [labels], grid={"augment": (True,)}, progress=False)


def test_augmentation_keeps_flows_consistent_with_labels():
    from samzoo.families.cellpose_sam.training import augment, training_targets

    labels = _disks((140, 150), ((40, 50), (90, 100), (60, 120)), 16)
    image = np.stack([labels > 0] * 3).astype(np.float32)
    target = training_targets(labels)
    rng = np.random.default_rng(0)
    for _ in range(6):
        # the image carries the labels through the same geometry, so its flows can be recomputed
        lab_img, aug_target = augment(np.concatenate([image, labels[None].astype(np.float32)]), target, rng, 128)
        recomputed = training_targets(lab_img[3].astype(np.int64))
        inside = lab_img[3] > 0
        # crops cut objects, which changes their centres: compare objects fully inside the crop
        whole = [v for v in np.unique(lab_img[3][inside]) if v and np.isin(v, lab_img[3][[0, -1]]).sum() == 0
                 and np.isin(v, lab_img[3][:, [0, -1]]).sum() == 0]
        for v in whole:
            sel = lab_img[3] == v
            assert np.abs(aug_target[:2, sel] - recomputed[:2, sel]).max() < 1e-6


def test_train_step_lowers_the_cellpose_loss():
    from samzoo.families.cellpose_sam.training import cellpose_loss, train_step, training_targets

    torch.manual_seed(0)
    model = build("cpsam_test")
    labels = _disks((256, 256), ((60, 60), (150, 170), (200, 60)), 25)
    x = torch.from_numpy(np.stack([labels > 0] * 3).astype(np.float32))[None]
    y = torch.from_numpy(training_targets(labels))[None]
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=1e-3, weight_decay=0.1)
    with torch.no_grad():
        before = float(cellpose_loss(model.eval()(x), y[:, :2], y[:, 2]))
    for _ in range(25):
        train_step(model, optimizer, x, y)
    with torch.no_grad():
        after = float(cellpose_loss(model.eval()(x), y[:, :2], y[:, 2]))
    assert after < 0.75 * before


def test_training_schedule_warms_up_then_halves_over_the_last_steps():
    from samzoo.families.cellpose_sam.training import TrainPreset, lr_factor

    recipe = TrainPreset(init="cpsam_test", steps=100, batch_size=1, lr=1e-3, warmup_steps=10, decay_steps=20)
    factors = [lr_factor(recipe, step) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[79] == 1.0
    assert factors[80] == 0.5 and factors[83] == 0.5 and factors[84] == 0.25 and factors[99] == 0.5 ** 5
    assert lr_factor(TrainPreset(init="x", steps=10, batch_size=1, lr=1.0), 9) == 1.0  # no decay asked
