"""Publish a model to Zenodo: one deposition holding the package zip(s), the checkpoint, the README
(rendered from the model card), the cover and the card; metadata from the card; a DOI at the end.

Flow (Zenodo deposit REST API, https://developers.zenodo.org):

1. ``POST /api/deposit/depositions`` creates a draft (with a pre-reserved DOI), or, for
   ``new_version_of``: ``GET /api/records/<id>`` -> latest version -> ``POST
   /api/deposit/depositions/<latest>/actions/newversion`` -> ``links.latest_draft``; the files the
   new draft inherits are deleted.
2. ``PUT /api/deposit/depositions/<id>`` sets the metadata (validated here first, see
   ``validate_zenodo_metadata``: Zenodo's own checks only run on the real server).
3. ``PUT <bucket>/<name>`` uploads each file; the md5 ``checksum`` Zenodo answers must equal the
   local md5, otherwise the upload is repeated.
4. The draft's file list is compared with the local files (names and md5 checksums, sizes where a
   server gives no checksum); files not part of this publication are deleted.
5. ``POST /api/deposit/depositions/<id>/actions/publish`` mints the DOI.

Resuming: the draft's id is written to ``.samzoo-publish.json`` next to the first package as soon
as it exists (see ``samzoo.publishing.state``). Running the same command again reuses that draft:
files already on the server with the right checksum are kept, missing or different ones uploaded
again (a file the server reports without a checksum is uploaded again: it cannot be verified).
Once published, the same command reports the existing DOI instead of publishing twice. A draft
whose state file was deleted is not searched for; it stays in the account's uploads.
"""

from __future__ import annotations

import html
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ..errors import PublishError
from ._files import UploadFile, check_inputs, check_licences, collect_files, resolve_card, staging_dir
from ._http import JsonClient, Response, RetryPolicy, Transient, redact, stderr_log, with_retries
from .card import ModelCard, is_valid_orcid, normalize_doi, render_card, spdx_license_ids
from .state import PublishState

__all__ = [
    "DEFAULT_URL",
    "SANDBOX_URL",
    "ZenodoResult",
    "fetch_command",
    "parse_record_id",
    "publish_zenodo",
    "validate_zenodo_metadata",
    "zenodo_base_url",
    "zenodo_metadata",
]

DEFAULT_URL = "https://zenodo.org"
SANDBOX_URL = "https://sandbox.zenodo.org"

#: Zenodo has no "model" upload type; BioImage.IO's own Zenodo uploads use "other" with these keywords.
UPLOAD_TYPE = "other"
MODEL_KEYWORDS = ("bioimage.io", "bioimage.io:model", "samzoo")

# Zenodo deposit metadata rules (developers.zenodo.org, "Deposit metadata").
UPLOAD_TYPES = frozenset(
    "publication poster presentation dataset image video software lesson physicalobject other".split()
)
ACCESS_RIGHTS = frozenset({"open", "embargoed", "restricted", "closed"})
RELATIONS = frozenset(
    """isCitedBy cites isSupplementTo isSupplementedBy isContinuedBy continues isDescribedBy describes
    hasMetadata isMetadataFor isNewVersionOf isPreviousVersionOf isPartOf hasPart isReferencedBy
    references isDocumentedBy documents isCompiledBy compiles isVariantFormOf isOriginalFormof
    isIdenticalTo isAlternateIdentifier isReviewedBy reviews isDerivedFrom isSourceOf requires
    isRequiredBy isObsoletedBy obsoletes""".split()
)
METADATA_FIELDS = frozenset(
    """upload_type publication_type image_type publication_date title creators description access_right
    license embargo_date access_conditions doi prereserve_doi keywords notes related_identifiers
    contributors references communities grants journal_title journal_volume journal_issue journal_pages
    conference_title conference_acronym conference_dates conference_place conference_url
    conference_session conference_session_part imprint_publisher imprint_isbn imprint_place
    partof_title partof_pages thesis_supervisors thesis_university subjects version language
    locations dates method""".split()
)
_FAMILY_GIVEN = re.compile(r"^[^,]*\S[^,]*,\s*\S[^,]*$")
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")
_ARXIV = re.compile(r"^arXiv:\d{4}\.\d{4,5}(v\d+)?$", re.IGNORECASE)
_URL = re.compile(r"^https?://\S+$")


