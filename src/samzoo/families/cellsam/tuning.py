"""Grid search of CellSAM's thresholds (``TUNING_GRID``) by mean segmentation accuracy.

The networks run once per image: CellFinder's ranked boxes and the SAM embedding are kept, and
only the cheap parts (score threshold, box decoding, merge, filters) run per parameter set; decoded
masks are memoised per (image, box set, IoU threshold). Images are segmented whole (no blocks).
The best parameters go into ``model.params`` (saved with the checkpoint, used by ``segment``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...errors import InputError
from .detections import select_boxes
from .masks import decode_boxes, fill_holes_and_remove_small, merge_masks
from .model import CellSAMModel
from .params import TUNING_GRID, CellSAMParams
from .segment import as_tensor, prepare_image


def grid_search(model: CellSAMModel, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                grid: Mapping[str, Sequence[Any]] = TUNING_GRID, *, apply: bool = True, progress: bool = True
                ) -> tuple[CellSAMParams, list[dict[str, Any]]]:
    """Best parameters and the table (one row per combination, with ``msa``)."""
    from ...evaluation.metrics import mean_segmentation_accuracy

    if len(images) != len(labels) or not images:
        raise InputError("grid_search needs the same (non-zero) number of images and label images")
    base = model.params
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    for combo in combos:
        base.replace(**combo)  # every value checked before any network runs
    cached = []
    for image in tqdm(images, desc="CellSAM networks", disable=not progress):
        prepared = prepare_image(image, base)
        x = as_tensor(prepared)
        scores, boxes = model.detect(x)
        cached.append((prepared.shape[:2], scores, boxes, model.embed(x)))
    rows = []
    for combo in tqdm(combos, desc="CellSAM parameters", disable=not progress):
        params = base.replace(**combo)
        accs = []
        for (shape, scores, boxes, embedding), gt in zip(cached, labels):
            _, kept = select_boxes(scores, boxes, params.bbox_threshold, params.cluster_blend, params.exact_two_means)
            if kept.shape[0] == 0:
                pred = np.zeros(shape, np.uint32)
            else:
                masks, _ = decode_boxes(model.sam, embedding, kept, shape, iou_threshold=params.iou_threshold,
                                        mask_threshold=params.mask_threshold)
                pred = fill_holes_and_remove_small(merge_masks(masks), params.min_size)
            accs.append(mean_segmentation_accuracy(np.asarray(gt), pred)[0])
        rows.append({**combo, "msa": float(np.mean(accs))})
    best = max(rows, key=lambda r: r["msa"])
    best_params = base.replace(**{k: best[k] for k in keys})
    if apply:
        model.params = best_params
    return best_params, rows

