"""Public hub API: fetch models by ID into the cache, list models, inspect and clear the cache."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

from ..cache import cache_dir
from ..errors import ModelNotFoundError, SamzooError
from ..registry.registry import Registry, RegistryEntry, RegistryFile, load_registry
from .download import (
    atomic_write_text,
    compute_hash,
    download_file,
    is_offline,
    is_trusted,
    link_or_copy_into,
    meta_dir,
    normalize_hash,
    read_record,
    same_hash,
    write_record,
)
from .resolve import CHECKPOINT_SUFFIXES, ResolvedModel, resolve
from .store import (
    ROLE_CHECKPOINT,
    ROLE_DECODER,
    ROLE_PACKAGE,
    classify_folder,
    folder_size,
    read_complete,
)

HUB_SUBDIRS = ("models", "url", "zenodo", "bioimageio", "huggingface", "registries")


def fetch_files(model_id: str | os.PathLike, *, offline: bool | None = None, registry: Any = None,
                progress: bool = True, refresh: bool = False) -> dict[str, Path]:
    """Make the files of ``model_id`` available locally; return ``{role: path}``.

    Roles: ``checkpoint`` (SAM / micro-sam / samzoo weights), ``decoder`` (the μSAM instance
    segmentation decoder, when the model has one) and ``package`` (a BioImage.IO package: .zip, or
    an unpacked folder with rdf.yaml). Every downloaded file is hash-checked before it is returned.

    ``offline``: never use the network (default: ``SAMZOO_OFFLINE``). ``registry``: extra registry
    file(s)/URL(s) or a :class:`~samzoo.registry.Registry`. ``refresh``: look up mutable
    references again (hf:// branches, bioimage.io IDs without version, Zenodo concept DOIs)
    instead of reusing what the cache holds.
    """
    offline_now = is_offline(offline)
    reg = registry if isinstance(registry, Registry) else load_registry(registry, offline=offline_now)
    res = resolve(model_id, registry=reg)
    return _fetch_resolved(res, reg, offline=offline_now, progress=progress, refresh=refresh)


def fetch(model_id: str | os.PathLike, *, offline: bool | None = None, registry: Any = None,
          progress: bool = True, refresh: bool = False) -> Path:
    """Fetch ``model_id`` (see :func:`fetch_files`) and return its main local file: the checkpoint
    when there is one (μSAM entries: the decoder is fetched too, see ``fetch_files(...)["decoder"]``),
    else the package (.zip or unpacked folder)."""
    files = fetch_files(model_id, offline=offline, registry=registry, progress=progress, refresh=refresh)
    return main_file(files)


def main_file(files: dict[str, Path]) -> Path:
    """The file a model loads from: an unpacked package folder (its rdf.yaml says what its files are;
    its weights file is not a checkpoint of its own), else the checkpoint, else the package zip."""
    package = files.get(ROLE_PACKAGE)
    if package is not None and package.is_dir():
        return package
    for role in (ROLE_CHECKPOINT, ROLE_PACKAGE):
        if role in files:
            return files[role]
    raise ModelNotFoundError(f"no checkpoint or package among {sorted(files)}")


def _fetch_resolved(res: ResolvedModel, reg: Registry, *, offline: bool, progress: bool,
                    refresh: bool) -> dict[str, Path]:
    if res.kind == "registry":
        return _fetch_registry(res, offline=offline, progress=progress)
    if res.kind == "url":
        rf = res.files[0]
        dest = cache_dir() / res.cache_key / (rf.filename or "download")
        path = download_file(rf.url, dest, expected_hash=rf.hash, what=res.query, progress=progress, offline=offline)
        return {rf.role: path}
    if res.kind == "local":
        return _local_roles(res)
    if res.kind == "zenodo":
        from .zenodo import fetch_zenodo

        return fetch_zenodo(res, offline=offline, progress=progress, refresh=refresh)
    if res.kind == "huggingface":
        from .huggingface import fetch_hf

        return fetch_hf(res, offline=offline, progress=progress, refresh=refresh)
    if res.kind == "bioimageio":
        from .bioimageio import fetch_bioimageio

        return fetch_bioimageio(res, offline=offline, progress=progress, refresh=refresh,
                                suggestions=reg.suggest(res.query))
    raise AssertionError(res.kind)  # pragma: no cover


def _local_roles(res: ResolvedModel) -> dict[str, Path]:
    path = Path(res.details["path"])
    if res.files:
        return {res.files[0].role: path}
    roles = classify_folder(path)
    if not roles:
        raise ModelNotFoundError(
            f"{path} holds no BioImage.IO package (rdf.yaml / bioimageio.yaml / one .zip) and no single "
            f"checkpoint ({'/'.join(CHECKPOINT_SUFFIXES)}); pass the file itself")
    return roles


# --------------------------------------------------------------------------------------------
# registry entries


def cached_filename(entry: RegistryEntry, rf: RegistryFile) -> str:
    """Name of a registry file inside ``<cache>/models/<id>/``."""
    if rf.filename:
        return rf.filename
    suffix = Path(urlparse(rf.url).path).suffix.lower()
    if suffix not in (*CHECKPOINT_SUFFIXES, ".zip"):
        suffix = ".zip" if rf.role == ROLE_PACKAGE else ".pt"
    return entry.id + ("_decoder" if rf.role == ROLE_DECODER else "") + suffix


def microsam_cache_dir() -> Path:
    """micro-sam's cache: ``MICROSAM_CACHEDIR`` or pooch's ``os_cache("micro_sam")``; models in models/."""
    value = os.environ.get("MICROSAM_CACHEDIR")
    if value:
        return Path(value).expanduser()
    import pooch

    return Path(os.path.expanduser(str(pooch.os_cache("micro_sam"))))


def _microsam_fallback(rf: RegistryFile):
    """A fallback for download_file: reuse ``<micro-sam cache>/models/<microsam_name>`` when its
    hash matches. Hard-links it into the samzoo cache when possible, else uses it in place."""

    def fallback(dest: Path) -> Path | None:
        if not rf.microsam_name or not rf.hash:
            return None
        src = microsam_cache_dir() / "models" / rf.microsam_name
        if not src.is_file():
            return None
        memo_file = meta_dir(dest) / f"{dest.name}.microsam.json"
        st = src.stat()
        try:
            memo = json.loads(memo_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
        if not (memo.get("path") == str(src) and memo.get("size") == st.st_size
                and memo.get("mtime_ns") == st.st_mtime_ns and same_hash(memo.get("hash"), rf.hash)):
            alg = normalize_hash(rf.hash).split(":")[0]
            if not same_hash(compute_hash(src, alg), rf.hash):
                return None  # another version (or a broken file) in micro-sam's cache: download ours
            memo = {"path": str(src), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": normalize_hash(rf.hash)}
            atomic_write_text(memo_file, json.dumps(memo))
        if link_or_copy_into(src, dest):
            write_record(dest, normalize_hash(rf.hash), url=rf.url, extra={"from": f"micro-sam cache {src}"})
            return dest
        return src  # different file system: use micro-sam's copy where it is

    return fallback


def _fetch_registry(res: ResolvedModel, *, offline: bool, progress: bool) -> dict[str, Path]:
    entry = res.entry
    assert entry is not None
    out: dict[str, Path] = {}
    for rf in entry.files:
        if rf.gated is not None:
            from .gated import fetch_gated

            out[rf.role] = fetch_gated(rf, entry, cache_dir() / res.cache_key, offline=offline, progress=progress)
            continue
        local = rf.local_path()
        if local is not None:
            if not local.is_file():
                how = ("reinstall samzoo" if rf.url.startswith("package://samzoo/")
                       else f"fix the registry {entry.source}")
                raise ModelNotFoundError(f"{entry.id}: its {rf.role} file {local} is missing; {how}")
            if rf.hash and not same_hash(compute_hash(local, normalize_hash(rf.hash).split(":")[0]), rf.hash):
                raise ModelNotFoundError(
                    f"{entry.id}: {local} does not match the registry hash {rf.hash}; the file was changed "
                    f"or the registry {entry.source} is outdated")
            out[rf.role] = local
            continue
        dest = cache_dir() / res.cache_key / cached_filename(entry, rf)
        out[rf.role] = download_file(rf.url, dest, expected_hash=rf.hash, size=rf.size, what=entry.id,
                                     progress=progress, offline=offline, fallback=_microsam_fallback(rf))
    return out


# --------------------------------------------------------------------------------------------
# listing and info


def list_models(modality: str | None = None, *, registry: Any = None, offline: bool | None = None
                ) -> list[RegistryEntry]:
    """Registry entries (shipped + user registries), optionally of one modality (lm, em, ...).
    ``offline``: a registry URL is read from its kept copy, never fetched (default: ``SAMZOO_OFFLINE``)."""
    reg = registry if isinstance(registry, Registry) else load_registry(registry, offline=is_offline(offline))
    return reg.filter(modality)


def model_info(model_id: str | os.PathLike, *, registry: Any = None, offline: bool | None = None) -> dict[str, Any]:
    """What ``model_id`` is (registry entry fields for registry models), where its files come
    from, and which of them are already available locally (``local``: role -> path, or None).
    Never downloads a model; ``offline`` also keeps registry URLs from being fetched."""
    reg = registry if isinstance(registry, Registry) else load_registry(registry, offline=is_offline(offline))
    res = resolve(model_id, registry=reg)
    info = res.to_dict()
    info.pop("entry", None)
    if res.entry is not None:
        info.update(res.entry.to_dict())
        card = res.entry.model_card_path()
        info["model_card_path"] = str(card) if card is not None else None
    info["kind"] = res.kind
    if res.kind == "local" and len(res.files) == 1:
        info.update(_local_family(Path(res.location), res.files[0].role))
    info["cache_folder"] = str(cache_dir() / res.cache_key) if res.cache_key else None
    try:
        local = _fetch_resolved(res, reg, offline=True, progress=False, refresh=False)
        info["local"] = {role: str(path) for role, path in local.items()}
    except SamzooError:
        info["local"] = None
    return info


def _local_family(path: Path, role: str) -> dict[str, Any]:
    """``{"family": name}`` of a local checkpoint (recognised from its state dict, as
    ``load_model`` does) or package (its rdf's ``config.samzoo.family``); ``{"problem": why}``
    when the file says nothing samzoo can read."""
    import zipfile

    import yaml

    from ..families import detect_family

    try:
        if role == "package":
            with zipfile.ZipFile(path) as zf:
                rdf = yaml.safe_load(zf.read("rdf.yaml"))
            family = ((rdf.get("config") or {}).get("samzoo") or {}).get("family")
            return {"family": family} if family else {}
        from ..state_files import read_state

        return {"family": detect_family(read_state(path), path.name).name}
    except SamzooError as err:
        return {"problem": str(err)}
    except (OSError, KeyError, zipfile.BadZipFile, yaml.YAMLError) as err:
        return {"problem": f"{path.name}: not a readable package ({err})"}


# --------------------------------------------------------------------------------------------
# the cache


@dataclass
class CachedModel:
    kind: str  # registry | url | zenodo | bioimageio | huggingface
    id: str
    path: Path
    size: int
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "path": str(self.path), "size": self.size, "files": self.files}


def _visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


EMBEDDINGS_SUBDIR = "embeddings"  # samzoo.segmentation.embedding_cache's default folder


def cache_list() -> list[CachedModel]:
    """Models in the samzoo cache (trusted files only; partial downloads are not listed)."""
    root = cache_dir()
    items: list[CachedModel] = []
    kinds = {"models": "registry", "url": "url", "zenodo": "zenodo", "bioimageio": "bioimageio"}
    for sub, kind in kinds.items():
        base = root / sub
        if not base.is_dir():
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = [n for n in _visible_files(folder) if is_trusted(folder / n, None)]
            if not files:
                continue
            if kind == "registry":
                model_id = folder.name
            elif kind == "zenodo":
                model_id = f"10.5281/zenodo.{folder.name}"
            elif kind == "url":
                model_id = (read_record(folder / files[0]) or {}).get("url") or folder.name
            else:
                model_id = (read_complete(folder) or {}).get("id") or folder.name
            size = sum((folder / n).stat().st_size for n in files)
            items.append(CachedModel(kind, model_id, folder, size, files))
    hf = root / "huggingface"
    if hf.is_dir():
        for folder in sorted(hf.glob("models--*")):
            repo = folder.name[len("models--"):].replace("--", "/", 1)
            snapshots = folder / "snapshots"
            commits = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
            items.append(CachedModel("huggingface", f"hf://{repo}", folder, folder_size(folder / "blobs")
                                     if (folder / "blobs").is_dir() else 0, [f"snapshot {c}" for c in commits]))
    embeddings = root / EMBEDDINGS_SUBDIR
    if embeddings.is_dir():
        keys = [p for p in embeddings.glob("*/*") if p.is_dir()]
        if keys:
            items.append(CachedModel("embeddings", EMBEDDINGS_SUBDIR, embeddings, folder_size(embeddings),
                                     [f"{len(keys)} cached image(s)"]))
    return items


def cache_clear(model_ids: str | Sequence[str] | None = None, *, registry: Any = None) -> list[Path]:
    """Delete cached models: all of them (``None``: every folder the hub writes under the cache dir,
    see :data:`HUB_SUBDIRS`), or those of the given IDs. Returns the deleted folders."""
    root = cache_dir()
    removed: list[Path] = []
    if model_ids is None:
        for sub in (*HUB_SUBDIRS, EMBEDDINGS_SUBDIR):
            path = root / sub
            if path.exists():
                shutil.rmtree(path)
                removed.append(path)
        return removed
    if isinstance(model_ids, str):
        model_ids = [model_ids]
    reg = registry if isinstance(registry, Registry) else load_registry(registry, offline=True)
    for model_id in model_ids:
        if model_id == EMBEDDINGS_SUBDIR:  # `samzoo cache clear embeddings`: the image embeddings only
            if (root / EMBEDDINGS_SUBDIR).exists():
                shutil.rmtree(root / EMBEDDINGS_SUBDIR)
                removed.append(root / EMBEDDINGS_SUBDIR)
            continue
        res = resolve(model_id, registry=reg)
        if not res.cache_key:
            raise ModelNotFoundError(f"{model_id} is a local file or folder, not something in the cache")
        path = root / res.cache_key
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    return removed