def zenodo_base_url(sandbox: bool = False) -> str:
    """``--sandbox`` -> sandbox.zenodo.org; otherwise ``SAMZOO_ZENODO_URL`` or https://zenodo.org."""
    if sandbox:
        return SANDBOX_URL
    return (os.environ.get("SAMZOO_ZENODO_URL") or DEFAULT_URL).rstrip("/")


def fetch_command(doi: str, base_url: str, record_id: int | str | None = None) -> str:
    """The shell line that loads a published record with samzoo.

    Zenodo DOIs (``10.5281/zenodo.N``, and the sandbox's ``10.5072/zenodo.N``) are named
    directly; anything else is loaded by its record URL. A server other than zenodo.org is
    passed on as ``SAMZOO_ZENODO_URL``.
    """
    base = base_url.rstrip("/")
    prefix = "" if base == DEFAULT_URL else f"SAMZOO_ZENODO_URL={base} "
    if re.match(r"^10\.(5281|5072)/zenodo\.\d+$", doi) or record_id is None:
        return f"{prefix}samzoo fetch {doi}"
    return f"{prefix}samzoo fetch {base}/records/{record_id}"


def parse_record_id(ref: str) -> int:
    """Record id from a Zenodo DOI (``10.5281/zenodo.N``), a record URL or a bare number."""
    text = normalize_doi(str(ref).strip())
    for pattern in (r"^10\.\d{4,9}/zenodo\.(\d+)$", r"/records?/(\d+)/?$", r"^(\d+)$"):
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            return int(match.group(1))
    raise PublishError(f"{ref!r} is not a Zenodo DOI (10.5281/zenodo.N), record URL or record id")


# ----------------------------------------------------------------------------------------------
# Metadata


_PARTICLES = frozenset("van von der den de del della di da dos du la le ter ten zu".split())


def creator_name(name: str) -> str:
    """Zenodo wants "Family, Given": "Anwai Archit" -> "Archit, Anwai"; names with a comma stay.

    Only names that look like a person's ("Given [particle] Family", capitalised words) are turned
    around; anything else ("samzoo developers") is returned as is and fails validation.
    """
    name = " ".join(name.split())
    words = name.split(" ")
    if "," in name or len(words) < 2:
        return name
    if any(not w[:1].isupper() and w.lower() not in _PARTICLES for w in words) or not words[-1][:1].isupper():
        return name
    given, family = name.rsplit(" ", 1)
    return f"{family}, {given}"


def _related_identifiers(card: ModelCard) -> list[dict[str, str]]:
    related: list[dict[str, str]] = []
    if card.parent_model is not None:
        ident = card.parent_model.identifier()
        if ident is not None:
            related.append({"identifier": ident[1], "relation": "isDerivedFrom"})
    for citation in card.citations:
        if citation.doi:
            related.append({"identifier": citation.doi, "relation": "cites"})
        elif citation.url:
            match = re.search(r"arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5}(?:v\d+)?)", citation.url)
            ident = f"arXiv:{match.group(1)}" if match else citation.url
            related.append({"identifier": ident, "relation": "cites"})
    unique: list[dict[str, str]] = []
    for entry in related:
        if entry not in unique:
            unique.append(entry)
    return unique


