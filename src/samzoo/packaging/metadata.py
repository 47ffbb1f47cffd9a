"""Model-card metadata for packages: load, check (all problems at once), turn into bioimageio fields.

The card schema belongs to ``samzoo.publishing.card`` (``load_card`` / ``validate_card``); when
that module is importable it is used, otherwise the YAML is read here with the same field names:
``name, description, authors, citations, license, tags, training_data, version, parent_model``.
Whatever the source, packaging needs the fields in ``REQUIRED`` and citations of both μSAM and SAM;
every problem is reported in one :class:`~samzoo.errors.InputError` before anything expensive runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError

REQUIRED = ("name", "description", "authors", "citations", "license", "tags", "version")
OPTIONAL = ("training_data", "parent_model")
MICRO_SAM_DOI = "10.1038/s41592-024-02580-4"
SAM_DOI = "10.48550/arXiv.2304.02643"
_SAM_MARKERS = ("2304.02643", "10.1109/iccv51070.2023.00371")

MICRO_SAM_CITATION = {
    "text": "Archit et al. Segment Anything for Microscopy. Nature Methods (2025)",
    "doi": MICRO_SAM_DOI,
}
SAM_CITATION = {
    "text": "Kirillov et al. Segment Anything. ICCV (2023)",
    "doi": SAM_DOI,
}


def _as_mapping(card: Any) -> dict[str, Any]:
    if isinstance(card, Mapping):
        return dict(card)
    for attr in ("to_dict", "model_dump"):
        if callable(getattr(card, attr, None)):
            return dict(getattr(card, attr)())
    if dataclasses.is_dataclass(card) and not isinstance(card, type):
        return dataclasses.asdict(card)
    raise InputError(f"model card must be a mapping or a card object, got {type(card).__name__}")


def read_card(path: str | os.PathLike) -> tuple[Any, dict[str, Any] | None]:
    """``(raw mapping, None)`` for the card at ``path``, or ``(None, validated dict)`` when
    ``samzoo.publishing.card`` read and validated it. Schema errors raise ``CardError`` there."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model card not found: {path}")
    try:
        from ..publishing import card as card_module  # type: ignore[import-not-found]
    except ImportError:
        card_module = None
    if card_module is not None:
        return None, _as_mapping(card_module.load_card(path))
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"model card {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"model card {path} must be a YAML mapping, got {type(data).__name__}")
    return data, None


def _doi_or_url(entry: Mapping[str, Any]) -> str:
    return " ".join(str(entry.get(k) or "") for k in ("doi", "url", "text")).lower()


def card_problems(card: Mapping[str, Any]) -> list[str]:
    """Every problem packaging has with ``card`` (empty list when it is usable)."""
    problems = []
    missing = [f for f in REQUIRED if card.get(f) in (None, "", [], {})]
    if missing:
        problems.append(f"missing required field(s): {', '.join(missing)}")
    authors = card.get("authors")
    if authors not in (None, "", []):
        if not isinstance(authors, list):
            problems.append("authors must be a list")
        else:
            for i, a in enumerate(authors):
                name = a if isinstance(a, str) else (a.get("name") if isinstance(a, Mapping) else None)
                if not name:
                    problems.append(f"authors[{i}] has no name")
    citations = card.get("citations")
    if citations not in (None, "", []):
        if not isinstance(citations, list) or not all(isinstance(c, Mapping) for c in citations):
            problems.append("citations must be a list of mappings with text and doi or url")
        else:
            for i, c in enumerate(citations):
                if not c.get("text"):
                    problems.append(f"citations[{i}] has no text")
                if not (c.get("doi") or c.get("url")):
                    problems.append(f"citations[{i}] needs a doi or url")
            blob = [_doi_or_url(c) for c in citations]
            if not any(MICRO_SAM_DOI in b for b in blob):
                problems.append(f"citations must include μSAM (doi {MICRO_SAM_DOI})")
            if not any(any(m in b for m in _SAM_MARKERS) for b in blob):
                problems.append(f"citations must include Segment Anything (doi {SAM_DOI})")
    tags = card.get("tags")
    if tags not in (None, "", []) and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        problems.append("tags must be a list of strings")
    version = card.get("version")
    if version not in (None, "") and not re.fullmatch(r"\d+(\.\d+){0,2}([.-]?[A-Za-z0-9.]+)?", str(version)):
        problems.append(f"version {version!r} is not a version number like 1.0.0")
    return problems


