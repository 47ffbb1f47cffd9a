"""Fine-tuning CellSAM (the reference publishes no training code).

Two objectives, trained in alternating steps on random crops of (image, label) pairs:
- CellFinder with DETR's set loss (``losses.detr_loss``: Hungarian matching, sigmoid focal
  classification, L1 + GIoU boxes, auxiliary losses on every decoder layer); the ViT trunk at a
  tenth of the head's learning rate, as the paper trains it;
- SAM's neck, prompt-free parts and mask decoder on ground-truth boxes (the paper's neck
  re-training, ViT blocks frozen): each object's box is the prompt, the loss is BCE + Dice on the
  mask plus MSE of the predicted IoU against the mask's real IoU.

Detector training from random weights needs two things the published recipe (a SAM-initialised
trunk, 500 epochs on 16 GPUs) never meets:
- **Queries that differ at step 0.** Anchor DETR's queries share one pattern and differ only by
  their anchor's position embedding. With the default init the first cross-attention is uniform,
  every query reads the same image average, and the focal loss drives all of them to one score.
  Measured on dsb2018 crops: score spread across queries < 1e-5 after 600 steps, and < 1e-8 after
  1250. Also collapsed: learning rates 3e-4 to 1e-3 (with or without denoising queries), patch 8
  or 16, 64 grid anchors, a frozen or a fully trained trunk, and xavier / identity-position /
  tied query-key inits.
  ``AnchorDetrTransformer`` now starts from a zero pattern and 6x stronger position MLPs, so the
  queries differ from the first step (``tests/test_cellsam_training.py`` checks it). Measured,
  detector only: the spread reaches 1e-2 within 200 steps, and held-out top-K recall@0.5 climbs
  from 0 to 0.24-0.39 in 3000 steps.
- **Denoising queries** (``losses.denoising_anchors``; DN-DETR / DINO, here for anchor points).
  Anchors placed on a ground-truth object, or on background, get a fixed target without matching.
  With the new init they did not measurably speed things up (top-K recall within noise of a run
  without them at 1000-3000 steps). The preset keeps them, since the measured run below used them
  (one extra decoder pass per step); ``denoising=0`` turns them off.

``PRESETS["cpu-small"]`` trains a small CellSAM from scratch on one CPU thread. Measured on
dsb2018-nuclei (all 407 train images, 128-px crops, 3000 steps, 17.5 min on a 2-core machine,
2026-12-02):
- detector loss (set + denoising) 19.2 -> 13.2;
- SAM loss 1.04 -> 0.30;
- end-to-end held-out mSA on 8 val images (256-px crops) **0.000 -> 0.111**.

Run::

    python -m samzoo.families.cellsam.training --data ../shared/data/dsb2018-nuclei -o cellsam-small.pt \
        --report cellsam-report   # JSON, loss curves, a val overlay
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm.auto import tqdm

from ...errors import InputError
from .config import CellSAMConfig
from .detections import xyxy_to_cxcywh
from .losses import denoising_anchors, denoising_loss, detr_loss
from .model import CellSAMModel
from .params import CellSAMParams
from .preprocess import detector_input, embedding_input


@dataclass(frozen=True)
class TrainPreset:
    config: CellSAMConfig
    steps: int = 3000
    batch: int = 2
    crop: int = 128
    lr_head: float = 3e-4
    lr_backbone_factor: float = 0.1
    lr_sam: float = 3e-4
    max_objects: int = 16
    eval_images: int = 8
    eval_side: int = 256
    denoising: int = 32


SMALL = CellSAMConfig(img_size=128, patch_size=8, embed_dim=96, depth=3, num_heads=3, global_attn_indexes=(2,),
                      window_size=8, prompt_embed_dim=64, mask_decoder_mlp_dim=128, hidden_dim=64, detr_heads=4,
                      enc_layers=2, dec_layers=3, dim_feedforward=128, num_queries=100)
PRESETS = {"cpu-small": TrainPreset(config=SMALL)}
# blocks of the training crop size, so that objects reach the detector at the scale it was trained on
EVAL_PARAMS = CellSAMParams(bbox_threshold=0.3, iou_threshold=0.0, normalization="minmax", min_size=10,
                            block_size=128, overlap=16, iou_depth=8)


def read_pairs(folder: str | Path, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(gray float image, labels) pairs from ``folder/images/*.tif`` + ``folder/labels/*.tif``."""
    from ...io import read_image

    folder = Path(folder)
    images = sorted((folder / "images").glob("*.tif"))
    if not images:
        raise InputError(f"no images in {folder / 'images'}")
    pairs = []
    for path in images[:limit]:
        label_path = folder / "labels" / path.name
        if not label_path.is_file():
            raise InputError(f"{path.name} has no label image in {folder / 'labels'}")
        image = np.asarray(read_image(path), dtype=np.float32)
        if image.ndim == 3:
            image = image[..., :3].mean(-1) if image.shape[-1] <= 4 else image[:3].mean(0)
        pairs.append((image, np.asarray(read_image(label_path)).astype(np.int64)))
    return pairs