def _description_html(card: ModelCard, doi: str | None, base_url: str, record_id: int | None) -> str:
    e = html.escape
    parts = [f"<p>{e(card.description.strip())}</p>"]
    if doi:
        parts.append(f"<p>Load with samzoo: <code>{e(fetch_command(doi, base_url, record_id))}</code></p>")
    parts.append(f"<h2>Intended use</h2><p>{e(card.intended_use.strip())}</p>")
    items = "".join(f"<li>{e(x)}</li>" for x in (*card.training_data.ids, *card.training_data.urls))
    parts.append(
        f"<h2>Training data</h2><p>{e(card.training_data.description.strip())}</p>" + (f"<ul>{items}</ul>" if items else "")
    )
    if card.metrics:
        rows = "".join(
            f"<tr><td>{e(m.name)}</td><td>{e('not measured yet' if m.value is None else str(m.value))}</td>"
            f"<td>{e(m.dataset or '')}</td></tr>"
            for m in card.metrics
        )
        parts.append(f"<h2>Metrics</h2><table><tr><th>Metric</th><th>Value</th><th>Dataset</th></tr>{rows}</table>")
    parts.append("<h2>Limitations</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in card.limitations) + "</ul>")
    arch = ", ".join(f"{k}: {v}" for k, v in card.architecture.items())
    parts.append(f"<p>Modality: {e(card.modality)}. Architecture: {e(arch)}.</p>")
    parts.append("<p>The full model card is README.md in this record; samzoo_card.yaml holds it as data.</p>")
    return "\n".join(parts)


def zenodo_metadata(
    card: ModelCard,
    *,
    doi: str | None = None,
    record_id: int | None = None,
    base_url: str = DEFAULT_URL,
    today: date | None = None,
) -> dict[str, Any]:
    """Deposit metadata for a card (``doi``/``record_id``: the draft's reserved DOI and record, shown
    in the description's load line)."""
    keywords: list[str] = []
    for word in (*card.tags, *MODEL_KEYWORDS):
        if word not in keywords:
            keywords.append(word)
    creators = []
    for person in card.authors:
        entry = {"name": creator_name(person.name)}
        if person.affiliation:
            entry["affiliation"] = person.affiliation
        if person.orcid:
            entry["orcid"] = person.orcid
        creators.append(entry)
    metadata: dict[str, Any] = {
        "upload_type": UPLOAD_TYPE,
        "publication_date": (today or date.today()).isoformat(),
        "title": card.name,
        "creators": creators,
        "description": _description_html(card, doi, base_url, record_id),
        "access_right": "open",
        "license": card.license.lower(),
        "keywords": keywords,
        "version": card.version,
        "related_identifiers": _related_identifiers(card),
        "notes": f"Published with samzoo (model card id: {card.id}).",
    }
    return metadata


def validate_zenodo_metadata(metadata: dict[str, Any]) -> list[str]:
    """Problems with deposit metadata under Zenodo's documented rules (empty list: valid).

    Checks required fields, upload/publication/image types, the date, creators ("Family, Given",
    ORCID checksum), access right and the fields it requires, the license id (an SPDX id, as Zenodo's
    license vocabulary uses them, lower-cased), keywords, related identifiers (DOI, arXiv id or URL;
    relation from Zenodo's list) and unknown fields.
    """
    p: list[str] = []
    unknown = set(metadata) - METADATA_FIELDS
    if unknown:
        p.append(f"unknown metadata fields {sorted(unknown)}")
    for key in ("upload_type", "publication_date", "title", "creators", "description", "access_right"):
        if not metadata.get(key):
            p.append(f"{key} is required")
    upload_type = metadata.get("upload_type")
    if upload_type and upload_type not in UPLOAD_TYPES:
        p.append(f"upload_type {upload_type!r} is not one of {sorted(UPLOAD_TYPES)}")
    if upload_type == "publication" and not metadata.get("publication_type"):
        p.append("publication_type is required when upload_type is 'publication'")
    if upload_type == "image" and not metadata.get("image_type"):
        p.append("image_type is required when upload_type is 'image'")
    pub_date = metadata.get("publication_date")
    if pub_date:
        try:
            date.fromisoformat(str(pub_date))
        except ValueError:
            p.append(f"publication_date {pub_date!r} is not an ISO date (YYYY-MM-DD)")
    for i, creator in enumerate(metadata.get("creators") or []):
        name = creator.get("name", "") if isinstance(creator, dict) else ""
        if not _FAMILY_GIVEN.match(name or ""):
            p.append(
                f"creators[{i}] name {name!r} is not 'Family, Given': write the author's name as "
                "'Given Family' or 'Family, Given' in the model card"
            )
        orcid = creator.get("orcid") if isinstance(creator, dict) else None
        if orcid and not is_valid_orcid(orcid):
            p.append(f"creators[{i}] orcid {orcid!r} is not a valid ORCID iD (format or checksum)")
    access = metadata.get("access_right")
    if access and access not in ACCESS_RIGHTS:
        p.append(f"access_right {access!r} is not one of {sorted(ACCESS_RIGHTS)}")
    if access in ("open", "embargoed"):
        license_id = metadata.get("license")
        known = {x.lower() for x in spdx_license_ids()}
        if not license_id:
            p.append("license is required for open and embargoed access")
        elif str(license_id).lower() not in known:
            p.append(f"license {license_id!r} is not a license id Zenodo knows (SPDX ids, e.g. cc-by-4.0, mit)")
    if access == "embargoed" and not metadata.get("embargo_date"):
        p.append("embargo_date is required for embargoed access")
    if access == "restricted" and not metadata.get("access_conditions"):
        p.append("access_conditions is required for restricted access")
    keywords = metadata.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) and k.strip() for k in keywords):
        p.append("keywords must be a list of non-empty texts")
    for i, rel in enumerate(metadata.get("related_identifiers") or []):
        ident = rel.get("identifier", "") if isinstance(rel, dict) else ""
        relation = rel.get("relation") if isinstance(rel, dict) else None
        if relation not in RELATIONS:
            p.append(f"related_identifiers[{i}] relation {relation!r} is not one Zenodo accepts")
        if not (_DOI.match(ident) or _ARXIV.match(ident) or _URL.match(ident)):
            p.append(f"related_identifiers[{i}] identifier {ident!r} is not a DOI, arXiv id or URL")
    if "version" in metadata and not isinstance(metadata["version"], str):
        p.append("version must be text")
    return p


