"""Files behind a personal-token portal (registry files with ``gated:``), e.g. the DeepCell portal.

Flow (the portal API the registry entry names; DeepCell documents it in cellSAM/_auth.py):
1. POST the entry's form fields to the API URL with the user's token in the named header (the
   token comes from the environment variable the entry names and is never printed or stored);
2. the portal answers JSON ``{"url": <short-lived download link>, "size": "<n> <B|KB|MB|GB>"}``;
3. the archive is downloaded with samzoo's downloader (hash-checked: the registry's md5) into
   ``<cache>/gated/<archive name>`` and reused by every entry that comes from it;
4. only the entry's ``member`` is extracted: a regular file, no links, size bounded by what the
   archive header says and a hard cap, written atomically into the entry's cache folder.

Users without network access to the portal can put the archive they downloaded themselves at the
path the error message names: it is checked against the same md5 before use. A checkpoint file
they already have needs no fetch at all (``samzoo.load_model(path)``).
Nothing here knows about any model family.
"""

from __future__ import annotations

import os
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

from ..cache import cache_dir
from ..errors import DownloadError, ModelNotFoundError
from ..registry.registry import RegistryEntry, RegistryFile
from .download import (compute_hash, download_file, download_timeout, file_lock, is_offline, is_trusted,
                       normalize_hash, offline_error, same_hash, write_record)

