"""``hf://ORG/REPO[@REVISION]``: a snapshot of a Hugging Face model repository.

Downloads go through ``huggingface_hub.snapshot_download`` into ``<samzoo cache>/huggingface``
(its own cache layout, locks and ``.incomplete`` files), with the endpoint taken from
``HF_ENDPOINT`` at call time. A snapshot already in the cache is used without network (pass
``refresh=True`` to look up a branch's newest commit). After download every file is checked
against the repository's tree listing that huggingface_hub caches: LFS files by their sha256,
other files by their git blob id (sha1 of ``b"blob <size>\\0" + content``); a file that fails is
deleted and the fetch fails.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..cache import cache_dir
from ..errors import DownloadError, HashMismatchError, ModelNotFoundError
from .download import CHUNK_SIZE, atomic_write_text, compute_hash, offline_error
from .resolve import ResolvedModel
from .store import classify_folder


def hf_cache_dir() -> Path:
    return cache_dir() / "huggingface"


def _silent_tqdm():
    from tqdm.auto import tqdm

    class SilentTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


def fetch_hf(res: ResolvedModel, *, offline: bool, progress: bool, refresh: bool = False) -> dict[str, Path]:
    repo, revision = res.details["repo"], res.details["revision"]
    endpoint = os.environ.get("HF_ENDPOINT") or None
    kwargs = dict(repo_id=repo, revision=revision, cache_dir=str(hf_cache_dir()), endpoint=endpoint)
    if not progress:
        kwargs["tqdm_class"] = _silent_tqdm()

    folder = None
    if not refresh or offline:
        # cache first, without huggingface_hub (which may contact the endpoint even for cached files)
        folder = _cached_snapshot(repo, revision)
        if folder is not None and not _verify(folder, repo, res.query, raise_on_error=False, online=False):
            folder = None  # a file was bad and has been removed: download again
    if folder is None:
        if offline:
            raise offline_error(res.query, hf_cache_dir())
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            folder = snapshot_download(**kwargs)
        except RevisionNotFoundError:
            raise ModelNotFoundError(
                f"{res.query}: revision {revision!r} does not exist in Hugging Face repo {repo} "
                f"({endpoint or 'https://huggingface.co'}); check the branch, tag or commit") from None
        except (RepositoryNotFoundError, GatedRepoError):
            raise ModelNotFoundError(
                f"{res.query}: Hugging Face repo {repo} not found at {endpoint or 'https://huggingface.co'} "
                "(or it is private/gated: log in with `hf auth login`)") from None
        except LocalEntryNotFoundError as e:
            raise DownloadError(
                f"could not download {res.query} from {endpoint or 'https://huggingface.co'}: "
                f"{_first_line(e)}; nothing usable is cached. Check your connection, or HF_ENDPOINT") from None
        except (HfHubHTTPError, OSError) as e:
            raise DownloadError(
                f"could not download {res.query} from {endpoint or 'https://huggingface.co'}: "
                f"{_first_line(e)}; check your connection, or HF_ENDPOINT") from None
        except Exception as e:  # httpx2 transport errors are not OSError
            if type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2"):
                raise DownloadError(f"could not download {res.query}: {_first_line(e)}; check your connection, "
                                    "or HF_ENDPOINT") from None
            raise
        _verify(Path(folder), repo, res.query, raise_on_error=True, endpoint=endpoint)
    roles = classify_folder(Path(folder))
    if not roles:
        raise ModelNotFoundError(
            f"{res.query}: the repository holds no checkpoint (.pt/.pth) and no BioImage.IO package "
            f"(rdf.yaml/.zip) at its top level ({folder})")
    return roles


def _cached_snapshot(repo: str, revision: str) -> Path | None:
    """The snapshot folder of ``repo@revision`` when samzoo downloaded and verified it before
    (its verification memo exists and all its files are present); no network, no huggingface_hub."""
    import re

    storage = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        commit = revision
    else:
        try:
            commit = (storage / "refs" / revision).read_text(encoding="utf-8").strip()
        except OSError:
            return None
    folder = storage / "snapshots" / commit
    memo = _read_memo(repo, commit)
    if not folder.is_dir() or memo is None or "expected" not in memo:
        return None
    if not all((folder / rel).exists() for rel in memo["expected"]):
        return None
    return folder


def _memo_path(repo: str, commit: str) -> Path:
    return hf_cache_dir() / ".samzoo" / f"{repo.replace('/', '--')}--{commit}.json"


def _read_memo(repo: str, commit: str) -> dict | None:
    try:
        return json.loads(_memo_path(repo, commit).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_SIZE), b""):
            h.update(block)
    return h.hexdigest()


def _expected_hashes(repo: str, commit: str, endpoint: str | None) -> dict[str, str]:
    """path -> expected hash for every file of ``commit``, from the Hub's tree listing (public API):
    ``sha256:`` for LFS files, ``gitsha1:`` (git blob id) for the others."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    out = {}
    for item in HfApi(endpoint=endpoint).list_repo_tree(repo, revision=commit, recursive=True):
        if isinstance(item, RepoFile):
            out[item.path] = f"sha256:{item.lfs.sha256}" if item.lfs is not None else f"gitsha1:{item.blob_id}"
    return out


def _verify(folder: Path, repo: str, what: str, *, raise_on_error: bool, endpoint: str | None = None,
            online: bool = True) -> bool:
    """Check every snapshot file against the repository's hashes; remove files that fail.

    Expected hashes come from the Hub's tree listing the first time (online) and are kept in
    ``<cache>/huggingface/.samzoo/<repo>--<commit>.json`` so later (offline) checks need no network;
    files whose size and mtime did not change since they were verified are not hashed again."""
    commit = folder.name
    memo_path = _memo_path(repo, commit)
    memo = _read_memo(repo, commit) or {}
    expected_all = memo.get("expected")
    if expected_all is None:
        if not online:
            import warnings

            warnings.warn(f"{what}: snapshot {commit} was not downloaded by samzoo and cannot be verified "
                          "offline; using it as it is", stacklevel=3)
            return True
        try:
            expected_all = _expected_hashes(repo, commit, endpoint)
        except Exception as e:  # listing failed: the snapshot cannot be checked
            raise DownloadError(f"{what}: could not list the files of commit {commit} to verify them: "
                                f"{_first_line(e)}") from None
        memo = {"expected": expected_all, "verified": {}}
    verified = memo.setdefault("verified", {})
    changed = "verified" not in memo or not memo_path.exists()
    for rel, expected in expected_all.items():
        local = folder / rel
        if not local.exists():
            continue  # filtered out or not downloaded: snapshot_download reports incompleteness itself
        real = local.resolve()
        st = real.stat()
        known = verified.get(rel)
        if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
            continue
        if expected.startswith("sha256:"):
            actual = compute_hash(real, "sha256")
        else:
            actual = f"gitsha1:{git_blob_sha1(real)}"
        if actual != expected:
            for p in (real, local):
                try:
                    p.unlink()
                except OSError:
                    pass
            if raise_on_error:
                raise HashMismatchError(
                    f"{what}: {rel} (commit {commit}) failed verification: expected {expected}, got "
                    f"{actual}; the file was removed from the cache. Try again; if it persists the "
                    "endpoint serves corrupt data")
            return False
        verified[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        changed = True
    if changed:
        atomic_write_text(memo_path, json.dumps(memo, indent=1))
    return True
