"""Tuning for every family: a grid search over a family's post-processing parameters.

The family's network runs once per validation image (``FamilySpec.predict``); every combination of
``FamilySpec.param_grid`` (or the caller's grid) is then only post-processed
(``FamilySpec.postprocess``) and scored with mSA. Combinations the family's params dataclass
rejects (e.g. a fill threshold above the peak threshold) are skipped. Families with a search of
their own (``FamilySpec.tune``, μSAM) do not come here.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..families import family_of
from .grid_search import GridSearchResult, _pairs, _score


def family_grid_search(model: Any, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                       grid: Mapping[str, Sequence[Any]] | None = None, *, progress: bool = True) -> GridSearchResult:
    """Best post-processing parameters of ``model`` on annotated images (mSA, ties: SA50, then
    closeness to the model's current values). ``grid`` replaces the default values of the
    parameters it names."""
    family = family_of(model)
    if family.predict is None or family.postprocess is None:
        raise InputError(f"{family.title} models cannot be tuned (the family has no predict/postprocess split)")
    fields = [f.name for f in dataclasses.fields(family.params)]
    unknown = sorted(set(grid or {}) - set(fields))
    if unknown:
        raise InputError(f"unknown {family.title} parameter(s) {', '.join(unknown)} in the grid; known: {', '.join(fields)}")
    search = {**{k: tuple(v) for k, v in family.param_grid.items()}, **{k: tuple(v) for k, v in (grid or {}).items()}}
    if any(not values for values in search.values()):
        raise InputError("grid values must not be empty")
    current = dataclasses.asdict(family.params(**{k: v for k, v in family.model_params(model).items() if k in fields}))
    pairs = _pairs(images, labels)
    started = time.perf_counter()
    outputs = [family.predict(image, model, progress=False)
               for image, _ in tqdm(pairs, desc=f"{family.title} network", disable=not progress)]
    keys = list(search)
    rows: list[dict[str, Any]] = []
    combos = list(itertools.product(*(search[k] for k in keys)))
    for values in tqdm(combos, desc="parameter grid", disable=not progress):
        try:
            params = family.params(**{**current, **dict(zip(keys, values))})
        except InputError:
            continue
        scores = [_score(gt, family.postprocess(out, params)) for out, (_, gt) in zip(outputs, pairs)]
        row: dict[str, Any] = dataclasses.asdict(params)
        row["msa"] = float(np.mean([s[0] for s in scores]))
        row["sa50"] = float(np.mean([s[1] for s in scores]))
        row.update({f"msa_{i}": s[0] for i, s in enumerate(scores)})
        rows.append(row)
    if not rows:
        raise InputError(f"no valid {family.title} parameter combination in the grid")
    rows.sort(key=lambda r: (-r["msa"], -r["sa50"], sum(abs(float(r[k]) - float(current[k])) for k in keys)))
    best = family.params(**{k: rows[0][k] for k in fields})
    return GridSearchResult(mode=family.name, best=best, best_msa=rows[0]["msa"], best_sa50=rows[0]["sa50"],
                            table=rows, n_images=len(pairs), seconds=time.perf_counter() - started)
