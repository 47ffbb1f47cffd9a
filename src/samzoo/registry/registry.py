"""The model registry: which models samzoo knows by name, and where their files come from.

A registry is a YAML file::

    format_version: 1
    models:
      - id: vit_b_lm                       # [A-Za-z0-9][A-Za-z0-9._-]*, unique (case-insensitive)
        aliases: [diplomatic-bug/1.2]      # other names, e.g. the BioImage.IO resource ID
        family: microsam                   # optional (default microsam): samzoo.families name
        architecture: vit_b                # microsam: vit_b | vit_l | vit_h | vit_t | tiny;
                                           # cellpose_sam: cpsam
        modality: lm                       # lm | em | histopathology | medical | natural
        description: One line about the model.
        citation: 10.1038/s41592-024-02580-4   # a DOI, or null
        model_card: model_cards/vit_b_lm.md    # a path under model_cards/ (next to the registry), or null
        family: microsam                   # optional, default microsam: a samzoo.families name
        licence: MIT                       # optional: the weights' licence note
        files:
          - role: checkpoint               # checkpoint | decoder | package
            url: https://.../vit_b.pt      # http(s) URL, package://<python package>/<path>, or a
                                           # local path / file:// URL (relative to the registry file)
            hash: xxh128:fe9252a29f3f4ea53c15a06de471e186   # xxh128:/sha256:/md5:<hex>
            size: 375042383                # bytes, optional
            microsam_name: vit_b_lm        # optional: the file's name in micro-sam's model cache
            unhashed: no hash published    # instead of ``hash`` where the authors publish none

Entries may also say ``family`` (the samzoo model family, default ``microsam``), ``licence`` (a
note shown by ``samzoo info`` and carried into packages) and ``redistributable: false`` (weights
that must not be mirrored or published; ``samzoo publish`` asks for confirmation). Files behind a
personal-token portal are described by ``gated`` instead of a public download URL::

          - role: checkpoint
            url: https://users.example.org/api/getData/   # the portal API (POST)
            hash: md5:<hex>                                # of the archive the API hands out
            member: models_v1/model.pt                     # the file inside that archive
            gated:
              token_env: EXAMPLE_ACCESS_TOKEN              # read from the environment, never printed
              header: X-Api-Key                            # HTTP header carrying the token
              form: {s3_key: models/archive.tar.gz}        # form fields of the request
              signup: https://users.example.org            # where users get a token

``hash`` is required for http(s) files, unless ``unhashed`` says why there is none: such a file is
trusted on first use (downloaded with a warning that prints its sha256, which samzoo records and
reuses; pin it by adding ``hash``). The shipped registry lives next to this module
(``registry.yaml``); users add their own with ``--registry`` or ``SAMZOO_REGISTRY`` (paths or URLs,
``os.pathsep``-separated). Later registries override entries of earlier ones with the same ID.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlparse

import yaml

from ..errors import ModelNotFoundError, OfflineError, RegistryError

FORMAT_VERSION = 1


class _FamilyArchitectures(Mapping[str, tuple[str, ...]]):
    """Family name -> the ``architecture`` values its registry entries may give, asked of the family
    registry (``FamilySpec.architectures``) on use, so a new family needs no edit here. Entries
    without ``family`` are μSAM models."""

    def _data(self) -> dict[str, tuple[str, ...]]:
        from ..families import family_architectures

        return family_architectures()

    def __getitem__(self, family: str) -> tuple[str, ...]:
        return self._data()[family]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return repr(self._data())


FAMILY_ARCHITECTURES: Mapping[str, tuple[str, ...]] = _FamilyArchitectures()


def __getattr__(name: str) -> Any:
    if name == "ARCHITECTURES":  # μSAM's, kept for callers of the old constant
        return FAMILY_ARCHITECTURES["microsam"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
MODALITIES = ("lm", "em", "histopathology", "medical", "natural")
ROLES = ("checkpoint", "decoder", "package")
HASH_ALGORITHMS = {"xxh128": 32, "sha256": 64, "md5": 32}
ENV_REGISTRY = "SAMZOO_REGISTRY"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENTRY_KEYS = {"id", "aliases", "architecture", "modality", "files", "description", "citation", "model_card",
               "family", "licence", "redistributable"}
_FILE_KEYS = {"role", "url", "hash", "size", "microsam_name", "filename", "member", "gated", "unhashed"}
_GATED_KEYS = {"token_env", "header", "form", "signup"}
_DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")


def builtin_registry_path() -> Path:
    """The registry shipped in the package."""
    return Path(__file__).with_name("registry.yaml")


@dataclass(frozen=True)
class RegistryFile:
    """One file of a registry entry. ``url`` is absolute: http(s)://, package://, or file://."""

    role: str
    url: str
    hash: str | None = None
    size: int | None = None
    microsam_name: str | None = None
    filename: str | None = None
    member: str | None = None
    """For archives: the path of the wanted file inside the archive (extracted into the cache)."""
    gated: Mapping[str, Any] | None = field(default=None, hash=False)
    """Personal-token portal: token_env, header, form (dict), signup (see the module docstring)."""
    # Why an http(s) file has no hash (e.g. "no hash published by the authors"): the file is then
    # trusted on first use, its sha256 recorded at download and checked afterwards (with a warning).
    unhashed: str | None = None

    @property
    def is_remote(self) -> bool:
        return self.url.startswith(("http://", "https://"))

    def local_path(self) -> Path | None:
        """The file on this machine for package:// and file:// URLs (whether or not it exists)."""
        return local_path_of(self.url)

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class RegistryEntry:
    """A model samzoo knows by name."""

    id: str
    architecture: str
    modality: str
    files: tuple[RegistryFile, ...]
    family: str = "microsam"
    aliases: tuple[str, ...] = ()
    description: str = ""
    citation: str | None = None
    model_card: str | None = None
    licence: str | None = None
    redistributable: bool = True
    source: str = field(default="", compare=False)  # the registry file or URL it came from

    def file(self, role: str) -> RegistryFile | None:
        for f in self.files:
            if f.role == role:
                return f
        return None

    def model_card_path(self) -> Path | None:
        """The model card file for local registries (None for null cards or remote registries)."""
        if not self.model_card or self.source.startswith(("http://", "https://")):
            return None
        return Path(self.source).parent / self.model_card

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "aliases": list(self.aliases),
            "family": self.family,
            "architecture": self.architecture,
            "modality": self.modality,
            "description": self.description,
            "citation": self.citation,
            "model_card": self.model_card,
            "licence": self.licence,
            "redistributable": self.redistributable,
            "files": [f.to_dict() for f in self.files],
            "registry": self.source,
        }


