"""μSAM's tuning (``FamilySpec.tune``): AIS on decoder outputs computed once per image, and
optionally AMG; the best parameters are stored in the model (``ais_params``, metadata)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import InputError
from .model import SamzooModel


def tune(model: SamzooModel, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
         grid: Mapping[str, Sequence[Any]] | None = None, *, progress: bool = True, amg: bool = False) -> list:
    from .grid_search import DEFAULT_AIS_GRID, ais_grid_search, amg_grid_search, store_result

    grid = dict(grid or {})
    ais_grid = {k: v for k, v in grid.items() if k in DEFAULT_AIS_GRID}
    amg_grid = {k: v for k, v in grid.items() if k not in DEFAULT_AIS_GRID}
    if amg_grid and not amg:
        raise InputError(f"--grid {', '.join(amg_grid)}: not an AIS parameter (AMG needs --amg)")
    if not model.has_ais_decoder and not amg:
        raise InputError(f"model {model.config.name!r} has no AIS decoder; pass --amg to tune AMG")
    results = []
    if model.has_ais_decoder:
        results.append(ais_grid_search(model, images, labels, ais_grid, progress=progress))
        store_result(model, results[-1])
    if amg:
        results.append(amg_grid_search(model, images, labels, amg_grid, progress=progress))
        store_result(model, results[-1])
    return results
