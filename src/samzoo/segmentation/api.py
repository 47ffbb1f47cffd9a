"""One-call segmentation for every model family: ``segment`` (automatic) and ``segment_from_prompts``.

Both take any image ``preprocess`` accepts and a model (a loaded model of any family, anything
``samzoo.load_model`` resolves, or None for the shipped default) and return a uint32 label image
(0 = background, objects 1..N). The model's family (``samzoo.families``) segments each 2D image;
volumes are segmented slice by slice here and the slices' objects merged into 3D objects
(``volume.merge_slices``), the same for every family.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..families import family_of
from .preprocess import as_image_stack
from .volume import merge_slices


def resolve_model(model: Any = None, *, device: Any = None, offline: bool | None = None,
                  registry: Any = None) -> Any:
    """A loaded model (moved to ``device`` when one is given); anything else through
    ``samzoo.api.load_model`` (None: the shipped default)."""
    from ..api import load_model
    from ..errors import ModelNotFoundError

    if isinstance(model, (str, os.PathLike)) or model is None:
        try:
            return load_model(model, device=device, offline=offline, registry=registry)
        except ModuleNotFoundError as err:  # an ID that needs the hub, in an install without it
            if err.name and err.name.startswith("samzoo."):
                raise ModelNotFoundError(f"{model}: not a local file, and resolving model IDs needs {err.name}, "
                                         "which is not installed") from None
            raise
    family_of(model)  # a clear error for objects that are no samzoo model
    if device is not None:
        from ..devices import inference_device

        model = model.to(inference_device(device))
    return model


PRECISIONS = ("float32", "bfloat16", "int8")
"""Inference precisions (``--precision`` / ``precision=``): float32; bfloat16 autocast (batches
and blockwise runs; fast on GPUs and CPUs with AVX-512 BF16 / AMX); int8 (CPU: the family's
quantised copy of the model, μSAM: dynamic int8 quantisation of the ViT linears)."""


def with_precision(model: Any, precision: str = "float32") -> Any:
    """``model`` for inference in ``precision``: itself for float32 / bfloat16 (autocast happens
    where the network runs), the family's int8 copy for ``"int8"`` (quantise once, then segment
    many images with the copy)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "int8":
        return model
    family = family_of(model)
    if family.quantize is None:
        raise InputError(f"{family.title} models have no int8 path; use --precision float32 or bfloat16")
    return family.quantize(model)


def _slices(raw: np.ndarray, is_volume: bool | None, channel_axis: int | None = None
            ) -> tuple[list[np.ndarray], bool]:
    """Validate, then split into the 2D images to segment (raw, not normalised). The layout is
    decided here once; channel-first images leave as channels-last so nothing decides it again.

    A 3D array whose first axis has 2 or 3 entries (and whose last axis is no channel axis) is
    ambiguous -- 2-3 channels or 2-3 slices -- and needs ``is_volume`` or ``channel_axis``."""
    if channel_axis is not None:
        if is_volume:
            raise InputError("channel_axis and is_volume=True exclude each other (a volume here has no channel axis)")
        if raw.ndim != 3 or channel_axis not in (0, -1, 2):
            raise InputError(f"channel_axis must be 0 or -1 for a 3D image, got {channel_axis} for shape {raw.shape}")
        if raw.shape[channel_axis] > 4:
            raise InputError(f"channel_axis {channel_axis} of shape {raw.shape} has {raw.shape[channel_axis]} "
                             "entries; at most 4 channels are supported")
        raw, is_volume = np.moveaxis(raw, channel_axis, -1), False
    elif is_volume is None and raw.ndim == 3 and raw.shape[0] in (2, 3) and raw.shape[-1] > 4:
        raise InputError(
            f"image of shape {raw.shape} is ambiguous: {raw.shape[0]} channels or {raw.shape[0]} slices? "
            "Pass --volume / is_volume=True for slices, or --channel-axis 0 / channel_axis=0 for channels")
    stack, volume = as_image_stack(raw, is_volume=is_volume)
    if volume:
        return [raw[z] for z in range(raw.shape[0])], True
    if raw.ndim == 4:
        return [raw[0]], False
    if raw.ndim == 3 and raw.shape[-1] > 4:  # channel-first (a first axis of 1 or 4 with is_volume=False)
        return [np.moveaxis(raw, 0, -1)], False
    return [raw], False


def segment(
    image: np.ndarray,
    model: Any = None,
    *,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    progress: bool = True,
    is_volume: bool | None = None,
    channel_axis: int | None = None,
    device: Any = None,
    precision: str = "float32",
    **options: Any,
) -> np.ndarray:
    """Automatic instance segmentation of a 2D image or a volume -> uint32 labels.

    ``options`` go to the model's family: for μSAM ``mode`` ("ais" or "amg"), ``ais_params`` /
    ``amg_params`` (or ``params``) and ``embedding_cache``; every family takes ``params`` (a dict
    of its tunable post-processing parameters, overriding the model's stored values).
    Large images are tiled (``tile_shape``/``halo``); ``is_volume`` / ``channel_axis`` resolve 3D
    arrays (see ``preprocess``; a first axis of 2-3 entries needs one of them); ``progress`` shows tqdm bars; ``device`` (``"auto"``, ``"cpu"``,
    ``"cuda[:N]"``) moves the model there first (default: where it is; a loaded default is on the CPU).
    ``precision``: ``"int8"`` segments with the family's int8 copy of the model (CPU; see
    ``with_precision``, which makes the copy once for many calls), ``"bfloat16"`` under autocast
    (the embedding cache is then not used: its keys do not hold the precision).

    >>> labels = segment(image)                          # doctest: +SKIP
    >>> labels = segment(image, "vit_b_lm", mode="amg")  # doctest: +SKIP
    """
    raw = np.asarray(image)
    slices, volume = _slices(raw, is_volume, channel_axis)
    model = with_precision(resolve_model(model, device=device), precision)
    family = family_of(model)
    if precision == "bfloat16" and "embedding_cache" in options:
        options["embedding_cache"] = None
    autocast = torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
    results = []
    for data in tqdm(slices, desc="slices", disable=not (progress and volume)):
        with autocast:
            results.append(family.segment(data, model, tile_shape=tile_shape, halo=halo, progress=progress,
                                          **options))
    if volume:
        return merge_slices(np.stack(results))
    return results[0]


def segment_from_prompts(image: np.ndarray | None, model: Any = None, *, device: Any = None,
                         **prompts: Any) -> np.ndarray:
    """Interactive segmentation of a 2D image -> uint32 labels, one object per prompt, for every
    family that takes prompts (μSAM: ``points`` (x, y) with ``point_labels``, ``boxes``
    (x0, y0, x1, y1), ``tile_shape``, ``halo``, ``embedding_cache``, ``predictor``).

    >>> masks = segment_from_prompts(image, boxes=[[10, 10, 60, 70]])  # doctest: +SKIP
    """
    predictor = prompts.get("predictor")
    model = predictor.model if predictor is not None and model is None else resolve_model(model, device=device)
    family = family_of(model)
    if family.segment_from_prompts is None:
        raise InputError(f"{family.title} models take no prompts; use segment() for automatic segmentation")
    return family.segment_from_prompts(image, model, **prompts)
