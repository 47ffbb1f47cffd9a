"""Read and write CellSAM checkpoints, strictly.

Accepted layouts (``torch.load(weights_only=True)`` only):
- the published one: a flat state dict with ``model.*`` (SAM ViT-B), optionally ``model_cp.*``
  (second SAM, used when present) and ``cellfinder.decode_head.*`` -- 1,041 keys with ``model_cp``,
  optionally wrapped as ``{"state_dict": {...}}``;
- samzoo's own: ``{"samzoo_format": 1, "family": "cellsam", "config": {...}, "state_dict": {...},
  "params": {...}, "metadata": {...}}`` (any CellSAMConfig, e.g. the small training presets).

Unlike the reference loader (``strict=False``), every missing, unexpected or mis-shaped key is an
error that names the keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ...errors import CheckpointError
from .config import PUBLISHED, CellSAMConfig
from .model import CellSAMMetadata, CellSAMModel
from .networks import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from .params import CellSAMParams

FAMILY_TAG = "cellsam"
PREFIXES = ("model.", "model_cp.", "cellfinder.")


def expected_layout(config: CellSAMConfig = PUBLISHED, with_model_cp: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a CellSAM state dict (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        model = CellSAMModel(config, with_model_cp=with_model_cp)
    return {k: tuple(v.shape) for k, v in model.networks.state_dict().items()}


def looks_like_cellsam(state: Any) -> bool:
    """Whether a loaded object is a CellSAM checkpoint (published or samzoo's)."""
    if not isinstance(state, Mapping):
        return False
    if state.get("family") == FAMILY_TAG:
        return True
    inner = state.get("state_dict", state) if not any(str(k).startswith("model.") for k in state) else state
    return isinstance(inner, Mapping) and any(str(k).startswith("cellfinder.decode_head.") for k in inner)


def unwrap(state: Any, where: str = "checkpoint") -> tuple[dict[str, torch.Tensor], CellSAMConfig, dict[str, Any]]:
    """(state dict, config, extras) of a loaded checkpoint object; CheckpointError when it is none."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: not a CellSAM checkpoint (a {type(state).__name__}, expected a dict)")
    extras: dict[str, Any] = {}
    config = PUBLISHED
    if state.get("family") == FAMILY_TAG:
        try:
            config = CellSAMConfig.from_dict(dict(state["config"]))
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{where}: samzoo CellSAM checkpoint without a valid 'config' ({err})") from None
        extras = {k: state.get(k) for k in ("params", "metadata")}
        state = state.get("state_dict")
    elif "state_dict" in state and not any(str(k).startswith("model.") for k in state):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: the 'state_dict' entry is not a dict")
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: non-tensor entries in the state dict: {_few(bad)}")
    return dict(state), config, extras


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def check_layout(state: Mapping[str, torch.Tensor], config: CellSAMConfig, where: str = "checkpoint") -> bool:
    """Raise a one-line CheckpointError unless ``state`` has exactly the CellSAM keys and shapes of
    ``config`` (with or without ``model_cp.*``); return whether it holds ``model_cp``."""
    has_cp = any(k.startswith("model_cp.") for k in state)
    expected = expected_layout(config, with_model_cp=has_cp)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} (file {tuple(state[k].shape)}, model {expected[k]})"
                    for k in set(state) & set(expected) if tuple(state[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} wrong shape(s): {_few(shapes, 2)}")
    if problems:
        layout = f"{len(expected)}-key CellSAM layout" + ("" if has_cp else " without model_cp")
        raise CheckpointError(f"{where} does not match the {layout}: " + "; ".join(problems))
    return has_cp


def model_from_state(state: Mapping[str, torch.Tensor], config: CellSAMConfig = PUBLISHED, *,
                     where: str = "checkpoint", params: CellSAMParams | None = None,
                     metadata: CellSAMMetadata | None = None) -> CellSAMModel:
    """A CellSAMModel holding exactly ``state`` (checked first). The model is built on the meta device
    and takes the file's tensors without copying them."""
    has_cp = check_layout(state, config, where)
    with torch.device("meta"):
        model = CellSAMModel(config, with_model_cp=has_cp, params=params, metadata=metadata)
    model.networks.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    for sam in filter(None, (model.networks.model, model.networks.model_cp)):
        # SAM's pixel mean/std are non-persistent buffers, not part of any state dict.
        sam.register_buffer("pixel_mean", torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1), False)
        sam.register_buffer("pixel_std", torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1), False)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # pragma: no cover - would be a bug in the layout
        raise CheckpointError(f"{where}: tensors left uninitialised: {_few(leftover)}")
    return model.eval()


def load_cellsam(path: str | os.PathLike, *, metadata: CellSAMMetadata | None = None) -> CellSAMModel:
    """Read a CellSAM checkpoint file (see the module docstring for the layouts)."""
    from ...state_files import read_state

    path = Path(path)
    return load_from_state(path, read_state(path), metadata=metadata)


def load_from_state(path: str | os.PathLike, raw: Any, *, metadata: CellSAMMetadata | None = None) -> CellSAMModel:
    """A CellSAMModel from an already read checkpoint object (``samzoo.state_files.read_state``)."""
    path = Path(path)
    state, config, extras = unwrap(raw, str(path))
    params = CellSAMParams(**extras["params"]) if extras.get("params") else None
    if metadata is None:
        metadata = CellSAMMetadata.from_dict(extras["metadata"]) if extras.get("metadata") else CellSAMMetadata()
    if not metadata.source:
        metadata.source = str(path)
    return model_from_state(state, config, where=str(path), params=params, metadata=metadata)


def save_cellsam(model: CellSAMModel, path: str | os.PathLike, *, published_layout: bool = False) -> Path:
    """Write ``model`` atomically: samzoo's layout (config, params, metadata) or, with
    ``published_layout``, the bare state dict the reference reads (only for the published config)."""
    from ...io import atomic_path

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.networks.state_dict().items()}
    if published_layout:
        if model.config != PUBLISHED:
            raise CheckpointError("the published CellSAM layout needs the published architecture")
        obj: Any = state
    else:
        obj = {"samzoo_format": 1, "family": FAMILY_TAG, "config": model.config.to_dict(), "state_dict": state,
               "params": model.params.to_dict(), "metadata": model.metadata.to_dict()}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path
