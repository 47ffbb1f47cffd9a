"""Read and write the three checkpoint flavours samzoo meets.

* plain SAM: a bare ``state_dict`` of ``Sam`` (``image_encoder.*``, ``prompt_encoder.*``, ...);
* micro-sam: ``{"model_state": <SAM state>, "decoder_state": <UNETR state without encoder.*>}``,
  the decoder optionally in a separate file (a bare decoder state or ``{"decoder_state": ...}``);
* samzoo: the micro-sam layout plus ``samzoo_format``, ``config``, ``ais_params`` and
  ``metadata`` -- so a samzoo checkpoint also loads in micro-sam unchanged.

Everything is read with ``weights_only=True``: a checkpoint is data, never code. Training
checkpoints of torch-em / micro-sam's trainer also pickle the model object beside its weights;
those are read by :func:`samzoo.state_files.read_state` (tensors only, nothing in the file runs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ...errors import CheckpointError
from ...state_files import read_state
from .ais_decoder import decoder_state
from .config import PRESETS, ModelConfig
from .model import SamzooModel


SAMZOO_FORMAT = 1
_TRAINER_PREFIXES = ("sam.", "module.sam.", "module.")


def checkpoint_flavour(state: Mapping[str, Any]) -> str:
    """``"samzoo"``, ``"micro_sam"`` or ``"sam"``."""
    if "samzoo_format" in state:
        return "samzoo"
    if "model_state" in state:
        return "micro_sam"
    if any(str(k).startswith("image_encoder.") for k in state):
        return "sam"
    raise CheckpointError(
        "not a SAM checkpoint: expected SAM weights (image_encoder.*), a micro-sam checkpoint "
        "(model_state) or a samzoo checkpoint (samzoo_format)"
    )


def _strip_trainer_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """micro-sam's trainer saves the SAM inside a wrapper (``sam.image_encoder...``)."""
    for prefix in _TRAINER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def infer_config(sam_state: Mapping[str, torch.Tensor],
                 ais_state: Mapping[str, torch.Tensor] | None = None) -> ModelConfig:
    """Recover the architecture from weight shapes (plain SAM and micro-sam files carry none)."""
    if "image_encoder.patch_embed.seq.0.c.weight" in sam_state:
        from .tiny_vit import infer_tiny_vit_settings

        base = PRESETS["vit_t"].replace(
            tiny_vit=infer_tiny_vit_settings(sam_state),
            prompt_embed_dim=int(sam_state["image_encoder.neck.0.weight"].shape[0]),
        )
        return base.replace(ais_decoder=bool(ais_state), ais_initial_features=_initial_features(ais_state, base))
    try:
        proj = sam_state["image_encoder.patch_embed.proj.weight"]
        pos = sam_state["image_encoder.pos_embed"]
        neck = sam_state["image_encoder.neck.0.weight"]
        mlp = sam_state["mask_decoder.transformer.layers.0.mlp.lin1.weight"]
        iou_hidden = sam_state["mask_decoder.iou_prediction_head.layers.0.weight"]
    except KeyError as err:
        raise CheckpointError(f"cannot infer the architecture: weight {err.args[0]} is missing") from None
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    grid = int(pos.shape[1])
    depth = 1 + max(int(k.split(".")[2]) for k in sam_state if k.startswith("image_encoder.blocks."))
    rel_h = [sam_state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
    head_dim = int(rel_h[0].shape[1])
    global_idx = tuple(i for i, r in enumerate(rel_h) if r.shape[0] == 2 * grid - 1)
    local = [r.shape[0] for r in rel_h if r.shape[0] != 2 * grid - 1]
    window = (int(local[0]) + 1) // 2 if local else 14
    mask_depth = 1 + max(int(k.split(".")[3]) for k in sam_state
                         if k.startswith("mask_decoder.transformer.layers."))
    named = {(p.embed_dim, p.depth, p.global_attn_indexes): n for n, p in PRESETS.items()}
    name = named.get((embed_dim, depth, global_idx), "custom")
    config = ModelConfig(
        name=name, img_size=grid * patch, patch_size=patch, embed_dim=embed_dim, depth=depth,
        num_heads=embed_dim // head_dim, global_attn_indexes=global_idx, window_size=window,
        prompt_embed_dim=int(neck.shape[0]), mask_decoder_depth=mask_depth,
        mask_decoder_mlp_dim=int(mlp.shape[0]), iou_head_hidden_dim=int(iou_hidden.shape[0]),
        mask_decoder_heads=PRESETS.get(name, PRESETS["vit_b"]).mask_decoder_heads,
        ais_decoder=bool(ais_state), normalization="minmax",
    )
    return config.replace(ais_initial_features=_initial_features(ais_state, config))


def _initial_features(ais_state: Mapping[str, torch.Tensor] | None, fallback: ModelConfig) -> int:
    if ais_state and "out_conv.weight" in ais_state:
        return int(ais_state["out_conv.weight"].shape[1])
    return fallback.ais_initial_features


def describe_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
                      what: str) -> str | None:
    """A readable list of missing / unexpected keys and shape mismatches, or None if they fit."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, got {tuple(given[k].shape)}"
              for k in expected if k in given and tuple(expected[k].shape) != tuple(given[k].shape)]

    def listing(title: str, items: list[str]) -> str:
        more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
        return f"{len(items)} {title}: {', '.join(items[:8])}{more}"

    parts = [listing(t, i) for t, i in (("missing", missing), ("unexpected", unexpected),
                                        ("shape mismatches", shapes)) if i]
    return f"{what} does not match its architecture: " + "; ".join(parts) if parts else None


def _load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    problem = describe_mismatch(module.state_dict(), state, what)
    if problem:
        raise CheckpointError(problem)
    module.load_state_dict(state, strict=True)


def _check_against_skeleton(config: ModelConfig, sam_state: Mapping[str, Any],
                            ais_state: Mapping[str, Any] | None, name: str) -> None:
    """Build the architecture on the meta device (no memory) and compare it with the file's
    tensors, so a small file whose config claims a huge model fails before anything is allocated."""
    try:
        with torch.device("meta"):
            skeleton = SamzooModel(config, with_ais_decoder=ais_state is not None)
    except (ValueError, RuntimeError, TypeError, AssertionError) as err:
        raise CheckpointError(f"{name}: its model config cannot be built: {err}") from None
    problem = describe_mismatch(skeleton.sam.state_dict(), sam_state, f"SAM weights in {name}")
    if problem is None and ais_state is not None:
        problem = describe_mismatch(decoder_state(skeleton.ais_decoder), ais_state, f"AIS decoder weights for {name}")
    if problem:
        raise CheckpointError(problem)


def load_checkpoint(path: str | os.PathLike, *, decoder_path: str | os.PathLike | None = None,
                    config: ModelConfig | None = None) -> SamzooModel:
    """Build the model a checkpoint describes and load its weights (any of the three flavours)."""
    return load_from_state(path, read_state(path), decoder_path=decoder_path, config=config)


def load_from_state(path: str | os.PathLike, state: Mapping[str, Any], *,
                    decoder_path: str | os.PathLike | None = None, config: ModelConfig | None = None) -> SamzooModel:
    """``load_checkpoint`` on an already read ``state`` (``path`` names the file in errors)."""
    flavour = checkpoint_flavour(state)
    for key in ("model_state", "decoder_state"):
        if flavour != "sam" and key in state and not isinstance(state[key], Mapping):
            raise CheckpointError(f"{Path(path).name}: {key} must be a mapping of tensors, got "
                                  f"{type(state[key]).__name__}")
    if flavour == "sam":
        sam_state, ais_state = _strip_trainer_prefix(state), None
    else:
        sam_state = _strip_trainer_prefix(state["model_state"])
        ais_state = state.get("decoder_state")
    if decoder_path is not None:
        extra = read_state(decoder_path)
        ais_state = dict(extra.get("decoder_state", extra))
    name = Path(path).name
    if flavour == "samzoo":
        for key in ("ais_params", "metadata"):
            if not isinstance(state.get(key, {}), Mapping):
                raise CheckpointError(f"{name}: {key} must be a mapping, got {type(state[key]).__name__}")
    if flavour == "samzoo" and config is None:
        config = ModelConfig.from_dict(state["config"])
    if config is None:
        config = infer_config(sam_state, ais_state)
    if ais_state is not None and not config.ais_decoder:
        config = config.replace(ais_decoder=True)
    _check_against_skeleton(config, sam_state, ais_state, name)
    model = SamzooModel(
        config,
        with_ais_decoder=ais_state is not None,
        ais_params=dict(state.get("ais_params", {})) if flavour == "samzoo" else None,
        metadata=dict(state.get("metadata", {})) if flavour == "samzoo" else {"source_flavour": flavour},
    )
    _load_strict(model.sam, sam_state, f"SAM weights in {name}")
    if ais_state is not None:
        problem = describe_mismatch(decoder_state(model.ais_decoder), ais_state,
                                    f"AIS decoder weights for {Path(path).name}")
        if problem:
            raise CheckpointError(problem)
        model.ais_decoder.load_state_dict(ais_state, strict=False)
    return model.eval()


def checkpoint_dict(model: SamzooModel, *, half: bool = False) -> dict[str, Any]:
    """The samzoo checkpoint as a plain dict (tensors, str, numbers, lists): micro-sam-compatible."""
    def store(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu().clone()
        return t.half() if half and t.is_floating_point() else t

    out: dict[str, Any] = {
        "samzoo_format": SAMZOO_FORMAT,
        "family": "microsam",
        "config": model.config.to_dict(),
        "model_state": {k: store(v) for k, v in model.sam.state_dict().items()},
        "ais_params": dict(model.ais_params),
        "metadata": dict(model.metadata),
    }
    if model.ais_decoder is not None:
        out["decoder_state"] = {k: store(v) for k, v in decoder_state(model.ais_decoder).items()}
    return out


def save_checkpoint(model: SamzooModel, path: str | os.PathLike, *, half: bool = False) -> Path:
    """Write atomically; ``half`` stores float weights as float16 (loads back as float32)."""
    from ...io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint_dict(model, half=half), tmp)
    return path
