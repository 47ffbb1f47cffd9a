"""μSAM's iterative-prompt training step for SAM's prompt encoder + mask decoder (written for
samzoo; the procedure follows the μSAM paper):

start from a box or one positive point per object; predict (three masks for a single point, the
one with the highest predicted IoU is kept); Dice loss on the masks + MSE between predicted and
actual IoU; then more rounds, each adding one positive point where the object was missed and one
negative point where it was wrongly covered, passing the previous low-res logits as a mask prompt
with some probability; the losses of all rounds are averaged.

With several mask outputs, the Dice term uses the best of them (SAM's "min over outputs"), so all
three outputs can specialise; the IoU head is trained on all of them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .losses import dice_loss, mask_iou
from .prompts import choose_objects, corrective_points, initial_prompts, point_in_mask


def _predict(sam, embedding, input_shape, patch_shape, scale, points, point_labels, boxes, mask_input,
             multimask: bool):
    sy, sx = scale
    device = embedding.device
    factor = torch.tensor([sx, sy], device=device)
    pts = (points.to(device) * factor, point_labels.to(device)) if points is not None else None
    bxs = boxes.to(device) * torch.tensor([sx, sy, sx, sy], device=device) if boxes is not None else None
    sparse, dense = sam.prompt_encoder(points=pts, boxes=bxs, masks=mask_input)
    low, iou_pred = sam.mask_decoder(
        image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
    )
    logits = sam.postprocess_masks(low, tuple(input_shape), tuple(patch_shape))
    return low, logits.float(), iou_pred.float()  # losses in float32 under mixed precision


def interactive_loss(sam, embedding: torch.Tensor, labels: np.ndarray, input_shape: tuple[int, int],
                     rng: np.random.Generator, *, n_objects: int, n_sub_iterations: int,
                     box_probability: float, mask_prompt_probability: float
                     ) -> tuple[torch.Tensor, dict[str, float]] | None:
    """Loss for one image: ``embedding`` (1, C, g, g), ``labels`` (P, P). None if no object."""
    ids = choose_objects(labels, n_objects, rng)
    if len(ids) == 0:
        return None
    gt = labels[None] == ids[:, None, None]  # (N, P, P)
    gt_t = torch.from_numpy(gt).float().to(embedding.device)
    patch_shape = labels.shape
    scale = (input_shape[0] / patch_shape[0], input_shape[1] / patch_shape[1])
    use_box = bool(rng.random() < box_probability)
    points, point_labels, boxes = initial_prompts(gt, rng, use_box)
    mask_input = None
    losses, dices, ious = [], [], []
    rows = torch.arange(len(ids), device=embedding.device)
    for round_ in range(n_sub_iterations):
        multimask = round_ == 0 and not use_box  # a single point is ambiguous
        low, logits, iou_pred = _predict(sam, embedding, input_shape, patch_shape, scale, points,
                                         point_labels, boxes, mask_input, multimask)
        probs = torch.sigmoid(logits)
        per_mask = torch.stack([dice_loss(probs[:, m], gt_t) for m in range(logits.shape[1])], 1)
        with torch.no_grad():
            actual = torch.stack([mask_iou(logits[:, m] > 0, gt_t) for m in range(logits.shape[1])], 1)
        loss = per_mask.min(1).values.mean() + F.mse_loss(iou_pred, actual)
        losses.append(loss)
        best = iou_pred.detach().argmax(1)
        dices.append(1.0 - float(per_mask.detach()[rows, best].mean()))
        ious.append(float(actual[rows, best].mean()))
        if round_ == n_sub_iterations - 1:
            break
        pred = (logits.detach()[rows, best] > 0).cpu().numpy()
        new_points, new_labels = corrective_points(gt, pred, rng)
        if points is None:
            points, point_labels = new_points, new_labels
        else:
            points, point_labels = torch.cat([points, new_points], 1), torch.cat([point_labels, new_labels], 1)
        use_mask = rng.random() < mask_prompt_probability
        mask_input = low.detach()[rows, best][:, None] if use_mask else None
    stats = {"dice_first": dices[0], "dice_last": dices[-1], "iou_first": ious[0], "iou_last": ious[-1]}
    return torch.stack(losses).mean(), stats


@torch.no_grad()
def prompt_dice(sam, embedding: torch.Tensor, labels: np.ndarray, input_shape: tuple[int, int],
                max_objects: int = 16) -> dict[str, float]:
    """Validation: mean Dice of the mask from an exact box and from the most interior point
    (best of three by predicted IoU) -- deterministic."""
    sizes = np.bincount(labels.ravel())
    ids = np.flatnonzero(sizes[1:]) + 1
    ids = ids[np.argsort(-sizes[ids], kind="stable")][:max_objects]  # the largest objects
    if len(ids) == 0:
        return {}
    gt = labels[None] == ids[:, None, None]
    gt_t = torch.from_numpy(gt).float().to(embedding.device)
    scale = (input_shape[0] / labels.shape[0], input_shape[1] / labels.shape[1])
    rows = torch.arange(len(ids), device=embedding.device)
    out = {}
    _, _, boxes = initial_prompts(gt, None, True)
    _, logits, _ = _predict(sam, embedding, input_shape, labels.shape, scale, None, None, boxes, None, False)
    out["dice_box"] = float(1 - dice_loss((logits[:, 0] > 0).float(), gt_t).mean())
    points = torch.from_numpy(np.stack([point_in_mask(m) for m in gt])[:, None])
    _, logits, iou_pred = _predict(sam, embedding, input_shape, labels.shape, scale, points,
                                   torch.ones(len(ids), 1, dtype=torch.int64), None, None, True)
    chosen = logits[rows, iou_pred.argmax(1)]
    out["dice_point"] = float(1 - dice_loss((chosen > 0).float(), gt_t).mean())
    return out
