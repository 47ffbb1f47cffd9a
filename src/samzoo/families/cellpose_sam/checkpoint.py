"""Reading and writing Cellpose-SAM checkpoints (strictly; ``torch.load(weights_only=True)`` only).

Two layouts:

* cellpose's (``cpsam``, ``cpsam_v2``, models fine-tuned with cellpose): a plain state dict of
  ``CPSAM`` -- ``encoder.*`` (segment-anything's ViT names), ``out.*``, the fixed pixel-shuffle
  matrix ``W2``, and ``diam_labels`` / ``diam_mean``; DataParallel files prefix every key with
  ``module.``. The architecture is read off the tensor shapes.
* samzoo's: ``samzoo_format``, ``family: cellpose_sam``, ``config``, ``params`` (tuned inference
  parameters), ``metadata`` and ``model_state`` (cellpose's layout, so
  :func:`cellpose_state_dict` gives a file cellpose itself loads).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError
from .config import FAMILY_NAME, CpsamConfig
from .model import CellposeSamModel

SAMZOO_FORMAT = 1
_EXTRA_KEYS = ("W2", "diam_labels", "diam_mean")
_PREFIX = "module."


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    keys = [str(k) for k in state]
    if keys and all(k.startswith(_PREFIX) for k in keys):
        return {k[len(_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def is_cellpose_layout(state: Mapping[str, Any]) -> bool:
    """A cellpose 4 state dict: the ``W2`` key cellpose itself requires, next to ``encoder.*`` / ``out.*``."""
    keys = set(_strip_prefix({str(k): None for k in state}))
    return "W2" in keys and any(k.startswith("encoder.") for k in keys) and any(k.startswith("out.") for k in keys)


def recognises(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` (a checkpoint's top-level dict) is a Cellpose-SAM checkpoint."""
    if "samzoo_format" in state:
        return state.get("family") == FAMILY_NAME
    return is_cellpose_layout(state)


