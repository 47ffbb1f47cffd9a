"""SAMCell's training: the distance-map objective with the authors' optimiser schedule.

Target: each cell's Euclidean distance to its border divided by that cell's maximum (background 0).
Loss: mean squared error between the sigmoid of the first multimask output (brought to the crop's
size) and that target. AdamW (paper: lr 1e-4, weight decay 0.1), linear warm-up then linear decay
to 0; the prompt encoder is always frozen, the image encoder optionally (the authors' public
``train.py`` freezes it, the paper fine-tunes it). Random 256 px crops with flips, 90-degree turns
and brightness jitter, through exactly the inference pre-processing (CLAHE, min-max, SAM
normalisation), so training and inference see the same inputs.

This loop is SAMCell's own for now; the μSAM trainer in ``samzoo.training`` has not yet been split
into a shared loop and per-family objectives.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm.auto import tqdm

from ...errors import InputError
from .model import SamcellModel
from .preprocess import crops_to_input, to_gray_uint8
from .tiling import CROP


def distance_target(labels: np.ndarray) -> np.ndarray:
    """Per-cell normalised distance transform of a label image (float32 in [0, 1])."""
    labels = np.asarray(labels)
    target = np.zeros(labels.shape, np.float32)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        padded = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        cell = labels[padded] == index
        distance = ndimage.distance_transform_edt(np.pad(cell, 1))[1:-1, 1:-1]
        peak = distance.max()
        if peak > 0:
            target[padded][cell] = (distance[cell] / peak).astype(np.float32)
    return target


@dataclasses.dataclass
class SamcellTrainConfig:
    init_checkpoint: str
    train_images: str
    train_labels: str
    val_images: str
    val_labels: str
    out_dir: str = "samcell-training"
    iterations: int = 300
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup: int = 30
    freeze_encoder: bool = False
    val_crops: int = 16
    seed: int = 0
    device: str = "cpu"
    max_minutes: float | None = None  # stop after this much wall time (best.pt is kept)

    def replace(self, **changes: Any) -> "SamcellTrainConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's fine-tuning from the released generalist (a GPU run).
    "samcell-finetune": dict(init_checkpoint="samcell-generalist", iterations=10_000, batch_size=8, lr=1e-4,
                             weight_decay=0.1, warmup=250, device="cuda"),
    # Minutes on a CPU: a small SAM (samzoo-lm-tiny's SAM, 256 px input) learns the objective.
    "samcell-tiny-cpu": dict(init_checkpoint="samzoo-lm-tiny", iterations=300, batch_size=2, lr=2e-4,
                             weight_decay=0.1, warmup=30),
}


def init_model(source: str) -> SamcellModel:
    """A SAMCell model from a SAMCell checkpoint, or from any samzoo model holding a SAM (its
    SAM weights, the rest dropped): e.g. ``samzoo-lm-tiny`` for the CPU preset."""
    from ...api import load_model

    model = load_model(source)
    if isinstance(model, SamcellModel):
        return model
    sam = getattr(model, "sam", None)
    if sam is None or not hasattr(model, "config"):
        raise InputError(f"{source}: holds no SAM network to start SAMCell training from")
    samcell = SamcellModel(model.config.replace(ais_decoder=False),
                           metadata={"initialised_from": str(source)})
    samcell.sam.load_state_dict(sam.state_dict())
    return samcell


def _pairs(images: str, labels: str) -> list[tuple[np.ndarray, np.ndarray]]:
    from ...evaluation.evaluate import _read_pair, resolve_pairs

    out = []
    for image_path, label_path in resolve_pairs(images, labels):
        image, label = _read_pair(image_path, label_path)
        out.append((to_gray_uint8(image), label))
    return out


def _crop(gray: np.ndarray, target: np.ndarray, rng: np.random.Generator, augment: bool):
    pad = [(0, max(0, CROP - s)) for s in gray.shape]
    if any(p[1] for p in pad):
        gray, target = np.pad(gray, pad, mode="reflect"), np.pad(target, pad, mode="reflect")
    y = int(rng.integers(0, gray.shape[0] - CROP + 1))
    x = int(rng.integers(0, gray.shape[1] - CROP + 1))
    gray, target = gray[y:y + CROP, x:x + CROP], target[y:y + CROP, x:x + CROP]
    if augment:
        k = int(rng.integers(4))
        gray, target = np.rot90(gray, k), np.rot90(target, k)
        if rng.random() < 0.5:
            gray, target = gray[:, ::-1], target[:, ::-1]
        gray = np.clip(gray.astype(np.float32) * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(gray), np.ascontiguousarray(target)


def _batch(model: SamcellModel, grays, targets):
    images, (h, w) = crops_to_input(list(grays), model.input_size)
    size = model.input_size
    pixels = F.pad(model.normalise(images.to(model.device)), (0, size - w, 0, size - h))
    return pixels, torch.from_numpy(np.stack(targets))[:, None].to(model.device)


def loss_on(model: SamcellModel, pixels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MSE between sigmoid(first mask output), resized to the crops, and the distance targets."""
    logits = F.interpolate(model.logits(pixels), targets.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(torch.sigmoid(logits), targets)


def schedule(warmup: int, total: int):
    """Linear warm-up to the base lr, then linear decay to 0."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def train(config: SamcellTrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train, keep the best validation-loss model as ``out_dir/best.pt``; returns the history."""
    from .checkpoint import save_checkpoint

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.iterations < 1 or config.batch_size < 1 or not 0 <= config.warmup < config.iterations:
        raise InputError("iterations and batch_size must be >= 1 and 0 <= warmup < iterations")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = init_model(config.init_checkpoint).to(config.device)
    train_data = [(g, distance_target(l)) for g, l in _pairs(config.train_images, config.train_labels)]
    val_data = [(g, distance_target(l)) for g, l in _pairs(config.val_images, config.val_labels)]
    val_rng = np.random.default_rng(12345)
    val_crops = [_crop(*val_data[i % len(val_data)], val_rng, False) for i in range(config.val_crops)]

    for p in model.sam.prompt_encoder.parameters():
        p.requires_grad_(False)
    for p in model.sam.image_encoder.parameters():
        p.requires_grad_(not config.freeze_encoder)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule(config.warmup, config.iterations))

    @torch.no_grad()
    def validate() -> float:
        model.eval()
        losses = []
        for start in range(0, len(val_crops), 4):
            chunk = val_crops[start:start + 4]
            pixels, targets = _batch(model, [c[0] for c in chunk], [c[1] for c in chunk])
            losses.append(float(loss_on(model, pixels, targets)) * len(chunk))
        return sum(losses) / len(val_crops)

    history: dict[str, Any] = {"val_loss": [(0, validate())], "train_loss": []}
    best = history["val_loss"][0][1]
    save_checkpoint(model, out / "best.pt")
    every = max(1, config.iterations // 6)
    started = time.perf_counter()
    for step in tqdm(range(config.iterations), desc="SAMCell training", disable=not progress):
        model.train()
        picks = rng.integers(0, len(train_data), config.batch_size)
        crops = [_crop(*train_data[i], rng, True) for i in picks]
        pixels, targets = _batch(model, [c[0] for c in crops], [c[1] for c in crops])
        loss = loss_on(model, pixels, targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        history["train_loss"].append(float(loss.detach()))
        out_of_time = config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes
        if (step + 1) % every == 0 or step + 1 == config.iterations or out_of_time:
            value = validate()
            history["val_loss"].append((step + 1, value))
            if value < best:
                best = value
                model.metadata.update(samcell_training=dataclasses.asdict(config), val_loss=value)
                save_checkpoint(model.eval(), out / "best.pt")
        if out_of_time:
            break
    history["seconds"] = time.perf_counter() - started
    history["best_val_loss"] = best
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return history


def config_from(data: dict[str, Any]) -> SamcellTrainConfig:
    data = dict(data)
    data.pop("family", None)
    preset = data.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"unknown SAMCell training preset {preset!r}; known: {', '.join(PRESETS)}")
        data = {**PRESETS[preset], **data}
    known = {f.name for f in dataclasses.fields(SamcellTrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown SAMCell training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = [f.name for f in dataclasses.fields(SamcellTrainConfig)
               if f.default is dataclasses.MISSING and f.name not in data]
    if missing:
        raise InputError(f"SAMCell training config lacks {', '.join(missing)} (presets name no data: write a "
                         "YAML with 'preset: <name>' plus train_images/train_labels/val_images/val_labels)")
    return SamcellTrainConfig(**data)
