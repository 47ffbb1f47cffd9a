"""μSAM: Segment Anything with micro-sam's UNETR decoder for automatic instance segmentation (AIS).

This family reads plain SAM / MobileSAM checkpoints (``image_encoder.*``), micro-sam checkpoints
(``model_state`` + ``decoder_state``) and samzoo's own (micro-sam's layout + ``samzoo_format``),
segments automatically (AIS: decoder maps + seeded watershed; or SAM's AMG) and from point / box
prompts, and trains with micro-sam's iterative prompt objective jointly with the AIS decoder
(``training/``, run by the shared loop).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import FamilySpec
from .ais import AisParams
from .config import REGISTRY_ARCHITECTURES


def _recognises(state: Mapping[str, Any]) -> bool:
    if "samzoo_format" in state and state.get("family", "microsam") != "microsam":
        return False
    if "samzoo_format" in state or "model_state" in state:
        return True
    keys = [str(k) for k in state]
    prefixes = ("", "sam.", "module.sam.", "module.")
    return any(keys and all(k.startswith(p) for k in keys) and any(k.startswith(p + "image_encoder.") for k in keys)
               for p in prefixes) and not any(k.startswith(("cellfinder.", "model_cp.")) for k in keys)


def _load(path: Path, state: Mapping[str, Any], *, decoder_path: Path | None = None,
          package_config: Mapping[str, Any] | None = None, architecture_kwargs: Mapping[str, Any] | None = None,
          **_: Any):
    if package_config is not None:  # a package samzoo wrote (files already checked by samzoo.packaging)
        from .packaging.load import model_from_package

        return model_from_package(state, package_config, architecture_kwargs, Path(path).name)
    from .checkpoint import load_from_state

    return load_from_state(path, state, decoder_path=decoder_path)


def _segment(image, model, **options):
    from .segment import segment_image

    return segment_image(image, model, **options)


def _segment_from_prompts(image, model, **prompts):
    from .prompting import segment_from_prompts

    return segment_from_prompts(image, model, **prompts)


def _block_model(model, params=None, **options):
    from .blocks import block_model

    return block_model(model, params, **options)


def _package(model, outdir, **options):
    from .packaging import package_model

    return package_model(model, outdir, **options)


def _set_params(model, params: Mapping[str, Any]) -> None:
    model.ais_params = dict(params)
    model.metadata["ais_params"] = dict(params)


def _save(model, path):
    from .checkpoint import save_checkpoint

    return save_checkpoint(model, path)


def _tune(model, images, labels, grid=None, **options):
    from .tuning import tune

    return tune(model, images, labels, grid, **options)


def _train(settings: Mapping[str, Any], *, progress: bool = True):
    from .training.trainer import train

    return train(settings, progress=progress)


def _train_presets() -> tuple[str, ...]:
    from .training.config import _OLD_PRESET_NAMES, PRESETS

    return (*PRESETS, *_OLD_PRESET_NAMES)


def _prompt_predictor(model):
    from .predictor import Predictor

    return Predictor(model)


def _quantize(model):
    from .quantization import quantize_int8

    return quantize_int8(model)


def _model_params(model) -> Mapping[str, Any]:
    return dict(model.ais_params or {})


def _model_class():
    from .model import SamzooModel

    return SamzooModel


def _ais_grid():
    from .grid_search import DEFAULT_AIS_GRID

    return DEFAULT_AIS_GRID


FAMILY = FamilySpec(
    name="microsam",
    title="μSAM",
    summary="SAM + UNETR decoder: automatic instance segmentation (AIS), AMG and point/box prompts",
    licence="code MIT (samzoo), Apache-2.0 (segment-anything); weights: see each model's card",
    model_class=_model_class(),
    recognises=_recognises,
    load=_load,
    segment=_segment,
    params=AisParams,
    param_grid=_ais_grid(),
    model_params=_model_params,
    package=_package,
    segment_from_prompts=_segment_from_prompts,
    block_model=_block_model,
    modes=("ais", "amg"),
    set_params=_set_params,
    save=_save,
    tune=_tune,
    train=_train,
    train_presets=_train_presets(),
    prompt_predictor=_prompt_predictor,
    architectures=REGISTRY_ARCHITECTURES,
    quantize=_quantize,
)
