"""DETR's set loss as CellFinder is trained with it (the reference ships the criterion, unused).

Hungarian matching (scipy's ``linear_sum_assignment``) of predictions to ground-truth boxes on a
cost of focal classification + L1 + (negative) GIoU; then sigmoid focal loss (alpha 0.25, gamma 2)
on all queries' class logits, L1 and 1 - GIoU on the matched boxes, summed over all decoder layers
(auxiliary losses) and normalised by the number of ground-truth boxes. Training can add
denoising queries (``denoising_anchors``/``denoising_loss``): anchors known to sit on an object or
on background, with fixed targets and no matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .detections import cxcywh_to_xyxy


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of xyxy boxes (N, 4) x (M, 4) -> (N, M)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / union.clamp(min=1e-9)
    lt_c = torch.min(a[:, None, :2], b[None, :, :2])
    rb_c = torch.max(a[:, None, 2:], b[None, :, 2:])
    hull = (rb_c - lt_c).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-9)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
                       ) -> torch.Tensor:
    """Element-wise focal loss (Lin et al. 2017) on logits."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss


@dataclass(frozen=True)
class DetrLossWeights:
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_class: float = 2.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0


@torch.no_grad()
def hungarian_match(logits: torch.Tensor, boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                    w: DetrLossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: (Q, C) logits, (Q, 4) cxcywh predictions vs (G, 4) cxcywh targets -> (query idx, gt idx)."""
    if gt_boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    prob = logits.sigmoid()[:, gt_labels]
    alpha, gamma = 0.25, 2.0
    neg = (1 - alpha) * prob ** gamma * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    cost = (w.cost_class * (pos - neg) + w.cost_bbox * torch.cdist(boxes, gt_boxes, p=1)
            - w.cost_giou * generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(gt_boxes)))
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def detr_loss(all_logits: torch.Tensor, all_boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]],
              w: DetrLossWeights = DetrLossWeights()) -> dict[str, torch.Tensor]:
    """all_logits (L, B, Q, C), all_boxes (L, B, Q, 4); targets: per image {"boxes": (G, 4) cxcywh in
    [0, 1], "labels": (G,)} -> {"loss", "class", "bbox", "giou"} (summed over the L decoder layers)."""
    num_boxes = max(sum(int(t["boxes"].shape[0]) for t in targets), 1)
    totals = {"class": 0.0, "bbox": 0.0, "giou": 0.0}
    for logits, boxes in zip(all_logits, all_boxes):
        onehot = torch.zeros_like(logits)
        src_boxes, tgt_boxes = [], []
        for b, t in enumerate(targets):
            qi, gi = hungarian_match(logits[b].detach(), boxes[b].detach(), t["boxes"], t["labels"], w)
            onehot[b, qi, t["labels"][gi]] = 1.0
            src_boxes.append(boxes[b, qi])
            tgt_boxes.append(t["boxes"][gi])
        focal = sigmoid_focal_loss(logits, onehot)
        totals["class"] = totals["class"] + focal.mean(1).sum() / num_boxes * logits.shape[1]
        src, tgt = torch.cat(src_boxes), torch.cat(tgt_boxes)
        if src.shape[0]:
            _add_box_losses(totals, src, tgt, num_boxes)
    return _weighted(totals, w)


def _add_box_losses(totals: dict, src: torch.Tensor, tgt: torch.Tensor, num: int) -> None:
    """Add L1 and 1 - GIoU of the paired cxcywh boxes ``src``/``tgt``, summed and divided by ``num``."""
    totals["bbox"] = totals["bbox"] + F.l1_loss(src, tgt, reduction="sum") / num
    giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt)))
    totals["giou"] = totals["giou"] + (1 - giou).sum() / num


def _weighted(totals: dict, w: DetrLossWeights) -> dict[str, torch.Tensor]:
    out = {k: torch.as_tensor(v) if not torch.is_tensor(v) else v for k, v in totals.items()}
    out["loss"] = w.loss_class * out["class"] + w.loss_bbox * out["bbox"] + w.loss_giou * out["giou"]
    return out


def denoising_anchors(gt_boxes: torch.Tensor, positives: int, negatives: int, generator: torch.Generator,
                      spread: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-only queries for one image: anchor points (positives + negatives, 2) and, per anchor,
    the index of its ground-truth box (-1: background).

    Positives lie inside a box (its centre moved by up to ``spread`` of its half-size); negatives are
    uniform points that fall in no box (rejection-sampled; fewer when the image is full of boxes).
    Boxes are cxcywh in [0, 1]. Queries whose anchor is known to sit on an object, or on nothing,
    get a direct position-dependent target without matching (DN-DETR / DINO's denoising queries,
    here for anchor points). Measured: no faster than without them once the init breaks the
    query symmetry (see ``training``)."""
    anchors, owners = [], []
    if len(gt_boxes) and positives:
        owner = torch.randint(len(gt_boxes), (positives,), generator=generator)
        jitter = (torch.rand(positives, 2, generator=generator) * 2 - 1) * spread
        anchors.append(gt_boxes[owner, :2] + jitter * gt_boxes[owner, 2:] / 2)
        owners.append(owner)
    if negatives:
        points = torch.rand(8 * negatives, 2, generator=generator)
        if len(gt_boxes):
            xyxy = cxcywh_to_xyxy(gt_boxes)
            inside = ((points[:, None, 0] >= xyxy[None, :, 0]) & (points[:, None, 0] <= xyxy[None, :, 2])
                      & (points[:, None, 1] >= xyxy[None, :, 1]) & (points[:, None, 1] <= xyxy[None, :, 3])).any(1)
            points = points[~inside]
        points = points[:negatives]
        anchors.append(points)
        owners.append(torch.full((len(points),), -1, dtype=torch.long))
    if not anchors:
        return torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    return torch.cat(anchors).clamp(1e-3, 1 - 1e-3), torch.cat(owners)


def denoising_loss(all_logits: torch.Tensor, all_boxes: torch.Tensor, owners: torch.Tensor,
                   targets: list[dict[str, torch.Tensor]], w: DetrLossWeights = DetrLossWeights()
                   ) -> dict[str, torch.Tensor]:
    """Loss of the denoising queries: no matching, each query's target is fixed by ``owners`` (B, D)
    (box index, -1 background; -2 padding, ignored). all_logits (L, B, D, C), all_boxes (L, B, D, 4)."""
    valid = owners >= -1
    positive = owners >= 0
    num = max(int(positive.sum()), 1)
    onehot = torch.zeros_like(all_logits[0])
    tgt_boxes = torch.zeros(all_boxes.shape[1:])
    for b, t in enumerate(targets):
        idx = positive[b].nonzero()[:, 0]
        onehot[b, idx, t["labels"][owners[b, idx]]] = 1.0
        tgt_boxes[b, idx] = t["boxes"][owners[b, idx]]
    totals = {"class": 0.0, "bbox": 0.0, "giou": 0.0}
    for logits, boxes in zip(all_logits, all_boxes):
        focal = sigmoid_focal_loss(logits, onehot).sum(-1)
        totals["class"] = totals["class"] + focal[valid].sum() / num
        if positive.any():
            _add_box_losses(totals, boxes[positive], tgt_boxes[positive], num)
    return _weighted(totals, w)
