"""Automatic mask generation: parameters, small-region cleanup, label painting, tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.amg import MaskData

from samzoo import InputError
from samzoo.families.microsam.amg import AmgParams, generate_masks, masks_to_labels, remove_small_regions
from samzoo.segmentation.api import segment
from samzoo.families.microsam.predictor import Predictor

from conftest import disk_image, disk_labels

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def oracle(monkeypatch):
    """Make the Predictor's prompt decoding an oracle for a ground-truth label image: a point on
    object i yields object i's mask (as logits +-10) with predicted IoU 0.95 for the first
    candidate and 0.5 for the other two; a point on background yields an empty mask."""
    state = {}

    def decode(self, emb, coords=None, labels=None, boxes=None, mask_logits=None, multimask=False):
        truth = state["truth"][emb.window]
        logits = np.full((len(coords), 3, *truth.shape), -10.0, dtype=np.float32)
        for b, (x, y) in enumerate(coords[:, 0]):
            obj = state["truth"][int(y), int(x)]
            if obj:
                logits[b, :, truth == obj] = 10.0
        iou = torch.tensor([[0.95, 0.5, 0.5]]).repeat(len(coords), 1)
        return torch.from_numpy(logits), iou

    monkeypatch.setattr(Predictor, "decode", decode)
    monkeypatch.setattr(Predictor, "upscale_logits", lambda self, low, emb: low)
    return state


def matches_truth(labels: np.ndarray, truth: np.ndarray) -> bool:
    """Same partition (ids may differ)."""
    if labels.max() != truth.max():
        return False
    for i in range(1, truth.max() + 1):
        ids = np.unique(labels[truth == i])
        if ids.size != 1 or ids[0] == 0 or (labels == ids[0]).sum() != (truth == i).sum():
            return False
    return True


def test_amg_params():
    assert AmgParams().points_per_side == 32 and AmgParams().pred_iou_thresh == 0.88  # SAM's defaults
    assert AmgParams.from_dict({"points_per_side": 8.0}).points_per_side == 8
    for bad, message in [({"points_per_side": 0}, "points_per_side"), ({"box_nms_thresh": 2}, "box_nms_thresh"),
                         ({"pred_iou_thresh": float("nan")}, "finite"), ({"points": 3}, "unknown AMG")]:
        with pytest.raises(InputError, match=message):
            AmgParams.from_dict(bad)


def test_amg_with_oracle_finds_each_object_once(tiny_model, oracle):
    centers = ((30, 40), (60, 90), (70, 20))
    image = disk_image((96, 128), centers, radius=10)
    oracle["truth"] = disk_labels(image.shape, centers, 10)
    labels = segment(image, tiny_model, mode="amg", amg_params={"points_per_side": 16}, progress=False)
    assert matches_truth(labels, oracle["truth"])


def test_tiled_amg_keeps_objects_crossing_tiles(tiny_model, oracle):
    # tiles of 96 px with a halo of 16: disks on tile borders and on a four-tile corner
    centers = ((96, 96), (48, 96), (150, 180), (20, 20), (96, 230))
    image = disk_image((200, 250), centers, radius=6)
    oracle["truth"] = disk_labels(image.shape, centers, 6)
    predictor = Predictor(tiny_model).set_image(image)
    assert predictor.is_tiled
    data = generate_masks(predictor, {"points_per_side": 16}, progress=False)
    assert len(data["iou_preds"]) == len(centers)  # duplicates from neighbouring tiles removed
    assert matches_truth(masks_to_labels(data, image.shape), oracle["truth"])


def test_masks_to_labels_paints_smaller_on_top():
    big = np.ones((20, 20), dtype=bool)
    small = np.ones((4, 4), dtype=bool)
    data = MaskData(boxes=torch.tensor([[5, 5, 8, 8], [0, 0, 19, 19]]), iou_preds=torch.tensor([0.9, 0.9]),
                    crops=[small, big])
    labels = masks_to_labels(data, (30, 30))
    assert labels[6, 6] == 2 and labels[0, 0] == 1 and labels[25, 25] == 0  # larger first -> id 1
    assert (labels == 2).sum() == 16


def test_remove_small_regions():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # a one-pixel hole
    mask[16:18, 16:18] = True  # a small island
    filled, changed = remove_small_regions(mask, 5, "holes")
    assert changed and filled[5, 5] and not filled[0, 0]
    cleaned, changed = remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[16:18, 16:18].any() and cleaned[2:12, 2:12].all()
    same, changed = remove_small_regions(cleaned, 5, "islands")
    assert not changed and (same == cleaned).all()
    # a mask touching the crop border: the outside is not a hole
    edge = np.zeros((6, 6), dtype=bool)
    edge[:, :3] = True
    assert not remove_small_regions(edge, 100, "holes")[1]


def test_amg_on_real_tiny_model(tiny_model, disks):
    params = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
              "min_mask_region_area": 10}
    labels = segment(disks[0], tiny_model, mode="amg", amg_params=params, progress=False)
    assert labels.shape == disks[0].shape and labels.dtype == np.uint32
    ids = np.unique(labels)
    assert ids[0] == 0 or labels.all()
    np.testing.assert_array_equal(ids, np.arange(ids[0], ids[0] + ids.size))  # consecutive ids