def local_path_of(url: str) -> Path | None:
    """Path for ``package://pkg/rel/path`` and ``file://`` URLs, None for anything else."""
    if url.startswith("package://"):
        rest = url[len("package://"):]
        package, _, rel = rest.partition("/")
        from importlib import resources

        try:
            root = resources.files(package)
        except (ModuleNotFoundError, TypeError) as e:
            raise ModelNotFoundError(f"{url}: Python package '{package}' is not installed ({e})") from None
        return Path(str(root.joinpath(*rel.split("/"))))
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    return None


# --------------------------------------------------------------------------------------------
# validation


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}" if where else message)

    def raise_if_any(self) -> None:
        if self.items:
            shown = "; ".join(self.items[:6])
            more = f" (and {len(self.items) - 6} more)" if len(self.items) > 6 else ""
            raise RegistryError(f"invalid registry {self.source}: {shown}{more}")


def parse_hash(value: str) -> tuple[str, str]:
    """``"xxh128:ABC..."`` -> ``("xxh128", "abc...")``; raises ValueError with the reason."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"must look like 'xxh128:<hex>' or 'sha256:<hex>', got {value!r}")
    alg, _, hexdigest = value.partition(":")
    alg = alg.strip().lower()
    hexdigest = hexdigest.strip().lower()
    if alg not in HASH_ALGORITHMS:
        raise ValueError(f"unknown hash algorithm {alg!r} (use one of {', '.join(HASH_ALGORITHMS)})")
    n = HASH_ALGORITHMS[alg]
    if len(hexdigest) != n or not re.fullmatch(r"[0-9a-f]+", hexdigest):
        raise ValueError(f"{alg} hash must be {n} hex digits, got {hexdigest!r}")
    return alg, hexdigest


def _validate_file(raw: Any, entry_where: str, fpath: str, base: str, problems: _Problems,
                   remote_registry: bool) -> RegistryFile | None:
    def where_of(sub: str = "") -> str:
        return f"{entry_where} field '{fpath}{'.' + sub if sub else ''}'"

    where = where_of()
    if not isinstance(raw, Mapping):
        problems.add(where, f"must be a mapping with role/url/hash, got {type(raw).__name__}")
        return None
    ok = True
    unknown = sorted(set(map(str, raw)) - _FILE_KEYS)
    if unknown:
        problems.add(where, f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_FILE_KEYS))})")
        ok = False
    role = raw.get("role")
    if role not in ROLES:
        problems.add(where_of("role"), f"must be one of {', '.join(ROLES)}, got {role!r}")
        ok = False
    url = raw.get("url")
    if not isinstance(url, str) or not url.strip():
        problems.add(where_of("url"), "is required (http(s) URL, package://..., or a path)")
        return None
    url = url.strip()
    if url.startswith(("http://", "https://")):
        parsed = urlparse(url)
        if not parsed.netloc:
            problems.add(where_of("url"), f"is not a valid URL: {url!r}")
            ok = False
    elif url.startswith("package://"):
        if "/" not in url[len("package://"):]:
            problems.add(where_of("url"), f"package URLs look like package://<python package>/<path>, got {url!r}")
            ok = False
    elif "://" in url and not url.startswith("file://"):
        problems.add(where_of("url"), f"unsupported URL scheme in {url!r} (use http(s)://, package:// or a path)")
        ok = False
    else:
        if remote_registry:
            problems.add(where_of("url"), f"a registry fetched from a URL cannot point at local files ({url!r})")
            ok = False
        else:
            path = Path(unquote(urlparse(url).path)) if url.startswith("file://") else Path(url).expanduser()
            if not path.is_absolute():
                path = Path(base) / path
            url = path.resolve().as_uri()
    hash_value = raw.get("hash")
    if hash_value is not None:
        try:
            alg, hexdigest = parse_hash(hash_value)
            hash_value = f"{alg}:{hexdigest}"
        except ValueError as e:
            problems.add(where_of("hash"), str(e))
            ok = False
    elif url.startswith(("http://", "https://")) and not raw.get("unhashed"):
        problems.add(where_of("hash"), "is required for files downloaded over http(s) (xxh128:<hex> or sha256:<hex>), "
                                       "or 'unhashed: <why>' where no hash is published")
        ok = False
    unhashed = raw.get("unhashed")
    if unhashed is not None and (not isinstance(unhashed, str) or not unhashed.strip() or hash_value is not None):
        problems.add(where_of("unhashed"), "must be a reason (text), on a file without a hash")
        ok = False
    size = raw.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        problems.add(where_of("size"), f"must be a non-negative integer (bytes) or null, got {size!r}")
        ok = False
    for key in ("microsam_name", "filename"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not _ID_RE.match(value)):
            problems.add(where_of(key), f"must be a plain file name, got {value!r}")
            ok = False
    member = raw.get("member")
    if member is not None and (not isinstance(member, str) or member.startswith("/") or ".." in member.split("/")
                               or not member.strip()):
        problems.add(where_of("member"), f"must be a relative path inside the archive, got {member!r}")
        ok = False
    gated = raw.get("gated")
    if gated is not None:
        if not isinstance(gated, Mapping):
            problems.add(where_of("gated"), f"must be a mapping ({', '.join(sorted(_GATED_KEYS))})")
            ok = False
        else:
            bad = sorted(set(map(str, gated)) - _GATED_KEYS)
            missing = sorted({"token_env", "header"} - set(gated))
            form = gated.get("form", {})
            if bad or missing or not isinstance(form, Mapping) or not all(
                    isinstance(gated.get(k), str) and gated.get(k) for k in ("token_env", "header")):
                problems.add(where_of("gated"), f"needs token_env and header (text) and an optional form mapping; "
                                                f"unknown: {bad or 'none'}, missing: {missing or 'none'}")
                ok = False
            if not url.startswith("https://") and not url.startswith("http://"):
                problems.add(where_of("url"), "a gated file needs the portal's http(s) API URL")
                ok = False
            if hash_value is None:
                problems.add(where_of("hash"), "is required for gated files")
                ok = False
    if not ok:
        return None
    return RegistryFile(role=role, url=url, hash=hash_value, size=size,
                        microsam_name=raw.get("microsam_name"), filename=raw.get("filename"), member=member,
                        gated=dict(gated) if gated is not None else None,
                        unhashed=unhashed.strip() if isinstance(unhashed, str) else None)


def _doi_problem(value: Any) -> str:
    return f"must be a DOI such as 10.1038/s41592-024-02580-4, got {value!r}"


def _validate_entry(raw: Any, index: int, base: str, problems: _Problems,
                    remote_registry: bool) -> RegistryEntry | None:
    where = f"models[{index}]"
    if not isinstance(raw, Mapping):
        problems.add(where, f"must be a mapping, got {type(raw).__name__}")
        return None
    model_id = raw.get("id")
    if isinstance(model_id, str) and model_id:
        where = f"models[{index}] (id {model_id!r})"
    n_before = len(problems.items)
    unknown = sorted(set(map(str, raw)) - _ENTRY_KEYS)
    if unknown:
        problems.add(where, f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_ENTRY_KEYS))})")
    if not isinstance(model_id, str) or not _ID_RE.match(model_id):
        problems.add(f"{where} field 'id'", f"must match [A-Za-z0-9][A-Za-z0-9._-]*, got {model_id!r}")
    aliases = raw.get("aliases") or []
    if isinstance(aliases, str):
        aliases = [aliases]
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() and " " not in a for a in aliases):
        problems.add(f"{where} field 'aliases'", f"must be a list of names without spaces, got {aliases!r}")
        aliases = []
    family = raw.get("family", "microsam")
    if family not in FAMILY_ARCHITECTURES:
        problems.add(f"{where} field 'family'", f"must be one of {', '.join(FAMILY_ARCHITECTURES)}, got {family!r}")
        family = "microsam"
    arch = raw.get("architecture")
    if arch not in FAMILY_ARCHITECTURES[family]:
        problems.add(f"{where} field 'architecture'",
                     f"must be one of {', '.join(FAMILY_ARCHITECTURES[family])} for family {family}, got {arch!r}")
    modality = raw.get("modality")
    if modality not in MODALITIES:
        problems.add(f"{where} field 'modality'", f"must be one of {', '.join(MODALITIES)}, got {modality!r}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        problems.add(f"{where} field 'description'", f"must be text, got {type(description).__name__}")
    citation = raw.get("citation")
    if citation is not None:
        if not isinstance(citation, str):
            problems.add(f"{where} field 'citation'", _doi_problem(citation))
        else:
            citation = re.sub(r"^(doi:|https?://(dx\.)?doi\.org/)", "", citation.strip(), flags=re.I)
            if not _DOI_RE.match(citation):
                problems.add(f"{where} field 'citation'", _doi_problem(citation))
    model_card = raw.get("model_card")
    if model_card is not None:
        if (not isinstance(model_card, str) or not model_card.startswith("model_cards/")
                or ".." in Path(model_card).parts):
            problems.add(f"{where} field 'model_card'",
                         f"must be a path under model_cards/ or null, got {model_card!r}")
    files_raw = raw.get("files")
    files: list[RegistryFile] = []
    if not isinstance(files_raw, list) or not files_raw:
        problems.add(f"{where} field 'files'", "must be a non-empty list of {role, url, hash}")
    else:
        for j, f in enumerate(files_raw):
            rf = _validate_file(f, where, f"files[{j}]", base, problems, remote_registry)
            if rf is not None:
                files.append(rf)
        roles = [f.role for f in files]
        for role in set(roles):
            if roles.count(role) > 1:
                problems.add(f"{where} field 'files'", f"role {role!r} appears {roles.count(role)} times")
        if files and not ({"checkpoint", "package"} & set(roles)):
            problems.add(f"{where} field 'files'", "needs a file with role 'checkpoint' or 'package'")
    licence = raw.get("licence")
    if licence is not None and (not isinstance(licence, str) or not licence.strip()):
        problems.add(f"{where} field 'licence'", f"must be text, got {licence!r}")
    redistributable = raw.get("redistributable", True)
    if not isinstance(redistributable, bool):
        problems.add(f"{where} field 'redistributable'", f"must be true or false, got {redistributable!r}")
    if len(problems.items) > n_before:
        return None
    return RegistryEntry(id=model_id, architecture=arch, modality=modality, files=tuple(files), family=family,
                         aliases=tuple(a.strip() for a in aliases), description=description.strip(),
                         citation=citation, model_card=model_card,
                         licence=licence.strip() if licence else None, redistributable=redistributable)


def validate_registry(data: Any, source: str, *, base_dir: str | os.PathLike | None = None) -> list[RegistryEntry]:
    """Check parsed registry YAML; return its entries or raise RegistryError naming every problem
    (entry index and ID, field). ``base_dir`` resolves relative file paths (None: remote registry,
    local paths are refused)."""
    problems = _Problems(source)
    if not isinstance(data, Mapping):
        problems.add("", f"the top level must be a mapping with 'models:', got {type(data).__name__}")
        problems.raise_if_any()
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        problems.add("format_version", f"this samzoo reads registry format {FORMAT_VERSION}, got {version!r}")
        problems.raise_if_any()
    unknown = sorted(set(map(str, data)) - {"format_version", "models"})
    if unknown:
        problems.add("", f"unknown top-level field(s) {', '.join(unknown)} (allowed: format_version, models)")
    models = data.get("models")
    if not isinstance(models, list):
        problems.add("models", f"must be a list of model entries, got {type(models).__name__}")
        problems.raise_if_any()
    remote = base_dir is None
    base = str(base_dir) if base_dir is not None else ""
    entries = []
    for i, raw in enumerate(models):
        entry = _validate_entry(raw, i, base, problems, remote)
        if entry is not None:
            entries.append(entry)
    # names must be unique inside one registry (case-insensitive)
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        keys = dict.fromkeys(name.lower() for name in (entry.id, *entry.aliases))
        for key in keys:
            if key in seen:
                other = entries[seen[key]].id
                problems.add(f"model {entry.id!r}", f"name {key!r} is already used by model {other!r}")
            else:
                seen[key] = i
    problems.raise_if_any()
    return [RegistryEntry(**{**e.__dict__, "source": source}) for e in entries]


def read_registry_file(source: str | os.PathLike, *, offline: bool = False) -> list[RegistryEntry]:
    """Read and validate one registry: a local YAML path or an http(s) URL."""
    text_source = os.fspath(source)
    if text_source.startswith(("http://", "https://")):
        text = _read_remote_registry(text_source, offline=offline)
        base_dir = None
        label = text_source
    else:
        path = Path(text_source).expanduser()
        if not path.is_file():
            raise RegistryError(f"registry file not found: {path}")
        text = path.read_text(encoding="utf-8")
        base_dir = path.resolve().parent
        label = str(path.resolve())
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RegistryError(f"invalid registry {label}: not valid YAML{at}: {problem}") from None
    return validate_registry(data, label, base_dir=base_dir)


def _read_remote_registry(url: str, *, offline: bool) -> str:
    """Fetch a registry URL (small file, no progress bar); keep a copy for offline use."""
    from ..cache import cache_dir

    cached = cache_dir() / "registries" / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".yaml")
    if offline:
        if cached.is_file():
            return cached.read_text(encoding="utf-8")
        raise OfflineError(
            f"registry {url} is not in the cache ({cached}) and offline mode is on; run samzoo once "
            "with internet access and the same --registry/SAMZOO_REGISTRY, or use a local registry file"
        )
    import requests

    from ..hub.download import download_timeout

    try:
        response = requests.get(url, timeout=download_timeout())
        response.raise_for_status()
        text = response.text
    except requests.RequestException as e:
        if cached.is_file():
            warnings.warn(f"could not fetch registry {url} ({e}); using the cached copy {cached}", stacklevel=3)
            return cached.read_text(encoding="utf-8")
        raise RegistryError(f"could not fetch registry {url}: {e}") from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, cached)
    return text


def split_registry_list(value: str) -> list[str]:
    """Split ``SAMZOO_REGISTRY`` on ``os.pathsep`` without breaking URLs such as
    ``https://host:8080/registry.yaml`` on POSIX, where ``os.pathsep`` is ``:``."""
    parts = [p for p in value.split(os.pathsep)]
    if os.pathsep != ":":
        return [p.strip() for p in parts if p.strip()]
    out: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if part.strip().lower() in ("http", "https", "file") and i + 1 < len(parts) and parts[i + 1].startswith("//"):
            url = part.strip() + ":" + parts[i + 1]
            i += 2
            # a port: "8080/registry.yaml" or "8080"
            if i < len(parts) and re.match(r"^\d+(/|$)", parts[i]) and url.count(":") == 1 \
                    and "/" not in url[len(part.strip()) + 3:]:
                url += ":" + parts[i]
                i += 1
            out.append(url.strip())
        else:
            if part.strip():
                out.append(part.strip())
            i += 1
    return out