def validate_card(card: Any, source: str = "model card", *, schema: bool = True) -> dict[str, Any]:
    """Raise one error listing ALL problems; return the card as a dict when it is usable.

    ``schema``: also check the full model-card schema of ``samzoo.publishing.card`` (when present;
    its problems and packaging's own are reported together). The card samzoo builds itself when
    none is given is checked only against what packaging needs.
    """
    from ..errors import SamzooError

    problems: list[str] = []
    if schema and not isinstance(card, Mapping) and hasattr(card, "to_dict"):
        card = card.to_dict()  # an already validated ModelCard
        schema = False
    card = _as_mapping(card)
    if schema:
        try:
            from ..publishing import card as card_module  # type: ignore[import-not-found]
        except ImportError:
            card_module = None
        if card_module is not None:
            try:
                card = _as_mapping(card_module.validate_card(card))
            except SamzooError as err:
                problems.append(str(err))
    if not problems:  # the schema's message already covers packaging's checks
        problems = card_problems(card)
    if problems:
        raise InputError(f"{source} cannot be packaged: " + "; ".join(problems))
    return card


def checked_card(card: Any) -> dict[str, Any]:
    """A given card (YAML path or mapping) read and validated: every problem in one error."""
    if isinstance(card, (str, os.PathLike)):
        raw, checked = read_card(card)
        if checked is not None:
            return validate_card(checked, f"model card {card}", schema=False)
        return validate_card(raw, f"model card {card}")
    return validate_card(card)


def default_card(model_metadata: Mapping[str, Any], fallback_name: str) -> dict[str, Any]:
    """A complete card from the checkpoint's own metadata plus samzoo's defaults (no card given)."""
    meta = dict(model_metadata or {})
    name = str(meta.get("name") or fallback_name)
    return {
        "name": name,
        "description": str(meta.get("description") or f"Segment Anything for Microscopy model {name}, packaged by samzoo."),
        "authors": meta.get("authors") or [{"name": "samzoo developers"}],
        "citations": [dict(MICRO_SAM_CITATION), dict(SAM_CITATION)],
        "license": str(meta.get("license") or "MIT"),
        "tags": list(meta.get("tags") or ["segment-anything", "micro-sam", "instance-segmentation"]),
        "version": str(meta.get("version") or "0.1.0"),
        "training_data": meta.get("training_data"),
        "parent_model": _parent_reference(meta),
    }


def _parent_reference(meta: Mapping[str, Any]) -> Any:
    """The card's ``parent_model`` from checkpoint metadata (``parent``, written by training)."""
    parent = meta.get("parent") or meta.get("parent_model")
    if isinstance(parent, Mapping):
        return {k: str(parent[k]) for k in ("id", "doi", "url") if parent.get(k)} or None
    return str(parent) if parent else None


def linked_parent(spec, model_metadata: Mapping[str, Any]):
    """The rdf ``parent`` (a bioimage.io model ID and version) of a fine-tuned model, or None when its
    parent has no bioimage.io ID (it is then named in ``config.samzoo.metadata.parent`` and the README)."""
    parent = model_metadata.get("parent") if isinstance(model_metadata, Mapping) else None
    ref = parent.get("bioimageio_id") if isinstance(parent, Mapping) else None
    if not ref:
        return None
    model_id, _, version = str(ref).partition("/")
    return spec.LinkedModel(id=spec.ModelId(model_id), version=spec.Version(version) if version else None)


