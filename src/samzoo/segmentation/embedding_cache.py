"""Image embeddings on disk, so a second run on the same image skips the image encoder.

Why: the image encoder is by far the most expensive step (seconds to minutes per image on a
CPU); prompts, the AIS decoder and AMG all start from its output. Re-running samzoo on an image
-- new parameters, new prompts, another mode -- should not pay for it again.

Key: one SHA-256 over

* the image: its raw bytes, shape and dtype, exactly as the caller passed it (before
  normalisation -- the normalisation method is a separate part of the key);
* the model fingerprint: SHA-256 over every state-dict tensor (name, dtype, shape, bytes) plus the
  model config, computed once and remembered on the model object (recomputed only when a
  parameter is modified in place, which PyTorch's version counters reveal);
* the normalisation method and the tiling (``tile_shape``/``halo``, or none);
* ``CACHE_FORMAT``, bumped whenever the stored layout or the preprocessing changes.

Layout (under ``samzoo.cache.cache_dir()/embeddings`` unless told otherwise)::

    <key[:2]>/<key>/manifest.json        what the key was made of (JSON, for humans and checks)
    <key[:2]>/<key>/<entry>.npy          one embedding (C, g, g) float32 per window
    <key[:2]>/<key>/<entry>.json         its input shape (resized, before padding) and window

An *entry* is one encoded window of the image: ``full`` for an untiled image, otherwise the
tile's outer block (e.g. ``y0-1024_x896-2048``), so tiled images are cached tile by tile and can
be filled lazily. Every file is written to a temporary name and moved into place with
``os.replace``; the ``.json`` of an entry is written after its ``.npy``, so an entry whose
sidecar exists is complete. The sidecar carries the SHA-256 of the embedding's bytes: an entry
whose bytes no longer match (a disk error, a zero-filled or truncated file) or that holds
non-finite values is recomputed and overwritten, never used. Unreadable or inconsistent entries
are treated as missing, never as errors: a cache can always be deleted.

The cache is an optimisation, so it never stops segmentation: when the folder cannot be written
(read-only, full disk, a file in the way) one warning says so and the run goes on without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_path

CACHE_FORMAT = 2  # 2: entries carry the SHA-256 of their bytes
_FINGERPRINT_ATTR = "_samzoo_fingerprint"
log = logging.getLogger(__name__)


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def default_cache_dir() -> Path:
    """``samzoo.cache.cache_dir() / "embeddings"``."""
    from ..cache import cache_dir

    return cache_dir() / "embeddings"


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an array's bytes (C order), shape and dtype."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _parameter_versions(model: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    # In-place updates (optimizer steps, load_state_dict, .copy_()) bump the version counters;
    # moving or replacing a tensor changes its data pointer.
    return tuple((t.data_ptr(), t._version) for value in model.state_dict(keep_vars=True).values()
                 for t in _state_tensors(value))


def _state_tensors(value: Any) -> list[torch.Tensor]:
    """The plain tensors behind one state-dict entry. Quantised layers (``--precision int8``) store
    packed (int8 weight, bias) tuples, quantised tensors and dtypes: an int8 weight counts as its
    integer values plus its scales and zero points; non-tensor entries count through ``_entry_bytes``."""
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _state_tensors(item)]
    if not isinstance(value, torch.Tensor):
        return []
    if value.is_quantized:
        if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            extra = [value.q_per_channel_scales(), value.q_per_channel_zero_points()]
        else:
            extra = [torch.tensor([value.q_scale()]), torch.tensor([value.q_zero_point()])]
        return [value.int_repr(), *extra]
    return [value]


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state-dict tensors and config; computed once per model object.

    The result is stored on the model together with the tensors' version counters and
    recomputed only when a tensor has been modified in place since (e.g. by training).
    """
    versions = _parameter_versions(model)
    cached = getattr(model, _FINGERPRINT_ATTR, None)
    if cached is not None and cached[0] == versions:
        return cached[1]
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, value in model.state_dict().items():
            tensors = _state_tensors(value)
            if not tensors:
                digest.update(f"{name}|{value!r}|".encode())
            for tensor in tensors:
                data = tensor.detach().cpu().contiguous()
                digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
                if data.numel():
                    digest.update(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
    value = digest.hexdigest()
    object.__setattr__(model, _FINGERPRINT_ATTR, (versions, value))  # plain attribute, not a buffer
    return value


def tiling_descriptor(tile_shape: tuple[int, int] | None, halo: tuple[int, int] | None) -> str:
    if tile_shape is None:
        return "none"
    # "fit_edge": the block layout of TileGrid(fit_edge=True) (last window at the image edge,
    # symmetric padding); embeddings of the older clipped layout are a different key
    return f"tile={tile_shape[0]}x{tile_shape[1]},halo={halo[0]}x{halo[1]},fit_edge"


@dataclass(frozen=True)
class CachedEmbedding:
    """One stored window embedding: ``embedding`` (C, g, g) and SAM's resized input shape."""

    embedding: np.ndarray
    input_shape: tuple[int, int]


def _atomic_write(path: Path, write) -> None:
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        write(handle)


class EmbeddingCache:
    """A folder of cached embeddings (see the module docstring for key and layout)."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self.corrupt = 0  # entries found damaged and recomputed
        self.writable = True  # False after the first failed write: the run goes on uncached

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"

    @staticmethod
    def make_key(image_sha256: str, model_sha256: str, normalization: str, tiling: str) -> str:
        text = f"samzoo-embeddings/{CACHE_FORMAT}|{image_sha256}|{model_sha256}|{normalization}|{tiling}"
        return hashlib.sha256(text.encode()).hexdigest()

    def folder(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def _write_failed(self, err: OSError) -> None:
        if self.writable:
            log.warning("embedding cache %s is not writable (%s); continuing without caching embeddings",
                        self.directory, err.strerror or err)
        self.writable = False

    def describe(self, key: str, description: dict[str, Any]) -> None:
        """Write the key's manifest (once; it only documents what the key was made of)."""
        if not self.writable:
            return
        folder = self.folder(key)
        manifest = folder / "manifest.json"
        try:
            if manifest.is_file():
                return
            folder.mkdir(parents=True, exist_ok=True)
            payload = {"format": CACHE_FORMAT, "key": key, **description}
            _atomic_write(manifest, lambda f: f.write(json.dumps(payload, indent=1, sort_keys=True).encode()))
        except OSError as err:
            self._write_failed(err)

    def load(self, key: str, entry: str, *, expected_channels: int | None = None) -> CachedEmbedding | None:
        """The stored embedding, or None when it is absent or unreadable (never raises)."""
        folder = self.folder(key)
        sidecar = folder / f"{entry}.json"
        if not sidecar.is_file():
            self.misses += 1
            return None
        try:
            meta = json.loads(sidecar.read_text())
            embedding = np.load(folder / f"{entry}.npy", allow_pickle=False)
            input_shape = tuple(int(v) for v in meta["input_shape"])
            ok = (embedding.ndim == 3 and embedding.dtype == np.float32 and len(input_shape) == 2
                  and list(embedding.shape) == list(meta["shape"])
                  and (expected_channels is None or embedding.shape[0] == expected_channels)
                  and meta.get("sha256") == _array_sha256(embedding)
                  and bool(np.isfinite(embedding).all()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:  # present but damaged: recomputed (and overwritten by save), never used
            self.misses += 1
            self.corrupt += 1
            log.warning("cached embedding %s/%s is damaged; recomputing it", key[:12], entry)
            return None
        self.hits += 1
        return CachedEmbedding(embedding, input_shape)  # type: ignore[arg-type]

    def save(self, key: str, entry: str, embedding: np.ndarray, input_shape: tuple[int, int],
             window: tuple[slice, slice] | None = None) -> None:
        """Store one window embedding atomically (the sidecar JSON, with the bytes' SHA-256, last).
        Non-finite embeddings are not stored; a failed write disables the cache for this run."""
        if not self.writable:
            return
        array = np.ascontiguousarray(embedding, dtype=np.float32)
        if not np.isfinite(array).all():
            return
        folder = self.folder(key)
        meta = {"shape": list(array.shape), "input_shape": [int(v) for v in input_shape],
                "sha256": _array_sha256(array)}
        if window is not None:
            meta["window"] = [[int(s.start), int(s.stop)] for s in window]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{entry}.json").unlink(missing_ok=True)  # incomplete until the new sidecar lands
            _atomic_write(folder / f"{entry}.npy", lambda f: np.save(f, array, allow_pickle=False))
            _atomic_write(folder / f"{entry}.json", lambda f: f.write(json.dumps(meta).encode()))
        except OSError as err:
            self._write_failed(err)


def as_embedding_cache(value: "EmbeddingCache | str | os.PathLike | bool | None") -> EmbeddingCache | None:
    """``None``/``False`` -> no cache, ``True`` -> the default folder, a path -> that folder."""
    if value is None or value is False:
        return None
    if value is True:
        return EmbeddingCache()
    if isinstance(value, EmbeddingCache):
        return value
    if isinstance(value, (str, os.PathLike)):
        return EmbeddingCache(value)
    from ..errors import InputError

    raise InputError(f"embedding_cache must be None, True, a folder path or an EmbeddingCache, got {value!r}")


def window_entry(window: tuple[slice, slice] | None) -> str:
    """Entry name of a window: ``full`` or ``y<start>-<stop>_x<start>-<stop>``."""
    if window is None:
        return "full"
    (ys, xs) = window
    return f"y{ys.start}-{ys.stop}_x{xs.start}-{xs.stop}"
