"""One-call model loading for every family: IDs, paths, packages -> a ready model.

A checkpoint's family is taken from the checkpoint itself (``samzoo.families.detect_family`` asks
each registered family whether it reads that layout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .default_model import DEFAULT_MODEL_ID, default_checkpoint_path
from .errors import CheckpointError, ModelNotFoundError
from .families import detect_family
from .state_files import read_state

_PACKAGE_SUFFIXES = (".zip",)
_PACKAGE_FILES = ("rdf.yaml", "bioimageio.yaml")


def _is_package(path: Path) -> bool:
    if path.is_dir():
        return any((path / name).is_file() for name in _PACKAGE_FILES)
    return path.suffix.lower() in _PACKAGE_SUFFIXES


def load_model(model: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
               offline: bool | None = None) -> Any:
    """Load ``model`` -- a checkpoint of any family (samzoo, micro-sam, SAM, ...), a BioImage.IO
    package (zip or folder), or any ID the resolver knows (registry names such as ``vit_b_lm``,
    bioimage.io IDs, ``hf://org/repo``, Zenodo DOIs, URLs). ``None`` means the shipped default.

    >>> model = load_model("vit_b_lm", device="cuda")  # doctest: +SKIP
    """
    if model is None or str(model) == DEFAULT_MODEL_ID:
        loaded = load_checkpoint_file(default_checkpoint_path())
    else:
        path = Path(os.fspath(model)).expanduser()
        if path.exists():
            loaded = _load_local(path)
        elif _looks_like_path(str(model)):
            raise ModelNotFoundError(f"model file not found: {path}")
        else:
            loaded = _load_remote(str(model), offline=offline)
    if device is not None:
        loaded = loaded.to(device)
    return loaded


def _looks_like_path(text: str) -> bool:
    """A local-looking name that does not exist is a typo, not a model ID to look up remotely."""
    return text.startswith((".", "/", "~")) or (text.endswith((".pt", ".pth", ".zip")) and "://" not in text)


def load_checkpoint_file(path: str | os.PathLike, *, decoder_path: str | os.PathLike | None = None) -> Any:
    """A checkpoint file of any family -> its model (the family is recognised from the file)."""
    path = Path(path)
    state = read_state(path)
    family = detect_family(state, path.name)
    return family.load(path, state, decoder_path=Path(decoder_path) if decoder_path else None)


def _load_local(path: Path, decoder: Path | None = None) -> Any:
    if _is_package(path):
        from .packaging.load import load_package_model

        return load_package_model(path)
    if path.is_dir():
        raise ModelNotFoundError(f"{path} is a folder without a BioImage.IO rdf.yaml/bioimageio.yaml")
    return load_checkpoint_file(path, decoder_path=decoder)


def _load_remote(model_id: str, *, offline: bool | None) -> Any:
    from .hub import fetch_files
    from .hub.fetch import main_file

    files = fetch_files(model_id, offline=offline)
    main = Path(main_file(files))
    try:
        return _load_local(main, decoder=files.get("decoder"))
    except CheckpointError:
        _forget_fetched_package(main)
        raise


def _forget_fetched_package(path: Path) -> None:
    """A downloaded package folder that cannot be loaded (its hashes were right, its content is
    not) leaves the cache, so a bad package is never kept as if it were usable."""
    import shutil

    from .cache import cache_dir

    root = cache_dir().resolve()
    path = path.resolve()
    if path.is_dir() and root in path.parents:
        shutil.rmtree(path, ignore_errors=True)
