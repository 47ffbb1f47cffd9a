"""Synthetic electron-microscopy images with instance labels, drawn on the fly for training.

Why: the only permissively licensed annotated EM set samzoo has is one SEM tissue (myelinated
axons of rat spinal cord), a narrow base for an EM model. This generator adds the other looks of
EM sections that an EM model meets, each a pure function of the random generator:

* ``myelin``: densely packed myelinated fibres (an axon inside a sheath ring), labelled as one
  instance per fibre (axon + sheath), as the real SEM annotations are;
* ``mitochondria``: elongated organelles with a double outer membrane and cristae stripes, in
  cytoplasm full of vesicles and membranes; each mitochondrion is an instance;
* ``neurites``: tissue cut into compartments by thin membranes (neuropil); each compartment is
  an instance, the membranes are background.

All of them sit on textured cytoplasm (smooth random fields at two scales, membranes, vesicle
clusters that are not labelled). ``polarity``: objects are dark on lighter tissue (TEM-like) or,
with the image inverted, bright (back-scattered SEM / inverted contrast); the sheath of a fibre
is the darkest part in the first case and the brightest in the second. Blur, uneven illumination
and noise finish the image, which is uint8 like most EM.

Rendering is written here with numpy/scipy because no maintained package draws labelled EM
phantoms (the fluorescence generator, ``training.synthetic``, covers light microscopy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .synthetic import _illumination, _smooth_noise

__all__ = ["EM_KINDS", "EMConfig", "generate_em_sample"]

EM_KINDS: tuple[str, ...] = ("myelin", "mitochondria", "neurites")


def _default_kinds() -> dict[str, float]:
    return {"myelin": 0.5, "mitochondria": 0.3, "neurites": 0.2}


@dataclass(frozen=True)
class EMConfig:
    """What the EM generator may draw.

    Attributes:
        shape: (height, width) in pixels.
        kinds: ``EM_KINDS`` names -> relative probabilities.
        fibre_radius_range: range of an image's typical fibre radius (px, log-uniform).
        mito_length_range: range of mitochondrion half-lengths (px).
        neurite_size_range: range of the typical compartment diameter (px).
        bright_probability: chance of inverted contrast (bright objects).
        noise_range: range of the Gaussian noise std (fraction of the intensity range).
        blur_range: range of the Gaussian blur sigma (px).
        min_object_pixels: objects smaller than this are not labelled.
    """

    shape: tuple[int, int] = (256, 256)
    kinds: Mapping[str, float] = field(default_factory=_default_kinds)
    fibre_radius_range: tuple[float, float] = (5.0, 40.0)
    mito_length_range: tuple[float, float] = (6.0, 30.0)
    neurite_size_range: tuple[float, float] = (15.0, 70.0)
    bright_probability: float = 0.5
    noise_range: tuple[float, float] = (0.02, 0.12)
    blur_range: tuple[float, float] = (0.0, 1.5)
    min_object_pixels: int = 12

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.shape)
        if len(shape) != 2 or min(shape) < 32:
            raise InputError(f"EM shape must be (height, width) with both >= 32, got {self.shape}")
        object.__setattr__(self, "shape", shape)
        kinds = {str(k): float(v) for k, v in dict(self.kinds).items()}
        unknown = sorted(set(kinds) - set(EM_KINDS))
        if unknown or not kinds or min(kinds.values()) < 0 or sum(kinds.values()) <= 0:
            raise InputError(f"EM kinds must map {list(EM_KINDS)} to weights >= 0 with a positive sum, got {dict(self.kinds)}")
        object.__setattr__(self, "kinds", kinds)
        for name in ("fibre_radius_range", "mito_length_range", "neurite_size_range", "noise_range", "blur_range"):
            low, high = (float(v) for v in getattr(self, name))
            if not 0 <= low <= high:
                raise InputError(f"{name} must be (low, high) with 0 <= low <= high, got {getattr(self, name)}")
            object.__setattr__(self, name, (low, high))
        if not 0 <= self.bright_probability <= 1:
            raise InputError(f"bright_probability must be in 0..1, got {self.bright_probability}")


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(max(low, 1e-3)), math.log(max(high, 1e-3)))))


def _ellipse_coords(shape, cy, cx, a, b, theta):
    """Bounding-box slices and the normalised elliptic radius (< 1 inside) of one ellipse."""
    h, w = shape
    r = int(math.ceil(max(a, b))) + 2
    y0, y1, x0, x1 = max(0, int(cy) - r), min(h, int(cy) + r + 1), max(0, int(cx) - r), min(w, int(cx) + r + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (slice(y0, y1), slice(x0, x1)), rho, u, v


def _pack_centres(rng, shape, radii, overlap: float, tries: int = 60):
    """Greedy random packing: centres such that discs of ``radii`` overlap at most ``overlap``."""
    placed: list[tuple[float, float, float]] = []
    h, w = shape
    for r in radii:
        for _ in range(tries):
            cy, cx = rng.uniform(-0.3 * r, h + 0.3 * r), rng.uniform(-0.3 * r, w + 0.3 * r)
            if all((cy - py) ** 2 + (cx - px) ** 2 >= ((r + pr) * (1 - overlap)) ** 2 for py, px, pr in placed):
                placed.append((cy, cx, r))
                break
    return placed


def _cytoplasm(rng, shape) -> np.ndarray:
    """Textured tissue around 0.55 with fine grain and coarse mottling."""
    fine = _smooth_noise(rng, shape, rng.uniform(0.7, 1.8))
    coarse = _smooth_noise(rng, shape, rng.uniform(6, 25))
    return 0.55 + rng.uniform(0.03, 0.1) * fine + rng.uniform(0.02, 0.1) * coarse


def _voronoi(rng, shape, size: float) -> np.ndarray:
    """Compartments of about ``size`` px with wavy borders (nearest seed on a warped grid)."""
    h, w = shape
    n = max(2, int(h * w / (size * size)))
    seeds = np.zeros(shape, dtype=bool)
    seeds[rng.integers(0, h, n), rng.integers(0, w, n)] = True
    _, (iy, ix) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    regions = (iy * w + ix).astype(np.int64)
    amp = size * rng.uniform(0.05, 0.25)
    dy = amp * _smooth_noise(rng, shape, size / 2)
    dx = amp * _smooth_noise(rng, shape, size / 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = ndimage.map_coordinates(regions, [np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)], order=0)
    _, regions = np.unique(warped, return_inverse=True)
    return regions.reshape(shape) + 1


def _membranes(regions: np.ndarray, width: int) -> np.ndarray:
    edges = np.zeros(regions.shape, dtype=bool)
    edges[:-1] |= regions[:-1] != regions[1:]
    edges[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    return ndimage.binary_dilation(edges, iterations=max(0, width - 1)) if width > 1 else edges


def _vesicles(rng, shape, image: np.ndarray, free: np.ndarray) -> None:
    """Clusters of small vesicles (dark rim, light lumen) on unlabelled tissue, in place."""
    h, w = shape
    for _ in range(int(rng.integers(0, 6))):
        cy, cx, spread = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 20)
        for _ in range(int(rng.integers(5, 30))):
            y, x, r = cy + rng.normal(0, spread), cx + rng.normal(0, spread), rng.uniform(1.5, 4.0)
            box = _ellipse_coords(shape, y, x, r, r, 0.0)
            if box is None:
                continue
            sl, rho, _, _ = box
            ok = free[sl]
            rim = (rho > 0.6) & (rho < 1.0) & ok
            lumen = (rho <= 0.6) & ok
            image[sl][rim] -= 0.2
            image[sl][lumen] += 0.05


def _myelin(rng, config, image, labels) -> None:
    shape = config.shape
    r_mean = _loguniform(rng, *config.fibre_radius_range)
    h, w = shape
    n = int(h * w * rng.uniform(0.4, 0.8) / (math.pi * r_mean ** 2)) + 1
    radii = np.sort(np.exp(rng.normal(math.log(r_mean), 0.35, size=min(n, 600))))[::-1]
    sheath_level, axon_level = rng.uniform(0.1, 0.3), rng.uniform(0.45, 0.75)
    axon_texture = _smooth_noise(rng, shape, rng.uniform(1, 3))
    for i, (cy, cx, r) in enumerate(_pack_centres(rng, shape, radii, rng.uniform(0.0, 0.1)), start=1):
        a = r
        b = r * rng.uniform(0.65, 1.0)
        box = _ellipse_coords(shape, cy, cx, a, b, rng.uniform(0, math.pi))
        if box is None:
            continue
        sl, rho, _, _ = box
        # sheath thickness: a g-ratio (axon / fibre diameter) of 0.45-0.8, wobbling around the ring
        g = rng.uniform(0.45, 0.8)
        inside = rho < 1.0
        sheath = inside & (rho >= g)
        axon = rho < g
        labels[sl][inside] = i
        image[sl][sheath] = sheath_level + rng.uniform(-0.05, 0.05)
        image[sl][axon] = axon_level + rng.uniform(-0.1, 0.1) + 0.06 * axon_texture[sl][axon]
        if rng.random() < 0.5:  # a faint inner tongue / periaxonal line
            line = axon & (rho > g - 0.08)
            image[sl][line] -= 0.12


def _mitochondria(rng, config, image, labels) -> None:
    shape = config.shape
    h, w = shape
    length = _loguniform(rng, *config.mito_length_range)
    n = int(rng.integers(2, max(3, int(h * w / (length * length * 5)))))
    regions = _voronoi(rng, shape, rng.uniform(25, 90))
    image[_membranes(regions, int(rng.integers(1, 3)))] -= rng.uniform(0.1, 0.25)
    level = rng.uniform(0.15, 0.35)
    placed = _pack_centres(rng, shape, [length * rng.uniform(0.6, 1.4) for _ in range(n)], 0.0)
    for i, (cy, cx, a) in enumerate(placed, start=1):
        b = max(2.5, a * rng.uniform(0.25, 0.6))
        theta = rng.uniform(0, math.pi)
        box = _ellipse_coords(shape, cy, cx, a, b, theta)
        if box is None:
            continue
        sl, rho, u, v = box
        inside = rho < 1.0
        labels[sl][inside] = i
        period = rng.uniform(2.5, 5.0)
        cristae = 0.5 + 0.5 * np.cos(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi))
        image[sl][inside] = level + 0.15 * cristae[inside] * rng.uniform(0.3, 1.0)
        image[sl][inside & (rho > 0.8)] = level - 0.08  # the double outer membrane


def _neurites(rng, config, image, labels) -> None:
    size = _loguniform(rng, *config.neurite_size_range)
    regions = _voronoi(rng, config.shape, size)
    membrane = _membranes(regions, int(rng.integers(1, 4)))
    inside = ~membrane
    labels[inside] = regions[inside]
    # compartments differ a little in density; some hold a mitochondrion-like dark blob (unlabelled)
    shade = rng.uniform(-0.08, 0.08, size=regions.max() + 1)
    image += shade[regions]
    image[membrane] = rng.uniform(0.05, 0.25)


def _relabel_clean(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Objects numbered 1..N in raster order, each its largest 4-connected piece, small ones dropped."""
    out = np.zeros(labels.shape, dtype=np.uint32)
    next_id = 1
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        parts, n = ndimage.label(labels[sl] == index)
        if n == 0:
            continue
        sizes = np.bincount(parts.ravel())[1:]
        if sizes.max() < min_pixels:
            continue
        out[sl][parts == int(np.argmax(sizes)) + 1] = next_id
        next_id += 1
    return out


