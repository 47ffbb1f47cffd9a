"""Training Cellpose-SAM: cellpose's targets, loss, augmentation and optimiser settings.

Targets: unit flows from labels by heat diffusion (``dynamics.masks_to_flows``, equal to
cellpose's ``masks_to_flows_gpu``; tested) and cell probability = label > 0.
Loss (cellpose ``train._loss_fn_seg``): ``MSE(pred flows, 5 * flows) / 2 + BCEWithLogits(pred
logit, cellprob)``. Augmentation: random 256-px crops, flips and 90-degree rotations applied to
image, flows and cell probability together, with the flow components swapped / negated so they
keep pointing to the object centres. Optimiser: AdamW (fine-tuning: lr 1e-5, weight decay 0.1,
as cellpose's ``train_seg``), linear warm-up, layer drop in the encoder (``config.layer_drop``).

Presets: ``cpsam-finetune`` fine-tunes the published cpsam on a GPU (cellpose's defaults);
``cpsam-small-cpu`` trains the small architecture from scratch in minutes on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...errors import InputError
from .dynamics import masks_to_flows, renumber
from .inference import channels_last, normalize
from .model import CellposeSamModel


@dataclass(frozen=True)
class TrainPreset:
    """One training recipe. ``init``: a model ID/path to fine-tune, or an architecture preset
    name to start from random weights."""

    init: str
    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.1
    warmup_steps: int = 0
    decay_steps: int = 0  # the last steps halve the lr 5 times (cellpose's end-of-training schedule)
    device: str = "cpu"


PRESETS: dict[str, TrainPreset] = {
    # cellpose train_seg defaults: batch 1, AdamW lr 1e-5 / wd 0.1, 100 epochs with 10 of warm-up;
    # here counted in steps (100 epochs of ~500 images). Needs a GPU (ViT-L, 1.2 GB of weights).
    "cpsam-finetune": TrainPreset(init="cpsam", steps=50_000, batch_size=1, lr=1e-5, warmup_steps=5_000,
                                  device="cuda"),
    # small network from scratch on a CPU: batch 1 (a step of cpsam_small is ~1 s on one thread,
    # batch 4 ~5 s) and many steps learn faster per second than few large ones; ~20 min on 1 thread.
    "cpsam-small-cpu": TrainPreset(init="cpsam_small", steps=700, batch_size=1, lr=4e-4, warmup_steps=40,
                                   decay_steps=175),
}


def lr_factor(recipe: TrainPreset, step: int) -> float:
    """Linear warm-up, then constant, then over the last ``decay_steps`` five halvings."""
    factor = min(1.0, (step + 1) / max(1, recipe.warmup_steps))
    into_decay = step - (recipe.steps - recipe.decay_steps)
    if recipe.decay_steps > 0 and into_decay >= 0:
        factor *= 0.5 ** (1 + into_decay * 5 // recipe.decay_steps)
    return factor


def training_targets(labels: np.ndarray) -> np.ndarray:
    """(3, H, W) float32: Y flow, X flow (unit vectors), cell probability (0/1)."""
    labels = renumber(np.asarray(labels).astype(np.int64))
    flows = masks_to_flows(labels)
    return np.concatenate([flows, (labels > 0)[None]]).astype(np.float32)


def cellpose_loss(prediction: torch.Tensor, flows: torch.Tensor, cellprob: torch.Tensor) -> torch.Tensor:
    """cellpose's objective: MSE on the 5x flows (halved) + BCE on the cell-probability logit."""
    flow_loss = F.mse_loss(prediction[:, :2], 5.0 * flows) / 2.0
    prob_loss = F.binary_cross_entropy_with_logits(prediction[:, 2], (cellprob > 0.5).to(prediction.dtype))
    return flow_loss + prob_loss


def augment(image: np.ndarray, target: np.ndarray, rng: np.random.Generator, size: int = 256
            ) -> tuple[np.ndarray, np.ndarray]:
    """Random crop (zero-padded to ``size``), flips and 90-degree rotations of a (C, H, W) image and
    its (3, H, W) target; flow components follow the geometry (flip Y: negate dy; flip X: negate
    dx; transpose: swap dy and dx)."""
    _, h, w = image.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = np.pad(image, ((0, 0), (0, ph), (0, pw)))
        target = np.pad(target, ((0, 0), (0, ph), (0, pw)))
        h, w = image.shape[1:]
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    image, target = image[:, y:y + size, x:x + size], target[:, y:y + size, x:x + size].copy()
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
        target[0] *= -1
    if rng.random() < 0.5:
        image, target = image[:, :, ::-1], target[:, :, ::-1]
        target[1] *= -1
    if rng.random() < 0.5:
        image, target = image.transpose(0, 2, 1), target.transpose(0, 2, 1)[[1, 0, 2]]
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


def prepare(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], progress: bool = True
            ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalised 3-channel (C, H, W) images with their targets (flows computed once per image)."""
    if len(images) != len(labels) or not images:
        raise InputError(f"need the same, non-zero number of images and labels ({len(images)} vs {len(labels)})")
    out = []
    for image, label in tqdm(list(zip(images, labels)), desc="flow targets", disable=not progress):
        data = normalize(channels_last(image))
        if data.shape[:2] != np.asarray(label).shape:
            raise InputError(f"image {data.shape[:2]} and labels {np.asarray(label).shape} differ in size")
        data = np.concatenate([data, np.zeros((*data.shape[:2], 3 - data.shape[2]), np.float32)], axis=2)
        out.append((data.transpose(2, 0, 1), training_targets(label)))
    return out


def train_step(model: CellposeSamModel, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               targets: torch.Tensor) -> float:
    """One optimiser step on a batch: images (B, 3, S, S), targets (B, 3, S, S)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    prediction = model(images)
    loss = cellpose_loss(prediction, targets[:, :2], targets[:, 2])
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train(model: CellposeSamModel, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
          preset: TrainPreset | str = "cpsam-small-cpu", *, seed: int = 0, progress: bool = True,
          **changes: Any) -> dict[str, Any]:
    """Train ``model`` in place with a preset (fields overridable by ``changes``); returns a log."""
    recipe = PRESETS[preset] if isinstance(preset, str) else preset
    recipe = dataclasses.replace(recipe, **changes) if changes else recipe
    device = torch.device(recipe.device)
    model.to(device)
    data = prepare(images, labels, progress=progress)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, recipe))
    size = model.config.img_size
    losses, started = [], time.time()
    bar = tqdm(range(recipe.steps), desc="training", disable=not progress)
    for _ in bar:
        batch = [augment(*data[rng.integers(len(data))], rng, size) for _ in range(recipe.batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch])).to(device)
        y = torch.from_numpy(np.stack([b[1] for b in batch])).to(device)
        losses.append(train_step(model, optimizer, x, y))
        scheduler.step()
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    window = max(1, recipe.steps // 40)  # the loss curve: means over ~40 windows
    curve = [[i + window, round(float(np.mean(losses[i:i + window])), 4)] for i in range(0, len(losses), window)]
    log = {"preset": dataclasses.asdict(recipe), "steps": recipe.steps, "seconds": round(time.time() - started, 1),
           "loss_first20": float(np.mean(losses[:20])), "loss_last20": float(np.mean(losses[-20:])),
           "loss_curve": curve}
    model.metadata.setdefault("training", []).append(log)
    return log


def read_pairs(folder: str | Path, limit: int | None = None, max_side: int | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """images/NAME.tif + labels/NAME.tif pairs of a ``<set>/<split>`` folder (sorted by name; only
    images with both sides <= ``max_side`` when given; at most ``limit``)."""
    from ...io import read_image

    folder = Path(folder)
    images, labels = [], []
    for path in sorted((folder / "images").glob("*.tif")):
        if limit is not None and len(images) >= limit:
            break
        label = read_image(folder / "labels" / path.name)
        if max_side is not None and max(label.shape[:2]) > max_side:
            continue
        images.append(read_image(path))
        labels.append(label)
    if not images:
        raise InputError(f"no usable images/*.tif in {folder}")
    return images, labels


def mean_msa(model: CellposeSamModel, images, labels, params: dict[str, Any] | None = None) -> float:
    from ...evaluation.metrics import mean_segmentation_accuracy
    from .inference import segment_image

    scores = [mean_segmentation_accuracy(np.asarray(gt).astype(np.uint32),
                                         segment_image(im, model, params=params, progress=False))[0]
              for im, gt in zip(images, labels)]
    return float(np.mean(scores)) if scores else math.nan
