"""Annotated image sets laid out as ``ROOT/<set>/<split>/{images,labels}/NAME.tif``.

This is the layout of the real training data samzoo's models are trained on (the project's shared
data folder: dsb2018-nuclei, usiigaci-phase, axondeepseg-sem; sources, licences and citations in
each model's card). A ``MANIFEST.tsv`` at ``ROOT`` (``set, split, name, image_sha256,
labels_sha256, ...``) is used when present: every file is checked against its SHA-256 before it
is used, so a recipe trains on exactly the bytes it names.

The data is needed only to train and to evaluate, never at run time; ``ROOT`` comes from the
source's ``root`` or from ``$SAMZOO_DATA_ROOT``.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import read_image

DATA_ROOT_ENV = "SAMZOO_DATA_ROOT"

Raw = tuple[np.ndarray, np.ndarray]


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root``, else ``$SAMZOO_DATA_ROOT``; an error naming both when neither is a folder."""
    chosen = root if root not in (None, "") else os.environ.get(DATA_ROOT_ENV)
    if not chosen:
        raise InputError(f"no data root: give the source a 'root' or set ${DATA_ROOT_ENV}")
    path = Path(os.path.expanduser(str(chosen)))
    if not path.is_dir():
        raise InputError(f"data root {path} is not a folder")
    return path


def read_manifest(root: Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    """``(set, split, name) -> (image sha256, labels sha256)`` from ``root/MANIFEST.tsv`` ({} if absent)."""
    manifest = root / "MANIFEST.tsv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    try:
        return {(r["set"], r["split"], r["name"]): (r["image_sha256"], r["labels_sha256"]) for r in rows}
    except KeyError as exc:
        raise InputError(f"{manifest}: missing column {exc}") from None


@dataclass(frozen=True)
class SplitPair:
    name: str
    image: Path
    labels: Path
    image_sha256: str | None
    labels_sha256: str | None


def split_pairs(set_name: str, split: str, root: str | os.PathLike[str] | None = None) -> list[SplitPair]:
    """The image/label pairs of one split of one set, sorted by name."""
    base = data_root(root)
    folder = base / set_name / split
    images, labels = folder / "images", folder / "labels"
    if not images.is_dir() or not labels.is_dir():
        known = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise InputError(f"no {set_name}/{split}/images and labels under {base} (sets there: {', '.join(known)})")
    hashes = read_manifest(base)
    pairs = []
    for image in sorted(images.glob("*.tif")):
        label = labels / image.name
        if not label.is_file():
            raise InputError(f"no label file for {image.name} in {labels}")
        sha = hashes.get((set_name, split, image.stem), (None, None))
        pairs.append(SplitPair(image.stem, image, label, *sha))
    if not pairs:
        raise InputError(f"no images in {images}")
    return pairs


def _checked(path: Path, sha256: str | None) -> np.ndarray:
    if sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise InputError(f"{path}: SHA-256 {digest[:12]}... does not match MANIFEST.tsv ({sha256[:12]}...)")
    return read_image(path)


def load_pair(pair: SplitPair) -> Raw:
    """(image as stored, labels int64), hashes checked against the manifest."""
    image, labels = _checked(pair.image, pair.image_sha256), _checked(pair.labels, pair.labels_sha256)
    if labels.ndim != 2 or image.shape[:2] != labels.shape:
        raise InputError(f"{pair.image.name}: image {image.shape} and labels {labels.shape} do not fit (2D labels expected)")
    return image, labels.astype(np.int64)


def load_split(set_name: str, split: str, root: str | os.PathLike[str] | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """All ``(name, image, labels)`` of a split (evaluation)."""
    return [(p.name, *load_pair(p)) for p in split_pairs(set_name, split, root)]


def rescale_pair(image: np.ndarray, labels: np.ndarray, scale: float) -> Raw:
    """Image (anti-aliased, linear) and labels (nearest) resized by ``scale``: brings a set's
    objects to the size the model is trained for (e.g. large phase-contrast cells to ~50 px)."""
    from skimage.transform import resize

    shape = tuple(max(1, round(s * scale)) for s in labels.shape)
    out_image = resize(image.astype(np.float32), shape + image.shape[2:], order=1, anti_aliasing=scale < 1,
                       preserve_range=True).astype(np.float32)
    out_labels = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.int64)
    return out_image, out_labels


class SplitSource:
    """A training data source over one split of one set (``{"kind": "split", "set": ..., "split":
    "train", "root": ..., "scale": 1.0}``); images are drawn uniformly and read once (cached).

    ``scale``: one factor (each image rescaled once, then cached), or ``[low, high]``: a factor
    drawn log-uniformly for every sample, so the model learns the set's objects over a range of
    sizes (large phase-contrast cells both at native size and at the ~50 px of other sets)."""

    def __init__(self, set_name: str, split: str = "train", root: str | os.PathLike[str] | None = None,
                 scale: "float | Sequence[float]" = 1.0):
        bounds = tuple(float(v) for v in scale) if isinstance(scale, (list, tuple)) else (float(scale),) * 2
        if len(bounds) != 2 or not 0.05 <= bounds[0] <= bounds[1] <= 20:
            raise InputError(f"scale must be a factor or [low, high] in 0.05..20 (low <= high), got {scale}")
        self.pairs = split_pairs(set_name, split, root)
        self.scale = bounds
        self._cache: dict[int, Raw] = {}

    def draw(self, rng: np.random.Generator) -> Raw:
        i = int(rng.integers(len(self.pairs)))
        low, high = self.scale
        if i not in self._cache:
            image, labels = load_pair(self.pairs[i])
            self._cache[i] = rescale_pair(image, labels, low) if low == high != 1.0 else (image, labels)
        if low == high:
            return self._cache[i]
        factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        return rescale_pair(*self._cache[i], factor) if factor != 1.0 else self._cache[i]


def split_source(spec: dict[str, Any]) -> SplitSource:
    if "set" not in spec:
        raise InputError(f"split data source needs 'set' (got {sorted(spec)})")
    return SplitSource(spec["set"], spec.get("split", "train"), spec.get("root"), spec.get("scale", 1.0))
