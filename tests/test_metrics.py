"""Metrics must agree with elf (μSAM's reference implementation) and handle edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from samzoo.errors import InputError
from samzoo.evaluation.metrics import (
    dice,
    matching_ious,
    mean_segmentation_accuracy,
    segmentation_accuracy,
)

elf_eval = pytest.importorskip("elf.evaluation")


def _random_labels(rng: np.random.Generator, shape=(96, 96), n=25, fg=0.5) -> np.ndarray:
    """Random touching regions (watershed of noise from random seeds), masked to a blob field."""
    seeds = np.zeros(shape, dtype=np.int64)
    seeds.flat[rng.choice(seeds.size, n, replace=False)] = np.arange(1, n + 1)
    labels = watershed(rng.random(shape), seeds)
    mask = ndi.gaussian_filter(rng.random(shape), 3) > np.quantile(ndi.gaussian_filter(rng.random(shape), 3), 1 - fg)
    return labels * mask


def _perturb(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """A plausible prediction: shifted, partly relabelled, with noise at the boundaries."""
    pred = np.roll(labels, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    noisy = rng.random(labels.shape) < 0.15
    pred = np.where(noisy, ndi.grey_dilation(pred, size=3), pred)
    pred[pred == rng.integers(1, 10)] = 0  # a missed object
    return pred * 7 + (pred > 0) * 1000  # non-consecutive ids


@pytest.mark.parametrize("case", range(6))
def test_msa_matches_elf_on_random_labels(case: int) -> None:
    rng = np.random.default_rng(case)
    gt = _random_labels(rng, n=int(rng.integers(5, 40)))
    pred = _perturb(rng, gt) if case % 3 else _random_labels(rng, n=int(rng.integers(5, 40)))
    ours, ours_list = mean_segmentation_accuracy(gt, pred)
    ref, ref_list = elf_eval.mean_segmentation_accuracy(pred, gt, return_accuracies=True)
    assert ours == pytest.approx(ref, abs=1e-6)
    np.testing.assert_allclose(ours_list, ref_list, atol=1e-6)
    assert 0.0 <= ours <= 1.0


@pytest.mark.parametrize("thresholds", [[0.1, 0.2, 0.3], [0.25, 0.5, 0.75]])
def test_low_thresholds_need_one_to_one_matching(thresholds: list[float]) -> None:
    # below IoU 0.5 an object can have several candidates, so the matching must be optimal
    rng = np.random.default_rng(42)
    gt = _random_labels(rng, n=30)
    pred = _random_labels(rng, n=50)
    ours, ours_list = mean_segmentation_accuracy(gt, pred, thresholds=thresholds)
    ref, ref_list = elf_eval.mean_segmentation_accuracy(pred, gt, thresholds=thresholds, return_accuracies=True)
    np.testing.assert_allclose(ours_list, ref_list, atol=1e-6)
    assert ours == pytest.approx(ref, abs=1e-6)


def test_exact_half_iou_tie_counts_one_match() -> None:
    # gt object = two pred objects of equal size: both have IoU exactly 0.5 with it
    gt = np.zeros((4, 8), dtype=np.uint16)
    gt[:, :] = 1
    pred = np.zeros_like(gt)
    pred[:, :4], pred[:, 4:] = 1, 2
    assert segmentation_accuracy(gt, pred, 0.5) == pytest.approx(0.5)  # TP 1, FP 1, FN 0
    ref = elf_eval.mean_segmentation_accuracy(pred, gt, thresholds=[0.5])
    assert mean_segmentation_accuracy(gt, pred, [0.5])[0] == pytest.approx(ref)


def test_hand_computed_ious_and_accuracy() -> None:
    gt = np.zeros((10, 10), dtype=np.int32)
    gt[0:4, 0:4] = 5  # 16 px
    gt[6:10, 6:10] = 9  # 16 px
    pred = np.zeros_like(gt)
    pred[0:4, 0:3] = 2  # 12 px inside gt 5 -> IoU 12/16
    pred[5:10, 5:10] = 3  # 25 px containing gt 9 -> IoU 16/25
    pred[0:2, 8:10] = 4  # false positive
    ious, gt_ids, pred_ids = matching_ious(gt, pred)
    assert list(gt_ids) == [5, 9] and list(pred_ids) == [2, 3, 4]
    dense = ious.toarray()
    np.testing.assert_allclose(dense, [[0.75, 0, 0], [0, 0.64, 0]])
    assert segmentation_accuracy(gt, pred, 0.5) == pytest.approx(2 / 3)
    assert segmentation_accuracy(gt, pred, 0.7) == pytest.approx(1 / 4)  # TP 1, FP 2, FN 1
    msa, per_threshold = mean_segmentation_accuracy(gt, pred)
    assert len(per_threshold) == 10
    assert msa == pytest.approx(np.mean(per_threshold))


def test_empty_and_identical_cases() -> None:
    empty = np.zeros((16, 16), dtype=np.uint8)
    some = empty.copy()
    some[2:6, 2:6] = 1
    assert mean_segmentation_accuracy(empty, empty)[0] == 1.0
    assert mean_segmentation_accuracy(some, empty)[0] == 0.0
    assert mean_segmentation_accuracy(empty, some)[0] == 0.0
    assert mean_segmentation_accuracy(some, some * 3)[0] == 1.0  # ids need not agree


def test_accepts_bool_float_and_3d_labels() -> None:
    volume = np.zeros((3, 8, 8), dtype=np.float32)
    volume[:, 1:4, 1:4] = 2.0
    assert mean_segmentation_accuracy(volume, volume.astype(np.uint64))[0] == 1.0
    assert mean_segmentation_accuracy(volume > 0, volume)[0] == 1.0


@pytest.mark.parametrize(
    ("gt", "pred"),
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int)),
        (np.full((4, 4), -1), np.zeros((4, 4), int)),
        (np.full((4, 4), 0.5), np.zeros((4, 4), int)),
        (np.full((4, 4), "a"), np.zeros((4, 4), int)),
    ],
)
def test_bad_inputs_raise_input_error(gt: np.ndarray, pred: np.ndarray) -> None:
    with pytest.raises(InputError):
        mean_segmentation_accuracy(gt, pred)


def test_bad_thresholds_raise_input_error() -> None:
    labels = np.ones((4, 4), dtype=np.uint8)
    with pytest.raises(InputError):
        segmentation_accuracy(labels, labels, threshold=0.0)
    with pytest.raises(InputError):
        mean_segmentation_accuracy(labels, labels, thresholds=[])


def test_dice() -> None:
    a = np.zeros((10, 10), dtype=np.uint8)
    b = np.zeros((10, 10), dtype=np.uint8)
    assert dice(a, b) == 1.0
    a[:5] = 1
    assert dice(a, b) == 0.0
    b[:5, :5] = 7  # 25 px inside a's 50 px
    assert dice(a, b) == pytest.approx(2 * 25 / 75)
    with pytest.raises(InputError):
        dice(a, b[:5])
