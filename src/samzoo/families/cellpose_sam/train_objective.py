"""``samzoo train`` for Cellpose-SAM: cellpose's objective run by the shared training loop
(``samzoo.training.loop``), so a Cellpose-SAM run gets what every run gets (checkpoints, exact
resume, validation, early stopping, time limit, torchrun, logs and curves).

The objective is ``training``'s: flow + cell-probability targets (computed once per image),
cellpose's loss, the flow-aware crop / flip / rotation augmentation and AdamW. Batches and the
fixed validation crops are pure functions of ``(seed, iteration)``. The lr schedule is the loop's
(linear warm-up, then reductions when the validation loss stops improving) instead of
``training.train``'s warm-up-then-constant; ``training.train`` stays the in-memory API.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import InputError
from .model import CellposeSamModel
from .training import augment, cellpose_loss, prepare


@dataclasses.dataclass
class CpsamTrainConfig:
    """A Cellpose-SAM run. ``init_checkpoint``: a model ID / checkpoint path to fine-tune, or an
    architecture name (``cpsam``, ``cpsam_small``, ``cpsam_test``) to start from random weights.
    Images and labels: folders (or globs / files) paired as ``samzoo evaluate`` pairs them."""

    family: ClassVar[str] = "cellpose_sam"

    init_checkpoint: str
    train_images: str
    train_labels: str
    val_images: str
    val_labels: str
    name: str = "cpsam-run"
    out_dir: str = "runs/cpsam"
    iterations: int = 300
    batch_size: int = 4
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_iterations: int = 20
    n_val: int = 8  # fixed validation crops
    lr_patience: int = 3
    lr_factor: float = 0.5
    early_stopping: int | None = None
    grad_clip: float | None = None
    device: str = "auto"
    mixed_precision: bool = False
    seed: int = 0
    threads: int = 2
    val_every: int = 50
    save_every: int = 50
    log_every: int = 10
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        from ...schema import summarize, type_problems

        problems = type_problems(self)
        if problems:
            raise InputError("invalid Cellpose-SAM training config: " + summarize(problems))
        for name in ("iterations", "batch_size", "n_val", "val_every", "save_every", "log_every", "threads"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_iterations < self.iterations:
            raise InputError(f"warmup_iterations must be in [0, iterations), got {self.warmup_iterations}")

    @property
    def data(self) -> list[dict[str, Any]]:
        """The training data as a source list (how ``training.provenance`` describes it)."""
        return [{"kind": "folder", "weight": 1.0, "images": self.train_images, "labels": self.train_labels}]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "CpsamTrainConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    # minutes on a CPU: the small architecture from random weights (training.PRESETS["cpsam-small-cpu"])
    "cpsam-small-cpu": dict(init_checkpoint="cpsam_small", iterations=700, batch_size=1, lr=4e-4,
                            warmup_iterations=40, device="cpu"),
    # cellpose's train_seg fine-tuning of the published cpsam (a GPU run)
    "cpsam-finetune": dict(init_checkpoint="cpsam", iterations=50_000, batch_size=1, lr=1e-5,
                           warmup_iterations=5_000, val_every=1000, save_every=1000, log_every=100,
                           early_stopping=10, device="cuda"),
}


def config_from(settings: Mapping[str, Any]) -> CpsamTrainConfig:
    settings = dict(settings)
    settings.pop("family", None)
    name = settings.pop("preset", None)
    if name is not None:
        if name not in PRESETS:
            raise InputError(f"unknown Cellpose-SAM training preset {name!r}; known: {', '.join(PRESETS)}")
        settings = {**PRESETS[name], **settings}
    known = {f.name for f in dataclasses.fields(CpsamTrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError(f"unknown Cellpose-SAM training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = sorted(f.name for f in dataclasses.fields(CpsamTrainConfig)
                     if f.default is dataclasses.MISSING and f.name not in settings)
    if missing:
        raise InputError(f"Cellpose-SAM training config lacks {', '.join(missing)}")
    return CpsamTrainConfig(**settings)


def _read_pairs(images: str, labels: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from ...evaluation.evaluate import _read_pair, resolve_pairs

    pairs = [_read_pair(i, l) for i, l in resolve_pairs(images, labels)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


class CpsamLoss(torch.nn.Module):
    """cellpose's loss of one batch ``(images (B, 3, S, S), targets (B, 3, S, S))``."""

    def __init__(self, model: CellposeSamModel, device: torch.device):
        super().__init__()
        self.model = model
        self.device = torch.device(device)

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = (t.to(self.device) for t in batch)
        loss = cellpose_loss(self.model(images), targets[:, :2], targets[:, 2])
        return loss, {"loss": float(loss.detach())}