# ----------------------------------------------------------------------------------------------
# Publishing


@dataclass
class ZenodoResult:
    doi: str
    record_url: str
    fetch_command: str
    deposition_id: int
    base_url: str
    files: list[str] = field(default_factory=list)
    already_published: bool = False

    def lines(self) -> list[str]:
        head = "Already published" if self.already_published else "Published"
        return [
            f"{head}: DOI {self.doi}",
            f"Record: {self.record_url}",
            f"Load it with: {self.fetch_command}",
        ]


def _error_text(resp: Response) -> str:
    """Zenodo's error message (+ field errors) from an error response."""
    try:
        data = resp.json()
    except PublishError:
        data = None
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("error") or "").strip()
        errors = data.get("errors") or []
        details = []
        for err in errors if isinstance(errors, list) else []:
            if isinstance(err, dict):
                fld = err.get("field")
                msgs = err.get("messages") or [err.get("message")]
                text = " ".join(str(m) for m in msgs if m)
                details.append(f"{fld}: {text}" if fld else text)
        if details:
            return (message.rstrip(".") + ": " if message else "") + "; ".join(details)
        if message:
            return message
    text = resp.body.decode("utf-8", "replace").strip()
    text = re.sub(r"<[^>]+>", " ", text)
    return " ".join(text.split())[:300] or "(no message)"


def _remote_files(deposition: dict[str, Any]) -> list[dict[str, Any]]:
    files = []
    for entry in deposition.get("files") or []:
        if not isinstance(entry, dict):
            continue
        name = entry.get("filename") or entry.get("key")
        checksum = entry.get("checksum")
        if isinstance(checksum, str) and checksum.startswith("md5:"):
            checksum = checksum[4:]
        size = entry.get("filesize", entry.get("size"))
        files.append({"name": name, "id": entry.get("id", name), "md5": checksum or None, "size": size})
    return files


def _is_published(deposition: dict[str, Any]) -> bool:
    return bool(deposition.get("submitted")) or deposition.get("state") == "done"


