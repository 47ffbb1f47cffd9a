"""Training samples: image/label TIFF folders (2D images or 3D stacks read as 2D slices) and
on-the-fly synthetic images, cut into fixed-size patches, augmented and mixed.

Every sample is a pure function of ``(seed, index)`` (a fresh ``numpy`` generator per sample), so
an interrupted run resumes with exactly the data it would have seen, and validation sets are
fixed without storing them.

A sample is a dict: ``image`` float32 (3, P, P) in 0..255 (normalised like inference does),
``labels`` int64 (P, P) (the instance labels) and, when the sampler is given a family's
``targets`` function (μSAM: the AIS target), ``target`` (that function's array) with the labels
it cleaned.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..io import read_image
from ..segmentation.preprocess import normalize_to_uint8_range

Raw = tuple[np.ndarray, np.ndarray]  # (image (H, W) or (H, W, C), labels (H, W))


# ---------------------------------------------------------------- sources of raw (image, labels)

class SyntheticSource:
    """Draws a new synthetic image per sample (``samzoo.training.synthetic``)."""

    def __init__(self, synthetic: dict[str, Any] | None = None, shape: tuple[int, int] = (512, 512)):
        from .synthetic import SyntheticConfig

        options = dict(synthetic or {})
        options.setdefault("shape", tuple(shape))
        self.config = SyntheticConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})

    def draw(self, rng: np.random.Generator) -> Raw:
        from .synthetic import generate_sample

        return generate_sample(rng, self.config)


class FolderSource:
    """Pairs ``images/NAME`` with ``labels/NAME`` (same file name). 3D stacks (Z, H, W) are
    sampled one z-slice at a time; 2D images as they are. Files are read lazily and cached."""

    def __init__(self, images: str | os.PathLike, labels: str | os.PathLike, pattern: str = "*.tif*",
                 cache: bool = True):
        image_dir, label_dir = Path(images), Path(labels)
        if not image_dir.is_dir():
            raise InputError(f"image folder not found: {image_dir}")
        if not label_dir.is_dir():
            raise InputError(f"label folder not found: {label_dir}")
        paths = sorted(Path(p) for p in glob.glob(str(image_dir / pattern)))
        self.pairs = []
        for path in paths:
            label = label_dir / path.name
            if not label.is_file():
                raise InputError(f"no label file for {path.name} in {label_dir}")
            self.pairs.append((path, label))
        if not self.pairs:
            raise InputError(f"no images matching {pattern} in {image_dir}")
        self._cache: dict[int, Raw] = {}
        self._use_cache = cache

    def _load(self, i: int) -> Raw:
        if i in self._cache:
            return self._cache[i]
        image, labels = read_image(self.pairs[i][0]), read_image(self.pairs[i][1])
        if labels.ndim not in (2, 3):
            raise InputError(f"{self.pairs[i][1]}: labels must be 2D or a 3D stack, got shape {labels.shape}")
        if image.shape[: labels.ndim] != labels.shape:
            raise InputError(f"{self.pairs[i][0].name}: image shape {image.shape} does not fit labels {labels.shape}")
        if self._use_cache:
            self._cache[i] = (image, labels)
        return image, labels

    def draw(self, rng: np.random.Generator) -> Raw:
        image, labels = self._load(int(rng.integers(len(self.pairs))))
        if labels.ndim == 3:  # a stack: one slice
            z = int(rng.integers(labels.shape[0]))
            image, labels = image[z], labels[z]
        return image, labels


class TorchEmSource:
    """A public dataset through torch-em's own ``get_<name>_dataset`` function.

    torch-em knows where each dataset of the μSAM paper lives and downloads it on first use
    (``download: true``), so samzoo names datasets instead of re-implementing their downloads.
    ``ndim: 3`` marks volumetric datasets (EM): 2D slices are drawn from 1-deep patches.
    """

    def __init__(self, dataset: str, path: str | os.PathLike, patch_size: int, kwargs: dict[str, Any] | None = None):
        import torch_em.data.datasets as datasets

        function = getattr(datasets, f"get_{dataset}_dataset", None)
        if function is None:
            raise InputError(f"torch-em has no dataset function get_{dataset}_dataset (torch-em "
                             f"{getattr(__import__('torch_em'), '__version__', '?')})")
        options = dict(kwargs or {})
        ndim = int(options.pop("ndim", 2))
        options.setdefault("download", True)
        patch = (1, patch_size, patch_size) if ndim == 3 else (patch_size, patch_size)
        self.name = dataset
        self.dataset = function(str(path), patch_shape=patch, **options)

    def draw(self, rng: np.random.Generator) -> Raw:
        image, labels = self.dataset[int(rng.integers(len(self.dataset)))]
        image, labels = np.asarray(image), np.asarray(labels)
        while labels.ndim > 2 and labels.shape[0] == 1:
            labels = labels[0]
        while image.ndim > 2 and image.shape[0] == 1:
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (2, 3, 4):  # channels first -> last
            image = np.moveaxis(image, 0, -1)
        return image, labels.astype(np.int64)


def build_source(spec: dict[str, Any], patch_size: int):
    kind = spec.get("kind", "synthetic")
    if kind == "synthetic":
        return SyntheticSource(spec.get("synthetic"), shape=(patch_size, patch_size))
    if kind == "folder":
        return FolderSource(spec["images"], spec["labels"], spec.get("pattern", "*.tif*"))
    if kind == "torch_em":
        for key in ("dataset", "path"):
            if key not in spec:
                raise InputError(f"torch_em data source needs '{key}' (got {sorted(spec)})")
        return TorchEmSource(spec["dataset"], spec["path"], patch_size, spec.get("kwargs"))
    if kind == "split":
        from .split_data import split_source

        return split_source(spec)
    if kind == "synthetic_em":
        from .synthetic_em import SyntheticEMSource

        return SyntheticEMSource(spec.get("synthetic_em"), shape=(patch_size, patch_size))
    raise InputError(f"unknown data source kind {kind!r} (expected 'synthetic', 'synthetic_em', 'folder', 'split' or 'torch_em')")


# ---------------------------------------------------------------- patches, augmentation

def to_three_channels(image: np.ndarray, method: str = "percentile") -> np.ndarray:
    """(H, W) / (H, W, C) -> float32 (H, W, 3) normalised to 0..255 with ``method``, the
    model's ``config.normalization`` (what inference applies to the same image)."""
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[-1] == 2:
            image = image.astype(np.float32).mean(-1)
        elif image.shape[-1] == 4:
            image = image[..., :3]
        elif image.shape[-1] == 1:
            image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return normalize_to_uint8_range(image.astype(np.float32), method)


