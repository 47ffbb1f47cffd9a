"""Held-out synthetic pairs, the classical baseline's mSA on them (Otsu + watershed), and
interactive Dice from a box: the numbers ``build_default`` records beside the model's own.

One job: numbers for training decisions and for a model's ``metadata["metrics"]``. Held-out
synthetic sets are fixed by their seed (``generate_dataset`` makes sample i depend on (seed, i)
only), so every snapshot is scored on the same images.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

Pair = tuple[np.ndarray, np.ndarray]

# fluorescence nuclei: the modality the default model's bar is measured on
FLUORESCENCE_NUCLEI = {"styles": {"fluorescence": 1.0}, "kinds": {"nuclei": 1.0}}


def synthetic_pairs(n: int, seed: int, shape: tuple[int, int] = (512, 512),
                    synthetic: dict[str, Any] | None = None) -> list[Pair]:
    from .synthetic import SyntheticConfig, generate_dataset

    config = SyntheticConfig(shape=tuple(shape), **(synthetic if synthetic is not None else FLUORESCENCE_NUCLEI))
    return list(generate_dataset(n, seed, config))


def baseline_msa(pairs: Sequence[Pair]) -> list[float]:
    """Per-image mSA of Otsu + distance-transform watershed."""
    from ..evaluation.baseline import otsu_watershed
    from ..evaluation.metrics import mean_segmentation_accuracy

    return [mean_segmentation_accuracy(gt, otsu_watershed(img))[0] for img, gt in pairs]


def box_dice(model, pairs: Sequence[Pair], max_objects: int = 30, seed: int = 0) -> float:
    """Mean Dice of single-box predictions (μSAM protocol, iteration 0) over the images."""
    from ..evaluation.interactive import interactive_evaluation

    values = []
    for img, gt in pairs:
        if gt.max() == 0:
            continue
        res = interactive_evaluation(img, gt, model, start="box", n_iterations=0, max_objects=max_objects,
                                     seed=seed, progress=False)
        values.append(res.final.mean_dice)
    return float(np.mean(values)) if values else float("nan")
