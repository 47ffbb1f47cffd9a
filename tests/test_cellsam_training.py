"""CellSAM training objectives: DETR set loss by hand, and a few real training steps."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import samzoo  # noqa: F401
from samzoo.families.cellsam import TINY
from samzoo.families.cellsam.losses import (denoising_anchors, denoising_loss, detr_loss, generalized_box_iou,
                                           hungarian_match, sigmoid_focal_loss)
from samzoo.families.cellsam.model import CellSAMModel
from samzoo.families.cellsam.training import TrainPreset, boxes_and_masks, train, write_report

from conftest import disk_image, disk_labels


def test_giou_and_focal_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 5.0, 1.0]])
    # IoU 1/7, hull 9 -> 1/7 - (9 - 7)/9; identical -> 1; disjoint: 0 - (10 - 5)/10
    np.testing.assert_allclose(generalized_box_iou(a, b)[0].numpy(), [1 / 7 - 2 / 9, 1.0, -0.5], atol=1e-6)
    logit, target = torch.tensor([0.0]), torch.tensor([1.0])
    # p = 0.5: CE = log 2, (1 - p_t)^2 = 1/4, alpha 0.25
    assert sigmoid_focal_loss(logit, target).item() == pytest.approx(0.25 * 0.25 * np.log(2), rel=1e-5)


def test_hungarian_match_pairs_each_box_with_its_query():
    gt = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.6, 0.2, 0.2]])
    preds = torch.tensor([[0.71, 0.6, 0.2, 0.2], [0.5, 0.5, 0.3, 0.3], [0.2, 0.21, 0.1, 0.1]])
    q, g = hungarian_match(torch.zeros(3, 2), preds, gt, torch.zeros(2, dtype=torch.long), _w())
    assert dict(zip(g.tolist(), q.tolist())) == {0: 2, 1: 0}


def test_hungarian_match_trades_focal_class_cost_against_box_cost():
    """Query A has the exact box at p = 0.5, query B a box shifted right by ``shift`` at p = 0.9.
    Class cost (alpha 0.25, gamma 2): 2 * [0.25 (1-p)^2 (-ln p) - 0.75 p^2 (-ln(1-p))] is
    -0.173 for A and -2.798 for B, so B is cheaper by 2.625 in class cost. Box cost of B over A
    (widths 0.2, same y extent): shift 0.1 -> 5 * 0.1 + 2 * (1 - 1/3) = 1.833 < 2.625, B wins;
    shift 0.2 (boxes touch, GIoU 0) -> 5 * 0.2 + 2 * 1 = 3.0 > 2.625, A wins."""
    gt = torch.tensor([[0.3, 0.5, 0.2, 0.2]])
    logits = torch.tensor([[0.0, -9.0], [float(np.log(9.0)), -9.0]])  # p = 0.5 and 0.9 for class 0
    for shift, winner in ((0.1, 1), (0.2, 0)):
        preds = torch.tensor([[0.3, 0.5, 0.2, 0.2], [0.3 + shift, 0.5, 0.2, 0.2]])
        q, g = hungarian_match(logits, preds, gt, torch.zeros(1, dtype=torch.long), _w())
        assert (q.tolist(), g.tolist()) == ([winner], [0]), shift


def _w():
    from samzoo.families.cellsam.losses import DetrLossWeights

    return DetrLossWeights()


def test_detr_loss_is_zero_for_perfect_boxes_and_counts_layers():
    gt = torch.tensor([[0.3, 0.3, 0.2, 0.2]])
    logits = torch.full((2, 1, 4, 2), -20.0)
    logits[:, 0, 1, 0] = 20.0
    boxes = torch.full((2, 1, 4, 4), 0.5)
    boxes[:, 0, 1] = gt[0]
    out = detr_loss(logits, boxes, [{"boxes": gt, "labels": torch.zeros(1, dtype=torch.long)}])
    assert out["bbox"].item() == pytest.approx(0, abs=1e-6) and out["giou"].item() == pytest.approx(0, abs=1e-6)
    assert out["class"].item() < 1e-6
    boxes[:, 0, 1, 0] += 0.1
    out = detr_loss(logits, boxes, [{"boxes": gt, "labels": torch.zeros(1, dtype=torch.long)}])
    assert out["bbox"].item() == pytest.approx(2 * 0.1, rel=1e-4)  # L1 0.1 in each of the 2 layers


def test_denoising_anchors_sit_in_their_box_or_in_no_box():
    gt = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3]])
    anchors, owners = denoising_anchors(gt, 40, 30, torch.Generator().manual_seed(0), spread=0.5)
    assert anchors.shape == (70, 2) and (owners[:40] >= 0).all() and (owners[40:] == -1).all()
    assert set(owners[:40].tolist()) == {0, 1}
    own = gt[owners[:40]]
    assert ((anchors[:40] - own[:, :2]).abs() <= 0.5 * own[:, 2:] / 2 + 1e-6).all()  # within half the half-size
    lo, hi = gt[:, :2] - gt[:, 2:] / 2, gt[:, :2] + gt[:, 2:] / 2
    neg = anchors[40:]
    assert not ((neg[:, None] >= lo[None]) & (neg[:, None] <= hi[None])).all(-1).any()
    empty, owners = denoising_anchors(torch.zeros(0, 4), 40, 5, torch.Generator().manual_seed(0))
    assert empty.shape == (5, 2) and (owners == -1).all()


def test_denoising_loss_by_hand():
    """Two layers, one image: query 0 on box 0, query 1 background, query 2 padding (ignored)."""
    gt = torch.tensor([[0.3, 0.3, 0.2, 0.2]])
    targets = [{"boxes": gt, "labels": torch.zeros(1, dtype=torch.long)}]
    owners = torch.tensor([[0, -1, -2]])
    logits = torch.full((2, 1, 3, 2), -20.0)
    logits[:, 0, 0, 0] = 20.0
    logits[:, 0, 2] = 20.0  # padding: would cost a lot if it were counted
    boxes = torch.full((2, 1, 3, 4), 0.5)
    boxes[:, 0, 0] = gt[0]
    out = denoising_loss(logits, boxes, owners, targets)
    assert out["class"].item() < 1e-6 and out["bbox"].item() == pytest.approx(0, abs=1e-6)
    assert out["giou"].item() == pytest.approx(0, abs=1e-6)
    logits[:, 0, 1, 0] = 0.0  # background query at p = 0.5: 0.75 * 0.25 * ln 2 per layer
    boxes[:, 0, 0, 0] += 0.1
    out = denoising_loss(logits, boxes, owners, targets)
    assert out["class"].item() == pytest.approx(2 * 0.75 * 0.25 * np.log(2), rel=1e-4)
    assert out["bbox"].item() == pytest.approx(2 * 0.1, rel=1e-4)


def test_random_init_queries_differ_from_the_start():
    """Anchor DETR's queries share one pattern; at random init they must still see different parts
    of the image, or DETR's loss collapses them to one score (the old init: spread ~1e-4)."""
    from samzoo.families.cellsam.anchor_detr import AnchorDetrTransformer

    torch.manual_seed(0)
    transformer = AnchorDetrTransformer(dim=64, heads=4, enc_layers=2, dec_layers=3, ffn=128, num_queries=100)
    with torch.no_grad():
        memory, pos_row, pos_col = transformer.encode(torch.randn(1, 64, 16, 16))
        logits, _ = transformer.decode(memory, pos_row, pos_col, transformer.position.weight[None])
    assert transformer.pattern.weight.abs().max() == 0
    assert logits[-1, 0, :, 0].std() > 3e-3