def random_patch(image: np.ndarray, labels: np.ndarray, size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A ``size x size`` crop at a random position; smaller images are zero-padded (bottom/right)."""
    h, w = labels.shape
    y = int(rng.integers(0, h - size + 1)) if h > size else 0
    x = int(rng.integers(0, w - size + 1)) if w > size else 0
    return _crop(image, labels, y, x, size)


def background_patch(image: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator,
                     candidates: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The crop with the least labelled area among ``candidates`` random positions (a summed-area
    table counts each one's object pixels), so sparse images give empty background patches."""
    h, w = labels.shape
    if h <= size and w <= size:
        return _crop(image, labels, 0, 0, size)
    area = np.pad(np.cumsum(np.cumsum(labels > 0, axis=0, dtype=np.int64), axis=1), ((1, 0), (1, 0)))
    ys = rng.integers(0, max(h - size, 0) + 1, candidates)
    xs = rng.integers(0, max(w - size, 0) + 1, candidates)
    y1, x1 = np.minimum(ys + size, h), np.minimum(xs + size, w)
    filled = area[y1, x1] - area[ys, x1] - area[y1, xs] + area[ys, xs]
    best = int(np.argmin(filled))
    return _crop(image, labels, int(ys[best]), int(xs[best]), size)


def _crop(image: np.ndarray, labels: np.ndarray, y: int, x: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    image, labels = image[y:y + size, x:x + size], labels[y:y + size, x:x + size]
    ph, pw = size - image.shape[0], size - image.shape[1]
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        labels = np.pad(labels, ((0, ph), (0, pw)))
    return image, labels


def augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            intensity: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Random flips / 90-degree rotations, then intensity jitter in 0..255 space (dimming,
    gamma, contrast, brightness, Gaussian noise), which also covers normalisation differences
    at inference."""
    k = int(rng.integers(4))
    image, labels = np.rot90(image, k, axes=(0, 1)), np.rot90(labels, k)
    if rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    image = np.ascontiguousarray(image, dtype=np.float32)
    labels = np.ascontiguousarray(labels)
    if intensity and rng.random() < 0.8:
        x = image / 255.0
        if rng.random() < 0.4:
            # dim content: in real fluorescence a few very bright (mitotic, debris) objects set the
            # upper percentile, so ordinary nuclei end up at 5-30 % of the normalised range
            x = x * np.float32(np.exp(rng.uniform(np.log(0.08), np.log(0.7))))
        x = np.clip(x, 0, 1) ** np.float32(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        x = (x - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)
        if rng.random() < 0.3:
            x = x + rng.normal(0, rng.uniform(0.0, 0.04), x.shape[:2])[..., None]
        image = (np.clip(x, 0, 1) * 255.0).astype(np.float32)
    return image, labels


@dataclass
class PatchSampler:
    """Draws raw samples from mixed sources, crops, rejects patches with too few objects,
    augments and computes the training target with ``targets`` (labels -> (cleaned labels,
    target); None: no target, the labels as they are).

    ``background_probability``: the share of samples that look for an empty patch instead (the
    emptiest crop of each draw, ``background_patch``; the fewest objects in ``max_tries`` draws). Why: rejecting patches with too few objects means a
    model never sees empty background, and then fills the empty tiles of sparse images with
    noise blobs."""

    sources: Sequence[Any]
    weights: Sequence[float]
    patch_size: int = 512
    min_objects: int = 1
    background_probability: float = 0.0
    max_tries: int = 10
    augment: bool = True
    intensity_augment: bool = True
    targets: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    normalization: str = "percentile"  # the model's config.normalization
    _probs: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.sources or len(self.sources) != len(self.weights):
            raise InputError("need one weight per data source and at least one source")
        w = np.asarray(self.weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise InputError(f"data source weights must be >= 0 with a positive sum, got {list(self.weights)}")
        self._probs = w / w.sum()

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        background = bool(self.background_probability) and rng.random() < self.background_probability
        best = None
        for _ in range(self.max_tries):
            source = self.sources[int(rng.choice(len(self.sources), p=self._probs))]
            raw_image, raw_labels = source.draw(rng)
            crop = background_patch if background else random_patch
            image, labels = crop(to_three_channels(raw_image, self.normalization), np.asarray(raw_labels), self.patch_size, rng)
            if self.augment:
                image, labels = augment(image, labels, rng, self.intensity_augment)
            target = None
            if self.targets is not None:
                labels, target = self.targets(labels)
            n = int(labels.max())
            if best is None or (n < best[0] if background else n > best[0]):
                best = (n, image, labels, target)
            if (n == 0) if background else (n >= self.min_objects):
                break
        _, image, labels, target = best
        sample = {"image": image.transpose(2, 0, 1).copy(), "labels": labels}
        if target is not None:
            sample["target"] = target
        return sample


def sample_batch(sampler: PatchSampler, seed: int, step: int, batch_size: int, first: int = 0
                 ) -> dict[str, torch.Tensor]:
    """The batch of training step ``step``: deterministic in ``(seed, step)``; samples
    ``first .. first + batch_size - 1`` of that step (distributed ranks take disjoint ranges)."""
    items = [sampler.sample(np.random.default_rng([seed, step, first + b])) for b in range(batch_size)]
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


def fixed_samples(sampler: PatchSampler, seed: int, n: int) -> list[dict[str, np.ndarray]]:
    """A fixed (validation) set of ``n`` samples from ``seed``."""
    return [sampler.sample(np.random.default_rng([seed, 1_000_003, i])) for i in range(n)]