def card_model_problems(card: Mapping[str, Any], model_metadata: Mapping[str, Any]) -> list[str]:
    """Why ``card`` cannot describe the model whose checkpoint metadata is ``model_metadata``.

    A fine-tuned checkpoint names its parent (``metadata["parent"]``); a card for it must name a
    parent too (``parent_model``), and must not be the parent's own card -- otherwise the package
    would present the parent's name and measured metrics as the fine-tuned model's."""
    parent = model_metadata.get("parent") if isinstance(model_metadata, Mapping) else None
    if not isinstance(parent, Mapping):
        return []
    label = parent.get("name") or parent.get("id")
    problems = []
    if not card.get("parent_model"):
        problems.append(f"the checkpoint was fine-tuned from {label}, but the card names no parent_model "
                        f"(a card for the fine-tuned model names its parent: parent_model: {parent.get('id')})")
    own = {str(card.get(k)).strip().lower() for k in ("id", "name") if card.get(k)}
    if own & {str(parent.get(k)).strip().lower() for k in ("id", "name") if parent.get(k)}:
        problems.append(f"the card is the parent model's ({label}); write a card for the fine-tuned model")
    return problems


def slug(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-._").lower()
    return text or "model"


def bioimageio_authors(card: Mapping[str, Any]):
    from bioimageio.spec.model import v0_5

    out = []
    for a in card["authors"]:
        if isinstance(a, str):
            out.append(v0_5.Author(name=a))
        else:
            fields = {k: a[k] for k in ("name", "affiliation", "email", "github_user", "orcid") if a.get(k)}
            out.append(v0_5.Author(**fields))
    return out


def bioimageio_cite(card: Mapping[str, Any]):
    from bioimageio.spec.model import v0_5

    out = []
    for c in card["citations"]:
        fields: dict[str, Any] = {"text": str(c["text"])}
        if c.get("doi"):
            fields["doi"] = v0_5.Doi(str(c["doi"]).removeprefix("https://doi.org/"))
        if c.get("url"):
            fields["url"] = v0_5.HttpUrl(str(c["url"]))
        out.append(v0_5.CiteEntry(**fields))
    return out


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 4 and all(isinstance(v, (int, float)) for v in value):
        return f"{len(value)} values, mean {sum(value) / len(value):.4g}"
    return str(value)


def metrics_table(metadata: Mapping[str, Any], card: Mapping[str, Any] | None = None) -> str:
    """Markdown for the ``# Validation`` section: the metrics recorded in ``model.metadata``
    (falling back to the card's ``metrics`` list when the checkpoint records none)."""
    metrics = metadata.get("metrics") if isinstance(metadata, Mapping) else None
    if not metrics and card and card.get("metrics"):
        rows = ["| metric | value | data |", "|---|---|---|"]
        for m in card["metrics"]:
            if isinstance(m, Mapping):
                value = "not measured yet" if m.get("value") is None else format_value(m.get("value"))
                rows.append(f"| {m.get('name', '')} | {value} | {m.get('dataset') or ''} |")
        return "Metrics from the model card (the checkpoint records none):\n\n" + "\n".join(rows) + "\n"
    if not metrics:
        return "No measured metrics are recorded in this checkpoint's metadata.\n"
    lines = []
    if isinstance(metrics, Mapping):
        flat = []
        for key, value in metrics.items():
            if isinstance(value, Mapping):
                flat.extend((f"{key} / {k}", v) for k, v in value.items())
            else:
                flat.append((key, value))
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {format_value(v)} |" for k, v in flat]
    elif isinstance(metrics, list):
        lines += [f"- {m}" for m in metrics]
    else:
        lines.append(str(metrics))
    for key in ("evaluation", "evaluation_data", "test_data"):
        if metadata.get(key):
            lines.append(f"\nEvaluated on: {metadata[key]}")
    return "\n".join(lines) + "\n"
