"""Reading SAMCell checkpoints (the authors' transformers layout and samzoo's own) and writing samzoo's.

* released: a bare transformers ``SamModel`` state dict (``samcell-generalist.pt``, ``.bin`` or
  ``.safetensors``), renamed to segment-anything's layout by :mod:`.hf_keys`;
* samzoo: ``{"samzoo_format", "family": "samcell", "config", "model_state" (segment-anything
  layout), "params" (tuned thresholds), "metadata"}``.

The architecture is recovered from the weight shapes, so a SAM-B file and a smaller test model
load the same way; loading is strict (every weight present, every shape right).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError
from ..microsam.checkpoint import describe_mismatch, infer_config
from ..microsam.config import ModelConfig
from .hf_keys import hf_to_sam, is_hf_sam_state, sam_to_hf
from .model import SamcellModel

SAMZOO_FORMAT = 1
FAMILY_NAME = "samcell"


def recognises(state: Mapping[str, Any]) -> bool:
    """A samzoo SAMCell checkpoint, or any transformers ``SamModel`` state dict."""
    if "samzoo_format" in state:
        return state.get("family") == FAMILY_NAME
    return is_hf_sam_state(state)


def load_from_state(path: str | os.PathLike, state: Mapping[str, Any]) -> SamcellModel:
    """Build the model ``state`` (read from ``path``) describes and load its weights strictly."""
    name = Path(path).name
    if "samzoo_format" in state:
        sam_state = dict(state["model_state"])
        config = ModelConfig.from_dict(dict(state["config"]))
        params, metadata = dict(state.get("params", {})), dict(state.get("metadata", {}))
    else:
        sam_state = hf_to_sam(state, name)
        config = infer_config(sam_state).replace(ais_decoder=False, normalization="minmax")
        params, metadata = {}, {"source_flavour": "transformers SamModel", "source_file": name}
    model = SamcellModel(config, params=params, metadata=metadata)
    problem = describe_mismatch(model.sam.state_dict(), sam_state, f"SAMCell weights in {name}")
    if problem:
        raise CheckpointError(problem)
    model.sam.load_state_dict(sam_state, strict=True)
    return model.eval()


def checkpoint_dict(model: SamcellModel) -> dict[str, Any]:
    return {
        "samzoo_format": SAMZOO_FORMAT,
        "family": FAMILY_NAME,
        "config": model.config.to_dict(),
        "model_state": {k: v.detach().cpu().clone() for k, v in model.sam.state_dict().items()},
        "params": dict(model.params),
        "metadata": dict(model.metadata),
    }


def save_checkpoint(model: SamcellModel, path: str | os.PathLike) -> Path:
    """samzoo's SAMCell checkpoint, written atomically."""
    from ...io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint_dict(model), tmp)
    return path


def hf_state_dict(model: SamcellModel) -> dict[str, torch.Tensor]:
    """The weights in the authors' layout (loads into transformers' ``SamModel`` and SAMCell)."""
    return sam_to_hf({k: v.detach().cpu() for k, v in model.sam.state_dict().items()})
