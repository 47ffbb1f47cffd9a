"""One-call model loading for every family: IDs, paths, packages -> a ready model.

A checkpoint's family is taken from the checkpoint itself (``samzoo.families.detect_family`` asks
each registered family whether it reads that layout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .default_model import DEFAULT_MODEL_ID, default_checkpoint_path
from .errors import CheckpointError, ModelNotFoundError, SamzooError
from .families import detect_family
from .state_files import read_state

_PACKAGE_SUFFIXES = (".zip",)
_PACKAGE_FILES = ("rdf.yaml", "bioimageio.yaml")


def _is_package(path: Path) -> bool:
    if path.is_dir():
        return any((path / name).is_file() for name in _PACKAGE_FILES)
    return path.suffix.lower() in _PACKAGE_SUFFIXES


def load_model(model: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
               offline: bool | None = None, registry: Any = None) -> Any:
    """Load ``model`` -- a checkpoint of any family (samzoo, micro-sam, SAM, ...), a BioImage.IO
    package (zip or folder), or any ID the resolver knows (registry names such as ``vit_b_lm``,
    bioimage.io IDs, ``hf://org/repo``, Zenodo DOIs, URLs). ``None`` means the shipped default.
    ``device``: ``"auto"`` (the GPU when there is one), ``"cpu"``, ``"cuda[:N]"``; None keeps the CPU.
    ``registry``: extra registry file(s)/URL(s) for resolving IDs.

    >>> model = load_model("vit_b_lm", device="cuda")  # doctest: +SKIP
    """
    if model is not None and not str(model).strip():
        raise ModelNotFoundError("the model ID is empty; give a model ID or path, or leave it out for the default")
    if model is None or str(model) == DEFAULT_MODEL_ID:
        loaded = load_checkpoint_file(default_checkpoint_path())
    else:
        path = Path(os.fspath(model)).expanduser()
        if path.exists():
            loaded = _load_local(path)
        elif _looks_like_path(str(model)):
            raise ModelNotFoundError(f"model file not found: {path}")
        else:
            loaded = _load_remote(str(model), offline=offline, registry=registry)
    if device is not None:
        from .devices import inference_device

        loaded = loaded.to(inference_device(device))
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


def _load_remote(model_id: str, *, offline: bool | None, registry: Any = None) -> Any:
    from .hub import fetch_files
    from .hub.fetch import main_file

    files = fetch_files(model_id, offline=offline, registry=registry)
    main = Path(main_file(files))
    try:
        return _load_local(main, decoder=files.get("decoder"))
    except CheckpointError:
        _forget_fetched_package(main)
        _raise_with_unverified_note(files, model_id)
        raise
    except SamzooError:
        _raise_with_unverified_note(files, model_id)
        raise


def _raise_with_unverified_note(files: dict, model_id: str) -> None:
    """Re-raise the current error with a hint when a file came without a hash or size to verify it."""
    import sys

    from .hub.download import is_unverified

    err = sys.exc_info()[1]
    unverified = [str(p) for p in files.values() if Path(p).is_file() and is_unverified(p)]
    if err is None or not unverified:
        return
    raise type(err)(f"{err} -- note: {', '.join(unverified)} was downloaded without a hash or size to "
                    f"verify it and may be incomplete; remove it with `samzoo cache clear {model_id}` "
                    "and fetch again") from None


def _forget_fetched_package(path: Path) -> None:
    """A downloaded package folder that cannot be loaded (its hashes were right, its content is
    not) leaves the cache, so a bad package is never kept as if it were usable."""
    import shutil

    from .cache import cache_dir

    root = cache_dir().resolve()
    path = path.resolve()
    if path.is_dir() and root in path.parents:
        shutil.rmtree(path, ignore_errors=True)
