"""The FamilySpec callables of CellSAM (shared code reaches CellSAM only through these)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .model import CellSAMModel
from .params import CellSAMParams


def recognises(state: Mapping[str, Any]) -> bool:
    from .checkpoint import looks_like_cellsam

    return looks_like_cellsam(state)


def load(path: Path, state: Mapping[str, Any], **_: Any) -> CellSAMModel:
    from .checkpoint import load_from_state

    return load_from_state(path, state)


def resolve_params(model: CellSAMModel, params: "CellSAMParams | Mapping[str, Any] | None" = None, *,
                   tile_shape: int | Sequence[int] | None = None, halo: int | Sequence[int] | None = None
                   ) -> CellSAMParams:
    """The model's stored parameters, then ``params`` (a dict of changes; a CellSAMParams is taken
    whole), then samzoo's generic tiling options (``tile_shape`` -> block_size, ``halo`` -> overlap)."""
    if isinstance(params, CellSAMParams):
        out = params
    elif params is None or isinstance(params, Mapping):
        out = model.params.replace(**dict(params or {}))
    else:
        raise InputError(f"params must be a dict or CellSAMParams, got {type(params).__name__}")
    changes: dict[str, Any] = {}
    if tile_shape is not None:
        sizes = {int(t) for t in np.atleast_1d(tile_shape)}
        if len(sizes) != 1:
            raise InputError(f"CellSAM blocks are square; got tile_shape {tile_shape}")
        changes.update(tiling=True, block_size=sizes.pop())
    if halo is not None:
        halos = {int(h) for h in np.atleast_1d(halo)}
        if len(halos) != 1:
            raise InputError(f"CellSAM uses one overlap for both axes; got halo {halo}")
        overlap = halos.pop()
        changes.update(overlap=overlap, iou_depth=min(out.iou_depth, overlap))
    return out.replace(**changes) if changes else out


# Options the shared CLI passes to every family today (μSAM's); CellSAM has one automatic mode
# and no embedding cache, so they are accepted only with values that ask for nothing else.
_NEUTRAL_OPTIONS = {"mode": (None, "ais", "auto"), "ais_params": (None,), "amg_params": (None,),
                    "embedding_cache": (None, True, False)}


def _check_options(options: Mapping[str, Any]) -> None:
    for key, value in options.items():
        allowed = _NEUTRAL_OPTIONS.get(key)
        if allowed is None:
            raise InputError(f"CellSAM takes no option {key!r} (only params, tile_shape, halo)")
        if not any(value is a or (isinstance(value, str) and value == a) for a in allowed):
            raise InputError(f"CellSAM has no {key}={value!r} (one automatic mode: box detection + SAM; "
                             "give thresholds as params)")


def segment(image: np.ndarray, model: CellSAMModel, *, params: Any = None, tile_shape: Any = None,
            halo: Any = None, progress: bool = True, **options: Any) -> np.ndarray:
    from .segment import segment_image

    _check_options(options)
    return segment_image(model, image, resolve_params(model, params, tile_shape=tile_shape, halo=halo),
                         progress=progress)


def segment_from_prompts(image: np.ndarray, model: CellSAMModel, *, points=None, point_labels=None, boxes=None,
                         progress: bool = True, **options: Any) -> np.ndarray:
    from .prompting import segment_from_prompts as run

    extra = {k: v for k, v in options.items() if not (k in ("tile_shape", "halo") and v is None)}
    _check_options(extra)
    return run(image, model, points=points, point_labels=point_labels, boxes=boxes)


def model_params(model: CellSAMModel) -> Mapping[str, Any]:
    return model.params.to_dict()


def package(model: CellSAMModel, outdir: Path, **options: Any) -> Mapping[str, Path]:
    from .packaging import package_cellsam

    return package_cellsam(model, outdir, **options)
