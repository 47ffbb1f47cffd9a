"""Reading checkpoint files safely, for every family: tensors only, never code.

``torch.load(weights_only=True)`` for PyTorch files; ``.safetensors`` through the safetensors
library. Training checkpoints of torch-em / micro-sam's trainer also pickle the model object
beside its weights; those are read by :mod:`samzoo.tensor_unpickler`, which keeps the tensors and
replaces every pickled object by an inert placeholder (nothing in the file runs).
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CheckpointError

log = logging.getLogger(__name__)


def read_state(path: str | os.PathLike) -> Mapping[str, Any]:
    """``torch.load`` with ``weights_only=True`` and errors that name the file; files that also
    pickle Python objects (torch-em / micro-sam training checkpoints) give their tensors only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        state = _tensors_of_pickled_checkpoint(path, err)
    except Exception as err:  # torch.load raises many types on foreign bytes (IndexError, KeyError, ...)
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {type(err).__name__}: {err}") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _tensors_of_pickled_checkpoint(path: Path, refusal: Exception) -> Mapping[str, Any]:
    from .tensor_unpickler import SkippedObject, read_tensors_only

    try:
        state, skipped = read_tensors_only(path)
    except Exception:
        raise CheckpointError(
            f"{path} holds Python objects that safe loading (weights_only=True) refuses; "
            f"re-save it as a plain dict of tensors ({str(refusal).splitlines()[0]})"
        ) from None
    weights = state.get("model_state", state) if isinstance(state, Mapping) else None
    if not isinstance(weights, Mapping) or not any(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(
            f"{path} holds Python objects that safe loading (weights_only=True) refuses and no weights "
            "beside them; re-save the model as a plain dict of tensors"
        )
    log.warning("%s also pickles Python objects (%d classes, e.g. %s); they were not loaded, only the "
                "weights were read", path.name, len(skipped), ", ".join(skipped[:2]))
    return {k: v for k, v in state.items() if not isinstance(v, SkippedObject)}




def _read_safetensors(path: Path) -> Mapping[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{path} is a .safetensors file; reading it needs the safetensors package "
                              "(pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # the library raises its own SafetensorError and OSError types
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None
