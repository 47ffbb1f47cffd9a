"""From CellFinder outputs to box prompts: top-k, cxcywh -> xyxy, the blended score threshold.

CellSAM keeps a box when its score exceeds ``0.66 * bbox_threshold + 0.33 * mean(c1, c2)`` where
c1, c2 are the centres of a 2-cluster k-means of all scores. samzoo's pipeline calls the same
scikit-learn ``KMeans(n_clusters=2, random_state=42)`` as the reference, so thresholds are equal.
The BioImage.IO package may import only torch/numpy/scipy, so it uses ``two_means_centers``: the
exact optimum of 1-D 2-means (sort, try every cut). On bimodal scores -- what a trained detector
gives -- both agree; on flat, unimodal scores sklearn's Lloyd iterations stop at its tolerance at a
slightly different split (tests measure both).
"""

from __future__ import annotations

import numpy as np
import torch


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def rank_detections(logits: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's last-layer outputs (Q, classes), (Q, 4) -> scores (Q,), xyxy boxes (Q, 4) in pixels of
    the size x size detector input, best first.

    As DETR's PostProcess: the top Q of all Q*classes sigmoid scores, so a query can appear once per
    class."""
    prob = logits.sigmoid().flatten()
    q = logits.shape[0]
    scores, index = torch.topk(prob, q)
    query = torch.div(index, logits.shape[1], rounding_mode="floor")
    xyxy = cxcywh_to_xyxy(boxes)[query] * size
    return scores, xyxy


def two_means_centers(values: np.ndarray) -> tuple[float, float]:
    """Centres of the optimal 2-cluster k-means of 1-D ``values`` (minimum within-cluster SSE)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise ValueError("no values")
    if n == 1 or x[0] == x[-1]:
        return float(x[0]), float(x[-1])
    csum = np.cumsum(x)
    csq = np.cumsum(x * x)
    k = np.arange(1, n)  # left cluster sizes
    left_sum, left_sq = csum[:-1], csq[:-1]
    right_sum, right_sq = csum[-1] - left_sum, csq[-1] - left_sq
    sse = (left_sq - left_sum ** 2 / k) + (right_sq - right_sum ** 2 / (n - k))
    cut = int(np.argmin(sse))
    size = cut + 1
    return float(left_sum[cut] / size), float(right_sum[cut] / (n - size))


def kmeans_centers(values: np.ndarray) -> tuple[float, float]:
    """Centres of scikit-learn's ``KMeans(n_clusters=2, random_state=42)`` on 1-D ``values`` (the reference's call)."""
    import warnings

    from sklearn.cluster import KMeans

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct values than clusters: centres coincide, fine
        centers = KMeans(n_clusters=2, random_state=42).fit(np.asarray(values).reshape(-1, 1)).cluster_centers_
    lo, hi = sorted(float(c) for c in centers.ravel())
    return lo, hi


def score_threshold(scores: np.ndarray, bbox_threshold: float, cluster_blend: bool = True, *,
                    exact: bool = False) -> float:
    """The threshold a score must EXCEED: ``bbox_threshold``, blended with the 2-cluster midpoint
    (scikit-learn's k-means as the reference, or with ``exact`` the exact 1-D optimum)."""
    scores = np.asarray(scores, dtype=np.float32).ravel()
    if not cluster_blend or scores.size < 2:
        return float(bbox_threshold)
    c1, c2 = two_means_centers(scores) if exact else kmeans_centers(scores)
    return 0.66 * float(bbox_threshold) + 0.33 * (c1 + c2) / 2


def select_boxes(scores: torch.Tensor, boxes: torch.Tensor, bbox_threshold: float,
                 cluster_blend: bool = True, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (and scores) above the blended threshold, in their ranked order."""
    if scores.numel() == 0:
        return scores, boxes
    threshold = score_threshold(scores.detach().cpu().numpy(), bbox_threshold, cluster_blend, exact=exact)
    if threshold <= 0:
        return scores, boxes
    # Compared in float64, like the reference's numpy comparison with its float64 threshold.
    keep = torch.from_numpy(scores.detach().cpu().numpy().astype(np.float64) > threshold).to(scores.device)
    return scores[keep], boxes[keep]
