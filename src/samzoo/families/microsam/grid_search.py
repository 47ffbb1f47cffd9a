"""μSAM: tune the automatic-segmentation parameters (AIS, AMG) of a model on annotated images.

AIS: the decoder outputs of each image are computed ONCE; every parameter combination then only
reruns the seeded watershed (``segmentation.ais``) on them and scores it with mSA. Smoothing is
applied once per smoothing value (not per threshold combination), and ``min_size`` variants reuse
the watershed of ``min_size=0`` (small objects are removed exactly as ``ais._remove_small`` does), so
every table entry equals ``watershed_from_decoder_outputs`` with those parameters.

AMG: the masks of each image are generated once with the loosest thresholds of the grid, then
every (``pred_iou_thresh``, ``stability_score_thresh``) pair filters them and reruns box NMS,
which is what ``amg.generate_masks`` does for an untiled image. Tiled images and
``min_mask_region_area > 0`` rerun the full generation per pair (exactness over speed).

``tune_model`` stores the best AIS parameters in ``model.ais_params`` (the defaults every
entry point and every package built from the model use) and a record of the search in
``model.metadata["tuning"]``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from ...errors import InputError
from ...evaluation.grid_search import GridSearchResult, _pairs, _score
from .ais import AisParams, _remove_small, watershed_from_decoder_outputs
from .amg import AmgParams, _count, _nms, as_amg_params, generate_masks, masks_to_labels
from .model import SamzooModel
from .predictor import Predictor

__all__ = [
    "DEFAULT_AIS_GRID",
    "DEFAULT_AMG_GRID",
    "GridSearchResult",
    "ais_grid_search",
    "ais_grid_search_on_outputs",
    "amg_grid_search",
    "decoder_outputs",
    "store_result",
    "tune_model",
]

#: micro-sam's default search space for the decoder's watershed (thresholds 0.3..0.7), plus the
#: foreground threshold and samzoo's default smoothing values; 5 * 5 * 3 * 4 * 2 = 600 entries.
DEFAULT_AIS_GRID: dict[str, tuple] = {
    "center_distance_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "boundary_distance_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "foreground_threshold": (0.4, 0.5, 0.6),
    "min_size": (0, 25, 50, 100),
    "foreground_smoothing": (1.0,),
    "distance_smoothing": (1.0, 1.6),
}

#: micro-sam's AMG search space, thinned (AMG is expensive; masks are reused across pairs).
DEFAULT_AMG_GRID: dict[str, tuple] = {
    "pred_iou_thresh": (0.6, 0.7, 0.8, 0.88),
    "stability_score_thresh": (0.6, 0.7, 0.8, 0.9, 0.95),
}

_AIS_KEYS = tuple(f.name for f in dataclasses.fields(AisParams))
_AMG_GRID_KEYS = ("pred_iou_thresh", "stability_score_thresh")


# --------------------------------------------------------------------------------------------
# helpers


def _check_grid(grid: Mapping[str, Sequence[Any]] | None, defaults: Mapping[str, tuple], known: Sequence[str],
                what: str) -> dict[str, tuple]:
    merged = dict(defaults)
    for key, values in dict(grid or {}).items():
        if key not in known:
            raise InputError(f"unknown {what} parameter {key!r} in the grid; known: {sorted(known)}")
        values = tuple(np.atleast_1d(np.asarray(values)).tolist())
        if not values:
            raise InputError(f"grid values for {key} are empty")
        merged[key] = values
    return merged


def _distance_to_defaults(row: dict[str, Any], defaults: dict[str, Any]) -> float:
    return sum(abs(float(row[k]) - float(v)) / (1.0 if k != "min_size" else 100.0)
               for k, v in defaults.items() if k in row)


def _finish(mode: str, rows: list[dict[str, Any]], make, n_images: int, started: float) -> GridSearchResult:
    # best first; ties: higher SA(0.5), then the values closest to the defaults (so an
    # uninformative search -- e.g. every entry scores 0 -- does not move the defaults), then grid order
    defaults = (AisParams() if mode == "ais" else AmgParams()).to_dict()
    rows.sort(key=lambda r: (-r["msa"], -r["sa50"], _distance_to_defaults(r, defaults)))
    best = rows[0]
    params = make({k: v for k, v in best.items() if k not in ("msa", "sa50") and not k.startswith("msa_")})
    return GridSearchResult(mode=mode, best=params, best_msa=best["msa"], best_sa50=best["sa50"], table=rows,
                            n_images=n_images, seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# AIS


def decoder_outputs(model: SamzooModel, image: np.ndarray, **set_image_kwargs: Any) -> np.ndarray:
    """The AIS decoder outputs ``(3, H, W)`` of one 2D image (tiled like ``segment`` would)."""
    return Predictor(model).set_image(image, **set_image_kwargs).ais_outputs()


def _smoothed(maps: np.ndarray, sigma: float) -> np.ndarray:
    maps = maps.astype(np.float32, copy=False)
    return ndimage.gaussian_filter(maps, sigma) if sigma > 0 else maps


def ais_grid_search_on_outputs(
    outputs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    progress: bool = True,
) -> GridSearchResult:
    """Grid search of ``AisParams`` on precomputed decoder outputs (each ``(3, H, W)``).

    ``grid`` maps parameter names to candidate values; names left out take
    ``DEFAULT_AIS_GRID``'s values (pass a single value to fix a parameter). Scores are mSA
    averaged over the images.
    """
    started = time.perf_counter()
    grid = _check_grid(grid, DEFAULT_AIS_GRID, _AIS_KEYS, "AIS")
    outputs = [np.asarray(o) for o in outputs]
    for i, o in enumerate(outputs):
        if o.ndim != 3 or o.shape[0] != 3:
            raise InputError(f"decoder outputs {i} must have shape (3, H, W), got {o.shape}")
    pairs = _pairs([o[0] for o in outputs], labels)
    # validate every value once (AisParams raises InputError naming the bad one)
    for key, values in grid.items():
        for v in values:
            AisParams().replace(**{key: v})

    threshold_keys = ("center_distance_threshold", "boundary_distance_threshold", "foreground_threshold")
    combos = list(itertools.product(*(grid[k] for k in threshold_keys)))
    sizes = sorted(set(int(s) for s in grid["min_size"]))
    n_total = len(grid["foreground_smoothing"]) * len(grid["distance_smoothing"]) * len(combos)
    scores: dict[tuple, list[tuple[float, float]]] = {}
    bar = tqdm(total=n_total * len(outputs), desc="AIS grid", disable=not progress, leave=False)
    for maps, (_, gt) in zip(outputs, pairs):
        for fg_sigma in grid["foreground_smoothing"]:
            fg = _smoothed(maps[0], fg_sigma)
            for d_sigma in grid["distance_smoothing"]:
                center = _smoothed(maps[1], d_sigma)
                boundary = _smoothed(maps[2], d_sigma)
                unsmoothed = dict(foreground_smoothing=0.0, distance_smoothing=0.0, min_size=0)
                for tc, tb, tf in combos:
                    params = AisParams(center_distance_threshold=tc, boundary_distance_threshold=tb,
                                       foreground_threshold=tf, **unsmoothed)
                    base = watershed_from_decoder_outputs(fg, center, boundary, params)
                    mask = fg > tf
                    for size in sizes:
                        pred = _remove_small(base, boundary, mask, size) if size > 0 else base
                        key = (tc, tb, tf, float(fg_sigma), float(d_sigma), size)
                        scores.setdefault(key, []).append(_score(gt, pred))
                    bar.update(1)
    bar.close()

    rows = []
    for (tc, tb, tf, fs, ds, size), values in scores.items():
        row: dict[str, Any] = dict(center_distance_threshold=tc, boundary_distance_threshold=tb,
                                   foreground_threshold=tf, foreground_smoothing=fs, distance_smoothing=ds,
                                   min_size=size)
        row["msa"] = float(np.mean([v[0] for v in values]))
        row["sa50"] = float(np.mean([v[1] for v in values]))
        for i, v in enumerate(values):
            row[f"msa_{i}"] = v[0]
        rows.append(row)
    return _finish("ais", rows, AisParams.from_dict, len(outputs), started)


def ais_grid_search(
    model: SamzooModel,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    progress: bool = True,
) -> GridSearchResult:
    """Grid search of the AIS watershed parameters of ``model`` on validation images: decoder
    outputs once per image, then ``ais_grid_search_on_outputs``."""
    started = time.perf_counter()
    if not model.has_ais_decoder:
        raise InputError(f"model {model.config.name!r} has no AIS decoder; tune AMG instead")
    pairs = _pairs(images, labels)
    outputs = []
    for image, gt in tqdm(pairs, desc="decoder outputs", disable=not progress, leave=False):
        out = decoder_outputs(model, image)
        if out.shape[1:] != gt.shape:
            raise InputError(f"label image shape {gt.shape} differs from the image's {out.shape[1:]}")
        outputs.append(out)
    result = ais_grid_search_on_outputs(outputs, [gt for _, gt in pairs], grid, progress=progress)
    result.seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------------------------
# AMG


def _filter_masks(data, params: AmgParams):
    """The masks ``generate_masks`` keeps for ``params``, from a pool generated with looser
    thresholds (untiled image, no small-region post-processing)."""
    iou = data["iou_preds"]
    keep = iou > params.pred_iou_thresh if params.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
    keep &= data["stability_score"] >= params.stability_score_thresh
    subset = _copy_mask_data(data)
    subset.filter(keep)
    if _count(subset):
        subset.filter(_nms(subset, subset["iou_preds"], params.box_nms_thresh))
    return subset


def _copy_mask_data(data):
    from segment_anything.utils.amg import MaskData

    copy = MaskData()
    copy._stats = {k: (list(v) if isinstance(v, list) else v.clone()) for k, v in data.items()}
    return copy


def amg_grid_search(
    model: SamzooModel,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    base: AmgParams | dict | None = None,
    progress: bool = True,
) -> GridSearchResult:
    """Grid search of ``pred_iou_thresh`` x ``stability_score_thresh`` (``DEFAULT_AMG_GRID``);
    the other AMG settings come from ``base``."""
    started = time.perf_counter()
    base = as_amg_params(base)
    grid = _check_grid(grid, DEFAULT_AMG_GRID, _AMG_GRID_KEYS, "AMG")
    combos = [base.replace(pred_iou_thresh=p, stability_score_thresh=s)
              for p, s in itertools.product(grid["pred_iou_thresh"], grid["stability_score_thresh"])]
    pairs = _pairs(images, labels)
    scores: list[list[tuple[float, float]]] = [[] for _ in combos]
    loosest = base.replace(pred_iou_thresh=min(grid["pred_iou_thresh"]),
                           stability_score_thresh=min(grid["stability_score_thresh"]))
    for image, gt in tqdm(pairs, desc="AMG images", disable=not progress, leave=False):
        predictor = Predictor(model).set_image(image)
        if tuple(predictor.original_shape) != gt.shape:
            raise InputError(f"label image shape {gt.shape} differs from the image's {predictor.original_shape}")
        reuse = not predictor.is_tiled and base.min_mask_region_area == 0
        pool = generate_masks(predictor, loosest, progress=False) if reuse else None
        for j, params in enumerate(combos):
            data = _filter_masks(pool, params) if reuse else generate_masks(predictor, params, progress=False)
            scores[j].append(_score(gt, masks_to_labels(data, gt.shape)))
    rows = []
    for params, values in zip(combos, scores):
        row: dict[str, Any] = {k: getattr(params, k) for k in _AMG_GRID_KEYS}
        row["msa"] = float(np.mean([v[0] for v in values]))
        row["sa50"] = float(np.mean([v[1] for v in values]))
        for i, v in enumerate(values):
            row[f"msa_{i}"] = v[0]
        rows.append(row)
    return _finish("amg", rows, lambda d: base.replace(**d), len(pairs), started)


# --------------------------------------------------------------------------------------------


def tune_model(
    model: SamzooModel,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    amg: bool = False,
    amg_grid: Mapping[str, Sequence[Any]] | None = None,
    progress: bool = True,
) -> SamzooModel:
    """Tune ``model`` on validation images and store the results in it (returned, same object).

    Models with an AIS decoder: the best ``AisParams`` go into ``model.ais_params`` (the defaults
    of ``segment``, the CLI and exported packages) and into ``model.metadata["ais_params"]``.
    With ``amg=True`` (or a model without AIS decoder) the best AMG thresholds are also searched
    and stored in ``model.metadata["amg_params"]``. ``model.metadata["tuning"]`` records scores,
    grid sizes and the number of images.
    """
    if not isinstance(model, SamzooModel):
        raise InputError(f"tune_model needs a SamzooModel, got {type(model).__name__}")
    if model.has_ais_decoder:
        store_result(model, ais_grid_search(model, images, labels, grid, progress=progress))
    if amg or not model.has_ais_decoder:
        store_result(model, amg_grid_search(model, images, labels, amg_grid, progress=progress))
    return model


def store_result(model: SamzooModel, result: GridSearchResult) -> None:
    """Put a search's best parameters into the model: AIS into ``model.ais_params`` (and
    ``metadata["ais_params"]``), AMG into ``metadata["amg_params"]``; a summary (scores, number of
    images and combinations) into ``metadata["tuning"][mode]``."""
    params = result.best.to_dict()
    if result.mode == "ais":
        model.ais_params = dict(params)
    model.metadata[f"{result.mode}_params"] = dict(params)
    tuning = dict(model.metadata.get("tuning") or {})
    tuning[result.mode] = result.summary()
    model.metadata["tuning"] = tuning
