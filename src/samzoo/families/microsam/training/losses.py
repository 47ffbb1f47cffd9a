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


class AisLoss(torch.nn.Module):
    """μSAM's AIS loss (torch-em's ``DiceBasedDistanceLoss``, the distances masked to the
    foreground) on samples with objects; on a sample without any, binary cross-entropy of the
    foreground channel against zero.

    Why: Dice is constant (1 per channel) with zero gradient when the target is empty, so an empty
    background patch (``TrainConfig.background_probability``) would teach nothing, and a model
    never shown one fills empty tiles with noise blobs. Samples are weighted by their share of the
    batch; a batch with objects only is μSAM's loss unchanged."""

    def __init__(self) -> None:
        super().__init__()
        from torch_em.loss import DiceBasedDistanceLoss

        self.dice = DiceBasedDistanceLoss(mask_distances_in_bg=True)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        empty = target[:, 0].flatten(1).amax(1) <= 0
        if not empty.any():
            return self.dice(prediction, target)
        foreground = prediction[empty, 0].float().clamp(0.0, 1.0 - 1e-6)
        background = torch.nn.functional.binary_cross_entropy(foreground, torch.zeros_like(foreground))
        if empty.all():
            return background
        share = float(empty.float().mean())
        return (1.0 - share) * self.dice(prediction[~empty], target[~empty]) + share * background


def ais_loss_fn() -> AisLoss:
    return AisLoss()
