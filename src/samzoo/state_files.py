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
    kind = _file_kind(path)
    if kind == "safetensors" or path.suffix.lower() == ".safetensors":
        state = _read_safetensors(path)
    elif kind == "unknown":
        raise CheckpointError(f"{path} is not a checkpoint: neither PyTorch's format (a zip or a pickle) nor "
                              "safetensors")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            state = _tensors_of_pickled_checkpoint(path, err)
        except Exception as err:  # torch.load raises many types on foreign bytes (IndexError, KeyError, ...)
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (damaged or cut short?): "
                                  f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    check_tensor_storage(state, path)
    return state


def _file_kind(path: Path) -> str:
    """``torch`` (zip or legacy pickle), ``safetensors`` or ``unknown``, from the first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        header_length = int.from_bytes(head[:8], "little")
        if 0 < header_length < path.stat().st_size:
            return "safetensors"
    return "unknown"


def _tensors(value: Any, prefix: str = ""):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{prefix}[{i}]")


def check_tensor_storage(state: Mapping[str, Any], path: Path) -> None:
    """Refuse tensors that claim more elements than the file stores for them (stride-0 or
    overlapping views): a 7 MB file can describe a 12.9 GB tensor that copying into a model
    would allocate. Real weights are never such views."""
    for name, tensor in _tensors(state):
        if tensor.is_meta or tensor.layout != torch.strided or tensor.numel() == 0:
            continue
        stored = tensor.untyped_storage().nbytes() // max(1, tensor.element_size())
        if tensor.numel() > stored or 0 in tensor.stride():
            raise CheckpointError(
                f"{path}: tensor {name} claims shape {tuple(tensor.shape)} ({tensor.numel():,} values) but the file "
                f"stores {stored:,} for it (a stride-0 or overlapping view); refusing to expand it")


def _tensors_of_pickled_checkpoint(path: Path, refusal: Exception) -> Mapping[str, Any]:
    from .tensor_unpickler import SkippedObject, read_tensors_only

    try:
        state, skipped = read_tensors_only(path)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Unsupported global" in str(refusal) or "GLOBAL" in str(refusal):
            raise CheckpointError(
                f"{path} holds Python objects that safe loading (weights_only=True) refuses, and their tensors "
                f"cannot be read apart from them ({reason}); re-save it as a plain dict of tensors") from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (damaged or cut short?): {reason}") from None
    weights = state.get("model_state", state) if isinstance(state, Mapping) else None
    if not isinstance(weights, Mapping) or not any(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(
            f"{path} holds Python objects that safe loading (weights_only=True) refuses and no weights "
            "beside them; re-save the model as a plain dict of tensors"
        )
    if skipped:
        log.warning("%s also pickles Python objects of %d type(s) (e.g. %s); they were not loaded, only the "
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
