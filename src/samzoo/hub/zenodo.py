"""Zenodo records: ``GET {base}/api/records/{id}`` lists the files with download links and
``md5:`` checksums; every file is downloaded (through :func:`download_file`) and md5-checked.

The record's JSON is kept in the cache, so a fetched record is reused without network and offline.
A concept DOI (the "all versions" DOI) resolves to whatever version Zenodo serves at the first
fetch; ``refresh=True`` looks it up again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..cache import cache_dir
from ..errors import ModelNotFoundError
from .download import META_DIR, atomic_write_text, download_file, http_get_json, is_offline, offline_error
from .resolve import ResolvedModel
from .store import classify_folder, complete_and_trusted, role_of_file, write_complete


@dataclass(frozen=True)
class ZenodoFile:
    name: str
    url: str
    checksum: str | None  # "md5:<hex>" (Zenodo's own format)
    size: int | None


def parse_record(record: dict, *, base_url: str, record_id: str) -> list[ZenodoFile]:
    """Files of a records-API answer (current list form, or InvenioRDM ``{"entries": ...}``)."""
    raw = record.get("files")
    if isinstance(raw, dict):
        raw = raw.get("entries", raw)
        if isinstance(raw, dict):
            raw = list(raw.values())
    if not isinstance(raw, list):
        raise ModelNotFoundError(f"Zenodo record {record_id} lists no files (is it restricted or embargoed?)")
    files = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        name = item.get("key") or item.get("filename")
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            continue
        links = item.get("links") or {}
        url = links.get("content") or links.get("self") or links.get("download")
        if not url:
            url = f"{base_url}/api/records/{record_id}/files/{quote(name)}/content"
        checksum = item.get("checksum")
        if isinstance(checksum, str) and ":" not in checksum:
            checksum = f"md5:{checksum}"
        size = item.get("size", item.get("filesize"))
        files.append(ZenodoFile(name=name, url=url, checksum=checksum if isinstance(checksum, str) else None,
                                size=size if isinstance(size, int) else None))
    if not files:
        raise ModelNotFoundError(f"Zenodo record {record_id} lists no downloadable files")
    return files


def fetch_zenodo(res: ResolvedModel, *, offline: bool | None, progress: bool, refresh: bool = False) -> dict[str, Path]:
    d = res.details
    item = cache_dir() / res.cache_key
    record_file = item / META_DIR / "record.json"
    wanted = d.get("file")

    if not refresh and not wanted and complete_and_trusted(item):
        return _roles(item, None)
    if is_offline(offline):
        if wanted and record_file.is_file():
            # a single file of a record: trusted copy or fail
            files = parse_record(json.loads(record_file.read_text()), base_url=d["base_url"], record_id=d["record"])
            chosen = _choose(files, wanted, res)
            return _roles(item, download_file(chosen.url, item / chosen.name, expected_hash=chosen.checksum,
                                              what=res.query, offline=True))
        raise offline_error(res.query, item)

    if record_file.is_file() and not refresh:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    else:
        record = http_get_json(d["api_url"], what=f"Zenodo record {d['record']} ({res.query})")
        if not isinstance(record, dict):
            raise ModelNotFoundError(f"{d['api_url']} did not answer a Zenodo record")
    files = parse_record(record, base_url=d["base_url"], record_id=d["record"])
    atomic_write_text(record_file, json.dumps(record))
    if wanted:
        chosen = _choose(files, wanted, res)
        path = download_file(chosen.url, item / chosen.name, expected_hash=chosen.checksum, size=chosen.size,
                             what=res.query, progress=progress, offline=False)
        return _roles(item, path)
    hashes = {}
    for f in files:
        download_file(f.url, item / f.name, expected_hash=f.checksum, size=f.size, what=res.query,
                      progress=progress, offline=False)
        hashes[f.name] = f.checksum or ""
    write_complete(item, model_id=res.id, source=d["api_url"], files=hashes)
    return _roles(item, None)


def _choose(files: list[ZenodoFile], wanted: str, res: ResolvedModel) -> ZenodoFile:
    for f in files:
        if f.name == wanted:
            return f
    names = ", ".join(f.name for f in files)
    raise ModelNotFoundError(f"Zenodo record {res.details['record']} has no file {wanted!r} (it has: {names})")


def _roles(item: Path, single: Path | None) -> dict[str, Path]:
    if single is not None:
        return {role_of_file(single): single}
    roles = classify_folder(item)
    if not roles:
        names = ", ".join(sorted(p.name for p in item.iterdir() if not p.name.startswith(".")))
        raise ModelNotFoundError(
            f"Zenodo record in {item} holds no checkpoint (.pt/.pth) or BioImage.IO package "
            f"(rdf.yaml/.zip): {names}")
    return roles