MAX_MEMBER_BYTES = 8 * 1024 ** 3
"""Refuse archive members claiming more than this (a CellSAM checkpoint is ~1.2 GB)."""
_SIZE_UNITS = {"B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12}


def archive_name(rf: RegistryFile) -> str:
    form = dict(rf.gated.get("form") or {}) if rf.gated else {}
    candidates = [str(v) for v in form.values()] + [rf.url]
    for text in candidates:
        name = Path(text.rstrip("/")).name
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.(tar\.gz|tgz|tar|zip|pt|pth)", name):
            return name
    return "archive.tar.gz"


def gated_archive_path(rf: RegistryFile) -> Path:
    return cache_dir() / "gated" / archive_name(rf)


def parse_size(text: Any) -> int | None:
    """The portal's size field ("12.3 MB", "1.2 GB", or bytes) -> bytes; None when absent/unreadable."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?B)\s*", str(text or ""), flags=re.I)
    if not match:
        return None
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def _token(rf: RegistryFile, entry: RegistryEntry, archive: Path) -> str:
    env = str(rf.gated["token_env"])
    token = os.environ.get(env, "").strip()
    if not token:
        signup = rf.gated.get("signup")
        raise DownloadError(
            f"{entry.id} is gated: set your personal access token in the environment variable {env}"
            + (f" (create one at {signup})" if signup else "")
            + f", or put the archive you downloaded yourself at {archive} (it is checked against {rf.hash})")
    return token


def request_download_link(rf: RegistryFile, entry: RegistryEntry, token: str) -> tuple[str, int | None]:
    """Ask the portal for a download link: (url, size in bytes or None). Errors never contain the token."""
    import requests

    header = str(rf.gated["header"])
    form = {str(k): str(v) for k, v in dict(rf.gated.get("form") or {}).items()}
    try:
        resp = requests.post(rf.url, headers={header: token}, data=form, timeout=download_timeout())
    except requests.RequestException as err:
        raise DownloadError(f"{entry.id}: could not reach the portal {rf.url} ({type(err).__name__})") from None
    if resp.status_code in (401, 403):
        raise DownloadError(f"{entry.id}: the portal {rf.url} refused the token in {rf.gated['token_env']} "
                            f"(HTTP {resp.status_code}); it may be expired or not yet approved"
                            + (f" -- see {rf.gated['signup']}" if rf.gated.get("signup") else ""))
    if resp.status_code == 404:
        raise DownloadError(f"{entry.id}: the portal {rf.url} does not know {form or 'this file'} (HTTP 404)")
    if resp.status_code != 200:
        raise DownloadError(f"{entry.id}: the portal {rf.url} answered HTTP {resp.status_code}")
    try:
        answer = resp.json()
        url = str(answer["url"])
    except (ValueError, KeyError, TypeError):
        raise DownloadError(f"{entry.id}: the portal {rf.url} answered without a download link") from None
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{entry.id}: the portal {rf.url} gave an unusable download link")
    if token in url:
        raise DownloadError(f"{entry.id}: the portal's download link contains the access token; refusing to use it")
    return url, parse_size(answer.get("size"))


def _adopt_user_archive(path: Path, expected: str) -> bool:
    """An archive the user placed at ``path`` becomes trusted when its hash is the expected one."""
    if not path.is_file() or is_trusted(path, expected):
        return path.is_file()
    alg = normalize_hash(expected).split(":")[0]
    if same_hash(compute_hash(path, alg), expected):
        write_record(path, normalize_hash(expected), extra={"from": "placed by the user"})
        return True
    raise DownloadError(f"{path} does not match {expected}; remove it (it is not the expected archive)")


def fetch_archive(rf: RegistryFile, entry: RegistryEntry, *, offline: bool | None, progress: bool) -> Path:
    archive = gated_archive_path(rf)
    expected = normalize_hash(rf.hash)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(archive):
        if _adopt_user_archive(archive, expected):
            return archive
    if is_offline(offline):
        raise offline_error(entry.id, archive)
    token = _token(rf, entry, archive)
    url, size = request_download_link(rf, entry, token)
    if size is not None and size > 4 * MAX_MEMBER_BYTES:
        raise DownloadError(f"{entry.id}: the portal announces {size} bytes, more than samzoo accepts")
    # the size the portal gives is rounded ("1.2 GB"): the md5 is what verifies the archive
    return download_file(url, archive, expected_hash=expected, what=entry.id, progress=progress, offline=False)


def _find_member(names: list[str], wanted: str) -> str | None:
    wanted = wanted.strip("/")
    for name in names:
        if name.lstrip("./").rstrip("/") == wanted:
            return name
    return None


def extract_member(archive: Path, member: str, dest: Path, *, what: str) -> Path:
    """Copy one regular file out of a tar/zip archive into ``dest`` (atomically), with bounds."""
    from ..io import atomic_path

    def copy(stream, size: int) -> None:
        if size > MAX_MEMBER_BYTES:
            raise DownloadError(f"{what}: {member} in {archive.name} claims {size} bytes, more than the "
                                f"{MAX_MEMBER_BYTES} allowed")
        written = 0
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            while chunk := stream.read(1 << 20):
                written += len(chunk)
                if written > size:
                    raise DownloadError(f"{what}: {member} in {archive.name} is longer than its header says")
                out.write(chunk)

    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            name = _find_member(tar.getnames(), member)
            if name is None:
                raise DownloadError(f"{what}: {archive.name} has no {member}")
            info = tar.getmember(name)
            if not info.isreg():
                raise DownloadError(f"{what}: {member} in {archive.name} is not a regular file (link or device)")
            stream = tar.extractfile(info)
            copy(stream, info.size)
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            name = _find_member(zf.namelist(), member)
            if name is None or name.endswith("/"):
                raise DownloadError(f"{what}: {archive.name} has no {member}")
            info = zf.getinfo(name)
            with zf.open(info) as stream:
                copy(stream, info.file_size)
    else:
        raise DownloadError(f"{what}: {archive.name} is neither a tar nor a zip archive")
    return dest


def fetch_gated(rf: RegistryFile, entry: RegistryEntry, dest_dir: Path, *, offline: bool | None,
                progress: bool) -> Path:
    """The entry's file, from the cache or through the portal; see the module docstring."""
    if not rf.hash:
        raise ModelNotFoundError(f"{entry.id}: gated files need a hash in the registry")
    member = rf.member
    if member is None:
        return fetch_archive(rf, entry, offline=offline, progress=progress)
    dest = dest_dir / Path(member).name
    source = normalize_hash(rf.hash)
    record_ok = is_trusted(dest, None) and _derived_from(dest, source)
    if record_ok:
        return dest
    archive = fetch_archive(rf, entry, offline=offline, progress=progress)
    with file_lock(dest):
        if not (is_trusted(dest, None) and _derived_from(dest, source)):
            extract_member(archive, member, dest, what=entry.id)
            write_record(dest, compute_hash(dest, "sha256"), extra={"archive": archive.name, "archive_hash": source})
    return dest


def _derived_from(path: Path, archive_hash: str) -> bool:
    from .download import read_record

    record: Mapping[str, Any] | None = read_record(path)
    return bool(record) and record.get("archive_hash") == archive_hash
