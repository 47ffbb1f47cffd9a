"""CellSAM's inference restated step by step the way the reference code runs it, for equality tests.

vanvalenlab/cellSAM cannot be installed here (not on PyPI, no GitHub access), so this module redoes
its computations literally -- one box at a time, with the libraries the reference calls
(torchvision v2 Resize and ToPILImage, PIL, kornia's normalize_min_max, skimage's
rescale_intensity, numpy percentiles, sklearn's KMeans, SAM's postprocess_masks) -- on the
networks of a samzoo CellSAMModel. samzoo's pipeline (batched, torch-only) is compared to it.
It is written from the published description, not copied.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def reference_detector_input(img: torch.Tensor, size: int, adv: bool, sam) -> torch.Tensor:
    import torchvision
    import torchvision.transforms.v2 as T
    from kornia.enhance import normalize_min_max
    from PIL import Image

    x = T.Resize((size, size))(img)                                  # (3, S, S) float
    pil = torchvision.transforms.ToPILImage()(x)                     # float -> mul(255).byte()
    arr = np.array(pil)
    arr = np.array(Image.fromarray(arr).resize((size, size), Image.BILINEAR))  # ResizeLongestSide: same size
    t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    t = (t - sam.pixel_mean) / sam.pixel_std
    if adv:
        t = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(t)
        t = normalize_min_max(t.unsqueeze(0)).squeeze(0)
        if torch.max(t[1]) == 0:
            t[1] = t[2]
        if torch.max(t[2]) == 0:
            t[2] = t[1]
    return t


def reference_embedding_input(img: torch.Tensor, size: int, adv: bool, sam) -> torch.Tensor:
    import torchvision.transforms.v2 as T
    from kornia.enhance import normalize_min_max
    from skimage import exposure

    x = T.Resize((size, size))(img)
    a = np.array(x)
    nz = a[np.nonzero(a)]
    p = np.percentile(nz, [0.0, 99.5])
    a = exposure.rescale_intensity(a, in_range=(p[0], p[1]), out_range="float32")
    t = torch.Tensor(a)
    if adv:
        t = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(t)
        t = normalize_min_max(t.unsqueeze(0)).squeeze(0)
    return (t - sam.pixel_mean / 255) / (sam.pixel_std / 255)


def reference_postprocess(logits: torch.Tensor, boxes: torch.Tensor, size: int):
    """DETR PostProcess for one image: logits (Q, C), boxes (Q, 4) cxcywh."""
    prob = logits.sigmoid()[None]
    q, c = logits.shape
    values, index = torch.topk(prob.view(1, -1), q, dim=1)
    which = index // c
    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)[None]
    xyxy = torch.gather(xyxy, 1, which.unsqueeze(-1).repeat(1, 1, 4))
    xyxy = xyxy * torch.tensor([size, size, size, size])
    return values[0], xyxy[0]


def reference_filter(scores: torch.Tensor, boxes: torch.Tensor, bbox_threshold: float):
    from sklearn.cluster import KMeans

    data = scores.detach().cpu().numpy()
    threshold = bbox_threshold
    if len(data) > 1:
        km = KMeans(n_clusters=2, random_state=42).fit(data.reshape(-1, 1))
        threshold = 0.66 * bbox_threshold + 0.33 * np.mean(km.cluster_centers_)
    if threshold <= 0:
        return scores, boxes
    keep = torch.as_tensor(data > threshold)
    return scores[keep], boxes[keep]


@torch.no_grad()
def reference_predict(model, image01: np.ndarray, bbox_threshold: float, iou_threshold: float,
                      mask_threshold: float, min_size: int = 25):
    """Everything ``segment_cellular_image(normalize=False)`` does, on an (H, W, 3) [0, 1] image.

    Returns labels (None when no mask survives) and the scores / xyxy boxes (detector-input pixels)
    of the masks that passed the IoU filter."""
    from scipy.ndimage import binary_fill_holes, find_objects

    nets = model.networks
    adv = nets.model_cp is not None
    sam = nets.model_cp if adv else nets.model
    size = model.config.img_size
    img = torch.from_numpy(image01.transpose(2, 0, 1)).float()
    det_in = reference_detector_input(img.clone(), size, adv, nets.model)[None]
    logits, boxes = nets.cellfinder(det_in)
    scores, xyxy = reference_postprocess(logits[-1, 0], boxes[-1, 0], size)
    scores, xyxy = reference_filter(scores, xyxy, bbox_threshold)
    emb = sam.image_encoder(reference_embedding_input(img.clone(), size, adv, nets.model)[None])
    masks, kept = [], []
    for index, box in enumerate(xyxy):
        sparse, dense = sam.prompt_encoder(points=None, boxes=box[None, None], masks=None)
        low, iou = sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=False)
        if iou[0][0] < iou_threshold:
            continue
        up = nets.model.postprocess_masks(low, input_size=(size, size), original_size=image01.shape[:2])
        masks.append((torch.sigmoid(up[0, 0]) > mask_threshold).numpy().astype(np.uint8))
        kept.append(index)
    scores, xyxy = scores[kept], xyxy[kept]
    reference_predict.last_masks = np.stack(masks) if masks else None
    if not masks:
        return None, scores, xyxy
    stack = np.stack(masks)
    labels = np.max(stack * np.arange(1, len(masks) + 1)[:, None, None], axis=0)
    # cellpose's fill_holes_and_remove_small_masks as CellSAM copies it
    j = 0
    for i, slc in enumerate(find_objects(labels)):
        if slc is not None:
            msk = labels[slc] == (i + 1)
            npix = msk.sum()
            if min_size > 0 and npix < min_size:
                labels[slc][msk] = 0
            elif npix > 0:
                msk = binary_fill_holes(msk)
                labels[slc][msk] = j + 1
                j += 1
    return labels, scores, xyxy
