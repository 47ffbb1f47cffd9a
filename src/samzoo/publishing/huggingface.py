"""Publish a model to a Hugging Face model repository with huggingface_hub's own client.

One commit on ``main`` adds the package zip(s), the checkpoint, README.md (the rendered model card
under a YAML header: license, tags, ``library_name: samzoo``, ``pipeline_tag: image-segmentation``,
``base_model``), the cover and ``samzoo_card.yaml``, and deletes model files of earlier versions
(``*.zip``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.bin``, ``*.safetensors`` not in this commit) so a
revision never holds two candidates. The commit is tagged ``vX.Y.Z`` (the card's version):
``samzoo fetch hf://ORG/REPO@vX.Y.Z`` loads exactly that state.

Idempotent: when the tag exists and its files equal the local ones (git blob ids / LFS sha256 from
the Hub), nothing is uploaded. A tag with other content is an error (bump the card's version).
A commit is atomic on the Hub, so a failed run leaves nothing half-done; running it again repeats
it, and unchanged files are skipped by huggingface_hub.

Endpoint: ``HF_ENDPOINT`` (default https://huggingface.co); token: ``HF_TOKEN`` (write access).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PublishError
from ._files import UploadFile, check_inputs, check_licences, collect_files, resolve_card, staging_dir
from ._http import TRANSIENT_STATUS, RetryPolicy, Transient, is_transient_exception, redact, stderr_log, with_retries
from .card import ModelCard, render_card

__all__ = ["DEFAULT_ENDPOINT", "HfResult", "hf_endpoint", "hf_front_matter", "publish_hf"]

DEFAULT_ENDPOINT = "https://huggingface.co"
LIBRARY_NAME = "samzoo"
PIPELINE_TAG = "image-segmentation"
MODEL_SUFFIXES = (".zip", ".pt", ".pth", ".ckpt", ".bin", ".safetensors")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")

# License ids the Hub's model card metadata accepts (its documented list); others become "other".
HF_LICENSES = frozenset(
    """apache-2.0 mit openrail afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause
    bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0
    cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0
    cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0
    epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0
    isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl""".split()
)
_SPDX_TO_HF = {
    "gpl-2.0-only": "gpl-2.0",
    "gpl-2.0-or-later": "gpl-2.0",
    "gpl-3.0-only": "gpl-3.0",
    "gpl-3.0-or-later": "gpl-3.0",
    "lgpl-2.1-only": "lgpl-2.1",
    "lgpl-2.1-or-later": "lgpl-2.1",
    "lgpl-3.0-only": "lgpl-3.0",
    "lgpl-3.0-or-later": "lgpl-3.0",
    "agpl-3.0-only": "agpl-3.0",
    "agpl-3.0-or-later": "agpl-3.0",
}


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hf_front_matter(card: ModelCard) -> dict[str, Any]:
    """The YAML header of the Hugging Face README for a card."""
    spdx = card.license.lower()
    hf_id = _SPDX_TO_HF.get(spdx, spdx)
    if hf_id in HF_LICENSES:
        meta: dict[str, Any] = {"license": hf_id}
    else:
        meta = {
            "license": "other",
            "license_name": spdx,
            "license_link": f"https://spdx.org/licenses/{card.license}.html",
        }
    tags: list[str] = []
    for tag in (*card.tags, "samzoo", "bioimage.io", "microscopy"):
        if tag not in tags:
            tags.append(tag)
    meta.update(library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG, tags=tags)
    if card.base_model:
        meta["base_model"] = card.base_model
    return meta


def fetch_command(repo_id: str, tag: str, endpoint: str) -> str:
    prefix = "" if endpoint.rstrip("/") == DEFAULT_ENDPOINT else f"HF_ENDPOINT={endpoint.rstrip('/')} "
    return f"{prefix}samzoo fetch hf://{repo_id}@{tag}"


@dataclass
class HfResult:
    repo_id: str
    tag: str
    commit: str
    url: str
    fetch_command: str
    files: list[str] = field(default_factory=list)
    already_published: bool = False

    def lines(self) -> list[str]:
        head = "Already published" if self.already_published else "Published"
        return [
            f"{head}: {self.repo_id}@{self.tag} (commit {self.commit[:12]})",
            f"Repository: {self.url}",
            f"Load it with: {self.fetch_command}",
        ]


class _Hf:
    def __init__(self, endpoint: str, token: str, repo_id: str, policy: RetryPolicy, log: Callable[[str], None]):
        from huggingface_hub import HfApi

        try:
            from .. import __version__ as version
        except ImportError:  # pragma: no cover
            version = "unknown"
        self.api = HfApi(endpoint=endpoint, token=token, library_name=LIBRARY_NAME, library_version=version)
        self.endpoint, self.token, self.repo_id, self.policy, self.log = endpoint, token, repo_id, policy, log

    def explain(self, exc: BaseException, step: str) -> PublishError | None:
        """A PublishError for a permanent HTTP failure, None when ``exc`` is not an HTTP error."""
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status is None:
            return None
        server = getattr(exc, "server_message", None) or ""
        if not server:
            try:
                server = response.json().get("error", "")
            except Exception:  # noqa: BLE001
                server = ""
        msg = redact(" ".join(str(server).split())[:300], [self.token]) or f"HTTP {status}"
        if status == 401:
            return PublishError(
                f"HF_TOKEN rejected (HTTP 401 while {step}: {msg}): create a token with write access at "
                f"{self.endpoint}/settings/tokens and set HF_TOKEN to it"
            )
        if status == 403:
            return PublishError(
                f"Hugging Face refused {step} (HTTP 403: {msg}): HF_TOKEN needs write access to "
                f"{self.repo_id.split('/')[0]} (a write token of a member of that organisation)"
            )
        if status in (400, 409, 422):
            return PublishError(f"Hugging Face rejected {step} (HTTP {status}): {msg}")
        if status == 404:
            return PublishError(f"Hugging Face has no {self.repo_id} ({step}, HTTP 404: {msg})")
        return PublishError(f"Hugging Face answered HTTP {status} while {step}: {msg}")

    def call(self, step: str, fn: Callable[[], Any], *, allow: Callable[[BaseException], Any] | None = None) -> Any:
        def attempt() -> Any:
            try:
                return fn()
            except PublishError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                if allow is not None:
                    handled = allow(exc)
                    if handled is not None:
                        return handled
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status in TRANSIENT_STATUS:
                    raise Transient(f"HTTP {status}") from None
                error = self.explain(exc, step)
                if error is not None:
                    raise error from None
                if _is_transport_error(exc) or is_transient_exception(exc):
                    raise Transient(redact(f"{type(exc).__name__}: {exc}", [self.token])) from None
                raise PublishError(redact(f"{step} failed: {type(exc).__name__}: {exc}", [self.token])) from None

        def give_up(step: str, what: str, tries: int) -> PublishError:
            times = "1 time" if tries == 1 else f"{tries} times"
            return PublishError(
                f"{step} failed {times} on Hugging Face at {self.endpoint} (last: {what}); "
                "run the same command again (a commit is all-or-nothing, nothing half-done is left)"
            )

        return with_retries(attempt, self.policy, step=step, on_give_up=give_up, log=self.log)

    def files_at(self, revision: str, names: list[str]) -> dict[str, Any]:
        infos = self.call(
            f"reading the files of {revision}",
            lambda: self.api.get_paths_info(self.repo_id, names, revision=revision),
        )
        return {info.path: info for info in infos if hasattr(info, "blob_id")}


def _is_transport_error(exc: BaseException) -> bool:
    try:
        import httpx2

        if isinstance(exc, httpx2.TransportError):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import httpx

        return isinstance(exc, httpx.TransportError)
    except ImportError:  # pragma: no cover
        return False


def _same(remote: Any, f: UploadFile) -> bool:
    lfs = getattr(remote, "lfs", None)
    if lfs is not None and getattr(lfs, "sha256", None):
        return lfs.sha256 == f.sha256
    return getattr(remote, "blob_id", None) == f.git_sha1


def publish_hf(
    packages: Sequence[str | os.PathLike],
    *,
    repo_id: str,
    card: str | os.PathLike | ModelCard | None = None,
    checkpoint: str | os.PathLike | None = None,
    private: bool = False,
    dry_run: bool = False,
    licence_allows_publishing: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    policy: RetryPolicy | None = None,
    log: Callable[[str], None] = stderr_log,
) -> HfResult | dict[str, Any]:
    """Upload packages (+ checkpoint, README, cover, card) to ``repo_id`` and tag ``vX.Y.Z``.

    Returns the result, or the plan for ``dry_run`` (no network, no token needed).
    """
    if not _REPO_ID.match(repo_id or "") or "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        raise PublishError(f"{repo_id!r} is not a Hugging Face repository id: use ORG/REPO (letters, digits, '-', '_', '.')")
    endpoint = (endpoint or hf_endpoint()).rstrip("/")
    package_paths = check_inputs(packages, checkpoint)
    check_licences(package_paths, public=not private, confirmed=licence_allows_publishing)
    with staging_dir() as tmp:
        model_card, card_file = resolve_card(card, package_paths, Path(tmp))
        tag = model_card.tag
        front = hf_front_matter(model_card)
        readme = render_card(model_card, front_matter=front, load_commands=[fetch_command(repo_id, tag, endpoint)])
        files = collect_files(package_paths, checkpoint, model_card, card_file, readme, Path(tmp))
        if dry_run:
            return {
                "target": "huggingface",
                "endpoint": endpoint,
                "repo_id": repo_id,
                "private": private,
                "tag": tag,
                "dry_run": True,
                "files": [f.describe() for f in files],
                "total_size": sum(f.size for f in files),
                "readme_front_matter": front,
                "card": model_card.id,
            }
        token = token or os.environ.get("HF_TOKEN", "").strip()
        if not token:
            raise PublishError(
                f"HF_TOKEN is not set: create a token with write access at {endpoint}/settings/tokens and export HF_TOKEN=..."
            )
        hf = _Hf(endpoint, token, repo_id, policy or RetryPolicy.from_env(), log)
        return _publish(hf, files, model_card, tag, private)


def _publish(hf: _Hf, files: list[UploadFile], card: ModelCard, tag: str, private: bool) -> HfResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api, repo_id = hf.api, hf.repo_id
    names = [f.name for f in files]
    url = hf.call("creating the repository", lambda: api.create_repo(repo_id, private=private, exist_ok=True))
    repo_url = str(url)
    refs = hf.call("reading the tags", lambda: api.list_repo_refs(repo_id))
    tags = {t.name: t.target_commit for t in refs.tags}
    if tag in tags:
        remote = hf.files_at(tag, names)
        differ = [f.name for f in files if f.name not in remote or not _same(remote[f.name], f)]
        if differ:
            raise PublishError(
                f"{repo_id}@{tag} already exists with other files ({', '.join(differ)} differ): "
                "raise `version` in the model card to publish a new version"
            )
        hf.log(f"{repo_id}@{tag} already holds these files")
        return HfResult(
            repo_id, tag, tags[tag], repo_url, fetch_command(repo_id, tag, hf.endpoint), sorted(names), already_published=True
        )

    existing = hf.call("listing the repository", lambda: api.list_repo_files(repo_id))
    stale = [p for p in existing if p not in names and p.lower().endswith(MODEL_SUFFIXES)]
    for path in stale:
        hf.log(f"removing {path} from main (a model file of an earlier version; it stays in that version's tag)")

    def commit() -> Any:
        ops: list[Any] = [CommitOperationAdd(path_in_repo=f.name, path_or_fileobj=str(f.path)) for f in files]
        ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
        return api.create_commit(
            repo_id,
            operations=ops,
            commit_message=f"samzoo: publish {card.id} {tag}",
            commit_description=f"{card.name}, version {card.version}, published with samzoo.",
        )

    hf.log(f"uploading {len(files)} files to {repo_id} ({sum(f.size for f in files)} bytes)")
    info = hf.call("uploading the files", commit)
    oid = info.oid

    def tag_exists(exc: BaseException) -> Any:
        if getattr(getattr(exc, "response", None), "status_code", None) != 409:
            return None
        again = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}
        if again.get(tag) == oid:
            return True  # created by an earlier try whose answer was lost
        raise PublishError(f"tag {tag} was created on {repo_id} by someone else meanwhile; raise the card's version")

    hf.call(
        f"tagging {tag}",
        lambda: api.create_tag(repo_id, tag=tag, revision=oid, tag_message=f"{card.name} {card.version}"),
        allow=tag_exists,
    )
    remote = hf.files_at(tag, names)
    differ = [f.name for f in files if f.name not in remote or not _same(remote[f.name], f)]
    if differ:
        raise PublishError(f"{repo_id}@{tag} does not hold the uploaded content of {', '.join(differ)}; check the repository")
    return HfResult(repo_id, tag, oid, repo_url, fetch_command(repo_id, tag, hf.endpoint), sorted(names))