class _Session:
    def __init__(self, base_url: str, token: str, policy: RetryPolicy, log: Callable[[str], None]):
        self.base = base_url
        self.token = token
        self.client = JsonClient(base_url, token, policy=policy, user_agent="samzoo-publish")
        self.log = log
        self.dep_id: int | None = None

    # -- plumbing
    def explain(self, resp: Response, step: str) -> PublishError:
        msg = redact(_error_text(resp), [self.token])
        status = resp.status
        if status == 401:
            return PublishError(
                f"ZENODO_TOKEN rejected (HTTP 401 while {step}): create a token with the deposit:write and "
                f"deposit:actions scopes at {self.base}/account/settings/applications and set ZENODO_TOKEN to it"
            )
        if status == 403:
            return PublishError(
                f"Zenodo refused {step} (HTTP 403: {msg}): the token needs the deposit:write and deposit:actions "
                f"scopes ({self.base}/account/settings/applications) and must belong to the owner of the record"
            )
        if status in (400, 422):
            return PublishError(
                f"Zenodo rejected {step} (HTTP {status}): {msg}. Fix the model card (or the command's arguments) "
                "and run the same command again"
            )
        if status == 404:
            return PublishError(f"Zenodo has nothing at the address used for {step} (HTTP 404: {msg})")
        if status == 413:
            return PublishError(f"Zenodo refused {step}: the file is too large (HTTP 413: {msg})")
        return PublishError(f"Zenodo answered HTTP {status} while {step}: {msg}")

    def give_up(self, step: str, what: str, tries: int) -> PublishError:
        resume = (
            f" Nothing is lost: run the same command again to continue draft {self.dep_id}."
            if self.dep_id is not None
            else " Run the same command again later."
        )
        times = "1 time" if tries == 1 else f"{tries} times"
        return PublishError(f"{step} failed {times} on Zenodo at {self.base} (last: {what}).{resume}")

    def call(self, method: str, url: str, step: str, **kwargs: Any) -> Response:
        return self.client.request(
            method, url, step=step, explain=self.explain, on_give_up=self.give_up, log=self.log, **kwargs
        )

    # -- API steps
    def get_deposition(self, dep_id: int) -> dict[str, Any] | None:
        resp = self.call("GET", f"api/deposit/depositions/{dep_id}", f"reading draft {dep_id}", ok=(200, 404, 410))
        return None if resp.status in (404, 410) else resp.json()

    def create(self) -> dict[str, Any]:
        """One POST, never retried: a retry after a lost answer would make a second deposition.
        The caller has recorded its intent first, so a re-run looks for this draft instead."""
        step = "creating a deposition"
        try:
            resp = self.client.send("POST", "api/deposit/depositions", json_body={})
        except Transient as exc:
            raise PublishError(f"{step} on Zenodo at {self.base} got no answer ({exc}); run the same command "
                               "again: it looks for the draft this attempt may have made before creating one") from None
        if resp.status not in (200, 201):
            raise self.explain(resp, step)
        return resp.json()

    def find_interrupted_draft(self, intent: dict[str, Any]) -> dict[str, Any] | None:
        """The draft an interrupted run created after recording ``intent`` (None: it made none).

        Zenodo lists the user's drafts; the one to adopt is empty (no files, no title) and was
        created after the intent was recorded. Anything else stops the run rather than risk a
        second deposition."""
        from datetime import datetime

        since = float(intent.get("at", 0)) - 120  # clock skew between this machine and Zenodo
        resp = self.call("GET", "api/deposit/depositions?status=draft&sort=mostrecent&size=50",
                         "listing your drafts", ok=(200, 400, 404, 405))
        drafts = resp.json() if resp.status == 200 else None
        if not isinstance(drafts, list):
            raise PublishError(
                f"an earlier run was interrupted while creating a Zenodo draft, and the drafts on {self.base} "
                f"cannot be listed to find it; check {self.base}/me/uploads for an empty draft, delete it, then "
                "run again with --new-draft (this stops rather than risk a second deposition)")

        def created(d: dict[str, Any]) -> float:
            try:
                return datetime.fromisoformat(str(d.get("created", "")).replace("Z", "+00:00")).timestamp()
            except ValueError:
                return 0.0

        empty = [d for d in drafts if isinstance(d, dict) and not d.get("files")
                 and not (d.get("metadata") or {}).get("title") and created(d) >= since]
        if len(empty) > 1:
            raise PublishError(
                f"an earlier run was interrupted while creating a Zenodo draft and {len(empty)} empty drafts made "
                f"since could be it ({', '.join(str(d.get('id')) for d in empty)}); delete the extra ones at "
                f"{self.base}/me/uploads, then run again")
        return empty[0] if empty else None

    def create_new_version(self, parent: str) -> dict[str, Any]:
        record_id = parse_record_id(parent)
        resp = self.call("GET", f"api/records/{record_id}", f"looking up {parent}", ok=(200, 404, 410))
        if resp.status != 200:
            raise PublishError(
                f"no published Zenodo record {parent} at {self.base} (HTTP {resp.status}); "
                "check the DOI (and --sandbox / SAMZOO_ZENODO_URL)"
            )
        record = resp.json()
        latest = str((record.get("links") or {}).get("latest") or "")
        match = re.search(r"/records/(\d+)/?$", latest)
        latest_id = int(match.group(1)) if match else int(record.get("id") or record_id)
        if latest_id != record_id:
            self.log(f"{parent} has a newer version (record {latest_id}); the new version follows that one")
        answer = self.call(
            "POST", f"api/deposit/depositions/{latest_id}/actions/newversion", f"creating a new version of {parent}"
        ).json()
        draft_url = (answer.get("links") or {}).get("latest_draft")
        if not draft_url:
            raise PublishError(f"Zenodo did not return a draft for the new version of {parent} (no links.latest_draft)")
        return self.call("GET", draft_url, "reading the new version's draft").json()

    def delete_file(self, dep_id: int, file_id: str, name: str) -> None:
        quoted = urllib.parse.quote(str(file_id), safe="")
        self.call("DELETE", f"api/deposit/depositions/{dep_id}/files/{quoted}", f"deleting {name}", ok=(200, 201, 204, 404))

    def upload(self, bucket: str, f: UploadFile) -> None:
        url = f"{bucket.rstrip('/')}/{urllib.parse.quote(f.name)}"

        def attempt() -> Response:
            resp = self.client.send("PUT", url, file=f.path, progress=True)
            if resp.status in (200, 201):
                checksum = resp.json().get("checksum") if resp.body else None
                if isinstance(checksum, str):
                    remote = checksum.removeprefix("md5:")
                    if remote != f.md5:
                        raise Transient(f"checksum mismatch for {f.name}: server md5 {remote}, local {f.md5}")
                return resp
            if resp.status in (408, 425, 429) or resp.status >= 500:
                raise Transient(f"HTTP {resp.status}")
            raise self.explain(resp, f"uploading {f.name}")

        with_retries(attempt, self.client.policy, step=f"uploading {f.name}", on_give_up=self.give_up, log=self.log)

    def set_metadata(self, dep_id: int, metadata: dict[str, Any]) -> None:
        self.call("PUT", f"api/deposit/depositions/{dep_id}", "setting the metadata", json_body={"metadata": metadata})

    def publish(self, dep_id: int) -> dict[str, Any]:
        try:
            return self.call("POST", f"api/deposit/depositions/{dep_id}/actions/publish", "publishing").json()
        except PublishError:
            # The answer may have been lost after Zenodo published: look before failing.
            dep = self.get_deposition(dep_id)
            if dep is not None and _is_published(dep):
                return dep
            raise


