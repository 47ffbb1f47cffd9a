"""Model cards: one YAML file per model, the single source of a model's description.

The same card feeds the README shipped on Zenodo, on Hugging Face and inside the BioImage.IO package
(``render_card``), the Zenodo deposit metadata (``samzoo.publishing.zenodo``) and the Hugging Face
README header (``samzoo.publishing.huggingface``). ``model_cards/`` in the repository holds the cards
of the models samzoo ships or documents.

Schema (``required`` fields must be present and non-empty; everything else is optional)::

    id: vit_b_lm                      # short name; defaults to the card's file name
    name: ...                         # required, human-readable title
    description: ...                  # required, one paragraph
    version: 1.2.0                    # required, X.Y.Z (the Hugging Face tag is vX.Y.Z)
    license: CC-BY-4.0                # required, SPDX identifier of the weights' license
    modality: light microscopy        # required, imaging modality the model is for
    architecture:                     # required
      type: sam                       #   model family (default "sam")
      encoder: vit_b                  #   required: image encoder
      decoder: unetr                  #   instance segmentation (AIS) decoder, if any
      ...                             #   any further key: value pairs are kept and shown
    authors:                          # required, at least one
      - name: Anwai Archit            #   "Given Family" or "Family, Given"
        affiliation: ...
        orcid: 0000-0002-1694-233X    #   checked with the ORCID checksum
        github_user: anwai98
    maintainers: [same fields as authors]
    citations:                        # required; must include the μSAM and SAM papers
      - text: "Archit et al. Segment Anything for Microscopy. Nature Methods (2025)"
        doi: 10.1038/s41592-024-02580-4
        url: https://...              #   doi and/or url
    tags: [segment-anything, ...]     # required
    training_data:                    # required
      description: ...
      ids: [...]                      #   dataset identifiers (DOIs, BioImage.IO ids, names)
      urls: [...]
    intended_use: ...                 # required
    limitations: ...                  # required, text or list of points
    parent_model: vit_b               # the model this one was fine-tuned from: an ID, DOI,
                                      #   hf://ORG/REPO or URL, or a mapping {id, doi, url}
    base_model: facebook/sam-vit-base # Hugging Face repo id of the parent (README header)
    metrics:                          # table rows; value null = not measured yet
      - {name: mSA, value: 0.5, dataset: ..., description: ...}
    documentation:                    # extra README sections, in order
      - {title: ..., text: ...}       #   (a mapping title: text also works)
    cover: cover.png                  # picture, relative to the card file and inside its folder
    links: [https://...]

``load_card(path)`` reads and validates a card; ``validate_card(mapping)`` validates a mapping that
is already loaded. Both raise one ``CardError`` that lists every missing field and every invalid
value. ``render_card(card)`` returns the README text, ``write_readme`` writes it with its cover.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import CardError

__all__ = [
    "MUSAM_DOI",
    "SAM_ARXIV",
    "SAM_DOI",
    "REQUIRED_FIELDS",
    "Architecture",
    "Citation",
    "DocSection",
    "Metric",
    "ModelCard",
    "ParentModel",
    "Person",
    "TrainingData",
    "is_valid_orcid",
    "load_card",
    "normalize_doi",
    "render_card",
    "spdx_license_ids",
    "validate_card",
    "write_readme",
]

#: Segment Anything for Microscopy (Archit et al., Nature Methods 2025).
MUSAM_DOI = "10.1038/s41592-024-02580-4"
#: Segment Anything (Kirillov et al., ICCV 2023) and its arXiv preprint.
SAM_DOI = "10.1109/ICCV51070.2023.00371"
SAM_ARXIV = "2304.02643"

REQUIRED_FIELDS = (
    "name",
    "description",
    "version",
    "license",
    "modality",
    "architecture",
    "authors",
    "citations",
    "tags",
    "training_data",
    "intended_use",
    "limitations",
)
OPTIONAL_FIELDS = (
    "id",
    "maintainers",
    "parent_model",
    "base_model",
    "metrics",
    "documentation",
    "cover",
    "links",
)

_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
_ORCID = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")
_GITHUB_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_URL = re.compile(r"^https?://\S+$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HF_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

# A few common licenses, used only when bioimageio.spec's SPDX list is not installed.
_FALLBACK_SPDX = frozenset(
    "MIT Apache-2.0 BSD-2-Clause BSD-3-Clause CC0-1.0 CC-BY-4.0 CC-BY-SA-4.0 CC-BY-NC-4.0 "
    "CC-BY-NC-SA-4.0 CC-BY-ND-4.0 CC-BY-NC-ND-4.0 GPL-2.0-only GPL-2.0-or-later GPL-3.0-only "
    "GPL-3.0-or-later LGPL-2.1-only LGPL-2.1-or-later LGPL-3.0-only LGPL-3.0-or-later "
    "AGPL-3.0-only AGPL-3.0-or-later MPL-2.0 Unlicense ISC Zlib".split()
)
_spdx_cache: frozenset[str] | None = None


def spdx_license_ids() -> frozenset[str]:
    """Current (non-deprecated) SPDX license identifiers.

    Read from the SPDX list that bioimageio.spec ships (without importing bioimageio.spec);
    a short list of common licenses when it is not installed.
    """
    global _spdx_cache
    if _spdx_cache is None:
        ids: frozenset[str] = _FALLBACK_SPDX
        try:
            import importlib.util

            spec = importlib.util.find_spec("bioimageio.spec")
            for location in (spec.submodule_search_locations or []) if spec else []:
                listing = Path(location) / "static" / "spdx_licenses.json"
                if listing.is_file():
                    entries = json.loads(listing.read_text(encoding="utf-8"))["licenses"]
                    ids = frozenset(
                        e["licenseId"] for e in entries if not e.get("isDeprecatedLicenseId")
                    )
                    break
        except (ImportError, ValueError, KeyError, OSError):
            pass
        _spdx_cache = ids
    return _spdx_cache


def is_valid_orcid(orcid: str) -> bool:
    """True for a well-formed ORCID iD (``0000-0002-1694-233X``) whose ISO 7064 11,2 check digit fits."""
    if not isinstance(orcid, str) or not _ORCID.match(orcid):
        return False
    digits = orcid.replace("-", "")
    total = 0
    for ch in digits[:-1]:
        total = (total + int(ch)) * 2
    check = (12 - total % 11) % 11
    return digits[-1] == ("X" if check == 10 else str(check))


def normalize_doi(value: str) -> str:
    """``https://doi.org/10.1/X`` / ``doi:10.1/X`` -> ``10.1/X`` (stripped; case kept)."""
    text = str(value).strip()
    for prefix in ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "doi:"):
        if text.lower().startswith(prefix):
            return text[len(prefix):]
    return text


