"""What every family's parameter search returns, and the checks and scores they share.

The searches themselves belong to the families (μSAM's AIS/AMG search: ``families/microsam``'s
``grid_search``; the rest: ``family_search.family_grid_search`` on ``FamilySpec.predict`` /
``postprocess``); this module knows no family.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .metrics import _as_labels, mean_segmentation_accuracy

__all__ = ["GridSearchResult"]


@dataclass
class GridSearchResult:
    """``mode``: what was searched (μSAM: ``ais`` / ``amg``; other families: the family name);
    ``best``: the winning parameters (the family's params dataclass); ``table``: one row per
    combination (its parameters, mean ``msa`` and ``sa50`` over the images, and per-image
    ``msa_<i>``), sorted best first; ``n_images``, ``seconds`` (total, decoder/mask generation
    included)."""

    mode: str
    best: Any
    best_msa: float
    best_sa50: float
    table: list[dict[str, Any]]
    n_images: int
    seconds: float

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the table atomically (one row per combination, best first)."""
        from .evaluate import write_csv

        return write_csv(self.table, path)

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "params": self.best.to_dict(), "msa": self.best_msa, "sa50": self.best_sa50,
                "n_images": self.n_images, "n_combinations": len(self.table)}


def _pairs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(images, np.ndarray) and images.ndim == 2:
        images, labels = [images], [labels]
    images, labels = list(images), list(labels)
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} label images")
    if not images:
        raise InputError("no validation images given")
    out = []
    for i, (image, label) in enumerate(zip(images, labels)):
        gt = _as_labels(label, f"label image {i}")
        if gt.ndim != 2:
            raise InputError(f"label image {i} must be 2D, got shape {gt.shape}")
        if tuple(np.shape(image)[:2]) != gt.shape and tuple(np.shape(image)[-2:]) != gt.shape:
            raise InputError(f"image {i} has shape {np.shape(image)}, its label image {gt.shape}")
        out.append((np.asarray(image), gt))
    return out


def _score(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    msa, accuracies = mean_segmentation_accuracy(gt, pred)
    return float(msa), float(accuracies[0])


