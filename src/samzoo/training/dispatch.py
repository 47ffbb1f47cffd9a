"""Which family trains a run, and handing the run to it (``FamilySpec.train``).

``samzoo train`` and ``samzoo.train`` both come here, so a config means the same in both. The
family is the owner of the named preset, the config's ``family:``, or the family of its
``init_checkpoint`` (a local file's layout, or a registry entry's family); a config that names
none of these is a μSAM config (configs predate families).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..families import FamilySpec, all_families, detect_family, get_family

#: the family of configs that name no family (every config written before families existed)
DEFAULT_TRAINING_FAMILY = "microsam"


def training_family(settings: Mapping[str, Any]) -> FamilySpec:
    """The family that trains ``settings`` (a YAML mapping or ``{"preset": name}``)."""
    if "family" in settings:
        return get_family(settings["family"])
    if "preset" in settings:
        name = settings["preset"]
        owner = next((f for f in all_families() if name in f.train_presets), None)
        if owner is None:
            known = [p for f in all_families() for p in f.train_presets]
            raise InputError(f"unknown training preset {name!r}; known: {', '.join(known)}")
        return owner
    init = settings.get("init_checkpoint")
    if init:
        if Path(str(init)).is_file():
            from ..state_files import read_state

            return detect_family(read_state(init), Path(str(init)).name)
        from ..registry import load_registry

        entry = load_registry(None, offline=True).get(str(init))
        if entry is not None:
            return get_family(entry.family)
    return get_family(DEFAULT_TRAINING_FAMILY)


def run_training(settings: Mapping[str, Any], changes: Mapping[str, Any] | None = None, *,
                 progress: bool = True) -> tuple[FamilySpec, Any]:
    """Train with ``settings`` and ``changes`` over them; ``(family, its result)``. The family is
    chosen from ``settings`` alone (the config as written)."""
    family = training_family(settings)
    if family.train is None:
        raise InputError(f"{family.title} models cannot be trained by samzoo yet")
    return family, family.train({**settings, **dict(changes or {})}, progress=progress)