def generate_em_sample(rng: np.random.Generator, config: EMConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic EM image: ``(image uint8 (H, W), labels uint32 (H, W))``, objects 1..N."""
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    config = config or EMConfig()
    names = list(config.kinds)
    probs = np.array([config.kinds[k] for k in names], dtype=np.float64)
    kind = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    shape = config.shape
    image = _cytoplasm(rng, shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.int64)
    if kind != "neurites":
        _vesicles(rng, shape, image, np.ones(shape, dtype=bool))
    {"myelin": _myelin, "mitochondria": _mitochondria, "neurites": _neurites}[kind](rng, config, image, labels)
    image *= _illumination(rng, shape)
    sigma = rng.uniform(*config.blur_range)
    if sigma > 0.2:
        image = ndimage.gaussian_filter(image, sigma)
    image = image + rng.normal(0, rng.uniform(*config.noise_range), shape).astype(np.float32)
    if rng.random() < config.bright_probability:
        image = 1.1 - image
    low, high = np.percentile(image, (0.5, 99.5))
    image = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    return (image * 255).round().astype(np.uint8), _relabel_clean(labels, config.min_object_pixels)


class SyntheticEMSource:
    """Training data source ``{"kind": "synthetic_em", "synthetic_em": {EMConfig fields}}``."""

    def __init__(self, options: dict | None = None, shape: tuple[int, int] = (256, 256)):
        options = dict(options or {})
        options.setdefault("shape", tuple(shape))
        self.config = EMConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})

    def draw(self, rng: np.random.Generator):
        return generate_em_sample(rng, self.config)
