"""BioImage.IO resources: an ID (``affable-shark``, ``affable-shark/1.2``) or an rdf.yaml URL.

The ID is resolved by bioimageio.spec itself (``bioimageio.spec.utils.open_bioimageio_yaml``): it
first tries ``settings.collection_http_pattern`` (env ``BIOIMAGEIO_COLLECTION_HTTP_PATTERN``,
default ``https://hypha.aicell.io/bioimage-io/artifacts/{bioimageio_id}/files/rdf.yaml``), then
the ID map ``settings.id_map`` (env ``BIOIMAGEIO_ID_MAP``). bioimageio.spec then lists the
package's files (``get_package_content``, without downloading anything); samzoo downloads each
one through :func:`download_file` (sha256-checked where the rdf gives a hash) into
``<cache>/bioimageio/<id>/`` and writes the package's rdf.yaml there, giving an unpacked package
folder. A completely fetched package is reused without network and offline; an ID without
version stays at the version first fetched (``refresh=True`` looks again).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from ..cache import cache_dir
from ..errors import ModelNotFoundError
from .download import atomic_write_text, compute_hash, download_file, is_offline, offline_error, write_record
from .resolve import ResolvedModel
from .store import classify_folder, complete_and_trusted, read_complete, write_complete


def fetch_bioimageio(res: ResolvedModel, *, offline: bool | None, progress: bool, refresh: bool = False,
                     suggestions: list[str] | None = None) -> dict[str, Path]:
    item = cache_dir() / res.cache_key
    if not refresh and complete_and_trusted(item):
        return classify_folder(item)
    if is_offline(offline):
        raise offline_error(res.query, item)

    had_copy = read_complete(item) is not None
    try:
        return _download_package(res, item, progress=progress, suggestions=suggestions or [])
    except BaseException:
        if not had_copy:  # nothing of a package that failed stays in the cache
            shutil.rmtree(item, ignore_errors=True)
        raise


def _download_package(res: ResolvedModel, item: Path, *, progress: bool, suggestions: list[str]) -> dict[str, Path]:
    source = res.details["bioimageio_id"]
    opened, descr, content = _describe(source, res, suggestions)
    hashes: dict[str, str] = {}
    rdf_name = "rdf.yaml"
    rdf_content = None
    for name, value in content.items():
        if isinstance(value, dict):
            rdf_name, rdf_content = name, value
            continue
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ModelNotFoundError(f"{res.query}: unsafe file name {name!r} in the package")
        url = _absolute_source(value, opened)
        sha = getattr(value, "sha256", None)
        expected = f"sha256:{sha}" if sha else None
        if url.startswith(("http://", "https://")):
            # files the rdf lists without sha256 (documentation, covers) are taken as they are
            download_file(url, item / name, expected_hash=expected, what=res.query, progress=progress,
                          offline=False, warn_unhashed=False)
        else:
            raise ModelNotFoundError(f"{res.query}: package file {name} has a non-http source {url!r}")
        hashes[name] = expected or ""
    if rdf_content is None:
        raise ModelNotFoundError(f"{res.query}: bioimageio.spec returned no rdf for the package")
    rdf_path = item / rdf_name
    atomic_write_text(rdf_path, yaml.safe_dump(rdf_content, sort_keys=False, allow_unicode=True))
    rdf_hash = compute_hash(rdf_path, "sha256")
    write_record(rdf_path, rdf_hash, url=str(opened.original_source_name))
    hashes[rdf_name] = rdf_hash
    write_complete(item, model_id=res.id, source=str(opened.original_source_name), files=hashes)
    return classify_folder(item)


def _describe(source: str, res: ResolvedModel, suggestions: list[str]):
    try:
        from bioimageio.spec import InvalidDescr, ValidationContext, build_description, get_package_content
        from bioimageio.spec.utils import open_bioimageio_yaml
    except ImportError as e:  # pragma: no cover - bioimageio.spec is a dependency
        raise ModelNotFoundError(f"{res.query}: bioimage.io IDs need bioimageio.spec ({e})") from None
    try:
        opened = open_bioimageio_yaml(source)
    except Exception as e:  # bioimageio.spec raises ValueError / httpx errors / OSError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = f"did you mean the samzoo model {', '.join(repr(s) for s in suggestions)}? " if suggestions else ""
        raise ModelNotFoundError(
            f"could not resolve bioimage.io resource {res.query!r} ({first.rstrip('.')}); {hint}check the ID "
            "on https://bioimage.io and your connection; `samzoo models` lists the models samzoo knows by name"
        ) from None
    context = ValidationContext(root=opened.original_root, file_name=opened.original_file_name,
                                perform_io_checks=False)
    with context:
        descr = build_description(opened.content)
    if isinstance(descr, InvalidDescr):
        errors = getattr(descr.validation_summary, "errors", None) or []
        detail = "; ".join(f"{'.'.join(map(str, err.loc))}: {err.msg}" for err in errors[:3]) or "invalid"
        raise ModelNotFoundError(f"bioimage.io resource {res.query!r} has an invalid description ({detail})")
    with context:
        try:
            content = get_package_content(descr, bioimageio_yaml_file_name=opened.original_file_name or "rdf.yaml",
                                          weights_priority_order=["pytorch_state_dict"])
        except ValueError:  # no pytorch_state_dict weights: take them all
            content = get_package_content(descr, bioimageio_yaml_file_name=opened.original_file_name or "rdf.yaml")
    return opened, descr, content


def _absolute_source(file_descr, opened) -> str:
    source = file_descr.source
    root = opened.original_root
    text = str(source)
    if text.startswith(("http://", "https://")):
        return text
    # a path relative to the rdf's folder
    root_text = str(root).rstrip("/")
    return f"{root_text}/{text[2:] if text.startswith('./') else text}"
