"""SAMCell (Georgia Tech; PLoS One 2025): an unmodified SAM ViT-B fine-tuned to predict a per-cell
normalised distance map, used without prompts; cells by a seeded watershed on that map.

Reads the authors' released weights (transformers ``SamModel`` state dicts: ``.pt``, ``.bin``,
``.safetensors``) and samzoo's own SAMCell checkpoints; runs the authors' inference (256 px crops
with cosine blending, CLAHE, SAM normalisation, watershed) with their weak spots fixed; tunes the
two watershed thresholds; packages an instance-label and a network model; trains with the MSE
distance-map objective.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import FamilySpec
from .checkpoint import recognises
from .model import SamcellModel
from .postprocess import PARAM_GRID, SamcellParams


def _load(path: Path, state: Mapping[str, Any], **_: Any) -> SamcellModel:
    from .checkpoint import load_from_state

    return load_from_state(path, state)


def _segment(image, model, **options):
    from .segment import segment_image

    return segment_image(image, model, **options)


def _predict(image, model: SamcellModel, *, progress: bool = False):
    from .segment import distance_map

    return distance_map(image, model, progress=progress)


def _postprocess(distance, params: SamcellParams):
    from .postprocess import labels_from_distance_map

    return labels_from_distance_map(distance, params)


def _model_params(model: SamcellModel) -> Mapping[str, Any]:
    return dict(model.params)


def _set_params(model: SamcellModel, params: Mapping[str, Any]) -> None:
    model.params = SamcellParams(**params).to_dict()


def _train(settings: Mapping[str, Any], *, progress: bool = True):
    from .training import config_from, train

    return train(config_from(dict(settings)), progress=progress)


def _package(model: SamcellModel, outdir, **options):
    from .packaging import package_samcell

    return package_samcell(model, outdir, **options)


def _save(model: SamcellModel, path):
    from .checkpoint import save_checkpoint

    return save_checkpoint(model, path)


FAMILY = FamilySpec(
    name="samcell",
    title="SAMCell",
    summary="SAM ViT-B without prompts -> per-cell distance map -> seeded watershed",
    licence="code MIT (SAMCell, samzoo), Apache-2.0 (segment-anything); released weights MIT "
            "(trained on LIVECell and Cellpose data: CC BY-NC)",
    model_class=SamcellModel,
    recognises=recognises,
    load=_load,
    segment=_segment,
    params=SamcellParams,
    param_grid=PARAM_GRID,
    model_params=_model_params,
    predict=_predict,
    postprocess=_postprocess,
    set_params=_set_params,
    package=_package,
    architectures=("vit_b",),
    save=_save,
    train=_train,
    train_presets=("samcell-finetune", "samcell-tiny-cpu"),
)
