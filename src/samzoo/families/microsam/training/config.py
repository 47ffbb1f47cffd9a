"""μSAM's training configuration: one dataclass, loadable from YAML, plus named presets.

A config fully describes a run (model, data mix, prompts, optimiser, schedule, seed), and the
exact config is written next to the run's checkpoints, so every trained model has a recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ....errors import InputError
from ....training.config import read_config_data, save_config  # noqa: F401  (save_config: part of this API)

FREEZABLE = ("image_encoder", "prompt_encoder", "mask_decoder", "ais_decoder")


def _synthetic_source(**synthetic: Any) -> dict[str, Any]:
    return {"kind": "synthetic", "weight": 1.0, "synthetic": synthetic}


@dataclass
class TrainConfig:
    """Everything a training run needs.

    data / val_data: lists of sources, each ``{"kind": "synthetic", "weight": w, "synthetic":
    {SyntheticConfig fields}}`` or ``{"kind": "folder", "weight": w, "images": DIR, "labels": DIR,
    "pattern": "*.tif"}``; sources are mixed with probabilities proportional to the weights.
    """

    family: ClassVar[str] = "microsam"  # not a field: what ``samzoo.train(config)`` dispatches on

    name: str = "run"
    out_dir: str = "runs/run"
    # model
    model: str = "tiny"  # architecture name (samzoo.architecture); ignored with init_checkpoint
    model_changes: dict[str, Any] = field(default_factory=dict)
    init_checkpoint: str | None = None  # None: train from scratch
    freeze: list[str] = field(default_factory=list)  # any of FREEZABLE
    lora_rank: int = 0  # > 0: LoRA of this rank on the image encoder's attention qkv (rest frozen)
    lora_alpha: float | None = None  # LoRA scale = alpha / rank (default alpha = rank)
    # data
    data: list[dict[str, Any]] = field(default_factory=lambda: [_synthetic_source()])
    val_data: list[dict[str, Any]] | None = None  # None: same sources as data, other seeds
    # fraction of samples drawn from init_checkpoint's own recorded training data (training.replay):
    # a specialist then forgets less of what its generalist parent knew
    replay: float = 0.0
    patch_size: int = 512
    min_objects: int = 1
    # share of samples that look for an empty patch, so empty background is learnt as background
    # (training.data.PatchSampler)
    background_probability: float = 0.0
    augment: bool = True
    batch_size: int = 1
    n_val: int = 8
    # interactive (SAM) training
    n_objects: int = 8  # objects per image per iteration
    n_sub_iterations: int = 8  # predictions per object: the first prompt + corrective rounds
    box_probability: float = 0.5  # first prompt: box (else one positive point)
    mask_prompt_probability: float = 0.5  # pass previous logits as mask prompt
    interactive_weight: float = 1.0
    ais_weight: float = 1.0
    # optimisation
    iterations: int = 1000
    lr: float = 1e-5
    warmup_iterations: int = 0  # linear lr warm-up from lr / warmup_iterations (from scratch)
    weight_decay: float = 0.0
    lr_patience: int = 3  # validations without improvement before the lr is reduced
    lr_factor: float = 0.5
    # stop after this many validations without a better val_metric (ais_weight * AIS loss +
    # interactive_weight * (1 - mean of box and point Dice)); None: off. GPU presets: 10, as micro-sam
    early_stopping: int | None = None
    grad_clip: float | None = 1.0
    # validate and save an exponential moving average of the weights (e.g. 0.995: ~200 steps); None: off
    ema_decay: float | None = None
    # hardware
    device: str = "auto"  # auto: the GPU of this rank when there is one, else the CPU
    mixed_precision: bool = False  # autocast (bfloat16 on CPU, float16 + gradient scaling on CUDA), as micro-sam
    recompute_encoder: bool = False  # keep only each encoder block's input, rerun it in backward (memory)
    # bookkeeping
    seed: int = 0
    threads: int = 2
    val_every: int = 100
    save_every: int = 50
    log_every: int = 10
    max_minutes: float | None = None  # stop (and save) after this much wall time

    def __post_init__(self) -> None:
        _check_field_types(self)
        bad = sorted(set(self.freeze) - set(FREEZABLE))
        if bad:
            raise InputError(f"cannot freeze {bad}; choose from {list(FREEZABLE)}")
        for name in ("patch_size", "batch_size", "iterations", "n_sub_iterations", "val_every", "save_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.data:
            raise InputError("data must list at least one source")
        if self.early_stopping is not None and int(self.early_stopping) < 1:
            raise InputError(f"early_stopping must be >= 1 validations or null (off), got {self.early_stopping}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise InputError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        for name in ("n_objects", "threads", "log_every", "n_val", "min_objects"):
            if getattr(self, name) < (0 if name in ("n_val", "min_objects") else 1):
                raise InputError(f"{name} must be >= {0 if name in ('n_val', 'min_objects') else 1}, "
                                 f"got {getattr(self, name)}")
        for name in ("box_probability", "mask_prompt_probability", "background_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise InputError(f"ema_decay must be in (0, 1) or null (off), got {self.ema_decay}")
        if not 0 <= self.lr < 1e3:
            raise InputError(f"lr must be a number >= 0, got {self.lr}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise InputError(f"max_minutes must be > 0 (or null: no limit), got {self.max_minutes}")
        if not 0.0 <= self.replay < 1.0:
            raise InputError(f"replay must be a fraction in [0, 1), got {self.replay}")
        if self.replay > 0 and not self.init_checkpoint:
            raise InputError("replay draws from the initial model's training data; set init_checkpoint")
        if self.lora_rank < 0 or self.warmup_iterations < 0:
            raise InputError("lora_rank and warmup_iterations must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if not isinstance(data, dict):
            raise InputError(f"a training config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown training config field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _check_field_types(config: "TrainConfig") -> None:
    """One schema check for every field (the annotations are the schema): wrong types from a YAML
    file are a one-line error naming the field, not a TypeError deep inside training."""
    from ....schema import summarize, type_problems

    problems = type_problems(config)
    if problems:
        raise InputError("invalid training config: " + summarize(problems))
    for i, source in enumerate(config.data + (config.val_data or [])):
        weight = source.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise InputError(f"data source {i}: weight must be a number >= 0, got {weight!r}")


def load_config(path: str | Path) -> TrainConfig:
    """A μSAM training config (``family: microsam`` may be stated)."""
    data = read_config_data(path)
    if data.get("family", "microsam") != "microsam":
        raise InputError(f"{path}: a {data['family']} config, not a μSAM one")
    data.pop("family", None)
    return TrainConfig.from_dict(data)


def _torch_em_source(dataset: str, weight: float, **kwargs: Any) -> dict[str, Any]:
    return {"kind": "torch_em", "weight": weight, "dataset": dataset, "path": f"data/{dataset}", "kwargs": kwargs}


# The datasets of the μSAM paper's generalists (Archit et al. 2025), by torch-em dataset name,
# with sampling weights and the arguments their torch-em functions need.
_LM_DATASETS = [
    ("livecell", 2.0, {"split": "train"}),
    ("deepbacs", 1.0, {"split": "train"}),
    ("tissuenet", 1.0, {"split": "train"}),
    ("neurips_cellseg_supervised", 1.0, {"split": "train"}),
    ("dsb", 1.0, {"split": "train"}),
]
_EM_DATASETS = [
    ("mitoem", 2.0, {"splits": ["train"], "ndim": 3}),
    ("platynereis_nuclei", 1.0, {"ndim": 3}),
    ("lucchi", 1.0, {"split": "train", "ndim": 3}),
]

# Fluorescence mix of the light-microscopy default model (its bar is real fluorescence nuclei).
_LM_MIX = {"styles": {"fluorescence": 1.0}, "kinds": {"nuclei": 0.9, "cells": 0.1}}

PRESETS: dict[str, TrainConfig] = {
    # seconds on a laptop CPU: a smoke test of the whole loop
    "test": TrainConfig(
        name="test", out_dir="runs/test", model="test", patch_size=128, iterations=20, lr=1e-3,
        data=[_synthetic_source(radius_range=[4.0, 12.0])], n_objects=4, n_sub_iterations=3,
        n_val=2, val_every=10, save_every=10, log_every=5,
    ),
    # Minutes on a laptop CPU: fine-tune the shipped default model (samzoo-lm-tiny) on your own
    # image/label folders. 300 iterations took 314 s on an idle 2-core CPU (benchmarks/finetune_proof.py,
    # which doubled held-out mSA on a new modality); on a busy machine an iteration took 8-85 s, so
    # max_minutes caps the run at 10 minutes (it then validates and keeps the best checkpoint).
    # Point data/val_data at your folders.
    "finetune-cpu": TrainConfig(
        name="finetune-cpu", out_dir="runs/finetune-cpu", model="tiny", init_checkpoint="samzoo-lm-tiny",
        patch_size=256, iterations=300, lr=1e-4, n_objects=4, n_sub_iterations=2, ais_weight=2.0,
        n_val=4, val_every=50, save_every=50, log_every=10, min_objects=1, max_minutes=10,
        data=[{"kind": "folder", "weight": 1.0, "images": "data/train/images", "labels": "data/train/labels"}],
        val_data=[{"kind": "folder", "weight": 1.0, "images": "data/val/images", "labels": "data/val/labels"}],
    ),
    # NOT minutes: about 90 minutes on a shared 2-core CPU (max_minutes 86). Trains the tiny
    # architecture with 16 px patches from scratch on synthetic fluorescence, AIS first,
    # interactive part reduced -- the first stage of the shipped model (then
    # training.rescale.halve_patch_size and recipes/samzoo-lm-tiny-patch8.yaml). Was "tiny-cpu".
    "tiny-from-scratch": TrainConfig(
        name="samzoo-lm-tiny", out_dir="runs/default", model="tiny", model_changes={"patch_size": 16},
        patch_size=256,
        data=[_synthetic_source(**_LM_MIX)], iterations=6000, lr=4e-4, warmup_iterations=25,
        n_objects=4, n_sub_iterations=2, ais_weight=2.0, n_val=8, val_every=100, save_every=25,
        log_every=5, min_objects=3, lr_patience=4, max_minutes=86,
    ),
    # GPU, internet: μSAM's light-microscopy generalist -- SAM vit_b finetuned on the paper's LM
    # datasets (fetched by torch-em on first use), 8 sub-iterations, lr 1e-5. Needs `samzoo fetch vit_b`.
    "lm-generalist": TrainConfig(
        name="lm-generalist", out_dir="runs/lm-generalist", model="vit_b", init_checkpoint="vit_b",
        patch_size=512, iterations=100000, lr=1e-5, n_objects=25, n_sub_iterations=8, mixed_precision=True, early_stopping=10,
        val_every=1000, save_every=1000, log_every=100,
        data=[_torch_em_source(name, weight, **kwargs) for name, weight, kwargs in _LM_DATASETS],
        val_data=[_torch_em_source(name, 1.0, **{**kwargs, "split": "val"}) for name, _, kwargs in _LM_DATASETS[:2]],
    ),
    # GPU, internet: μSAM's EM organelles generalist (mitochondria and nuclei in volume EM).
    "em-organelles": TrainConfig(
        name="em-organelles", out_dir="runs/em-organelles", model="vit_b", init_checkpoint="vit_b",
        patch_size=512, iterations=100000, lr=1e-5, n_objects=25, n_sub_iterations=8, mixed_precision=True, early_stopping=10,
        val_every=1000, save_every=1000, log_every=100,
        data=[_torch_em_source(name, weight, **kwargs) for name, weight, kwargs in _EM_DATASETS],
        val_data=[_torch_em_source("lucchi", 1.0, split="test", ndim=3)],
    ),
    # Template for a dataset specialist: start from a generalist, your own image/label folders.
    "specialist": TrainConfig(
        name="specialist", out_dir="runs/specialist", model="vit_b", init_checkpoint="vit_b_lm",
        patch_size=512, iterations=10000, lr=1e-5, n_objects=25, n_sub_iterations=8, mixed_precision=True, early_stopping=10,
        val_every=500, save_every=500, log_every=50,
        data=[{"kind": "folder", "weight": 1.0, "images": "data/train/images", "labels": "data/train/labels"}],
        val_data=[{"kind": "folder", "weight": 1.0, "images": "data/val/images", "labels": "data/val/labels"}],
    ),
    # GPU: μSAM's recipe (8 sub-iterations, lr 1e-5) for finetuning a pretrained model: SAM vit_b
    # by default (set init_checkpoint to any ID or path, e.g. vit_b_lm); your folders as data
    "finetune": TrainConfig(
        name="finetune", out_dir="runs/finetune", model="vit_b", init_checkpoint="vit_b",
        patch_size=1024, iterations=25000,
        data=[{"kind": "folder", "weight": 1.0, "images": "data/train/images", "labels": "data/train/labels"}],
        lr=1e-5, n_objects=25, n_sub_iterations=8, mixed_precision=True, early_stopping=10, val_every=500, save_every=500, log_every=50,
    ),
}


_OLD_PRESET_NAMES = {"tiny-cpu": "tiny-from-scratch"}  # kept for one release


def preset_config(name: str, **changes: Any) -> TrainConfig:
    if name in _OLD_PRESET_NAMES:
        from ....cli_options import deprecation_note

        deprecation_note(f"the training preset {name!r}", f"{_OLD_PRESET_NAMES[name]!r} (it takes about 90 minutes, "
                                                          "not minutes; 'finetune-cpu' is the minutes one)")
        name = _OLD_PRESET_NAMES[name]
    if name not in PRESETS:
        raise InputError(f"unknown training preset {name!r}; known: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **changes)
