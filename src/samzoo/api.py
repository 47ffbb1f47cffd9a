"""One-call model loading: IDs, paths, packages -> a ready :class:`SamzooModel`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import ModelNotFoundError
from .models.checkpoint import load_checkpoint
from .models.default import DEFAULT_MODEL_ID, default_checkpoint_path
from .models.model import SamzooModel

_PACKAGE_SUFFIXES = (".zip",)
_PACKAGE_FILES = ("rdf.yaml", "bioimageio.yaml")


def _is_package(path: Path) -> bool:
    if path.is_dir():
        return any((path / name).is_file() for name in _PACKAGE_FILES)
    return path.suffix.lower() in _PACKAGE_SUFFIXES


def load_model(model: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
               offline: bool | None = None) -> SamzooModel:
    """Load ``model`` -- a samzoo/micro-sam/SAM checkpoint path, a BioImage.IO package (zip or
    folder), or any ID the resolver knows (registry names such as ``vit_b_lm``, bioimage.io IDs,
    ``hf://org/repo``, Zenodo DOIs, URLs). ``None`` means the shipped default model.
    """
    if model is None or str(model) == DEFAULT_MODEL_ID:
        loaded = load_checkpoint(default_checkpoint_path())
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


def _load_local(path: Path, decoder: Path | None = None) -> SamzooModel:
    if _is_package(path):
        from .packaging.load import load_package_model

        return load_package_model(path)
    if path.is_dir():
        raise ModelNotFoundError(f"{path} is a folder without a BioImage.IO rdf.yaml/bioimageio.yaml")
    return load_checkpoint(path, decoder_path=decoder)


def _load_remote(model_id: str, *, offline: bool | None) -> SamzooModel:
    from .hub import fetch_files

    files = fetch_files(model_id, offline=offline)
    main = files.get("checkpoint") or files.get("package")
    if main is None:
        raise ModelNotFoundError(f"{model_id} resolved to no checkpoint or package ({sorted(files)})")
    return _load_local(Path(main), decoder=files.get("decoder"))