def _plan(base: str, card: ModelCard, files: list[UploadFile], metadata: dict[str, Any], new_version_of: str | None) -> dict[str, Any]:
    return {
        "target": "zenodo",
        "base_url": base,
        "dry_run": True,
        "new_version_of": new_version_of,
        "files": [f.describe() for f in files],
        "total_size": sum(f.size for f in files),
        "metadata": metadata,
        "card": card.id,
        "version": card.version,
    }


def publish_zenodo(
    packages: Sequence[str | os.PathLike],
    *,
    card: str | os.PathLike | ModelCard | None = None,
    checkpoint: str | os.PathLike | None = None,
    new_version_of: str | None = None,
    sandbox: bool = False,
    dry_run: bool = False,
    licence_allows_publishing: bool = False,
    base_url: str | None = None,
    token: str | None = None,
    policy: RetryPolicy | None = None,
    log: Callable[[str], None] = stderr_log,
    new_draft: bool = False,
) -> ZenodoResult | dict[str, Any]:
    """Publish packages (+ checkpoint) with the card's metadata; returns the result (or the plan for ``dry_run``).

    ``new_draft``: start a new draft even when an earlier run was interrupted while creating one
    (after the user deleted that draft on Zenodo).

    ``token`` defaults to ``ZENODO_TOKEN``; ``base_url`` to ``zenodo_base_url(sandbox)``. A dry run
    touches no network and needs no token.
    """
    base = (base_url or zenodo_base_url(sandbox)).rstrip("/")
    package_paths = check_inputs(packages, checkpoint)
    check_licences(package_paths, public=True, confirmed=licence_allows_publishing)
    if new_version_of is not None:
        parse_record_id(new_version_of)  # fail early on a malformed DOI
    with staging_dir() as tmp:
        model_card, card_file = resolve_card(card, package_paths, Path(tmp))
        readme = render_card(model_card)
        files = collect_files(package_paths, checkpoint, model_card, card_file, readme, Path(tmp))
        metadata = zenodo_metadata(model_card, base_url=base)
        problems = validate_zenodo_metadata(metadata)
        if problems:
            raise PublishError("the Zenodo metadata made from the model card is not valid: " + "; ".join(problems))
        if dry_run:
            return _plan(base, model_card, files, metadata, new_version_of)

        token = token or os.environ.get("ZENODO_TOKEN", "").strip()
        if not token:
            raise PublishError(
                "ZENODO_TOKEN is not set: create a token with the deposit:write and deposit:actions scopes at "
                f"{base}/account/settings/applications and export ZENODO_TOKEN=..."
            )
        session = _Session(base, token, policy or RetryPolicy.from_env(), log)
        state = PublishState(package_paths[0].parent)
        names = sorted(f.name for f in files if f.role in ("package", "checkpoint"))
        key = f"zenodo {base} {' '.join(names)}" + (f" new-version-of={new_version_of}" if new_version_of else "")
        fingerprint = {f.name: f.sha256 for f in files}
        with state.locked():
            return _publish_locked(session, state, key, fingerprint, files, model_card, new_version_of, new_draft)