class CpsamObjective:
    """Cellpose-SAM for :class:`samzoo.training.loop.TrainingLoop`."""

    def __init__(self, config: CpsamTrainConfig, *, progress: bool = True):
        self.config = config
        self.progress = progress
        self.train_data: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._val_crops: list[tuple[np.ndarray, np.ndarray]] | None = None

    def initial_model(self) -> CellposeSamModel:
        from ...training.provenance import run_metadata
        from .config import PRESETS as ARCHITECTURES, preset

        config = self.config
        if config.init_checkpoint in ARCHITECTURES:
            torch.manual_seed(config.seed)
            return CellposeSamModel(preset(config.init_checkpoint), metadata=run_metadata(config))
        from ...api import load_model

        model = load_model(config.init_checkpoint)
        if not isinstance(model, CellposeSamModel):
            raise InputError(f"{config.init_checkpoint}: not a Cellpose-SAM model (nor an architecture name: "
                             f"{', '.join(ARCHITECTURES)})")
        model.metadata = run_metadata(config, model.metadata, str(config.init_checkpoint))
        return model

    def load_model(self, path: Path) -> CellposeSamModel:
        from .checkpoint import load_checkpoint

        return load_checkpoint(path)

    def save_model(self, model: CellposeSamModel, path: Path) -> None:
        from .checkpoint import save_checkpoint

        save_checkpoint(model, path)

    def prepare(self, model: CellposeSamModel) -> None:
        self.size = model.config.img_size

    def optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def exported(self, model: CellposeSamModel) -> CellposeSamModel:
        return model

    def loss_module(self, model: CellposeSamModel, device: torch.device, rank: int) -> CpsamLoss:
        images, labels = _read_pairs(self.config.train_images, self.config.train_labels)
        self.train_data = prepare(images, labels, progress=self.progress)
        return CpsamLoss(model, device)

    def batch(self, iteration: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        rng = np.random.default_rng([config.seed, iteration, rank])
        crops = [augment(*self.train_data[int(rng.integers(len(self.train_data)))], rng, self.size)
                 for _ in range(config.batch_size)]
        return (torch.from_numpy(np.stack([c[0] for c in crops])), torch.from_numpy(np.stack([c[1] for c in crops])))

    def val_crops(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._val_crops is None:
            images, labels = _read_pairs(self.config.val_images, self.config.val_labels)
            data = prepare(images, labels, progress=False)
            rng = np.random.default_rng([self.config.seed + 1, 1_000_003])
            self._val_crops = [augment(*data[i % len(data)], rng, self.size) for i in range(self.config.n_val)]
        return self._val_crops

    def validate(self, model: CellposeSamModel, device: torch.device) -> dict[str, float]:
        losses = []
        for image, target in self.val_crops():
            x = torch.from_numpy(image)[None].to(device)
            y = torch.from_numpy(target)[None].to(device)
            losses.append(float(cellpose_loss(model(x), y[:, :2], y[:, 2])))
        value = float(np.mean(losses))
        return {"val_loss": value, "val_metric": value}

    def validation_data(self) -> tuple[int, str]:
        config = self.config
        return config.n_val, (f"{config.n_val} fixed crops (seed {config.seed + 1}) of {config.val_images} "
                              f"(labels {config.val_labels})")


def train(settings: Mapping[str, Any], *, progress: bool = True) -> Path:
    """``FamilySpec.train``: run (or resume; ``restart: true`` starts over) the settings' training;
    returns the path of the best checkpoint."""
    from ...outputs import check_writable_folder
    from ...training.loop import BEST, TrainingLoop

    settings = dict(settings)
    restart = bool(settings.pop("restart", False))
    config = config_from(settings)
    check_writable_folder(config.out_dir, "training output folder")
    loop = TrainingLoop(CpsamObjective(config, progress=progress), resume=not restart, progress=progress)
    loop.fit()
    return loop.ckpt_dir / BEST