# ----------------------------------------------------------------------------------------------
# Data classes


@dataclass(frozen=True)
class Person:
    name: str
    affiliation: str | None = None
    orcid: str | None = None
    github_user: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Citation:
    text: str
    doi: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class TrainingData:
    description: str
    ids: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | int | str | None = None  # None: not measured yet
    dataset: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class DocSection:
    title: str
    text: str


@dataclass(frozen=True)
class ParentModel:
    id: str | None = None  # samzoo reference: registry name, DOI, hf://ORG/REPO or URL
    doi: str | None = None
    url: str | None = None

    @property
    def label(self) -> str:
        return self.id or self.doi or self.url or ""

    def identifier(self) -> tuple[str, str] | None:
        """(scheme, identifier) for a persistent link to the parent: ("doi", ..) or ("url", ..)."""
        if self.doi:
            return "doi", normalize_doi(self.doi)
        if self.url:
            return "url", self.url
        ref = self.id or ""
        if _DOI.match(normalize_doi(ref)):
            return "doi", normalize_doi(ref)
        if ref.startswith("hf://"):
            repo = ref[len("hf://"):].split("@", 1)[0]
            return "url", f"https://huggingface.co/{repo}"
        if _URL.match(ref):
            return "url", ref
        return None


@dataclass(frozen=True)
class Architecture:
    encoder: str
    type: str = "sam"
    decoder: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def items(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = [("type", self.type), ("encoder", self.encoder)]
        if self.decoder:
            rows.append(("decoder", self.decoder))
        rows.extend(self.extra.items())
        return rows


@dataclass(frozen=True)
class ModelCard:
    id: str
    name: str
    description: str
    version: str
    license: str
    modality: str
    architecture: Architecture
    authors: tuple[Person, ...]
    citations: tuple[Citation, ...]
    tags: tuple[str, ...]
    training_data: TrainingData
    intended_use: str
    limitations: tuple[str, ...]
    maintainers: tuple[Person, ...] = ()
    parent_model: ParentModel | None = None
    base_model: str | None = None
    metrics: tuple[Metric, ...] = ()
    documentation: tuple[DocSection, ...] = ()
    cover: str | None = None
    links: tuple[str, ...] = ()
    source: Path | None = None  # the card file, when read from one

    @property
    def tag(self) -> str:
        """The version tag, ``vX.Y.Z``."""
        return f"v{self.version}"

    @property
    def cover_path(self) -> Path | None:
        """The cover picture's path (inside the card's folder, see ``validate_card``), or None."""
        if not self.cover:
            return None
        problem = _card_file_problem(self.cover, self.source)
        if problem is not None:
            raise CardError(f"model card {self.source or ''}: cover {self.cover!r} {problem}")
        return self.source.parent / self.cover if self.source is not None else Path(self.cover)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/YAML-serialisable), without the source path."""
        data = asdict(self)
        data.pop("source")
        data["architecture"] = dict(self.architecture.items())
        return _plain(data)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Validation


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple, dict)) and len(value) == 0) or (
        isinstance(value, str) and not value.strip()
    )


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


class _Checker:
    def __init__(self) -> None:
        self.missing: list[str] = []
        self.problems: list[str] = []

    def text(self, data: Mapping, key: str, where: str, required: bool = True) -> str | None:
        value = data.get(key)
        if _missing(value):
            if required:
                self.missing.append(f"{where}{key}")
            return None
        if isinstance(value, (Mapping, list, tuple)):
            self.problems.append(f"{where}{key} must be text")
            return None
        return _str(value)

    def person(self, entry: Any, where: str) -> Person | None:
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping):
            self.problems.append(f"{where} must be a mapping with a name")
            return None
        unknown = set(entry) - {"name", "affiliation", "orcid", "github_user", "email"}
        if unknown:
            self.problems.append(f"{where} has unknown fields {sorted(unknown)}")
        name = self.text(entry, "name", f"{where}.")
        orcid = _str(entry.get("orcid")) or None
        if orcid:
            orcid = orcid.removeprefix("https://orcid.org/").removeprefix("http://orcid.org/")
            if not is_valid_orcid(orcid):
                self.problems.append(f"{where}.orcid {orcid!r} is not a valid ORCID iD (bad format or checksum)")
        github = _str(entry.get("github_user")) or None
        if github and not _GITHUB_USER.match(github):
            self.problems.append(f"{where}.github_user {github!r} is not a GitHub user name")
        if name is None:
            return None
        return Person(
            name=name,
            affiliation=_str(entry.get("affiliation")) or None,
            orcid=orcid,
            github_user=github,
            email=_str(entry.get("email")) or None,
        )

    def people(self, data: Mapping, key: str, required: bool) -> tuple[Person, ...]:
        value = data.get(key)
        if _missing(value):
            if required:
                self.missing.append(key)
            return ()
        if not isinstance(value, list):
            self.problems.append(f"{key} must be a list")
            return ()
        people = [self.person(entry, f"{key}[{i}]") for i, entry in enumerate(value)]
        return tuple(p for p in people if p is not None)

    def text_list(self, data: Mapping, key: str, required: bool) -> tuple[str, ...]:
        value = data.get(key)
        if _missing(value):
            if required:
                self.missing.append(key)
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or any(isinstance(v, (Mapping, list)) or _missing(v) for v in value):
            self.problems.append(f"{key} must be a list of non-empty texts")
            return ()
        return tuple(_str(v) for v in value)  # type: ignore[misc]


def _card_file_problem(name: str, source: str | os.PathLike | None) -> str | None:
    """Why a file the card names (its cover) is not acceptable, or None.

    A card names files relative to its own folder, and they must stay inside it (symbolic links
    resolved): a card travels inside packages and is published from there, and a card that could
    name ``/home/me/.ssh/id_rsa`` or ``../../secret`` as its cover would make ``samzoo publish``
    upload that file."""
    path = Path(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":") or "\\" in name or "://" in name:
        return "must be a path relative to the card's folder (absolute paths and URLs are not allowed)"
    if ".." in path.parts:
        return "must lie inside the card's folder ('..' is not allowed)"
    if source is not None:
        folder = Path(source).resolve().parent
        target = (folder / path).resolve()
        if folder not in target.parents:
            return f"resolves to {target}, outside the card's folder {folder}"
    return None


def validate_card(data: Mapping[str, Any] | ModelCard, *, source: str | os.PathLike | None = None) -> ModelCard:
    """Check a card mapping against the schema and return the ``ModelCard``.

    Raises one ``CardError`` that names every missing required field and every invalid value.
    A ``ModelCard`` passed in is converted back to a mapping and checked again.
    """
    if isinstance(data, ModelCard):
        source = source or data.source
        data = data.to_dict()
    where = f"model card {source}" if source else "model card"
    if not isinstance(data, Mapping):
        raise CardError(f"{where}: expected a YAML mapping of fields, got {type(data).__name__}")
    c = _Checker()

    unknown = set(data) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS)
    if unknown:
        c.problems.append(f"unknown fields {sorted(unknown)} (known: {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)})")

    name = c.text(data, "name", "")
    description = c.text(data, "description", "")
    version = c.text(data, "version", "")
    if version is not None and not _VERSION.match(version):
        c.problems.append(f"version {version!r} is not X.Y.Z (write it in quotes, e.g. \"1.0.0\")")
    license_id = c.text(data, "license", "")
    if license_id is not None and license_id not in spdx_license_ids():
        c.problems.append(f"license {license_id!r} is not an SPDX license identifier (e.g. MIT, Apache-2.0, CC-BY-4.0)")
    modality = c.text(data, "modality", "")
    intended_use = c.text(data, "intended_use", "")

    card_id = c.text(data, "id", "", required=False)
    if card_id is None and source is not None:
        card_id = Path(source).stem
    if card_id is not None and not _ID.match(card_id):
        c.problems.append(f"id {card_id!r} may only hold letters, digits, '.', '_' and '-'")

    # architecture
    architecture = None
    arch = data.get("architecture")
    if _missing(arch):
        c.missing.append("architecture")
    elif not isinstance(arch, Mapping):
        c.problems.append("architecture must be a mapping with at least 'encoder'")
    else:
        encoder = c.text(arch, "encoder", "architecture.")
        if encoder is not None:
            extra = {k: v for k, v in arch.items() if k not in ("type", "encoder", "decoder")}
            architecture = Architecture(
                encoder=encoder,
                type=_str(arch.get("type")) or "sam",
                decoder=_str(arch.get("decoder")) or None,
                extra=extra,
            )

    authors = c.people(data, "authors", required=True)
    maintainers = c.people(data, "maintainers", required=False)

    # citations
    citations: list[Citation] = []
    cites = data.get("citations")
    if _missing(cites):
        c.missing.append("citations")
    elif not isinstance(cites, list):
        c.problems.append("citations must be a list of {text, doi, url}")
    else:
        for i, entry in enumerate(cites):
            if not isinstance(entry, Mapping):
                c.problems.append(f"citations[{i}] must be a mapping with text and doi or url")
                continue
            unknown_c = set(entry) - {"text", "doi", "url"}
            if unknown_c:
                c.problems.append(f"citations[{i}] has unknown fields {sorted(unknown_c)}")
            text = c.text(entry, "text", f"citations[{i}].")
            doi = _str(entry.get("doi")) or None
            url = _str(entry.get("url")) or None
            if doi is not None:
                doi = normalize_doi(doi)
                if not _DOI.match(doi):
                    c.problems.append(f"citations[{i}].doi {doi!r} is not a DOI (10.NNNN/...)")
            if url is not None and not _URL.match(url):
                c.problems.append(f"citations[{i}].url {url!r} is not an http(s) URL")
            if doi is None and url is None:
                c.problems.append(f"citations[{i}] needs a doi or a url")
            if text is not None:
                citations.append(Citation(text=text, doi=doi, url=url))
        dois = {(ci.doi or "").lower() for ci in citations}
        urls = " ".join((ci.url or "") for ci in citations) + " " + " ".join(dois)
        if MUSAM_DOI.lower() not in dois:
            c.problems.append(f"citations must include the μSAM paper (doi {MUSAM_DOI})")
        if SAM_DOI.lower() not in dois and SAM_ARXIV not in urls:
            c.problems.append(
                f"citations must include Segment Anything (Kirillov et al. 2023, doi {SAM_DOI} or arXiv {SAM_ARXIV})"
            )

    tags = c.text_list(data, "tags", required=True)
    links = c.text_list(data, "links", required=False)
    for link in links:
        if not _URL.match(link):
            c.problems.append(f"links: {link!r} is not an http(s) URL")

    # training data
    training = None
    td = data.get("training_data")
    if _missing(td):
        c.missing.append("training_data")
    elif isinstance(td, str):
        training = TrainingData(description=td.strip())
    elif not isinstance(td, Mapping):
        c.problems.append("training_data must be a mapping {description, ids, urls}")
    else:
        unknown_t = set(td) - {"description", "ids", "urls"}
        if unknown_t:
            c.problems.append(f"training_data has unknown fields {sorted(unknown_t)}")
        desc = c.text(td, "description", "training_data.")
        ids = c.text_list(td, "ids", required=False)
        urls = c.text_list(td, "urls", required=False)
        for url in urls:
            if not _URL.match(url):
                c.problems.append(f"training_data.urls: {url!r} is not an http(s) URL")
        if desc is not None:
            training = TrainingData(description=desc, ids=ids, urls=urls)

    limitations = c.text_list(data, "limitations", required=True)

    # parent model
    parent = None
    pm = data.get("parent_model")
    if not _missing(pm):
        if isinstance(pm, str):
            parent = ParentModel(id=pm.strip())
        elif isinstance(pm, Mapping) and not (set(pm) - {"id", "doi", "url"}) and any(
            not _missing(pm.get(k)) for k in ("id", "doi", "url")
        ):
            parent = ParentModel(
                id=_str(pm.get("id")) or None, doi=_str(pm.get("doi")) or None, url=_str(pm.get("url")) or None
            )
            if parent.doi and not _DOI.match(normalize_doi(parent.doi)):
                c.problems.append(f"parent_model.doi {parent.doi!r} is not a DOI")
            if parent.url and not _URL.match(parent.url):
                c.problems.append(f"parent_model.url {parent.url!r} is not an http(s) URL")
        else:
            c.problems.append("parent_model must be a reference (text) or a mapping {id, doi, url}")
    base_model = c.text(data, "base_model", "", required=False)
    if base_model is not None and not _HF_REPO.match(base_model):
        c.problems.append(f"base_model {base_model!r} is not a Hugging Face repo id (ORG/NAME)")

    # metrics
    metrics: list[Metric] = []
    ms = data.get("metrics")
    if not _missing(ms):
        if not isinstance(ms, list):
            c.problems.append("metrics must be a list of {name, value, dataset, description}")
        else:
            for i, entry in enumerate(ms):
                if not isinstance(entry, Mapping):
                    c.problems.append(f"metrics[{i}] must be a mapping")
                    continue
                unknown_m = set(entry) - {"name", "value", "dataset", "description"}
                if unknown_m:
                    c.problems.append(f"metrics[{i}] has unknown fields {sorted(unknown_m)}")
                mname = c.text(entry, "name", f"metrics[{i}].")
                value = entry.get("value")
                if isinstance(value, (Mapping, list, bool)):
                    c.problems.append(f"metrics[{i}].value must be a number, a text or null")
                    value = None
                if mname is not None:
                    metrics.append(
                        Metric(
                            name=mname,
                            value=value,
                            dataset=_str(entry.get("dataset")) or None,
                            description=_str(entry.get("description")) or None,
                        )
                    )

    # documentation sections
    docs: list[DocSection] = []
    dv = data.get("documentation")
    if not _missing(dv):
        if isinstance(dv, Mapping):
            dv = [{"title": k, "text": v} for k, v in dv.items()]
        if not isinstance(dv, list):
            c.problems.append("documentation must be a list of {title, text} (or a mapping title: text)")
        else:
            for i, entry in enumerate(dv):
                if not isinstance(entry, Mapping):
                    c.problems.append(f"documentation[{i}] must be a mapping {{title, text}}")
                    continue
                title = c.text(entry, "title", f"documentation[{i}].")
                text = c.text(entry, "text", f"documentation[{i}].")
                if title is not None and text is not None:
                    docs.append(DocSection(title=title, text=text))

    cover = c.text(data, "cover", "", required=False)
    if cover is not None:
        problem = _card_file_problem(cover, source)
        if problem is None and source is not None:
            cover_path = Path(source).parent / cover
            if not cover_path.is_file():
                problem = f"does not exist (looked for {cover_path})"
        if problem is not None:
            c.problems.append(f"cover {cover!r} {problem}")

    if c.missing or c.problems:
        order = {name: i for i, name in enumerate(REQUIRED_FIELDS)}
        c.missing.sort(key=lambda f: order.get(re.split(r"[.\[]", f)[0], len(order)))
        parts = []
        if c.missing:
            parts.append("missing required fields: " + ", ".join(c.missing))
        if c.problems:
            parts.append("invalid: " + "; ".join(c.problems))
        err = CardError(f"{where}: " + "; ".join(parts))
        err.missing = list(c.missing)  # type: ignore[attr-defined]
        err.problems = list(c.problems)  # type: ignore[attr-defined]
        raise err

    assert name and description and version and license_id and modality and intended_use
    assert architecture is not None and training is not None
    return ModelCard(
        id=card_id or re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower(),
        name=name,
        description=description,
        version=version,
        license=license_id,
        modality=modality,
        architecture=architecture,
        authors=authors,
        citations=tuple(citations),
        tags=tags,
        training_data=training,
        intended_use=intended_use,
        limitations=limitations,
        maintainers=maintainers,
        parent_model=parent,
        base_model=base_model,
        metrics=tuple(metrics),
        documentation=tuple(docs),
        cover=cover,
        links=links,
        source=Path(source).resolve() if source is not None else None,
    )


def load_card(path: str | os.PathLike) -> ModelCard:
    """Read a YAML model card and validate it (``CardError`` lists everything wrong)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CardError(f"model card {path} does not exist") from None
    except OSError as exc:
        raise CardError(f"model card {path} cannot be read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise CardError(f"model card {path} is not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    return validate_card(data, source=path)


# ----------------------------------------------------------------------------------------------
# Rendering


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _format_value(value: Any) -> str:
    if value is None:
        return "not measured yet"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _bibtex_key(citation: Citation, index: int, used: set[str]) -> str:
    word = re.search(r"[A-Za-z]+", citation.text)
    year = re.search(r"\b(19|20)\d{2}\b", citation.text)
    key = ((word.group(0).lower() if word else "ref") + (year.group(0) if year else "")) or f"ref{index}"
    base, n = key, 1
    while key in used:
        n += 1
        key = f"{base}{chr(ord('a') + n - 1)}"
    used.add(key)
    return key


def _bibtex(citation: Citation, key: str) -> str:
    fields = [f"  title = {{{citation.text}}}"]
    if citation.doi:
        fields.append(f"  doi = {{{citation.doi}}}")
    if citation.url:
        fields.append(f"  url = {{{citation.url}}}")
    return f"@misc{{{key},\n" + ",\n".join(fields) + "\n}"


def _person_line(p: Person) -> str:
    bits = [p.name]
    if p.affiliation:
        bits.append(f"({p.affiliation})")
    links = []
    if p.orcid:
        links.append(f"[ORCID {p.orcid}](https://orcid.org/{p.orcid})")
    if p.github_user:
        links.append(f"[@{p.github_user}](https://github.com/{p.github_user})")
    return " ".join(bits) + (" — " + ", ".join(links) if links else "")


def render_card(
    card: ModelCard,
    *,
    front_matter: Mapping[str, Any] | None = None,
    load_commands: Sequence[str] = (),
    cover_name: str | None = None,
) -> str:
    """The README (Markdown) for a card.

    ``front_matter``: a YAML header to put on top (Hugging Face model cards); ``load_commands``:
    shell lines shown under "How to load" (e.g. ``samzoo fetch 10.5281/zenodo.N``);
    ``cover_name``: the cover's file name next to the README (default: the card's cover name).
    """
    out: list[str] = []
    if front_matter:
        out += ["---", yaml.safe_dump(dict(front_matter), sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    out += [f"# {card.name}", "", card.description.strip(), ""]
    if card.cover:
        name = cover_name or Path(card.cover).name
        out += [f"![{card.name}]({name})", ""]

    out += ["| | |", "|---|---|"]
    out.append(f"| Version | {_md_cell(card.version)} |")
    out.append(f"| License | {_md_cell(card.license)} |")
    out.append(f"| Modality | {_md_cell(card.modality)} |")
    out.append("| Architecture | " + _md_cell(", ".join(f"{k}: {v}" for k, v in card.architecture.items())) + " |")
    if card.parent_model:
        out.append(f"| Fine-tuned from | {_md_cell(card.parent_model.label)} |")
    if card.tags:
        out.append(f"| Tags | {_md_cell(', '.join(card.tags))} |")
    out.append("")

    if load_commands:
        out += ["## How to load", "", "```bash", *load_commands, "```", ""]

    out += ["## Intended use", "", card.intended_use.strip(), ""]

    out += ["## Training data", "", card.training_data.description.strip(), ""]
    for ident in card.training_data.ids:
        out.append(f"- {ident}")
    for url in card.training_data.urls:
        out.append(f"- <{url}>")
    if card.training_data.ids or card.training_data.urls:
        out.append("")

    out += ["## Metrics", ""]
    if card.metrics:
        out += ["| Metric | Value | Dataset | Notes |", "|---|---|---|---|"]
        for m in card.metrics:
            out.append(
                f"| {_md_cell(m.name)} | {_md_cell(_format_value(m.value))} | {_md_cell(m.dataset or '')} "
                f"| {_md_cell(m.description or '')} |"
            )
    else:
        out.append("No metrics are recorded in this card; see the publications below.")
    out.append("")

    out += ["## Limitations", ""]
    if len(card.limitations) == 1:
        out.append(card.limitations[0])
    else:
        out += [f"- {item}" for item in card.limitations]
    out.append("")

    for section in card.documentation:
        out += [f"## {section.title}", "", section.text.strip(), ""]

    out += ["## Authors", ""]
    out += [f"- {_person_line(p)}" for p in card.authors]
    if card.maintainers:
        out += ["", "Maintainers:", ""]
        out += [f"- {_person_line(p)}" for p in card.maintainers]
    out.append("")

    if card.links:
        out += ["## Links", ""]
        out += [f"- <{link}>" for link in card.links]
        out.append("")

    out += ["## Citation", "", "If you use this model, please cite:", ""]
    for ci in card.citations:
        ref = f"https://doi.org/{ci.doi}" if ci.doi else ci.url
        out.append(f"- {ci.text} <{ref}>")
    used: set[str] = set()
    out += ["", "```bibtex"]
    out.append("\n\n".join(_bibtex(ci, _bibtex_key(ci, i, used)) for i, ci in enumerate(card.citations)))
    out += ["```", ""]
    return "\n".join(out)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_readme(card: ModelCard, output: str | os.PathLike, **render_kwargs: Any) -> list[Path]:
    """Write ``render_card(card)`` to ``output`` and copy the cover next to it.

    Returns the written paths (README first). The cover link in the README is relative.
    """
    output = Path(output)
    written = [output]
    cover = card.cover_path
    if cover is not None:
        if not cover.is_file():
            raise CardError(f"model card cover {cover} does not exist")
        target = output.parent / cover.name
        if target.resolve() != cover.resolve():
            output.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(cover, tmp)
            os.replace(tmp, target)
        written.append(target)
        render_kwargs.setdefault("cover_name", cover.name)
    atomic_write(output, render_card(card, **render_kwargs).encode("utf-8"))
    return written
