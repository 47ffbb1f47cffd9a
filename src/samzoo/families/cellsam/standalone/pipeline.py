# CellSAM's whole inference as one module: (1, 3, H, W) image -> (1, 1, H, W) uint32 instance labels.
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _channel_stats(values, x):
    return torch.tensor(values, dtype=x.dtype, device=x.device)[:, None, None]


def _minmax(x, eps=1e-6):
    flat = x.flatten(2)
    lo = flat.min(-1).values[..., None, None]
    hi = flat.max(-1).values[..., None, None]
    return (x - lo) / (hi - lo + eps)


def _imagenet(x):
    return (x - _channel_stats(IMAGENET_MEAN, x)) / _channel_stats(IMAGENET_STD, x)


def _sam_standardize(x, scale):
    return (x - _channel_stats(SAM_MEAN, x) / scale) / (_channel_stats(SAM_STD, x) / scale)


def _resize(x, size):
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _percentile_clip(img, upper=99.5):
    nonzero = img[img != 0]
    if nonzero.numel() == 0:
        return torch.zeros_like(img)
    lo, hi = (float(v) for v in np.percentile(nonzero.cpu().numpy(), [0.0, upper]))
    out = img.clamp(lo, hi)
    if hi == lo:
        return torch.zeros_like(img) if lo == 0 else out.clamp(0, 1)
    return (out - lo) / (hi - lo)


def _two_means_midpoint(values):
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = x.size
    if n == 1 or x[0] == x[-1]:
        return float(x[0])
    csum, csq = np.cumsum(x), np.cumsum(x * x)
    k = np.arange(1, n)
    ls, lq = csum[:-1], csq[:-1]
    rs, rq = csum[-1] - ls, csq[-1] - lq
    cut = int(np.argmin((lq - ls ** 2 / k) + (rq - rs ** 2 / (n - k))))
    return (ls[cut] / (cut + 1) + rs[cut] / (n - cut - 1)) / 2


def _fill_holes_and_remove_small(labels, min_size):
    out = labels.copy()
    j = 0
    for i, slc in enumerate(ndimage.find_objects(out)):
        if slc is None:
            continue
        obj = out[slc] == i + 1
        npix = int(obj.sum())
        if min_size > 0 and npix < min_size:
            out[slc][obj] = 0
        elif npix > 0:
            out[slc][ndimage.binary_fill_holes(obj)] = j + 1
            j += 1
    return out


class _Backbone(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body


class _DecodeHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.backbone = _Backbone(ImageEncoder(c["img_size"], c["patch_size"], c["embed_dim"], c["depth"],
                                               c["num_heads"], c["window_size"], c["global_attn_indexes"], 0,
                                               neck=False))
        self.input_proj = nn.ModuleList([nn.Sequential(nn.Conv2d(c["embed_dim"], c["hidden_dim"], 1),
                                                       nn.GroupNorm(c["group_norm_groups"], c["hidden_dim"]))])
        self.transformer = AnchorDetrTransformer(c["hidden_dim"], c["detr_heads"], c["enc_layers"], c["dec_layers"],
                                                 c["dim_feedforward"], c["num_queries"], c["num_classes"])


class _CellFinder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.decode_head = _DecodeHead(c)


class CellSAMInstanceSegmentation(nn.Module):
    """CellSAM end to end. Channels: (blank, nuclear, whole-cell); normalisation: per-channel
    min-max (samzoo's ``normalization="minmax"``); one pass over the whole image (no blocks)."""

    def __init__(self, config, params, with_model_cp=True):
        super().__init__()
        c = dict(config)
        self.config, self.params = c, dict(params)
        sam_args = (c["img_size"], c["patch_size"], c["embed_dim"], c["depth"], c["num_heads"], c["window_size"],
                    c["global_attn_indexes"], c["prompt_embed_dim"], c["mask_decoder_mlp_dim"])
        self.model = SAM(*sam_args)
        self.model_cp = SAM(*sam_args) if with_model_cp else None
        self.cellfinder = _CellFinder(c)

    def _inputs(self, x):
        size = self.config["img_size"]
        adv = self.model_cp is not None
        x = _resize(x, size)
        det = _sam_standardize((x * 255).to(torch.uint8).float(), 1.0)
        if adv:
            det = _minmax(_imagenet(det))
            for b in range(det.shape[0]):
                if torch.max(det[b, 1]) == 0:
                    det[b, 1] = det[b, 2]
                if torch.max(det[b, 2]) == 0:
                    det[b, 2] = det[b, 1]
        emb = torch.stack([_percentile_clip(img) for img in x])
        if adv:
            emb = _minmax(_imagenet(emb))
        return det, _sam_standardize(emb, 255.0)

    @torch.no_grad()
    def segment_one(self, image):
        """image (3, H, W) float -> (H, W) uint32 labels."""
        p, size = self.params, self.config["img_size"]
        h, w = image.shape[-2:]
        x = image.float().clone()
        for ch in range(3):
            lo, hi = x[ch].min(), x[ch].max()
            if hi > lo:
                x[ch] = (x[ch] - lo) / (hi - lo)
        det, emb_in = self._inputs(x[None])
        head = self.cellfinder.decode_head
        logits, boxes = head.transformer(head.input_proj[0](head.backbone.body(det)))
        logits, boxes = logits[-1, 0], boxes[-1, 0]
        scores, index = torch.topk(logits.sigmoid().flatten(), logits.shape[0])
        cx, cy, bw, bh = boxes[torch.div(index, logits.shape[1], rounding_mode="floor")].unbind(-1)
        xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1) * size
        threshold = float(p["bbox_threshold"])
        if p["cluster_blend"] and scores.numel() > 1:
            threshold = 0.66 * threshold + 0.33 * _two_means_midpoint(scores.numpy())
        if threshold > 0:
            keep = torch.from_numpy(scores.numpy().astype(np.float64) > threshold)
            xyxy = xyxy[keep]
        labels = np.zeros((h, w), dtype=np.uint32)
        if xyxy.shape[0] == 0:
            return labels
        sam = self.model_cp if self.model_cp is not None else self.model
        embedding = sam.image_encoder(emb_in)
        pe = sam.prompt_encoder.dense_pe()
        k = 0
        for start in range(0, xyxy.shape[0], 32):
            sparse, dense = sam.prompt_encoder.boxes(xyxy[start:start + 32])
            low, iou = sam.mask_decoder(embedding, pe, sparse, dense)
            keep = iou >= float(p["iou_threshold"])
            if not bool(keep.any()):
                continue
            up = F.interpolate(low[keep], (size, size), mode="bilinear", align_corners=False)
            up = F.interpolate(up, (h, w), mode="bilinear", align_corners=False)
            for mask in (torch.sigmoid(up[:, 0]) > float(p["mask_threshold"])).numpy():
                k += 1
                labels[mask] = k
        return _fill_holes_and_remove_small(labels, int(p["min_size"]))

    def forward(self, image):
        out = [self.segment_one(img) for img in image]
        return torch.from_numpy(np.stack(out).astype(np.uint32)[:, None])
