"""Cache folders of multi-file models, and how a folder of files maps to roles."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .download import META_DIR, atomic_write_text, is_trusted
from .resolve import CHECKPOINT_SUFFIXES, PACKAGE_YAML_NAMES

ROLE_CHECKPOINT = "checkpoint"
ROLE_DECODER = "decoder"
ROLE_PACKAGE = "package"


def complete_marker(item: Path) -> Path:
    return item / META_DIR / "complete.json"


def write_complete(item: Path, *, model_id: str, source: str, files: dict[str, str]) -> None:
    """Mark ``item`` complete: every file in ``files`` (name -> hash) was downloaded and verified."""
    atomic_write_text(complete_marker(item),
                      json.dumps({"id": model_id, "source": source, "files": files}, indent=1))


def read_complete(item: Path) -> dict | None:
    try:
        return json.loads(complete_marker(item).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def complete_and_trusted(item: Path) -> bool:
    """True when ``item`` was marked complete and all its files are still trusted."""
    marker = read_complete(item)
    if marker is None:
        return False
    return all(is_trusted(item / name, expected or None) for name, expected in marker.get("files", {}).items())


def is_package_yaml(name: str) -> bool:
    lowered = name.lower()
    return lowered in PACKAGE_YAML_NAMES or lowered.endswith(".bioimageio.yaml")


def role_of_file(path: Path) -> str:
    """checkpoint / decoder / package for one file, by its name."""
    lowered = path.name.lower()
    if lowered.endswith(".zip"):
        return ROLE_PACKAGE
    stem = lowered.rsplit(".", 1)[0] if "." in lowered else lowered
    if stem.endswith("_decoder") or stem == "decoder":
        return ROLE_DECODER
    return ROLE_CHECKPOINT


def classify_folder(folder: Path) -> dict[str, Path]:
    """Roles of the top-level files of ``folder``:

    * ``package``: the folder itself when it holds rdf.yaml / bioimageio.yaml / *.bioimageio.yaml,
      else the only .zip file
    * ``checkpoint``: the only .pt/.pth/.ckpt/.bin file whose name does not end in ``_decoder``
    * ``decoder``: the only such file whose name ends in ``_decoder``
    Ambiguous roles (several candidates) are left out.
    """
    folder = Path(folder)
    names = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (p.is_file()))
    roles: dict[str, Path] = {}
    if any(is_package_yaml(p.name) for p in names):
        roles[ROLE_PACKAGE] = folder
    else:
        zips = [p for p in names if p.name.lower().endswith(".zip")]
        if len(zips) == 1:
            roles[ROLE_PACKAGE] = zips[0]
    weights = [p for p in names if p.suffix.lower() in CHECKPOINT_SUFFIXES]
    decoders = [p for p in weights if role_of_file(p) == ROLE_DECODER]
    checkpoints = [p for p in weights if p not in decoders]
    if len(checkpoints) == 1:
        roles[ROLE_CHECKPOINT] = checkpoints[0]
    if len(decoders) == 1:
        roles[ROLE_DECODER] = decoders[0]
    return roles


def folder_size(path: Path) -> int:
    """Bytes under ``path`` (files counted once, symlinks not followed)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            try:
                if not p.is_symlink():
                    total += p.stat().st_size
            except OSError:
                pass
    return total
