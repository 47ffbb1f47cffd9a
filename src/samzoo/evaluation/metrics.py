"""Instance segmentation metrics: IoU matching, segmentation accuracy (SA), mean SA, Dice.

The definitions follow the 2018 Data Science Bowl and μSAM (``elf.evaluation``) so that numbers
reported by samzoo can be compared with published ones:

* an object pair is a match candidate at threshold ``t`` when its IoU is ``>= t``;
* true positives are a *maximum one-to-one* matching among the candidates (for ``t > 0.5`` every
  object has at most one candidate, for lower thresholds a bipartite matching is needed);
* ``SA(t) = TP / (TP + FP + FN)`` and ``mSA`` is its mean over ``t = 0.5, 0.55, ..., 0.95``.

One deliberate difference to elf: when both images contain no object, the prediction is perfect
and SA is 1.0 (elf returns 0.0); with objects on only one side SA is 0.0 as in elf.

Label 0 is background everywhere. Everything works on N-d label arrays (2D images, 3D volumes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import maximum_bipartite_matching

from samzoo.errors import InputError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "dice",
    "matching_ious",
    "mean_segmentation_accuracy",
    "segmentation_accuracy",
]

#: IoU thresholds of the DSB 2018 / μSAM mean segmentation accuracy.
DEFAULT_THRESHOLDS: np.ndarray = np.arange(0.5, 1.0, 0.05)

# Above this many (gt objects x pred objects) cells, pair counts use a sort instead of a dense
# bincount, so memory stays bounded for volumes with many thousands of objects.
_DENSE_PAIR_LIMIT = 20_000_000


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as a non-negative integer label array, or raise InputError.

    Float arrays are accepted when they hold whole numbers, because label TIFFs written by other
    tools are sometimes float32.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError(f"{name} must be a label image of whole numbers, got non-integer floats")
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{name} must be an integer label image, got dtype {array.dtype}")
    if array.size and np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
        raise InputError(f"{name} has negative labels; labels must be >= 0 (0 = background)")
    return array


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt = _as_labels(gt, "ground truth")
    pred = _as_labels(pred, "prediction")
    if gt.shape != pred.shape:
        raise InputError(f"ground truth shape {gt.shape} differs from prediction shape {pred.shape}")
    return gt, pred


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map labels to 0..n (0 stays background); return (compact flat labels, original ids).

    A bincount lookup table is O(N) and used when the largest id is not absurdly large;
    otherwise fall back to ``np.unique`` (a sort).
    """
    flat = labels.ravel()
    max_id = int(flat.max()) if flat.size else 0
    if max_id <= 4 * flat.size + 1_000_000:
        present = np.bincount(flat.astype(np.intp, copy=False), minlength=max_id + 1) > 0
        present[0] = True
        ids = np.flatnonzero(present)
        lut = np.zeros(max_id + 1, dtype=np.int64)
        lut[ids] = np.arange(len(ids))
        return lut[flat], ids[1:].astype(np.uint64)
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        inverse = inverse + 1
    return inverse.astype(np.int64), ids[1:].astype(np.uint64)


def matching_ious(gt: np.ndarray, pred: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """IoU of every overlapping (ground-truth object, predicted object) pair.

    The matrix is sparse because each object overlaps only a few others; a dense
    ``n_gt x n_pred`` matrix would not fit in memory for large volumes.

    Returns:
        ``(ious, gt_ids, pred_ids)``: ``ious`` is a float64 CSR matrix of shape
        ``(len(gt_ids), len(pred_ids))`` whose entry ``[i, j]`` is the IoU of object
        ``gt_ids[i]`` with ``pred_ids[j]`` (absent entries are 0); ids are sorted, background
        excluded.
    """
    gt, pred = _check_pair(gt, pred)
    g, gt_ids = _compact(gt)
    p, pred_ids = _compact(pred)
    n_g, n_p = len(gt_ids) + 1, len(pred_ids) + 1
    size_g = np.bincount(g, minlength=n_g)
    size_p = np.bincount(p, minlength=n_p)

    both = (g > 0) & (p > 0)
    keys = g[both] * n_p + p[both]
    if n_g * n_p <= _DENSE_PAIR_LIMIT:
        counts = np.bincount(keys, minlength=n_g * n_p)
        keys = np.flatnonzero(counts)
        inter = counts[keys]
    else:
        keys, inter = np.unique(keys, return_counts=True)
    rows, cols = keys // n_p, keys % n_p
    inter = inter.astype(np.float64)
    union = size_g[rows] + size_p[cols] - inter
    ious = inter / union
    matrix = sparse.csr_matrix((ious, (rows - 1, cols - 1)), shape=(n_g - 1, n_p - 1))
    return matrix, gt_ids, pred_ids


def _true_positives(ious: sparse.csr_matrix, threshold: float) -> int:
    """Size of a maximum one-to-one matching among pairs with IoU >= threshold."""
    coo = ious.tocoo()
    keep = coo.data >= threshold
    rows, cols = coo.row[keep], coo.col[keep]
    if rows.size == 0:
        return 0
    if np.unique(rows).size == rows.size and np.unique(cols).size == cols.size:
        return int(rows.size)  # every candidate is exclusive: the matching is the candidate set
    graph = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=ious.shape)
    matched = maximum_bipartite_matching(graph, perm_type="column")
    return int(np.count_nonzero(matched >= 0))


def _accuracy(tp: int, n_gt: int, n_pred: int) -> float:
    if n_gt == 0 and n_pred == 0:
        return 1.0
    return tp / (n_gt + n_pred - tp)  # TP + FP + FN with FP = n_pred - TP, FN = n_gt - TP


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"IoU threshold must be in (0, 1], got {threshold}")
    return threshold


def segmentation_accuracy(gt: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> float:
    """Segmentation accuracy TP / (TP + FP + FN) at one IoU threshold (1.0 if both are empty)."""
    threshold = _check_threshold(threshold)
    ious, gt_ids, pred_ids = matching_ious(gt, pred)
    return _accuracy(_true_positives(ious, threshold), len(gt_ids), len(pred_ids))


def mean_segmentation_accuracy(
    gt: np.ndarray,
    pred: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
) -> tuple[float, list[float]]:
    """Mean of the segmentation accuracies over IoU thresholds, and the per-threshold values.

    The IoU matrix is computed once and reused for every threshold, which is what makes scoring
    hundreds of images in a grid search affordable.
    """
    checked = [_check_threshold(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=np.float64))]
    if not checked:
        raise InputError("thresholds must not be empty")
    ious, gt_ids, pred_ids = matching_ious(gt, pred)
    accuracies = [_accuracy(_true_positives(ious, t), len(gt_ids), len(pred_ids)) for t in checked]
    return float(np.mean(accuracies)), accuracies


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of the foregrounds (non-zero pixels) of two masks or label images.

    Foreground Dice measures semantic overlap independently of how objects are split, which
    separates "found the nuclei" from "separated the nuclei" when diagnosing a model.
    Returns 1.0 when both are empty.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InputError(f"dice: shapes differ, {a.shape} vs {b.shape}")
    fa, fb = a != 0, b != 0
    total = int(np.count_nonzero(fa)) + int(np.count_nonzero(fb))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(fa & fb)) / total
