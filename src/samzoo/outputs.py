"""Output paths checked before any work starts: never over an input, never a surprise overwrite,
never a traceback (or a lost result) because the folder turns out to be unwritable at the end.

Why one module: every writing command (``segment``, ``evaluate --csv``, ``tune -o``, ``demo -o``,
``card render -o``, ``train -o``, ``package -o``, ``fetch``'s cache) needs the same three checks,
and doing them after minutes of computation loses the result. The policy, decided once:

* an output that is one of the command's inputs is refused, even with ``--overwrite``;
* an existing output *file* is refused unless ``overwrite`` is set (the error says ``--overwrite``);
  output *folders* may exist (commands write named files inside them);
* the nearest existing ancestor folder must be a folder (not a file in the way) and writable,
  which is proven by creating and removing a probe file (``os.access`` lies for root and on
  read-only mounts).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError


def _existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def check_writable_folder(folder: str | os.PathLike[str], what: str) -> Path:
    """Raise ``InputError`` unless ``folder`` exists as a writable folder or can be created."""
    target = Path(folder).expanduser()
    if target.exists() and not target.is_dir():
        raise InputError(f"{what} {target} is a file, not a folder")
    anchor = _existing_ancestor(target)
    if not anchor.is_dir():
        raise InputError(f"cannot create {what} {target}: {anchor} is a file, not a folder")
    probe = anchor / f".samzoo-write-probe-{uuid.uuid4().hex[:12]}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise InputError(f"cannot write {what} {target}: {anchor} is not writable ({err.strerror})") from None
    probe.unlink(missing_ok=True)
    return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: str | os.PathLike[str], what: str = "--output", *,
                      inputs: Iterable[str | os.PathLike[str] | None] = (), overwrite: bool = False,
                      suffixes: tuple[str, ...] | None = None) -> Path:
    """Validate an output file path before the work that produces it (see the module docstring).

    ``inputs``: paths the command reads (None entries are ignored); ``suffixes``: allowed
    extensions (lower case, with the dot). Returns the path.
    """
    target = Path(path).expanduser()
    if not str(path).strip():
        raise InputError(f"{what} is empty")
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise InputError(f"{what} must end with {' or '.join(suffixes)}: {path}")
    if target.is_dir():
        raise InputError(f"{what} {target} is a folder; give a file name")
    for source in inputs:
        if source is not None and _same_file(target, Path(source).expanduser()):
            raise InputError(f"{what} {target} is an input of this command; refusing to write over it "
                             "(choose another output name)")
    if target.exists() and not overwrite:
        raise InputError(f"{what} {target} already exists; pass --overwrite to replace it")
    check_writable_folder(target.parent if str(target.parent) else Path("."), f"the folder of {what}")
    return target


def check_distinct_outputs(*paths: Path | None) -> None:
    """Two outputs of one command must not be the same file (one would overwrite the other)."""
    given = [p for p in paths if p is not None]
    seen: dict[Path, Path] = {}
    for p in given:
        key = p.absolute()
        if key in seen:
            raise InputError(f"two outputs name the same file: {p}")
        seen[key] = p
