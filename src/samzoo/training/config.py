"""Training configs as files: YAML in, YAML out, for every family.

What a config *means* belongs to its family (μSAM: ``samzoo.families.microsam.training.config``);
this module only reads a YAML file into a plain mapping (one-line errors naming the file, line and
column) and writes a config object's ``to_dict()`` next to a run's checkpoints, so every trained
model has its recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError


def read_config_data(path: str | Path) -> dict[str, Any]:
    """A training config YAML as a plain mapping (any family's settings)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"training config not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: a training config must be UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise InputError(f"{path}: invalid YAML{where}: {problem}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a training config must be a YAML mapping")
    return data


def save_config(config: Any, path: str | Path) -> Path:
    """Write ``config.to_dict()`` as YAML (the exact recipe of a run)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path
