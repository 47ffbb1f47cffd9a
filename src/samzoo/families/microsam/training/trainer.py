"""μSAM's trainer: the shared loop (``samzoo.training.loop``) running μSAM's objective, and
``train(settings)``, what ``samzoo train`` / ``samzoo.train`` call through ``FamilySpec.train``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ....training.data import PatchSampler
from ....training.loop import BEST, TrainingLoop
from .config import TrainConfig, preset_config
from .objective import MicrosamObjective


class Trainer(TrainingLoop):
    """``Trainer(config).fit()``: train a μSAM model as ``config`` (a :class:`TrainConfig`) says;
    checkpoints in ``config.out_dir/checkpoints`` (``best.pt``, ``latest.pt``), resumed when there."""

    objective: MicrosamObjective

    def __init__(self, config: TrainConfig, *, resume: bool = True, progress: bool = True):
        super().__init__(MicrosamObjective(config), resume=resume, progress=progress)

    @property
    def sampler(self) -> PatchSampler:
        """The training patches (image, labels, AIS target), normalised as the model's inference."""
        return self.objective.sampler

    def val_set(self) -> list[dict[str, np.ndarray]]:
        """The fixed validation samples."""
        return self.objective.val_set()


def config_from(settings: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from ``samzoo train`` settings: a YAML mapping, or ``{"preset": name}``
    plus overrides (``family: microsam`` may be stated)."""
    settings = dict(settings)
    family = settings.pop("family", "microsam")
    if family != "microsam":
        from ....errors import InputError

        raise InputError(f"a {family} training config, not a μSAM one")
    name = settings.pop("preset", None)
    if name is None:
        return TrainConfig.from_dict(settings)
    return TrainConfig.from_dict({**preset_config(str(name)).to_dict(), **settings})


def train(settings: Mapping[str, Any], *, progress: bool = True) -> Path:
    """``FamilySpec.train``: run (or resume) the training ``settings`` describe; ``restart: true``
    ignores an existing latest checkpoint. Returns the path of the best checkpoint."""
    from ....outputs import check_writable_folder

    settings = dict(settings)
    restart = bool(settings.pop("restart", False))
    config = config_from(settings)
    check_writable_folder(config.out_dir, "training output folder")
    trainer = Trainer(config, resume=not restart, progress=progress)
    trainer.fit()
    return trainer.ckpt_dir / BEST