def _publish_locked(
    s: _Session,
    state: PublishState,
    key: str,
    fingerprint: dict[str, str],
    files: list[UploadFile],
    card: ModelCard,
    new_version_of: str | None,
    new_draft: bool = False,
) -> ZenodoResult:
    entry = state.get(key)
    if entry and entry.get("status") == "published":
        if entry.get("files") != fingerprint:
            raise PublishError(
                f"these files were already published as {entry.get('doi')} and have changed since: to publish "
                f"them as a new version run the same command with --new-version-of {entry.get('doi')}"
            )
        s.log(f"already published as {entry.get('doi')} (recorded in {state.path})")
        return ZenodoResult(
            doi=entry["doi"],
            record_url=entry.get("record_url", ""),
            fetch_command=fetch_command(entry["doi"], s.base, entry.get("record_id")),
            deposition_id=int(entry["deposition_id"]),
            base_url=s.base,
            files=sorted(fingerprint),
            already_published=True,
        )

    deposition = None
    if entry and entry.get("deposition_id") is not None:
        s.dep_id = int(entry["deposition_id"])
        deposition = s.get_deposition(s.dep_id)
        if deposition is None:
            s.log(f"draft {s.dep_id} from {state.path} no longer exists on {s.base}; starting a new one")
            entry, s.dep_id = None, None
        else:
            s.log(f"continuing draft {s.dep_id} (from {state.path})")
    if deposition is None and entry and entry.get("status") == "creating" and not new_draft and not new_version_of:
        deposition = s.find_interrupted_draft(entry)
        if deposition is not None:
            s.dep_id = int(deposition["id"])
            entry = {"status": "draft", "deposition_id": s.dep_id, "new_version_of": None, "files": fingerprint,
                     "inherited_cleared": True}
            state.put(key, entry)
            s.log(f"found draft {s.dep_id} made by the interrupted run; continuing it")
    if deposition is None:
        if not new_version_of:  # the intent goes to disk before the request (kill -9 safe)
            state.put(key, {"status": "creating", "at": time.time(), "files": fingerprint})
            deposition = s.create()
        else:
            deposition = s.create_new_version(new_version_of)
        s.dep_id = int(deposition["id"])
        entry = {"status": "draft", "deposition_id": s.dep_id, "new_version_of": new_version_of, "files": fingerprint}
        entry["inherited_cleared"] = not new_version_of
        state.put(key, entry)
        s.log(f"created draft {s.dep_id} on {s.base}")
    assert entry is not None and s.dep_id is not None
    dep_id = s.dep_id

    if _is_published(deposition):  # published by an earlier run whose end was lost
        remote = {r["name"]: r for r in _remote_files(deposition)}
        changed = [f.name for f in files if f.name not in remote or remote[f.name]["md5"] not in (None, f.md5)]
        result = _finish(s, state, key, entry, {} if changed else fingerprint, deposition, card)
        if changed:
            raise PublishError(
                f"draft {dep_id} was already published as {result.doi} with other versions of "
                f"{', '.join(changed)}: to publish these files run the same command with --new-version-of {result.doi}"
            )
        return result

    if not entry.get("inherited_cleared"):
        for remote in _remote_files(deposition):
            s.log(f"removing {remote['name']} inherited from the previous version")
            s.delete_file(dep_id, remote["id"], remote["name"])
        entry["inherited_cleared"] = True
        state.put(key, entry)
        deposition = s.get_deposition(dep_id) or deposition

    reserved = deposition.get("metadata", {}).get("prereserve_doi") or {}
    doi = reserved.get("doi") or deposition.get("doi")
    metadata = zenodo_metadata(card, doi=doi, record_id=reserved.get("recid") or dep_id, base_url=s.base)
    problems = validate_zenodo_metadata(metadata)
    if problems:  # pragma: no cover - the same card passed before the DOI was known
        raise PublishError("the Zenodo metadata made from the model card is not valid: " + "; ".join(problems))
    s.set_metadata(dep_id, metadata)

    # files: keep verified ones, remove foreign or different ones, upload the rest
    local = {f.name: f for f in files}
    done: set[str] = set()
    for remote in _remote_files(deposition):
        f = local.get(remote["name"])
        if f is None:
            s.log(f"removing {remote['name']} from the draft: not part of this publication")
            s.delete_file(dep_id, remote["id"], remote["name"])
        elif remote["md5"] == f.md5:
            s.log(f"{f.name} is already uploaded (md5 {f.md5} matches)")
            done.add(f.name)
        elif remote["md5"] is None:
            s.log(f"uploading {f.name} again: the server reports no checksum to verify it")
        else:
            s.log(f"uploading {f.name} again: server md5 {remote['md5']} differs from local {f.md5}")
    bucket = (deposition.get("links") or {}).get("bucket")
    if not bucket and any(name not in done for name in local):
        raise PublishError(f"draft {dep_id} has no upload bucket (links.bucket); is it still a draft on {s.base}?")
    for f in files:
        if f.name not in done:
            s.log(f"uploading {f.name} ({f.size} bytes)")
            s.upload(bucket, f)

    # verify the draft holds exactly our files before the step that cannot be undone
    deposition = s.get_deposition(dep_id)
    if deposition is None:
        raise PublishError(f"draft {dep_id} disappeared from {s.base} while uploading")
    remote = {r["name"]: r for r in _remote_files(deposition)}
    problems = []
    for f in files:
        r = remote.pop(f.name, None)
        if r is None:
            problems.append(f"{f.name} is missing")
        elif r["md5"] is not None and r["md5"] != f.md5:
            problems.append(f"{f.name} has md5 {r['md5']}, expected {f.md5}")
        elif r["md5"] is None and r["size"] is not None and int(r["size"]) != f.size:
            problems.append(f"{f.name} has {r['size']} bytes, expected {f.size}")
    if remote:
        problems.append(f"unexpected files {sorted(remote)}")
    if problems:
        raise PublishError(
            f"draft {dep_id} does not hold the right files ({'; '.join(problems)}); not published. "
            "Run the same command again to repair the draft"
        )

    published = s.publish(dep_id)
    return _finish(s, state, key, entry, fingerprint, published, card)


def _finish(
    s: _Session,
    state: PublishState,
    key: str,
    entry: dict[str, Any],
    fingerprint: dict[str, str],
    deposition: dict[str, Any],
    card: ModelCard,
) -> ZenodoResult:
    doi = deposition.get("doi") or (deposition.get("metadata", {}).get("prereserve_doi") or {}).get("doi")
    if not doi:
        raise PublishError(f"Zenodo published draft {s.dep_id} but returned no DOI; see {s.base}/uploads")
    links = deposition.get("links") or {}
    record_id = deposition.get("record_id") or deposition.get("id")
    record_url = links.get("record_html") or links.get("html") or f"{s.base}/records/{record_id}"
    entry.update(
        status="published", doi=doi, record_id=record_id, record_url=record_url, files=fingerprint, version=card.version
    )
    state.put(key, entry)
    return ZenodoResult(
        doi=doi,
        record_url=record_url,
        fetch_command=fetch_command(doi, s.base, record_id),
        deposition_id=int(s.dep_id or record_id),
        base_url=s.base,
        files=sorted(fingerprint),
    )