# --------------------------------------------------------------------------------------------
# the merged registry


class Registry:
    """The shipped registry plus user registries; lookups are case-insensitive over IDs and aliases."""

    def __init__(self, entries: Iterable[RegistryEntry] = (), sources: Sequence[str] = ()):
        self._entries: dict[str, RegistryEntry] = {}
        self.sources: list[str] = list(sources)
        for entry in entries:
            self.add(entry)

    def add(self, entry: RegistryEntry) -> None:
        """Add ``entry``; an entry with the same ID (case-insensitive) is replaced."""
        self._entries[entry.id.lower()] = entry
        self._names = None

    def _index(self) -> dict[str, RegistryEntry]:
        if getattr(self, "_names", None) is None:
            names: dict[str, RegistryEntry] = {}
            for entry in self._entries.values():  # later entries override earlier aliases
                for alias in entry.aliases:
                    names[alias.lower()] = entry
            for key, entry in self._entries.items():  # IDs win over aliases
                names[key] = entry
            self._names = names
        return self._names

    def get(self, name: str) -> RegistryEntry | None:
        """The entry whose ID or alias is ``name`` (case-insensitive), else None."""
        return self._index().get(name.strip().lower())

    def __getitem__(self, name: str) -> RegistryEntry:
        entry = self.get(name)
        if entry is None:
            raise ModelNotFoundError(unknown_model_message(name, self))
        return entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[RegistryEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return [e.id for e in self] + [a for e in self for a in e.aliases]

    def filter(self, modality: str | None = None) -> list[RegistryEntry]:
        if modality is not None and modality not in MODALITIES:
            raise RegistryError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
        return [e for e in self if modality is None or e.modality == modality]

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Closest known IDs/aliases to ``name`` (difflib), best first."""
        names = self.names()
        lowered = {x.lower(): x for x in names}
        hits = difflib.get_close_matches(name.strip().lower(), list(lowered), n=n, cutoff=0.6)
        return [lowered[h] for h in hits]


def unknown_model_message(name: str, registry: Registry) -> str:
    close = registry.suggest(name)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return (
        f"unknown model {name!r}: {hint}`samzoo models` lists the known IDs; other sources are "
        "paths, http(s) URLs, hf://ORG/REPO[@REVISION], Zenodo DOIs (10.5281/zenodo.N) and "
        "bioimage.io IDs (adjective-animal[/version])"
    )


def registry_sources(extra: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> list[str]:
    """The user registries in the order they apply: ``SAMZOO_REGISTRY`` then ``extra``."""
    sources = split_registry_list(os.environ.get(ENV_REGISTRY, ""))
    if extra is not None:
        if isinstance(extra, (str, os.PathLike)):
            sources.append(os.fspath(extra))
        else:
            sources.extend(os.fspath(x) for x in extra)
    return sources


def load_registry(extra: str | os.PathLike | Sequence[str | os.PathLike] | Registry | None = None, *,
                  offline: bool = False) -> Registry:
    """The shipped registry, then the registries in ``SAMZOO_REGISTRY``, then ``extra``
    (one path/URL or a list). A :class:`Registry` passed as ``extra`` is returned unchanged."""
    if isinstance(extra, Registry):
        return extra
    builtin = builtin_registry_path()
    entries = list(read_registry_file(builtin, offline=offline))
    sources = [str(builtin)]
    for source in registry_sources(extra):
        entries.extend(read_registry_file(source, offline=offline))
        sources.append(source)
    return Registry(entries, sources)