def test_boxes_and_masks_from_labels():
    labels = disk_labels((60, 80), ((20, 30), (40, 60)), 5)
    boxes, masks = boxes_and_masks(labels, 2.0)
    assert boxes.tolist() == [[50, 30, 72, 52], [110, 70, 132, 92]]
    assert masks.shape == (2, 60, 80) and masks[0].sum() == (labels == 1).sum()


@pytest.mark.slow
def test_a_few_training_steps_lower_both_losses(tmp_path):
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(4):
        centers = [tuple(int(v) for v in rng.integers(15, 113, 2)) for _ in range(5)]
        pairs.append((disk_image((128, 128), centers=centers, radius=9, seed=i).astype(np.float32),
                      disk_labels((128, 128), centers, 9).astype(np.int64)))
    torch.manual_seed(0)
    model = CellSAMModel(replace(TINY, num_queries=20), with_model_cp=True)
    preset = TrainPreset(config=model.config, steps=24, batch=2, crop=128, lr_head=1e-3, lr_sam=1e-3)
    history = train(model, pairs, preset, progress=False)
    for key in ("detector", "sam"):
        first, last = np.mean(history[key][:6]), np.mean(history[key][-6:])
        assert last < first, (key, first, last)
    report = write_report(tmp_path / "report", preset, history, 0.0, 0.5, 1.0, model, pairs[:1])
    saved = json.loads((report / "cellsam_train.json").read_text())
    assert saved["held_out_msa"] == {"before": 0.0, "after": 0.5} and len(saved["losses_every_10_steps"]) == 3
    for png in ("cellsam_train_curves.png", "cellsam_val_overlay.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

