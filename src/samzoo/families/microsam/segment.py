"""μSAM's automatic instance segmentation of one 2D image: AIS (decoder maps + seeded watershed)
or AMG (SAM's automatic mask generation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InputError
from ...segmentation.diameter import check_diameter, model_diameter_range, model_object_diameter, segment_at_diameter
from ...segmentation.embedding_cache import EmbeddingCache, as_embedding_cache
from ...segmentation.preprocess import as_image_stack
from .ais import AisParams, watershed_from_decoder_outputs
from .amg import AmgParams, automatic_mask_generation
from .model import SamzooModel
from .predictor import Predictor

MODES = ("ais", "amg")


def resolve_ais_params(model: SamzooModel, overrides: "AisParams | dict[str, Any] | None" = None) -> AisParams:
    """AisParams defaults, then the model's tuned ``ais_params``, then ``overrides`` (a dict of
    changes; an ``AisParams`` object is taken as the complete set)."""
    if isinstance(overrides, AisParams):
        return overrides
    known = {f.name for f in dataclasses.fields(AisParams)}
    params = AisParams().replace(**{k: v for k, v in dict(model.ais_params or {}).items() if k in known})
    if overrides is None:
        return params
    if not isinstance(overrides, dict):
        raise InputError(f"ais_params must be a dict or AisParams, got {type(overrides).__name__}")
    return params.replace(**overrides)


def resolve_amg_params(model: SamzooModel, overrides: "AmgParams | dict[str, Any] | None" = None) -> AmgParams:
    """AmgParams defaults, then the model's tuned ``metadata["amg_params"]`` (``samzoo tune --amg``
    stores them there), then ``overrides`` (a dict of changes; an ``AmgParams`` is the full set)."""
    if isinstance(overrides, AmgParams):
        return overrides
    known = {f.name for f in dataclasses.fields(AmgParams)}
    tuned = (model.metadata or {}).get("amg_params") or {}
    params = AmgParams().replace(**{k: v for k, v in dict(tuned).items() if k in known}) if isinstance(tuned, dict) \
        else AmgParams()
    if overrides is None:
        return params
    if not isinstance(overrides, dict):
        raise InputError(f"amg_params must be a dict or AmgParams, got {type(overrides).__name__}")
    return params.replace(**overrides)


def segment_image(
    image: np.ndarray,
    model: SamzooModel,
    *,
    mode: str = "ais",
    params: "AisParams | AmgParams | dict[str, Any] | None" = None,
    ais_params: "AisParams | dict[str, Any] | None" = None,
    amg_params: "AmgParams | dict[str, Any] | None" = None,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    embedding_cache: "EmbeddingCache | str | bool | None" = None,
    progress: bool = True,
    diameter: float | None = None,
    blend_tiles: bool = True,
) -> np.ndarray:
    """One 2D image -> uint32 labels. ``mode="ais"``: the AIS decoder's maps and the seeded
    watershed (``ais_params`` override the model's tuned values, which override the defaults);
    ``mode="amg"``: SAM's automatic mask generation (``amg_params`` override the model's tuned
    ``metadata["amg_params"]``, which override the defaults). ``params`` is the generic
    spelling of whichever of the two the mode uses. ``diameter``: typical object diameter in
    pixels; the image is rescaled so objects reach the size the model was trained for
    (``segmentation.diameter``); 0 estimates it from a first pass; None (default) segments at
    native size. ``blend_tiles`` (default): blend the decoder maps across tile overlaps, so no
    seam follows the tile grid (blockwise runs blend the same way); False pastes each tile's
    core, which is what a bioimageio.core consumer of the ``ais_network`` package computes.""" 
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if params is not None:
        if (ais_params if mode == "ais" else amg_params) is not None:
            raise InputError(f"give params or {mode}_params, not both")
        ais_params, amg_params = (params, None) if mode == "ais" else (None, params)
    if mode == "ais" and amg_params is not None:
        raise InputError("amg_params apply to mode='amg'")
    if mode == "amg" and ais_params is not None:
        raise InputError("ais_params apply to mode='ais'")
    if mode == "ais":
        if not model.has_ais_decoder:
            raise InputError(f"model {model.config.name!r} has no AIS decoder; use mode='amg' or prompts")
        chosen: Any = resolve_ais_params(model, ais_params)
    else:
        chosen = resolve_amg_params(model, amg_params)
    cache = as_embedding_cache(embedding_cache)

    def run(data: np.ndarray) -> np.ndarray:
        predictor = Predictor(model, progress=progress)
        predictor.set_image(data, tile_shape=tile_shape, halo=halo, embedding_cache=cache)
        if mode == "ais":
            maps = predictor.ais_outputs(blend=blend_tiles)
            return watershed_from_decoder_outputs(maps[0], maps[1], maps[2], chosen)
        return automatic_mask_generation(predictor, chosen)

    diameter = check_diameter(diameter)
    if diameter is None:
        return run(image)
    stack, _ = as_image_stack(np.asarray(image), is_volume=False)
    channels_last = stack[0]  # (H, W, 3)
    if np.asarray(image).dtype.kind in "ui":  # as_image_stack gives float: keep the source dtype
        channels_last = channels_last.astype(np.asarray(image).dtype)
    labels, _ = segment_at_diameter(run, channels_last, diameter, model_object_diameter(model),
                                    model_diameter_range(model))
    return labels
