"""The model samzoo uses when none is named: a small SAM + AIS decoder shipped inside the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ModelNotFoundError

DEFAULT_MODEL_ID = "samzoo-lm-tiny"


def default_checkpoint_path() -> Path:
    path = Path(str(resources.files("samzoo") / "data" / f"{DEFAULT_MODEL_ID}.pt"))
    if not path.is_file():
        raise ModelNotFoundError(
            f"the shipped default model {DEFAULT_MODEL_ID} is missing from the installation ({path}); "
            "reinstall samzoo or pass --model"
        )
    return path
