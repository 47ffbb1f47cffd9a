"""Synthetic microscopy-like 2D images with instance labels, for training without downloads.

Why synthetic: samzoo must be able to rebuild its shipped model from the repository alone. A model
trained on one clean look does not transfer to real microscopes, so every sample draws its own
look (fluorescence, brightfield, phase-like halo, H&E-like RGB), object size, density, clumping,
blur, noise level, background unevenness, debris and storage dtype. The point is the *spread* of
conditions, so that real images fall inside it.

How an image is made:

1. Objects are star-convex shapes: an ellipse (random axis ratio and angle) whose radius is
   modulated by low-order radial harmonics. For every pixel of an object we know ``rho``, its
   normalised radial position (0 at the centre, 1 on the outline).
2. Centres are placed uniformly or in clumps, thinned so that neighbours touch but overlap at most
   by a per-image fraction of their radii. Some centres lie outside the image, so objects are cut
   at the border.
3. Overlaps are resolved per pixel into one clean label map. Rule ``"interior"``: a pixel belongs
   to the object in whose shape it lies deepest (smallest ``rho``), which splits touching nuclei
   along a natural line. Rule ``"top"``: later objects lie on top (overlapping cells). Objects left
   in several pieces keep their largest piece; slivers below ``min_object_pixels`` are dropped.
4. The image is rendered *from the final label map* (so labels and image always agree), then
   illumination, blur, noise and dtype are applied.

Everything random comes from the ``numpy.random.Generator`` passed in, so a seed reproduces a
sample exactly. A 512x512 sample takes a few tens of milliseconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import fft as scipy_fft
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.measure import label as connected_components

from samzoo.errors import InputError

__all__ = [
    "DTYPES",
    "KINDS",
    "STYLES",
    "SyntheticConfig",
    "generate_dataset",
    "generate_sample",
    "write_dataset",
]

STYLES: tuple[str, ...] = ("fluorescence", "brightfield", "phase", "he")
"""Looks: bright objects on dark; dark textured objects on bright; dark objects with a bright halo
(or the inverse); RGB hematoxylin-stained nuclei on eosin-stained tissue."""

KINDS: tuple[str, ...] = ("nuclei", "cells")
"""Nuclei are compact, nearly elliptic; cells are larger, more irregular, optionally with a
brighter nucleus-like interior."""

DTYPES: tuple[str, ...] = ("uint8", "uint16", "float32")

_ID_BITS = 21  # object id field of the per-pixel ownership key
_RHO_BITS = 12  # quantised rho field
_MAX_OBJECTS = 1_000_000  # dividing objects add up to ~5%; ids must stay below 2**_ID_BITS


def _default_styles() -> dict[str, float]:
    return {"fluorescence": 0.6, "brightfield": 0.15, "phase": 0.1, "he": 0.15}


def _default_kinds() -> dict[str, float]:
    return {"nuclei": 0.75, "cells": 0.25}


def _default_dtypes() -> dict[str, float]:
    return {"uint8": 0.35, "uint16": 0.45, "float32": 0.2}


@dataclass(frozen=True)
class SyntheticConfig:
    """What the generator may draw; every sample picks its own values inside these ranges.

    Attributes:
        shape: image height and width in pixels.
        radius_range: range of an image's typical object radius (px), drawn log-uniformly so
            small and large objects are equally common.
        radius_spread: standard deviation of log-radius within one image (moderate spread).
        density_range: range of the fraction of the image area that objects aim to cover.
        clump_probability: chance that an image places its objects in clumps.
        overlap_range: range of the per-image allowed overlap depth, as a fraction of the sum of
            two radii (0 = objects at most touch).
        empty_probability: chance of an image with no object at all (teaches "noise is not a
            nucleus").
        mitosis_probability: chance that an image contains small bright mitotic / dividing objects.
        debris_probability: chance of unlabelled debris (specks, fibres, out-of-focus ghosts).
        blur_range: range of the Gaussian blur sigma (px) applied to the whole image.
        photons_range: range (log-uniform) of photons per unit of object brightness; sets the
            Poisson noise level, i.e. the SNR.
        styles, kinds, dtypes: names -> relative probabilities (see ``STYLES``, ``KINDS``,
            ``DTYPES``); zero-probability entries are never drawn.
        min_object_pixels: objects (or border slivers) smaller than this are not labelled.
        max_objects: cap on the number of objects per image (keeps small-radius crowded images
            fast).
    """

    shape: tuple[int, int] = (512, 512)
    radius_range: tuple[float, float] = (4.0, 40.0)
    radius_spread: float = 0.18
    density_range: tuple[float, float] = (0.03, 0.5)
    clump_probability: float = 0.4
    overlap_range: tuple[float, float] = (0.0, 0.2)
    empty_probability: float = 0.02
    mitosis_probability: float = 0.3
    debris_probability: float = 0.5
    blur_range: tuple[float, float] = (0.0, 2.5)
    photons_range: tuple[float, float] = (5.0, 3000.0)
    styles: Mapping[str, float] = field(default_factory=_default_styles)
    kinds: Mapping[str, float] = field(default_factory=_default_kinds)
    dtypes: Mapping[str, float] = field(default_factory=_default_dtypes)
    min_object_pixels: int = 8
    max_objects: int = 3000

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(v) for v in self.shape)
        except (TypeError, ValueError):
            shape = ()
        if len(shape) != 2 or min(shape) < 16:
            raise InputError(f"shape must be (height, width) with both >= 16, got {self.shape}")
        object.__setattr__(self, "shape", shape)
        for name, low, high in (
            ("radius_range", 1.0, math.inf),
            ("density_range", 0.0, 1.0),
            ("overlap_range", 0.0, 0.9),
            ("blur_range", 0.0, math.inf),
            ("photons_range", 1e-3, math.inf),
        ):
            value = getattr(self, name)
            _check_range(name, value, low=low, high=high)
            object.__setattr__(self, name, (float(value[0]), float(value[1])))  # lists from YAML
        for name in ("clump_probability", "empty_probability", "mitosis_probability", "debris_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.radius_spread <= 1.0:
            raise InputError(f"radius_spread must be in [0, 1], got {self.radius_spread}")
        if self.min_object_pixels < 1:
            raise InputError(f"min_object_pixels must be >= 1, got {self.min_object_pixels}")
        if not 1 <= self.max_objects <= _MAX_OBJECTS:
            raise InputError(f"max_objects must be in [1, {_MAX_OBJECTS}], got {self.max_objects}")
        for name, allowed in (("styles", STYLES), ("kinds", KINDS), ("dtypes", DTYPES)):
            probs = dict(getattr(self, name))
            unknown = sorted(set(probs) - set(allowed))
            if unknown:
                raise InputError(f"{name}: unknown entries {unknown}; known: {list(allowed)}")
            if any(p < 0 for p in probs.values()) or sum(probs.values()) <= 0:
                raise InputError(f"{name} probabilities must be >= 0 with a positive sum, got {probs}")
            object.__setattr__(self, name, probs)


def _check_range(name: str, value: tuple[float, float], low: float, high: float = math.inf) -> None:
    try:
        ok = len(value) == 2 and low <= float(value[0]) <= float(value[1]) <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {value}")


def _choose(rng: np.random.Generator, probs: Mapping[str, float]) -> str:
    names = list(probs)
    weights = np.array([probs[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high)))) if high > low else float(low)


# --------------------------------------------------------------------------------------------
# Smooth random fields
# --------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ~``sigma`` px.

    Drawn in the Fourier domain: white noise shaped by a Gaussian envelope, with random
    coefficients only where the envelope is not negligible. One inverse real FFT costs a few
    milliseconds for any sigma, unlike spatial filtering with wide kernels. The field is
    periodic, which is invisible for a texture.
    """
    height, width = shape
    sigma = max(float(sigma), 0.5)
    freq_y = np.fft.fftfreq(height).astype(np.float32)
    freq_x = np.fft.rfftfreq(width).astype(np.float32)
    cutoff = math.sqrt(math.log(1e3) / (2 * math.pi**2)) / sigma  # envelope < 1e-3 beyond
    ky = np.flatnonzero(np.abs(freq_y) <= cutoff)
    kx = np.flatnonzero(freq_x <= cutoff)
    envelope = np.exp(
        -2 * math.pi**2 * sigma**2 * (freq_y[ky, None] ** 2 + freq_x[None, kx] ** 2)
    ).astype(np.float32)
    noise = rng.standard_normal((len(ky), len(kx), 2), dtype=np.float32)
    spectrum = np.zeros((height, width // 2 + 1), dtype=np.complex64)
    spectrum[np.ix_(ky, kx)] = envelope * (noise[..., 0] + 1j * noise[..., 1])
    spectrum[0, 0] = 0.0
    field_ = scipy_fft.irfft2(spectrum, s=shape).astype(np.float32, copy=False)
    std = float(field_.std())
    return field_ / std if std > 0 else field_


def _illumination(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Multiplicative uneven illumination: linear gradient, vignetting and low-frequency wobble."""
    height, width = shape
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    strength = rng.uniform(0.0, 0.4)
    angle = rng.uniform(0, 2 * np.pi)
    illum = 1.0 + strength * 0.5 * (np.cos(angle) * x + np.sin(angle) * y)
    illum = illum - rng.uniform(0.0, 0.35) * 0.5 * (x * x + y * y)
    if rng.random() < 0.5:
        illum = illum + rng.uniform(0.0, 0.15) * _smooth_noise(rng, shape, max(height, width) / 6)
    return np.clip(illum, 0.2, None).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------------


@dataclass
class _Objects:
    """Per-object parameters, index 0 is background (so arrays can be indexed by label)."""

    cy: np.ndarray
    cx: np.ndarray
    radius: np.ndarray
    ratio: np.ndarray  # axis ratio >= 1
    angle: np.ndarray
    harmonics: np.ndarray  # (n, 4) complex coefficients for k = 2..5
    brightness: np.ndarray
    mitotic: np.ndarray  # bool

    @property
    def count(self) -> int:
        return len(self.cy) - 1


def _place_centres(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n_target: int,
    radii: np.ndarray,
    overlap: float,
    clumped: bool,
    r_mean: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions for up to ``n_target`` objects such that no two overlap more than ``overlap``.

    Candidates (one per entry of ``radii``) are drawn uniformly or in clumps, then accepted in
    order as in random sequential adsorption: a candidate is kept unless an earlier *kept*
    candidate is too close. The sequential rule is evaluated in vectorised rounds over the
    conflict pairs, which is exact and much faster than a Python loop over thousands of objects.

    Returns:
        ``(positions, index)``: kept positions, shape (k, 2) as (y, x), and their indices into
        ``radii``.
    """
    height, width = shape
    n_cand = len(radii)
    margin = 0.6 * r_mean
    if clumped:
        per_clump = rng.uniform(4, 30)
        n_clumps = max(1, int(round(n_target / per_clump)))
        clump_centres = np.column_stack([rng.uniform(0, height, n_clumps), rng.uniform(0, width, n_clumps)])
        spread = r_mean * math.sqrt(per_clump) * rng.uniform(0.6, 1.4)
        pos = clump_centres[rng.integers(0, n_clumps, n_cand)] + rng.normal(0, spread, (n_cand, 2))
        loners = rng.random(n_cand) < rng.uniform(0.0, 0.3)
        pos[loners] = np.column_stack([rng.uniform(0, height, loners.sum()), rng.uniform(0, width, loners.sum())])
    else:
        pos = np.column_stack(
            [rng.uniform(-margin, height + margin, n_cand), rng.uniform(-margin, width + margin, n_cand)]
        )
    low, high = -margin, np.array([height, width]) + margin
    inside = np.all((pos > low) & (pos < high), axis=1)
    index = np.flatnonzero(inside)
    pos, rad = pos[index], radii[index]
    if len(pos) == 0 or n_target == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.intp)

    limit = 1.0 - overlap
    pairs = cKDTree(pos).query_pairs(r=2.0 * float(rad.max()) * limit, output_type="ndarray")
    state = np.zeros(len(pos), dtype=np.int8)  # 0 undecided, 1 kept, -1 dropped
    if len(pairs):
        dist = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
        pairs = pairs[dist < (rad[pairs[:, 0]] + rad[pairs[:, 1]]) * limit]
    if len(pairs) == 0:
        state[:] = 1
    else:
        first, second = pairs.min(axis=1), pairs.max(axis=1)
        for _ in range(40):
            dropped = np.zeros(len(pos), dtype=bool)
            dropped[second[state[first] == 1]] = True
            state[(state == 0) & dropped] = -1
            blocked = np.zeros(len(pos), dtype=bool)
            blocked[second[state[first] != -1]] = True
            state[(state == 0) & ~blocked] = 1
            if not (state == 0).any():
                break
        state[state == 0] = -1  # pathological long chains: drop the rest (rarely reached)
    kept = np.flatnonzero(state == 1)[:n_target]
    return pos[kept], index[kept]


def _draw_objects(
    rng: np.random.Generator, config: SyntheticConfig, kind: str, r_mean: float, density: float
) -> _Objects:
    """Draw object parameters: positions, sizes, shapes, brightness, mitotic flags."""
    height, width = config.shape
    expected = density * height * width / (math.pi * r_mean**2)
    # at least one object unless the image is meant to be empty (huge objects on a small canvas)
    n_target = min(max(int(round(expected)), 1 if density > 0 else 0), config.max_objects)
    if kind == "cells":
        irregular, elongation = rng.uniform(0.08, 0.3), rng.uniform(0.1, 0.8)
    else:
        irregular, elongation = rng.uniform(0.0, 0.12), rng.uniform(0.0, 0.5)
    n_cand = max(3 * n_target, 1)
    radii = r_mean * np.exp(rng.normal(0, config.radius_spread * rng.uniform(0.5, 1.5), n_cand))
    radii = np.clip(radii, max(2.5, 0.4 * r_mean), 2.5 * r_mean)
    overlap = rng.uniform(*config.overlap_range)
    clumped = rng.random() < config.clump_probability
    positions, chosen = _place_centres(rng, config.shape, n_target, radii, overlap, clumped, r_mean)
    n = len(chosen)
    cy, cx, radius = positions[:, 0].copy(), positions[:, 1].copy(), radii[chosen].copy()

    ratio = np.clip(1.0 + elongation * np.abs(rng.normal(0, 1, n)), 1.0, 3.0)
    angle = rng.uniform(0, np.pi, n)
    k = np.arange(2, 6)
    amp = irregular * rng.random((n, 4)) / (k - 1)
    amp *= np.minimum(1.0, 0.6 / np.maximum(amp.sum(axis=1, keepdims=True), 1e-9))
    harmonics = amp * np.exp(1j * rng.uniform(0, 2 * np.pi, (n, 4)))
    brightness = np.exp(rng.normal(0, rng.uniform(0.05, 0.45), n))
    mitotic = np.zeros(n, dtype=bool)

    if n and rng.random() < config.mitosis_probability:
        n_mit = max(1, int(round(n * rng.uniform(0.02, 0.1))))
        idx = rng.choice(n, size=min(n_mit, n), replace=False)
        dividing = idx[rng.random(len(idx)) < 0.5]
        condensed = np.setdiff1d(idx, dividing)
        # condensed chromosomes: small, bright, elongated (metaphase plate)
        radius[condensed] *= rng.uniform(0.45, 0.7, len(condensed))
        ratio[condensed] = rng.uniform(1.3, 3.0, len(condensed))
        brightness[condensed] *= rng.uniform(1.6, 3.0, len(condensed))
        harmonics[condensed] *= 0.5
        mitotic[condensed] = True
        # dividing: two touching bright daughters in place of one object
        if len(dividing):
            r_d = radius[dividing] * rng.uniform(0.55, 0.75, len(dividing))
            theta = rng.uniform(0, 2 * np.pi, len(dividing))
            off = r_d * rng.uniform(0.9, 1.2, len(dividing))
            dy, dx = off * np.sin(theta), off * np.cos(theta)
            new_bright = brightness[dividing] * rng.uniform(1.4, 2.5, len(dividing))
            cy = np.concatenate([cy, cy[dividing] - dy])
            cx = np.concatenate([cx, cx[dividing] - dx])
            cy[dividing] += dy
            cx[dividing] += dx
            radius[dividing] = r_d
            brightness[dividing] = new_bright
            mitotic[dividing] = True
            radius = np.concatenate([radius, r_d])
            ratio = np.concatenate([ratio, np.ones(len(dividing)) + 0.2 * rng.random(len(dividing))])
            ratio[dividing] = ratio[-len(dividing):]
            angle = np.concatenate([angle, theta])
            angle[dividing] = theta
            harmonics = np.concatenate([harmonics, 0.3 * harmonics[dividing]])
            harmonics[dividing] *= 0.3
            brightness = np.concatenate([brightness, new_bright * rng.uniform(0.9, 1.1, len(dividing))])
            mitotic = np.concatenate([mitotic, np.ones(len(dividing), dtype=bool)])

    def with_background(values: np.ndarray, fill: float | complex = 0) -> np.ndarray:
        return np.concatenate([np.array([fill], dtype=values.dtype), values])

    return _Objects(
        cy=with_background(cy.astype(np.float64)),
        cx=with_background(cx.astype(np.float64)),
        radius=with_background(radius.astype(np.float64), 1.0),
        ratio=with_background(ratio.astype(np.float64), 1.0),
        angle=with_background(angle.astype(np.float64)),
        harmonics=np.concatenate([np.zeros((1, 4), dtype=np.complex128), harmonics.reshape(-1, 4)]),
        brightness=with_background(brightness.astype(np.float64)),
        mitotic=with_background(mitotic),
    )


def _size_buckets(half: np.ndarray) -> np.ndarray:
    """Round half box sizes up to a geometric ladder so objects can be rasterised in batches."""
    steps = int(math.ceil(math.log(max(float(half.max()), 2.0)) / math.log(1.2))) + 2
    ladder = np.unique(np.ceil(1.2 ** np.arange(0, steps)).astype(np.int64))
    return ladder[np.searchsorted(ladder, half)]


def _rasterise(
    objects: _Objects, shape: tuple[int, int], rule: str
) -> tuple[np.ndarray, np.ndarray]:
    """Resolve all objects into one label map (original ids) and the per-pixel ``rho``.

    Every (pixel, object) hit is encoded as one int64 key ``priority | rho | id``; the per-pixel
    minimum over keys (``np.minimum.at``) picks the owner deterministically, regardless of
    the order in which hits are scattered.
    """
    height, width = shape
    n = objects.count
    labels = np.zeros(shape, dtype=np.int64)
    rho_map = np.zeros(shape, dtype=np.float32)
    if n == 0:
        return labels, rho_map
    ids = np.arange(1, n + 1)
    radius, ratio = objects.radius[1:], objects.ratio[1:]
    coeffs = objects.harmonics[1:]
    extent = radius * np.sqrt(ratio) * (1.0 + np.abs(coeffs).sum(axis=1))
    half = _size_buckets(np.ceil(extent).astype(np.int64) + 1)

    empty = np.iinfo(np.int64).max
    keys_map = np.full(height * width, empty, dtype=np.int64)
    rho_levels = (1 << _RHO_BITS) - 1
    for h in np.unique(half):
        sel = np.flatnonzero(half == h)
        offsets = np.arange(-h, h + 1, dtype=np.float32)
        cy, cx = objects.cy[sel + 1], objects.cx[sel + 1]
        iy0, ix0 = np.round(cy).astype(np.int64), np.round(cx).astype(np.int64)
        y = ((iy0 - cy).astype(np.float32)[:, None] + offsets)[:, :, None]  # (m, S, 1)
        x = ((ix0 - cx).astype(np.float32)[:, None] + offsets)[:, None, :]  # (m, 1, S)
        cos_a = np.cos(objects.angle[sel + 1]).astype(np.float32)[:, None, None]
        sin_a = np.sin(objects.angle[sel + 1]).astype(np.float32)[:, None, None]
        sq = np.sqrt(ratio[sel]).astype(np.float32)[:, None, None]
        r = radius[sel].astype(np.float32)[:, None, None]
        u = (cos_a * x + sin_a * y) / (r * sq)
        v = (cos_a * y - sin_a * x) * sq / r
        s = np.sqrt(u * u + v * v)
        z = (u + 1j * v).astype(np.complex64) / np.maximum(s, 1e-6)
        c = coeffs[sel].astype(np.complex64)
        c2, c3, c4, c5 = (c[:, i][:, None, None] for i in range(4))
        outline = 1.0 + (z * z * (c2 + z * (c3 + z * (c4 + z * c5)))).real
        rho = s / outline
        yy = iy0[:, None, None] + offsets.astype(np.int64)[None, :, None]
        xx = ix0[:, None, None] + offsets.astype(np.int64)[None, None, :]
        hit = (rho < 1.0) & (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        m_idx, y_idx, x_idx = np.nonzero(hit)
        flat = yy[m_idx, y_idx, 0] * width + xx[m_idx, 0, x_idx]
        obj = ids[sel][m_idx].astype(np.int64)
        q = np.minimum((rho[hit] * rho_levels).astype(np.int64), rho_levels)
        priority = (n + 1 - obj) if rule == "top" else np.zeros_like(obj)
        key = (priority << (_ID_BITS + _RHO_BITS)) | (q << _ID_BITS) | obj
        np.minimum.at(keys_map, flat, key)
    owned = keys_map != empty
    labels.ravel()[owned] = keys_map[owned] & ((1 << _ID_BITS) - 1)
    rho_map.ravel()[owned] = ((keys_map[owned] >> _ID_BITS) & rho_levels) / rho_levels
    return labels, rho_map


def _clean_labels(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Keep each object's largest connected piece and drop objects below ``min_pixels``.

    Occlusion ("top" rule) or border cropping can cut an object in pieces; a training target
    with one id on two blobs would teach a wrong centre, so the smaller pieces become background.
    """
    if not labels.any():
        return labels
    pieces = connected_components(labels, background=0, connectivity=1)
    n_pieces = int(pieces.max())
    piece_size = np.bincount(pieces.ravel(), minlength=n_pieces + 1)
    piece_owner = np.zeros(n_pieces + 1, dtype=np.int64)
    piece_owner[pieces.ravel()] = labels.ravel()
    candidates = np.arange(1, n_pieces + 1)
    order = np.lexsort((-piece_size[candidates], piece_owner[candidates]))
    owners = piece_owner[candidates][order]
    _, first = np.unique(owners, return_index=True)
    keep = np.zeros(n_pieces + 1, dtype=bool)
    best = candidates[order][first]
    keep[best[piece_size[best] >= min_pixels]] = True
    return np.where(keep[pieces], labels, 0)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _object_signal(
    rng: np.random.Generator, labels: np.ndarray, rho: np.ndarray, objects: _Objects, kind: str, r_mean: float
) -> np.ndarray:
    """Per-pixel object 'stain amount' (0 on background, ~1 inside an average object).

    Combines per-object brightness (dim and bright objects in one image), a dome profile (the
    edge is thinner than the middle), chromatin-like texture at two scales and, for cells, an
    optional brighter nucleus-like interior.
    """
    fg = labels > 0
    signal = objects.brightness.astype(np.float32)[labels]
    dome = rng.uniform(0.0, 0.5)
    signal *= 1.0 - dome * rho * rho
    texture_amp = rng.uniform(0.0, 0.35)
    if texture_amp > 0.02 and fg.any():
        fine = _smooth_noise(rng, labels.shape, max(0.7, r_mean / rng.uniform(4, 10)))
        coarse = _smooth_noise(rng, labels.shape, max(1.0, r_mean / rng.uniform(1.5, 3)))
        mitotic_boost = np.where(objects.mitotic[labels], 1.6, 1.0).astype(np.float32)
        signal *= np.clip(1.0 + texture_amp * mitotic_boost * (0.7 * fine + 0.5 * coarse), 0.05, None)
    if kind == "cells" and rng.random() < 0.6:
        nucleus = rho < rng.uniform(0.3, 0.6)
        signal = np.where(nucleus, signal * rng.uniform(1.5, 3.5), signal * rng.uniform(0.3, 0.8))
    signal[~fg] = 0.0
    return signal.astype(np.float32)


def _debris(rng: np.random.Generator, shape: tuple[int, int], r_mean: float) -> np.ndarray:
    """Unlabelled clutter: specks, thin fibres and out-of-focus ghost objects (>= 0)."""
    height, width = shape
    area_scale = height * width / 512**2
    out = np.zeros(shape, dtype=np.float32)
    if rng.random() < 0.8:  # specks, kept smaller than the objects so they stay distinguishable
        n = int(rng.integers(5, 80) * area_scale) + 1
        pts = np.zeros(shape, dtype=np.float32)
        pts[rng.integers(0, height, n), rng.integers(0, width, n)] = rng.lognormal(0.0, 0.6, n)
        sigma = rng.uniform(0.5, max(0.6, min(1.5, 0.3 * r_mean)))
        specks = ndi.gaussian_filter(pts, sigma)
        out += specks * (2 * math.pi * sigma**2) * rng.uniform(0.1, 0.6)
    if rng.random() < 0.3:  # fibres
        pts = np.zeros(shape, dtype=np.float32)
        for _ in range(int(rng.integers(1, 6))):
            y0, x0 = rng.uniform(0, height), rng.uniform(0, width)
            angle, length = rng.uniform(0, np.pi), rng.uniform(0.1, 0.6) * max(height, width)
            t = np.linspace(-0.5, 0.5, int(length) + 2) * length
            curve = rng.normal(0, 0.05 * length) * (t / length) ** 2
            yy = np.round(y0 + t * np.sin(angle) + curve * np.cos(angle)).astype(np.int64)
            xx = np.round(x0 + t * np.cos(angle) - curve * np.sin(angle)).astype(np.int64)
            ok = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            pts[yy[ok], xx[ok]] = rng.uniform(0.2, 0.6)
        out += ndi.gaussian_filter(pts, rng.uniform(0.5, 1.2)) * 2.0
    if rng.random() < 0.4:  # ghosts: out-of-focus objects of another plane, not annotated
        n = int(rng.integers(1, 15) * area_scale) + 1
        sigma = r_mean * rng.uniform(0.6, 1.2)
        step = max(1.0, sigma / 2)
        small = (int(math.ceil(height / step)), int(math.ceil(width / step)))
        pts = np.zeros(small, dtype=np.float32)
        pts[rng.integers(0, small[0], n), rng.integers(0, small[1], n)] = rng.uniform(0.5, 1.0, n)
        blobs = ndi.gaussian_filter(pts, sigma / step)
        blobs = ndi.zoom(blobs, (height / small[0], width / small[1]), order=1)[:height, :width]
        peak = float(blobs.max())
        if peak > 0:
            out += blobs / peak * rng.uniform(0.1, 0.3)
    return out


def _apply_noise(rng: np.random.Generator, image: np.ndarray, photons: float) -> np.ndarray:
    """Shot noise plus camera read noise, in units of the input image.

    Exact Poisson sampling only matters (and is only paid for) at low photon counts; above that
    one Gaussian with the summed variance is indistinguishable and several times cheaper.
    """
    expected = np.clip(image, 0.0, None) * np.float32(photons)
    read = np.float32(_loguniform(rng, 0.3, 0.05 * photons + 0.5))
    if photons < 10:
        counts = rng.poisson(expected).astype(np.float32)
        counts += read * rng.standard_normal(image.shape, dtype=np.float32)
    else:
        counts = expected + np.sqrt(expected + read * read) * rng.standard_normal(image.shape, dtype=np.float32)
    return counts / np.float32(photons)


def _blur(rng: np.random.Generator, image: np.ndarray, blur_range: tuple[float, float]) -> np.ndarray:
    sigma = rng.uniform(*blur_range)
    if sigma < 0.3:
        return image
    return ndi.gaussian_filter(image, sigma)


def _out_of_focus_glow(rng: np.random.Generator, signal: np.ndarray, r_mean: float) -> np.ndarray:
    """Light from above and below the focal plane: a wide, dim halo around every object.

    Real fluorescence nuclei stay clearly brighter than the background a few pixels outside the
    annotated boundary (measured on DSB2018: 28% of object brightness 1 px out, 15% 3 px out);
    without this halo a model learns "mask = everything bright" and draws fat masks on real data.
    The labels are not changed: the boundary stays at the steep edge.
    """
    if rng.random() < 0.1:
        return np.zeros_like(signal)
    sigma = max(1.5, r_mean * rng.uniform(0.25, 0.8))
    return np.float32(rng.uniform(0.4, 1.6)) * ndi.gaussian_filter(signal, sigma)


def _render_fluorescence(rng, signal, fg, debris, config, r_mean):
    background = rng.uniform(0.01, 0.35) * (1.0 + rng.uniform(0.0, 0.4) * _smooth_noise(rng, config.shape, r_mean * 3))
    brightness = rng.uniform(0.4, 1.0)
    glow = _out_of_focus_glow(rng, signal, r_mean)
    image = np.clip(background, 0.0, None) + brightness * (signal + glow) + debris
    image = _blur(rng, image * _illumination(rng, config.shape), config.blur_range)
    return _apply_noise(rng, image, _loguniform(rng, *config.photons_range))


def _render_brightfield(rng, signal, fg, rho, debris, config, r_mean):
    texture = _smooth_noise(rng, config.shape, rng.uniform(1.0, 6.0))
    background = 1.0 + rng.uniform(0.0, 0.06) * texture
    absorb = rng.uniform(0.2, 1.0) * signal
    rim = np.where(fg, np.exp(-(((1.0 - rho) / rng.uniform(0.08, 0.25)) ** 2)), 0.0).astype(np.float32)
    absorb += rng.uniform(0.0, 0.5) * rim
    image = background * np.exp(-absorb - rng.uniform(0.1, 0.5) * debris)
    image = _blur(rng, image * _illumination(rng, config.shape), config.blur_range)
    return _apply_noise(rng, image, _loguniform(rng, config.photons_range[0] * 10, config.photons_range[1] * 10))


def _render_phase(rng, signal, fg, debris, config, r_mean):
    background = 0.5 + rng.uniform(0.0, 0.04) * _smooth_noise(rng, config.shape, rng.uniform(1.0, 5.0))
    spread = max(1.0, r_mean * rng.uniform(0.1, 0.35))
    halo = ndi.gaussian_filter(fg.astype(np.float32), spread) - fg
    sign = 1.0 if rng.random() < 0.75 else -1.0  # dark objects with bright halo, or the inverse
    image = background + sign * (
        rng.uniform(0.2, 0.6) * np.clip(halo, 0.0, None) - rng.uniform(0.05, 0.3) * signal
    )
    image += rng.uniform(-0.2, 0.2) * debris
    image = _blur(rng, np.clip(image, 0.01, None) * _illumination(rng, config.shape), config.blur_range)
    return _apply_noise(rng, image, _loguniform(rng, config.photons_range[0] * 10, config.photons_range[1] * 10))


# Ruifrok & Johnston stain optical-density vectors (R, G, B), normalised
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_EOSIN = np.array([0.07, 0.99, 0.11], dtype=np.float32)


def _render_he(rng, signal, fg, debris, config, r_mean):
    """RGB uint8 brightfield of hematoxylin nuclei in eosin tissue (Beer-Lambert stain mixing)."""
    shape = config.shape
    stroma = np.clip(
        rng.uniform(0.1, 0.45) * (1.0 + 0.5 * _smooth_noise(rng, shape, rng.uniform(2.0, 8.0))), 0.0, None
    )
    holes = _smooth_noise(rng, shape, r_mean * rng.uniform(2, 5)) > rng.uniform(0.5, 2.5)  # lumen, no tissue
    stroma[holes] *= 0.1
    hema = rng.uniform(0.5, 1.3) * signal + rng.uniform(0.0, 0.12) * stroma + 0.3 * debris
    eosin = stroma * np.where(fg, 0.5, 1.0)
    sigma = rng.uniform(*config.blur_range)
    if sigma >= 0.3:  # blurring the two stain amounts is cheaper than blurring three colours
        hema, eosin = ndi.gaussian_filter(hema, sigma), ndi.gaussian_filter(eosin, sigma)
    density = hema[..., None] * (_HEMATOXYLIN * rng.uniform(0.8, 1.2, 3)) + eosin[..., None] * _EOSIN
    image = np.exp(-density * np.float32(rng.uniform(0.8, 1.6)))
    image = image + rng.uniform(0.005, 0.03) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image * 255.0 * rng.uniform(0.85, 1.0), 0, 255).round().astype(np.uint8)


def _to_dtype(rng: np.random.Generator, image: np.ndarray, dtype: str) -> np.ndarray:
    """Store like a real acquisition: 8-bit, 16-bit with some dynamic range and offset, or float."""
    peak = float(np.percentile(image, 99.9)) if image.size else 1.0
    peak = peak if peak > 0 else 1.0
    if dtype == "uint8":
        top = rng.uniform(40, 255)
        return np.clip(np.clip(image, 0, None) / peak * top, 0, 255).round().astype(np.uint8)
    if dtype == "uint16":
        top = _loguniform(rng, 200, 60000)
        offset = rng.choice([0.0, rng.uniform(0, 0.1 * top)])
        return np.clip(offset + np.clip(image, 0, None) / peak * top, 0, 65535).round().astype(np.uint16)
    scale = _loguniform(rng, 1e-2, 1e3)
    return (image / peak * scale).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_sample(
    rng: np.random.Generator, config: SyntheticConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image and its instance labels.

    Returns:
        ``(image, labels)``: ``image`` is (H, W) uint8, uint16 or float32, or (H, W, 3) uint8 for
        the H&E style; ``labels`` is (H, W) uint32 with objects numbered 1..N (0 = background).
    """
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    config = config or SyntheticConfig()
    style = _choose(rng, config.styles)
    kind = "nuclei" if style == "he" else _choose(rng, config.kinds)
    low, high = config.radius_range
    if kind == "cells":
        low = min(high, max(low, 8.0))
    r_mean = _loguniform(rng, low, high)
    density = 0.0 if rng.random() < config.empty_probability else rng.uniform(*config.density_range)
    if kind == "cells":
        density = min(1.0, density * 1.5)  # cells are often confluent

    objects = _draw_objects(rng, config, kind, r_mean, density)
    rule = "top" if rng.random() < (0.5 if kind == "cells" else 0.15) else "interior"
    labels, rho = _rasterise(objects, config.shape, rule)
    labels = _clean_labels(labels, config.min_object_pixels)
    rho[labels == 0] = 0.0
    fg = labels > 0

    signal = _object_signal(rng, labels, rho, objects, kind, r_mean)
    debris = (
        _debris(rng, config.shape, r_mean)
        if rng.random() < config.debris_probability
        else np.zeros(config.shape, dtype=np.float32)
    )
    if style == "he":
        image = _render_he(rng, signal, fg, debris, config, r_mean)
    else:
        if style == "fluorescence":
            image = _render_fluorescence(rng, signal, fg, debris, config, r_mean)
        elif style == "brightfield":
            image = _render_brightfield(rng, signal, fg, rho, debris, config, r_mean)
        else:
            image = _render_phase(rng, signal, fg, debris, config, r_mean)
        image = _to_dtype(rng, image, _choose(rng, config.dtypes))

    # consecutive ids 1..N in placement order
    present = np.bincount(labels.ravel(), minlength=objects.count + 1) > 0
    present[0] = False
    lut = np.zeros(objects.count + 1, dtype=np.uint32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint32)
    return image, lut[labels]


def generate_dataset(
    n: int, seed: int, config: SyntheticConfig | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``n`` samples; sample ``i`` depends only on ``(seed, i)``.

    Seeding each sample separately makes sample ``i`` identical whatever ``n`` is, so data sets
    can be extended, regenerated in parallel or partially rewritten without changing the rest.
    """
    n, seed = _check_count_seed(n, seed)
    config = config or SyntheticConfig()
    for index in range(n):
        yield generate_sample(np.random.default_rng([seed, index]), config)


def _check_count_seed(n: int, seed: int) -> tuple[int, int]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(n), int(seed)


def _write_tif_atomic(path: Path, array: np.ndarray) -> None:
    import tifffile

    from ..io import atomic_path

    photometric = "rgb" if array.ndim == 3 and array.shape[-1] == 3 else "minisblack"
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, photometric=photometric, compression="zlib")


def write_dataset(
    folder: str | os.PathLike[str], n: int, seed: int, config: SyntheticConfig | None = None
) -> list[tuple[Path, Path]]:
    """Write ``n`` samples as ``folder/images/XXXX.tif`` and ``folder/labels/XXXX.tif``.

    Files are written atomically, so an interrupted run never leaves a truncated TIFF that a
    later training run would choke on. Returns the (image, label) path pairs in order.
    """
    from tqdm import tqdm

    n, seed = _check_count_seed(n, seed)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a folder")
    image_dir, label_dir = folder / "images", folder / "labels"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(max(n - 1, 0))))
    written: list[tuple[Path, Path]] = []
    samples = generate_dataset(n, seed, config)
    for index, (image, labels) in enumerate(tqdm(samples, total=n, desc="synthetic data", unit="img")):
        name = f"{index:0{width}d}.tif"
        _write_tif_atomic(image_dir / name, image)
        _write_tif_atomic(label_dir / name, labels)
        written.append((image_dir / name, label_dir / name))
    return written
