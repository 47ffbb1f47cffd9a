"""Box prompts -> one SAM mask per box -> one label image, as CellSAM merges them.

Per box: SAM's prompt encoder + mask decoder (single-mask output) on the image embedding; masks
whose predicted IoU is below ``iou_threshold`` are dropped; the rest are upsampled to the image
size and thresholded at ``sigmoid > mask_threshold``. The label image is ``max_i(i * mask_i)``
(later boxes win overlaps), then holes are filled and objects below ``min_size`` pixels removed
(cellpose's fill_holes_and_remove_small_masks, which CellSAM uses). The reference decodes one box
at a time; samzoo batches ``batch`` boxes per decoder call (same math, float rounding aside).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segment_anything.modeling import Sam


def upsample_logits(low_res: torch.Tensor, size: int, original: tuple[int, int]) -> torch.Tensor:
    """SAM's postprocess_masks for an unpadded size x size input: (N, 1, s, s) -> (N, 1, H, W)."""
    x = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
    return F.interpolate(x, original, mode="bilinear", align_corners=False)


@torch.no_grad()
def decode_boxes(sam: Sam, embedding: torch.Tensor, boxes: torch.Tensor, original: tuple[int, int], *,
                 iou_threshold: float, mask_threshold: float, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Binary masks (K, H, W) of the boxes kept by the IoU filter, and their indices into ``boxes``.

    ``embedding``: (1, C, h, w); ``boxes``: (N, 4) xyxy in SAM input pixels."""
    size = sam.image_encoder.img_size
    masks, kept = [], []
    pe = sam.prompt_encoder.get_dense_pe()
    for start in range(0, boxes.shape[0], batch):
        chunk = boxes[start:start + batch].to(embedding.device, embedding.dtype)
        sparse, dense = sam.prompt_encoder(points=None, boxes=chunk[:, None, :], masks=None)
        low_res, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=pe, sparse_prompt_embeddings=sparse,
                                        dense_prompt_embeddings=dense, multimask_output=False)
        keep = (iou[:, 0] >= iou_threshold).nonzero().flatten()
        if keep.numel() == 0:
            continue
        logits = upsample_logits(low_res[keep].float().cpu(), size, original)
        masks.append((torch.sigmoid(logits[:, 0]) > mask_threshold).numpy())
        kept.append(keep.cpu().numpy() + start)
    if not masks:
        return np.zeros((0,) + tuple(original), dtype=bool), np.zeros(0, dtype=np.int64)
    return np.concatenate(masks), np.concatenate(kept)


def merge_masks(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) binary -> (H, W) labels: pixel = highest index i + 1 whose mask covers it."""
    labels = np.zeros(masks.shape[1:], dtype=np.uint32)
    for i, mask in enumerate(masks):
        labels[mask] = i + 1
    return labels


def fill_holes_and_remove_small(labels: np.ndarray, min_size: int = 25) -> np.ndarray:
    """Labels renumbered 1..N in label order; objects under ``min_size`` pixels removed, the others'
    holes filled (a filled hole takes the enclosing object's label, as in cellpose/CellSAM)."""
    out = labels.astype(np.uint32, copy=True)
    next_label = 0
    for i, slc in enumerate(ndimage.find_objects(out)):
        if slc is None:
            continue
        obj = out[slc] == i + 1
        npix = int(obj.sum())
        if min_size > 0 and npix < min_size:
            out[slc][obj] = 0
        elif npix > 0:
            out[slc][ndimage.binary_fill_holes(obj)] = next_label + 1
            next_label += 1
    return out
