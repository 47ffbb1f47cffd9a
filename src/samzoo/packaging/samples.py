"""A deterministic synthetic sample image for packages' test tensors and covers (any family), made
without any download."""

from __future__ import annotations

import numpy as np

SAMPLE_SIDE = 256

def synthetic_sample(side: int = SAMPLE_SIDE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A nuclei-like uint16 image with its instance labels (deterministic; no download)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    labels = np.zeros((side, side), np.uint32)
    n = 0
    for _ in range(max(4, side // 16)):
        r = rng.uniform(side / 32, side / 14)
        cy, cx = rng.uniform(r, side - r, size=2)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if labels[disk].any():
            continue
        n += 1
        labels[disk] = n
    signal = ndimage.gaussian_filter((labels > 0).astype(np.float32), 1.5)
    image = 200 + 3000 * signal + rng.normal(0, 40, signal.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels
