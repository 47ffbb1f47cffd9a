"""What a model ID names and where its files come from -- without touching the network.

Accepted forms, tried in this order:

* a registry ID or alias, case-insensitive (``vit_b_lm``, ``VIT_B_LM``, ``diplomatic-bug/1.2``)
* ``hf://ORG/REPO[@REVISION]`` -- a Hugging Face model repository (snapshot), honouring HF_ENDPOINT
* a Zenodo DOI: ``10.5281/zenodo.N``, ``doi:10.5281/zenodo.N``, ``https://doi.org/10.5281/zenodo.N``
  (also the legacy bioimage.io form ``10.5281/zenodo.CONCEPT/N``), or a Zenodo record URL
  ``https://zenodo.org/records/N`` (optionally ``/files/NAME`` for a single file). The API base is
  ``SAMZOO_ZENODO_URL`` (default https://zenodo.org); record URLs on that host are recognised too.
* an http(s) URL, optionally with ``#sha256=HEX`` (or ``#xxh128=``/``#md5=``) to verify it; a URL
  ending in rdf.yaml / bioimageio.yaml is read as a BioImage.IO package
* a local file or folder: checkpoint (.pt/.pth/...), package .zip, or an unpacked package folder
  (rdf.yaml / bioimageio.yaml), also as ``file://`` URL
* a bioimage.io resource ID ``adjective-animal`` or ``adjective-animal/VERSION``
  (resolved at fetch time through bioimageio.spec, see :mod:`samzoo.hub.bioimageio`)
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlparse

from ..errors import ModelNotFoundError
from ..registry.registry import Registry, RegistryEntry, RegistryFile, load_registry, unknown_model_message

DEFAULT_ZENODO_URL = "https://zenodo.org"
KINDS = ("registry", "huggingface", "zenodo", "url", "bioimageio", "local")

_HF_RE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[^\s@]+))?/?$")
_ZENODO_DOI_RE = re.compile(r"^10\.(?P<prefix>5281|5072)/zenodo\.(?P<rec>\d+)(?:/(?P<version>\d+))?$", re.I)
SANDBOX_ZENODO_URL = "https://sandbox.zenodo.org"
_DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")
_ZENODO_PATH_RE = re.compile(
    r"^/(?:api/)?records?/(?P<rec>\d+)(?:/files/(?P<file>[^/]+?)(?:/content)?)?/?$")
_BIOIMAGEIO_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)+(?:/(?:[0-9][0-9a-z.]*|draft))?$")
_HASH_FRAGMENT_RE = re.compile(r"^(?P<alg>sha256|xxh128|md5)[=:](?P<hex>[0-9a-fA-F]+)$")
_ZENODO_HOSTS = ("zenodo.org", "www.zenodo.org", "sandbox.zenodo.org")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
PACKAGE_YAML_NAMES = ("rdf.yaml", "bioimageio.yaml")


@dataclass(frozen=True)
class ResolvedModel:
    """What ``query`` names. ``files`` lists the files known before any download (registry
    entries, URLs, local paths); sources listed remotely (Zenodo records, hf:// repos,
    bioimage.io packages) get their files at fetch time."""

    query: str
    kind: str  # one of KINDS
    id: str  # canonical name: registry ID, hf://org/repo@rev, 10.5281/zenodo.N, URL, path, bioimage.io ID
    location: str  # where the files come from (URL, API URL, endpoint, path)
    entry: RegistryEntry | None = None
    files: tuple[RegistryFile, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cache_key(self) -> str:
        """Folder of this model inside the cache (relative), or '' for local sources."""
        d = self.details
        if self.kind == "registry":
            return f"models/{self.id}"
        if self.kind == "url":
            return f"url/{d['url_digest']}"
        if self.kind == "zenodo":
            return f"zenodo/{d['record']}"
        if self.kind == "bioimageio":
            return f"bioimageio/{d['cache_name']}"
        if self.kind == "huggingface":
            return f"huggingface/models--{d['repo'].replace('/', '--')}"
        return ""

    def to_dict(self) -> dict[str, Any]:
        out = {"query": self.query, "kind": self.kind, "id": self.id, "location": self.location,
               "files": [f.to_dict() for f in self.files], "details": dict(self.details)}
        if self.entry is not None:
            out["entry"] = self.entry.to_dict()
        return out


def zenodo_base_url() -> str:
    return (os.environ.get("SAMZOO_ZENODO_URL", "").strip() or DEFAULT_ZENODO_URL).rstrip("/")


def resolve(model_id: str | os.PathLike, *, registry: Any = None, offline: bool | None = None) -> ResolvedModel:
    """Classify ``model_id`` (see the module docstring); no downloads, no network (except
    reading a user registry given as URL). Raises ModelNotFoundError for unknown names, with the
    closest registry IDs."""
    from .download import is_offline

    if isinstance(model_id, os.PathLike):
        model_id = os.fspath(model_id)
    if not isinstance(model_id, str) or not model_id.strip():
        raise ModelNotFoundError("empty model ID: name a registry ID (`samzoo models`), a path, or a URL")
    query = model_id.strip()
    reg = registry if isinstance(registry, Registry) else load_registry(registry, offline=is_offline(offline))

    entry = reg.get(query)
    if entry is not None:
        return ResolvedModel(query=query, kind="registry", id=entry.id, entry=entry, files=entry.files,
                             location=", ".join(f.url for f in entry.files), details={"registry": entry.source})

    if query.lower().startswith("hf://"):
        return _resolve_hf(query)

    doi = _strip_doi(query)
    if doi is not None:
        return _resolve_doi(query, doi)

    if query.lower().startswith(("http://", "https://")):
        return _resolve_url(query)

    if query.lower().startswith("file://"):
        return _resolve_local(query, Path(unquote(urlparse(query).path)))
    path = Path(query).expanduser()
    if path.exists():
        return _resolve_local(query, path)
    if _looks_like_path(query):
        raise ModelNotFoundError(f"no such file or folder: {path} (model {query!r})")

    if _BIOIMAGEIO_RE.match(query.lower()):
        bid = query.lower()
        return ResolvedModel(query=query, kind="bioimageio", id=bid, location="bioimage.io",
                             details={"bioimageio_id": bid, "cache_name": _safe_name(bid)})

    raise ModelNotFoundError(unknown_model_message(query, reg))


def _looks_like_path(text: str) -> bool:
    return (text.startswith((".", "/", "~"))
            or text.lower().endswith((*CHECKPOINT_SUFFIXES, ".zip", ".yaml", ".yml"))) and "://" not in text


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _resolve_hf(query: str) -> ResolvedModel:
    m = _HF_RE.match(query)
    if m is None:
        raise ModelNotFoundError(
            f"invalid Hugging Face source {query!r}: use hf://ORG/REPO or hf://ORG/REPO@REVISION")
    repo = m.group("repo")
    revision = m.group("rev") or "main"
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return ResolvedModel(query=query, kind="huggingface", id=f"hf://{repo}@{revision}",
                         location=f"{endpoint}/{repo}/tree/{revision}",
                         details={"repo": repo, "revision": revision, "endpoint": endpoint})


def _strip_doi(query: str) -> str | None:
    """The bare DOI of DOI-like input, else None."""
    text = query.strip()
    lowered = text.lower()
    for prefix in ("doi:", "https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/"):
        if lowered.startswith(prefix):
            return unquote(text[len(prefix):])
    if _DOI_RE.match(text):
        return text
    return None


def _resolve_doi(query: str, doi: str) -> ResolvedModel:
    m = _ZENODO_DOI_RE.match(doi)
    if m is None:
        raise ModelNotFoundError(
            f"{query!r} is a DOI but not a Zenodo one (10.5281/zenodo.N, or 10.5072/zenodo.N on the sandbox); only Zenodo DOIs name "
            "downloadable records -- use the record's file URL instead")
    record = m.group("version") or m.group("rec")
    if m.group("prefix") == "5072":  # test DOIs minted by sandbox.zenodo.org (and local test servers)
        base = os.environ.get("SAMZOO_ZENODO_URL", "").strip().rstrip("/") or SANDBOX_ZENODO_URL
        return _zenodo(query, record, base, None, doi_prefix="10.5072")
    return _zenodo(query, record, zenodo_base_url(), None)


def _zenodo(query: str, record: str, base: str, filename: str | None,
            doi_prefix: str = "10.5281") -> ResolvedModel:
    api = f"{base}/api/records/{record}"
    canonical = f"{doi_prefix}/zenodo.{record}" + (f"#{filename}" if filename else "")
    return ResolvedModel(query=query, kind="zenodo", id=canonical, location=api,
                         details={"record": record, "base_url": base, "api_url": api, "file": filename})


def _resolve_url(query: str) -> ResolvedModel:
    parsed = urlparse(query)
    base = zenodo_base_url()
    zenodo_host = urlparse(base).netloc.lower()
    host = parsed.netloc.lower()
    m = _ZENODO_PATH_RE.match(parsed.path)
    if m is not None and (host == zenodo_host or host in _ZENODO_HOSTS):
        # records on zenodo.org go through SAMZOO_ZENODO_URL when it is set to a mirror
        record_base = base if host == zenodo_host or host in ("zenodo.org", "www.zenodo.org") \
            else f"{parsed.scheme}://{parsed.netloc}"
        filename = unquote(m.group("file")) if m.group("file") else None
        return _zenodo(query, m.group("rec"), record_base, filename)
    if not parsed.netloc:
        raise ModelNotFoundError(f"invalid URL {query!r}")
    expected = None
    if parsed.fragment:
        fm = _HASH_FRAGMENT_RE.match(parsed.fragment)
        if fm is None:
            raise ModelNotFoundError(
                f"URL fragment #{parsed.fragment} of {query!r} is not a hash; use #sha256=<64 hex digits>")
        from ..registry.registry import parse_hash

        try:
            alg, hexdigest = parse_hash(f"{fm.group('alg')}:{fm.group('hex')}")
        except ValueError as e:
            raise ModelNotFoundError(f"URL {query!r}: bad hash fragment: {e}") from None
        expected = f"{alg}:{hexdigest}"
    url = parsed._replace(fragment="").geturl()
    name = unquote(Path(parsed.path).name) or "download"
    name = _safe_name(name)
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    if name.lower() in PACKAGE_YAML_NAMES or name.lower().endswith(".bioimageio.yaml"):
        return ResolvedModel(query=query, kind="bioimageio", id=url, location=url,
                             details={"bioimageio_id": url, "cache_name": f"url-{digest}", "rdf_url": url})
    role = "package" if name.lower().endswith(".zip") else "checkpoint"
    rf = RegistryFile(role=role, url=url, hash=expected, filename=name)
    return ResolvedModel(query=query, kind="url", id=url, location=url, files=(rf,),
                         details={"url_digest": digest, "hash": expected})


def _resolve_local(query: str, path: Path) -> ResolvedModel:
    path = path.expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"no such file or folder: {path}")
    path = path.resolve()
    files: tuple[RegistryFile, ...] = ()
    if path.is_file():
        lowered = path.name.lower()
        if lowered in PACKAGE_YAML_NAMES or lowered.endswith(".bioimageio.yaml"):
            path = path.parent  # an rdf.yaml names its unpacked package folder
        else:
            role = "package" if lowered.endswith(".zip") else "checkpoint"
            files = (RegistryFile(role=role, url=path.as_uri()),)
    return ResolvedModel(query=query, kind="local", id=str(path), location=str(path), files=files,
                         details={"path": str(path), "is_dir": path.is_dir()})