def infer_config(state: Mapping[str, torch.Tensor], name: str = "cpsam") -> CpsamConfig:
    """The architecture of a cellpose-layout state dict, from its tensor shapes."""
    if "encoder.cls_token" in state:
        raise CheckpointError("this is a Cellpose-DINO (cpdino) checkpoint; only the SAM-based Cellpose-SAM "
                              "(cpsam, cpsam_v2) is supported")
    needed = ("encoder.patch_embed.proj.weight", "encoder.pos_embed", "encoder.blocks.0.attn.rel_pos_h",
              "encoder.blocks.0.mlp.lin1.weight", "encoder.neck.0.weight", "W2")
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"Cellpose-SAM checkpoint lacks {', '.join(missing)}")
    proj = state["encoder.patch_embed.proj.weight"]
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks."))
    head_dim = int(state["encoder.blocks.0.attn.rel_pos_h"].shape[1])
    rows = []
    for i in range(depth):
        table = state.get(f"encoder.blocks.{i}.attn.rel_pos_h")
        if table is None:
            raise CheckpointError(f"Cellpose-SAM checkpoint lacks encoder.blocks.{i}.attn.rel_pos_h")
        rows.append(int(table.shape[0]))
    w2 = state["W2"]
    nout = int(w2.shape[1])
    return CpsamConfig(
        name=name, img_size=int(state["encoder.pos_embed"].shape[1]) * patch, patch_size=patch,
        embed_dim=embed_dim, depth=depth, num_heads=max(1, embed_dim // head_dim),
        mlp_ratio=int(state["encoder.blocks.0.mlp.lin1.weight"].shape[0]) / embed_dim,
        neck_dim=int(state["encoder.neck.0.weight"].shape[0]), nout=nout, rel_pos_rows=tuple(rows),
    )


def describe_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any], what: str) -> str | None:
    """Missing / unexpected keys and shape mismatches in one readable line, or None if they fit."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, got {tuple(given[k].shape)}"
              for k in expected if k in given and tuple(expected[k].shape) != tuple(given[k].shape)]

    def listing(title: str, items: list[str]) -> str:
        more = f" (+{len(items) - 6} more)" if len(items) > 6 else ""
        return f"{len(items)} {title}: {', '.join(items[:6])}{more}"

    parts = [listing(t, i) for t, i in (("missing", missing), ("unexpected", unexpected),
                                        ("shape mismatches", shapes)) if i]
    return f"{what} does not match the Cellpose-SAM architecture: " + "; ".join(parts) if parts else None


def _check_w2(w2: torch.Tensor, config: CpsamConfig, source: str) -> None:
    channels = config.nout * config.patch_size ** 2
    expected = torch.eye(channels).reshape(channels, config.nout, config.patch_size, config.patch_size)
    if tuple(w2.shape) != tuple(expected.shape) or not torch.equal(w2.float().cpu(), expected):
        raise CheckpointError(f"{source}: W2 is not cellpose's fixed pixel-shuffle matrix "
                              f"(shape {tuple(w2.shape)}); the file is damaged or not a Cellpose-SAM model")


def _scalar(value: Any, default: float) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.reshape(-1)[0])
    return default


def load_network_state(model: CellposeSamModel, weights: Mapping[str, Any], source: str) -> None:
    """Strictly load cellpose-layout ``weights`` (W2 / diameters included or not) into ``model``."""
    weights = dict(weights)
    if "W2" in weights:
        _check_w2(weights.pop("W2"), model.config, source)
    model.diam_labels = _scalar(weights.pop("diam_labels", None), model.diam_labels)
    model.diam_mean = _scalar(weights.pop("diam_mean", None), model.diam_mean)
    problem = describe_mismatch(model.net.state_dict(), weights, f"weights in {source}")
    if problem:
        raise CheckpointError(problem)
    model.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, strict=True)


def load_from_state(path: str | os.PathLike, state: Mapping[str, Any], **_: Any) -> CellposeSamModel:
    """The model a checkpoint describes, weights loaded strictly (``path`` names the file in errors)."""
    source = Path(path).name
    if "samzoo_format" in state:
        if state.get("family") != FAMILY_NAME:
            raise CheckpointError(f"{source} is a samzoo checkpoint of family {state.get('family')!r}, not {FAMILY_NAME}")
        for key in ("config", "model_state"):
            if key not in state:
                raise CheckpointError(f"{source}: samzoo Cellpose-SAM checkpoint without '{key}'")
        config = CpsamConfig.from_dict(dict(state["config"]))
        weights = _strip_prefix(state["model_state"])
        model = CellposeSamModel(config, params=dict(state.get("params") or {}),
                                 metadata=dict(state.get("metadata") or {}))
    else:
        if not is_cellpose_layout(state):
            raise CheckpointError(f"{source} is not a Cellpose-SAM checkpoint (no W2 / encoder.* / out.* keys)")
        weights = _strip_prefix(state)
        config = infer_config(weights, name=Path(path).stem or "cpsam")
        model = CellposeSamModel(config, metadata={"name": Path(path).stem, "source_flavour": "cellpose"})
    from .params import resolve_params

    resolve_params(model.params)  # stored parameters must be valid
    load_network_state(model, weights, source)
    return model.eval()


def load_checkpoint(path: str | os.PathLike) -> CellposeSamModel:
    from ...state_files import read_state

    return load_from_state(path, read_state(path))


def cellpose_state_dict(model: CellposeSamModel) -> dict[str, torch.Tensor]:
    """The network in cellpose's own layout (a file cellpose's ``CellposeModel`` loads)."""
    c = model.config
    channels = c.nout * c.patch_size ** 2
    state = {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}
    state["W2"] = torch.eye(channels).reshape(channels, c.nout, c.patch_size, c.patch_size)
    state["diam_labels"] = torch.tensor([model.diam_labels])
    state["diam_mean"] = torch.tensor([model.diam_mean])
    return state


def checkpoint_dict(model: CellposeSamModel) -> dict[str, Any]:
    return {
        "samzoo_format": SAMZOO_FORMAT,
        "family": FAMILY_NAME,
        "config": model.config.to_dict(),
        "params": dict(model.params),
        "metadata": dict(model.metadata),
        "model_state": cellpose_state_dict(model),
    }


def save_checkpoint(model: CellposeSamModel, path: str | os.PathLike, *, cellpose_layout: bool = False) -> Path:
    """Write atomically: samzoo's format, or with ``cellpose_layout`` a plain cellpose state dict."""
    from ...io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(cellpose_state_dict(model) if cellpose_layout else checkpoint_dict(model), tmp)
    return path