def as_cellsam_image(gray: np.ndarray) -> np.ndarray:
    """Gray -> (H, W, 3) in [0, 1], the image in the whole-cell channel (CellSAM's 1-channel rule)."""
    lo, hi = float(gray.min()), float(gray.max())
    out = np.zeros(gray.shape + (3,), np.float32)
    out[..., 2] = (gray - lo) / (hi - lo) if hi > lo else 0
    return out


def random_crop(pair, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    image, labels = pair
    h, w = labels.shape
    if h < size or w < size:
        pad = ((0, max(0, size - h)), (0, max(0, size - w)))
        image, labels = np.pad(image, pad, mode="reflect"), np.pad(labels, pad)
        h, w = labels.shape
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    image, labels = image[y:y + size, x:x + size], labels[y:y + size, x:x + size]
    k = int(rng.integers(0, 4))
    image, labels = np.rot90(image, k), np.rot90(labels, k)
    if rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def boxes_and_masks(labels: np.ndarray, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """xyxy boxes (in model-input pixels: label pixels * scale) and binary masks of every object."""
    ids = [i for i in np.unique(labels) if i != 0]
    boxes, masks = [], []
    for i, slc in enumerate(ndimage.find_objects(labels.astype(np.int64))):
        if slc is None or (i + 1) not in ids:
            continue
        boxes.append([slc[1].start, slc[0].start, slc[1].stop, slc[0].stop])
        masks.append(labels == i + 1)
    if not boxes:
        return torch.zeros(0, 4), torch.zeros((0,) + labels.shape)
    return torch.tensor(boxes, dtype=torch.float32) * scale, torch.from_numpy(np.stack(masks)).float()


def _freeze_for_neck_training(sam) -> list[torch.nn.Parameter]:
    trainable = []
    for name, p in sam.named_parameters():
        train = name.startswith(("image_encoder.neck.", "mask_decoder."))
        p.requires_grad_(train)
        if train:
            trainable.append(p)
    return trainable


def detector_step(model: CellSAMModel, images: torch.Tensor, label_list: list[np.ndarray], denoising: int = 0,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """DETR set loss of the learned queries, plus (``denoising`` > 0) the loss of ``denoising``
    positive and as many negative noised-anchor queries per image, decoded on the same memory."""
    size = model.config.img_size
    head = model.networks.cellfinder.decode_head
    transformer = head.transformer
    memory, pos_row, pos_col = transformer.encode(head.features(
        detector_input(images, size, model.networks.uses_model_cp)))
    anchors = transformer.position.weight[None].expand(len(images), -1, -1)
    logits, boxes = transformer.decode(memory, pos_row, pos_col, anchors)
    targets = []
    for labels in label_list:
        xyxy, _ = boxes_and_masks(labels, size / labels.shape[0])
        targets.append({"boxes": xyxy_to_cxcywh(xyxy / size).clamp(0, 1),
                        "labels": torch.zeros(len(xyxy), dtype=torch.long)})
    out = detr_loss(logits, boxes, targets)
    if denoising:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        queries = [denoising_anchors(t["boxes"], denoising, denoising, generator) for t in targets]
        width = max(len(a) for a, _ in queries)
        dn_anchors = torch.full((len(images), width, 2), 0.5)
        owners = torch.full((len(images), width), -2, dtype=torch.long)  # -2: padding, ignored
        for b, (a, o) in enumerate(queries):
            dn_anchors[b, :len(a)], owners[b, :len(o)] = a, o
        dn_logits, dn_boxes = transformer.decode(memory, pos_row, pos_col, dn_anchors)
        dn = denoising_loss(dn_logits, dn_boxes, owners, targets)
        out = {**out, "denoising": dn["loss"], "loss": out["loss"] + dn["loss"]}
    return out


def sam_step(model: CellSAMModel, images: torch.Tensor, label_list: list[np.ndarray], max_objects: int,
             rng: np.random.Generator) -> torch.Tensor:
    sam = model.sam
    size = model.config.img_size
    embeddings = sam.image_encoder(embedding_input(images, size, model.networks.uses_model_cp))
    pe = sam.prompt_encoder.get_dense_pe()
    losses = []
    for b, labels in enumerate(label_list):
        boxes, masks = boxes_and_masks(labels, size / labels.shape[0])
        if len(boxes) == 0:
            continue
        pick = rng.permutation(len(boxes))[:max_objects]
        boxes, masks = boxes[pick], masks[pick]
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes[:, None], masks=None)
        low, iou = sam.mask_decoder(image_embeddings=embeddings[b:b + 1], image_pe=pe, sparse_prompt_embeddings=sparse,
                                    dense_prompt_embeddings=dense, multimask_output=False)
        logits = F.interpolate(low, masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        prob = logits.sigmoid()
        dice = 1 - (2 * (prob * masks).sum((1, 2)) + 1) / (prob.sum((1, 2)) + masks.sum((1, 2)) + 1)
        with torch.no_grad():
            pred = prob > 0.5
            true_iou = (pred & (masks > 0)).sum((1, 2)) / ((pred | (masks > 0)).sum((1, 2)).clamp(min=1))
        losses.append(F.binary_cross_entropy_with_logits(logits, masks) + dice.mean()
                      + F.mse_loss(iou[:, 0], true_iou.float()))
    return torch.stack(losses).mean() if losses else torch.zeros((), requires_grad=True)


def evaluate_msa(model: CellSAMModel, pairs: Iterable[tuple[np.ndarray, np.ndarray]], side: int,
                 params: CellSAMParams = EVAL_PARAMS) -> float:
    """Mean segmentation accuracy (mSA) over the top-left ``side`` crops of ``pairs``."""
    from ...evaluation.metrics import mean_segmentation_accuracy
    from .segment import segment_image

    scores = []
    model.eval()
    for image, labels in pairs:
        image, labels = image[:side, :side], labels[:side, :side]
        pred = segment_image(model, as_cellsam_image(image), params)
        scores.append(mean_segmentation_accuracy(labels, pred)[0])
    return float(np.mean(scores))


def train(model: CellSAMModel, train_pairs, preset: TrainPreset, *, seed: int = 0, progress: bool = True,
          log_every: int = 10) -> dict[str, list[float]]:
    """Alternate detector and SAM steps for ``preset.steps`` steps; return the loss history."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    finder = model.networks.cellfinder
    backbone = list(finder.decode_head.backbone.parameters())
    backbone_ids = {id(p) for p in backbone}
    head = [p for p in finder.parameters() if id(p) not in backbone_ids]
    for p in finder.parameters():
        p.requires_grad_(True)
    det_opt = torch.optim.AdamW([{"params": head, "lr": preset.lr_head},
                                 {"params": backbone, "lr": preset.lr_head * preset.lr_backbone_factor}],
                                weight_decay=1e-4)
    sam_opt = torch.optim.AdamW(_freeze_for_neck_training(model.sam), lr=preset.lr_sam, weight_decay=1e-4)
    history: dict[str, list[float]] = {"detector": [], "sam": []}
    model.train()
    bar = tqdm(range(preset.steps), desc="CellSAM training", disable=not progress)
    for step in bar:
        crops = [random_crop(train_pairs[int(rng.integers(len(train_pairs)))], preset.crop, rng)
                 for _ in range(preset.batch)]
        images = torch.stack([torch.from_numpy(as_cellsam_image(c[0])).permute(2, 0, 1) for c in crops])
        labels = [c[1] for c in crops]
        det = detector_step(model, images, labels, preset.denoising, generator)
        det_opt.zero_grad()
        det["loss"].backward()
        torch.nn.utils.clip_grad_norm_(finder.parameters(), 0.1)
        det_opt.step()
        sam_loss = sam_step(model, images, labels, preset.max_objects, rng)
        sam_opt.zero_grad()
        sam_loss.backward()
        sam_opt.step()
        history["detector"].append(float(det["loss"].detach()))
        history["sam"].append(float(sam_loss.detach()))
        if step % log_every == 0:
            bar.set_postfix(det=f"{np.mean(history['detector'][-log_every:]):.3f}",
                            sam=f"{np.mean(history['sam'][-log_every:]):.3f}")
    model.eval()
    return history


def write_report(folder: str | Path, preset: TrainPreset, history: dict[str, list[float]], before: float,
                 after: float, seconds: float, model: CellSAMModel, val_pairs) -> Path:
    """``folder``/cellsam_train.json (settings, losses every 10 steps, held-out mSA before/after, time),
    cellsam_train_curves.png and cellsam_val_overlay.png (the first val crop, ground truth | prediction)."""
    import json

    from ...io import atomic_path, write_png
    from ...training.curves import plot_history
    from ...visualize import overlay
    from .segment import segment_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    every = 10
    rows = [{"iteration": i + every, "detector_loss": float(np.mean(history["detector"][i:i + every])),
             "sam_loss": float(np.mean(history["sam"][i:i + every]))} for i in range(0, len(history["sam"]), every)]
    curves = rows + [{"iteration": 0, "val_msa": before}, {"iteration": preset.steps, "val_msa": after}]
    plot_history(sorted(curves, key=lambda r: r["iteration"]), folder / "cellsam_train_curves.png")
    image, labels = (a[:preset.eval_side, :preset.eval_side] for a in val_pairs[0])
    pred = segment_image(model, as_cellsam_image(image), EVAL_PARAMS)
    write_png(folder / "cellsam_val_overlay.png", np.concatenate([overlay(image, labels), overlay(image, pred)], axis=1))
    settings = {k: (v if isinstance(v, (int, float, str)) else repr(v)) for k, v in vars(preset).items()}
    report = {"preset": settings, "eval_params": repr(EVAL_PARAMS), "val_images": len(val_pairs),
              "held_out_msa": {"before": before, "after": after}, "seconds": seconds, "losses_every_10_steps": rows}
    with atomic_path(folder / "cellsam_train.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a small CellSAM on a folder of images/labels (CPU preset).")
    parser.add_argument("--data", required=True, help="folder with train/ and val/ (images/, labels/)")
    parser.add_argument("-o", "--output", required=True, help="samzoo CellSAM checkpoint to write")
    parser.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--train-images", type=int, default=None)
    parser.add_argument("--report", default=None, help="folder for a JSON report, loss curves and a val overlay")
    args = parser.parse_args(argv)
    from .checkpoint import save_cellsam

    preset = PRESETS[args.preset]
    if args.steps:
        preset = replace(preset, steps=args.steps)
    root = Path(args.data)
    train_pairs = read_pairs(root / "train", args.train_images)
    val_pairs = read_pairs(root / "val", preset.eval_images)
    torch.set_num_threads(1)  # small models: more threads only contend on a shared CPU
    model = CellSAMModel(preset.config, with_model_cp=True, params=EVAL_PARAMS)
    started = time.time()
    before = evaluate_msa(model, val_pairs, preset.eval_side)
    history = train(model, train_pairs, preset)
    after = evaluate_msa(model, val_pairs, preset.eval_side)
    seconds = time.time() - started
    n = max(1, len(history["detector"]) // 10)
    print(f"detector loss first/last {n} steps: {np.mean(history['detector'][:n]):.3f} -> "
          f"{np.mean(history['detector'][-n:]):.3f}")
    print(f"SAM loss first/last {n} steps: {np.mean(history['sam'][:n]):.3f} -> {np.mean(history['sam'][-n:]):.3f}")
    print(f"held-out mSA ({len(val_pairs)} val images): {before:.4f} -> {after:.4f} ({seconds:.0f} s)")
    save_cellsam(model, args.output)
    print(f"wrote {args.output}")
    if args.report:
        print(f"wrote {write_report(args.report, preset, history, before, after, seconds, model, val_pairs)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
