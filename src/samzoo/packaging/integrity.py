"""Check a BioImage.IO package before anything in it is used: valid description, every file present,
every hash right.

Why here and not only at download time: a package on disk can be edited after it was written (a
package with zeroed weights and an unchanged rdf.yaml used to load and segment nothing, silently),
and packages arrive from many places (zips, folders, rdf.yaml URLs, bioimage.io IDs). So every
consumer inside samzoo -- ``samzoo.load_model`` and every command that takes a package -- calls
:func:`check_package` first.

* :func:`validate_description` runs bioimageio.spec's own validation of the description (without
  its I/O checks, which would download remote sources); the first problem is reported by field.
* :func:`verify_files` checks every file the description names inside the package (weights,
  architecture source, test tensors, attachments, dependencies, documentation, covers): it must
  exist, and where the description gives a ``sha256`` (or ``config.samzoo.file_sha256`` does, for
  covers and documentation, which format 0.5.10 names by plain path) the file's sha256 must equal it.

Both raise :class:`~samzoo.errors.PackageIntegrityError` (a ``CheckpointError``) with a one-line
message naming the file or field.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping, Protocol

from ..errors import PackageIntegrityError

#: description keys whose values are free-form data, never files of the package
_NOT_FILES = ("config",)
_CHUNK = 1 << 20


class PackageReader(Protocol):
    """What :func:`verify_files` needs of a package (zip or folder): sizes and streams of members."""

    def size(self, name: str) -> int | None: ...

    def open(self, name: str) -> BinaryIO: ...


def _is_remote(source: str) -> bool:
    return "://" in source


def _member(source: str, field: str, where: str) -> str:
    name = posixpath.normpath(source.replace("\\", "/"))
    if name.startswith(("/", "../")) or name == ".." or ":" in name.split("/")[0]:
        raise PackageIntegrityError(f"{where}: {field} {source!r} points outside the package")
    return name


def referenced_files(rdf: Mapping[str, Any]) -> Iterator[tuple[str, str | None, str]]:
    """``(source, sha256 or None, field)`` for every file the description names.

    Format 0.5 (and 0.4 weights/attachments) name files as mappings with ``source`` and optional
    ``sha256``; ``documentation`` and ``covers`` are plain paths (hashed in samzoo's
    ``config.samzoo.file_sha256``, see :mod:`samzoo.packaging.portable_rdf`); format 0.4 also names test
    tensors as plain paths and the architecture as ``file.py:Class`` with ``architecture_sha256``.
    Remote sources (URLs) are not part of the package and are skipped."""

    def walk(value: Any, field: str) -> Iterator[tuple[str, str | None, str]]:
        if isinstance(value, Mapping):
            source = value.get("source")
            if isinstance(source, str):
                sha = value.get("sha256")
                yield source, str(sha).lower() if sha else None, f"{field}.source" if field else "source"
            for key, item in value.items():
                if key == "source" or (not field and key in _NOT_FILES):
                    continue
                if key == "architecture" and isinstance(item, str) and ":" in item:  # format 0.4
                    sha = value.get("architecture_sha256")
                    yield item.rsplit(":", 1)[0], str(sha).lower() if sha else None, f"{field}.architecture"
                    continue
                yield from walk(item, f"{field}.{key}" if field else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, f"{field}[{i}]")

    hashes = _config_hashes(rdf)
    for key in ("documentation",):
        if isinstance(rdf.get(key), str):
            yield rdf[key], hashes.get(rdf[key]), key
    for key in ("covers", "test_inputs", "test_outputs", "sample_inputs", "sample_outputs"):
        items = rdf.get(key)
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, str):
                    yield item, hashes.get(item), f"{key}[{i}]"
    yield from walk(rdf, "")


def _config_hashes(rdf: Mapping[str, Any]) -> dict[str, str]:
    """sha256 of files the format names by plain path (covers, documentation), which samzoo records
    in ``config.samzoo.file_sha256`` (see :mod:`samzoo.packaging.portable_rdf`)."""
    samzoo = ((rdf.get("config") or {}) if isinstance(rdf.get("config"), Mapping) else {}).get("samzoo")
    hashes = samzoo.get("file_sha256") if isinstance(samzoo, Mapping) else None
    if not isinstance(hashes, Mapping):
        return {}
    return {str(k): str(v).lower() for k, v in hashes.items() if isinstance(v, str)}


def file_sha256(open_file: Callable[[], BinaryIO]) -> str:
    digest = hashlib.sha256()
    with open_file() as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(pkg: PackageReader, rdf: Mapping[str, Any], where: str) -> None:
    """Every file the description names exists in ``pkg``; each hashed one matches its sha256."""
    # every name is checked for escaping the package before any file is looked at
    files = [(_member(source, field, where), sha, field)
             for source, sha, field in referenced_files(rdf) if not _is_remote(source)]
    seen: dict[str, str | None] = {}
    for name, sha, field in files:
        if pkg.size(name) is None:
            raise PackageIntegrityError(f"{where}: {name} (named by {field}) is missing from the package")
        if sha is None or seen.get(name) == sha:
            continue
        actual = file_sha256(lambda: pkg.open(name))
        if actual != sha:
            raise PackageIntegrityError(
                f"{where}: {name} does not match the sha256 in its rdf.yaml ({field}: expected {sha[:16]}..., "
                f"got {actual[:16]}...); the file was changed or damaged after packaging")
        seen[name] = sha


def _validated_marker(rdf: Mapping[str, Any]) -> Path | None:
    """Where the cache remembers that this exact description passed this bioimageio.spec's validation.

    Why: importing bioimageio.spec costs seconds (more than the validation itself), and the same
    package is loaded again and again; a description that passed once passes again with the same
    bioimageio.spec version. Only descriptions that passed are remembered."""
    import json
    from importlib.metadata import PackageNotFoundError, version

    from ..cache import cache_dir

    try:
        spec_version = version("bioimageio.spec")
    except PackageNotFoundError:  # pragma: no cover - a dependency
        return None
    try:
        text = json.dumps(rdf, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return None
    key = hashlib.sha256(f"{spec_version}\n{text}".encode()).hexdigest()
    return cache_dir() / "validated-descriptions" / key[:2] / key


def validate_description(rdf: Mapping[str, Any], where: str, file_name: str = "rdf.yaml") -> Path | None:
    """bioimageio.spec's validation of the description's format (no I/O); the first error by field.

    Returns the marker to pass to :func:`remember_valid` once the package was used successfully
    (None when this description is already remembered); nothing is written for a bad package."""
    if rdf.get("type") != "model":
        raise PackageIntegrityError(f"{where}: {file_name} field type is {rdf.get('type')!r}, not 'model'")
    marker = _validated_marker(rdf)
    if marker is not None and marker.is_file():
        return None
    _validate_with_spec(rdf, where, file_name)
    return marker


def remember_valid(marker: Path | None) -> None:
    """Remember a description that passed validation and whose package was used without error."""
    if marker is None:
        return
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # a read-only cache only costs the next validation
        pass


def _validate_with_spec(rdf: Mapping[str, Any], where: str, file_name: str) -> None:
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description
    context = ValidationContext(perform_io_checks=False, log_warnings=False, file_name=file_name)
    descr = build_description(dict(rdf), context=context)
    if isinstance(descr, InvalidDescr):
        errors = list(getattr(descr.validation_summary, "errors", None) or [])
        if not errors:
            raise PackageIntegrityError(f"{where}: {file_name} is not a valid BioImage.IO model description")
        first = errors[0]
        loc = ".".join(str(part) for part in first.loc) or "(top level)"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        msg = " ".join(str(first.msg).split())
        raise PackageIntegrityError(
            f"{where}: {file_name} is not a valid BioImage.IO {rdf.get('format_version', '')} model "
            f"description: field {loc}: {msg}{more}")


def check_package(pkg: PackageReader, rdf: Mapping[str, Any], where: str,
                  file_name: str = "rdf.yaml") -> Path | None:
    """The whole check a package gets before use: description format, then files and hashes.
    Returns the validation marker for :func:`remember_valid` (call it when the package was used)."""
    marker = validate_description(rdf, where, file_name)
    verify_files(pkg, rdf, where)
    return marker


def verify_package(path: str | os.PathLike) -> dict[str, Any]:
    """Open the package (zip or folder) at ``path``, check it (:func:`check_package`) and return its
    description. For commands that use a package without loading its model (``samzoo publish``)."""
    from .load import DESCRIPTION_NAMES, _description, _Package

    path = Path(path)
    if not path.exists():
        raise PackageIntegrityError(f"package not found: {path}")
    pkg = _Package(path)
    try:
        rdf = _description(pkg)
        name = next((n for n in DESCRIPTION_NAMES if pkg.size(n) is not None), "rdf.yaml")
        remember_valid(check_package(pkg, rdf, str(path), name))
        return rdf
    finally:
        pkg.close()
