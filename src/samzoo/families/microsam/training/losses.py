"""Losses: Dice on masks and μSAM's AIS loss (torch-em's ``DiceBasedDistanceLoss``: Dice on the
foreground and on both distance channels, the distances masked to the foreground)."""

from __future__ import annotations

import torch


def dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - Dice per leading index: (N, ...) probabilities vs (N, ...) binary targets -> (N,)."""
    p, t = probs.flatten(1), target.flatten(1)
    inter = (p * t).sum(1)
    return 1.0 - (2 * inter + eps) / (p.pow(2).sum(1) + t.pow(2).sum(1) + eps)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks, per leading index."""
    p, t = pred.flatten(1).bool(), target.flatten(1).bool()
    inter = (p & t).sum(1).float()
    union = (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def ais_loss_fn():
    """μSAM's AIS loss: torch-em's ``DiceBasedDistanceLoss`` with the distances masked to the foreground."""
    from torch_em.loss import DiceBasedDistanceLoss

    return DiceBasedDistanceLoss(mask_distances_in_bg=True)
