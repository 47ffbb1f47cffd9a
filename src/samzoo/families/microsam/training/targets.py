"""Training targets from instance labels: μSAM's AIS target (foreground, center and boundary
distances) via torch-em's ``PerObjectDistanceTransform``, plus the cleaned labels it used.

One job: ``ais_target(labels) -> (labels, target)``. The returned labels are the ones the target
was computed from (connected components, objects below ``min_size`` removed), so prompts sampled
from them agree with the AIS target.
"""

from __future__ import annotations

import numpy as np

MIN_OBJECT_SIZE = 25


def _transform(min_size: int):
    from torch_em.transform.label import PerObjectDistanceTransform

    return PerObjectDistanceTransform(
        distances=True, boundary_distances=True, directed_distances=False,
        foreground=True, instances=True, min_size=min_size,
    )


_CACHE: dict[int, object] = {}


def ais_target(labels: np.ndarray, min_size: int = MIN_OBJECT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``(labels int64 (H, W), target float32 (3, H, W))``; channels as in docs/ARCHITECTURE.md."""
    transform = _CACHE.get(min_size)
    if transform is None:
        transform = _CACHE[min_size] = _transform(min_size)
    out = transform(np.asarray(labels).astype(np.uint32))
    return out[0].astype(np.int64), np.ascontiguousarray(out[1:4], dtype=np.float32)
