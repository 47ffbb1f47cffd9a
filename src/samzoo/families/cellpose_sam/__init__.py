"""Cellpose-SAM (cellpose 4): SAM's ViT-L encoder at 256 px / 8-px patches with global attention,
a pixel-shuffle head predicting Y/X flows and a cell-probability logit, and cellpose's flow
dynamics turning them into instance labels.

Reads cellpose's checkpoints (``cpsam``, ``cpsam_v2``: plain state dicts) and samzoo's own; segments
as ``CellposeModel.eval`` does (normalisation, tiling, dynamics: ``inference``, ``dynamics``);
``params`` are tunable (``tune``) and stored in checkpoints; ``packaging`` writes BioImage.IO
packages; ``training`` has cellpose's targets, loss and augmentation; ``train_objective`` runs
them in the shared training loop (``samzoo train``).

Public functions: :func:`build`, :func:`recognise`, :func:`load`, :func:`segment`,
:class:`CpsamParams`, :func:`tune`, :func:`package`, :func:`loss` / :func:`train_step`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import FamilySpec
from .checkpoint import load_checkpoint, load_from_state, recognises, save_checkpoint
from .config import FAMILY_NAME, CpsamConfig, preset
from .model import CellposeSamModel
from .params import DEFAULT_GRID, CpsamParams

LICENCE = ("code BSD-3-Clause (cellpose, HHMI) / MIT (samzoo); published weights (cpsam, cpsam_v2) are tagged "
           "BSD-3-Clause but trained on data licensed CC-BY-NC (non-commercial); SAM initialisation Apache-2.0")


def build(config: CpsamConfig | str = "cpsam", **metadata: Any) -> CellposeSamModel:
    """A randomly initialised model of a preset name or config."""
    config = preset(config) if isinstance(config, str) else config
    return CellposeSamModel(config, metadata=metadata).eval()


def recognise(state: Mapping[str, Any]) -> bool:
    return recognises(state)


def load(path: str | Path, state: Mapping[str, Any] | None = None, **_: Any) -> CellposeSamModel:
    """A checkpoint file (cellpose or samzoo layout) -> model; ``state`` if already read."""
    return load_checkpoint(path) if state is None else load_from_state(path, state)


def segment(image, model: CellposeSamModel, **options: Any):
    """2D image -> uint32 labels (``params=`` dict/CpsamParams; ``is_volume=True`` for volumes)."""
    from .inference import segment as _segment

    return _segment(image, model, **options)


def _segment_2d(image, model, **options):
    from .inference import segment_image

    return segment_image(image, model, **options)


def tune(model: CellposeSamModel, images, labels, grid=None, progress: bool = True):
    from .tuning import tune_model

    return tune_model(model, images, labels, grid=grid, progress=progress)


def package(model: CellposeSamModel, outdir: str | Path, **options: Any) -> dict[str, Path]:
    from .packaging import package_model

    return package_model(model, outdir, **options)


def loss(prediction, flows, cellprob):
    from .training import cellpose_loss

    return cellpose_loss(prediction, flows, cellprob)


def train_step(model, optimizer, images, labels, **options):
    from .training import train_step as _train_step

    return _train_step(model, optimizer, images, labels, **options)


def _train(settings: Mapping[str, Any], *, progress: bool = True) -> Path:
    from .train_objective import train as _run

    return _run(settings, progress=progress)


def _model_params(model: CellposeSamModel) -> Mapping[str, Any]:
    return dict(model.params)


FAMILY = FamilySpec(
    name=FAMILY_NAME,
    title="Cellpose-SAM",
    summary="SAM ViT-L encoder (256 px, 8-px patches) + flow head; cellpose flow dynamics -> instances",
    licence=LICENCE,
    model_class=CellposeSamModel,
    recognises=recognise,
    load=load,
    segment=_segment_2d,
    params=CpsamParams,
    param_grid=DEFAULT_GRID,
    model_params=_model_params,
    package=package,
    train=_train,
    train_presets=("cpsam-small-cpu", "cpsam-finetune"),
    architectures=("cpsam",),
)

__all__ = ["FAMILY", "CellposeSamModel", "CpsamConfig", "CpsamParams", "build", "load", "loss", "package",
           "preset", "recognise", "save_checkpoint", "segment", "train_step", "tune"]
