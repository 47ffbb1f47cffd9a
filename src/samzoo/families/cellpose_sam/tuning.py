"""Grid search of Cellpose-SAM's post-processing parameters on annotated images (``samzoo tune``).

The network runs once per image; every combination of the grid only reruns the dynamics on the
stored outputs (network-side parameters -- tile_overlap, augment, diameter -- are fixed at the
model's values). The best combination by mean mSA goes into ``model.params`` (the defaults of
segmentation and packaging) and a summary into ``model.metadata["tuning"]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...errors import InputError
from .inference import labels_from_flows, predict_flows
from .model import CellposeSamModel
from .params import DEFAULT_GRID, resolve_params

_NETWORK_SIDE = ("tile_overlap", "augment", "diameter", "batch_size")


def tune_model(model: CellposeSamModel, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
               grid: Mapping[str, Sequence[Any]] | None = None, progress: bool = True) -> dict[str, Any]:
    from ...evaluation.metrics import mean_segmentation_accuracy

    grid = dict(DEFAULT_GRID if grid is None else grid)
    if not grid or len(images) != len(labels) or not images:
        raise InputError("tuning needs a non-empty grid and as many label images as images")
    fixed = [k for k in grid if k in _NETWORK_SIDE]
    if fixed:
        raise InputError(f"{', '.join(fixed)} change the network outputs; set them on the model, not in the grid")
    base = resolve_params(model.params)
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    for combo in combos:
        base.replace(**combo)  # invalid values fail before any work
    outputs = [predict_flows(model, image, base) for image in tqdm(images, desc="network", disable=not progress)]
    scores = []
    for combo in tqdm(combos, desc="grid", disable=not progress):
        params = base.replace(**combo)
        scores.append(float(np.mean([mean_segmentation_accuracy(np.asarray(gt).astype(np.uint32),
                                                                labels_from_flows(flows, params))[0]
                                     for flows, gt in zip(outputs, labels)])))
    best = int(np.argmax(scores))
    model.params = {**dict(model.params), **combos[best]}
    summary = {"best": combos[best], "msa": scores[best], "default_msa": None, "combinations": len(combos),
               "images": len(images)}
    defaults = {k: getattr(base, k) for k in grid}
    if defaults in combos:
        summary["default_msa"] = scores[combos.index(defaults)]
    model.metadata["tuning"] = summary
    return summary
