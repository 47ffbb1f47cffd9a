"""The model card inside a package: ``samzoo_card.yaml`` (and its cover) as package attachments.

Why: a package made with ``samzoo package --card CARD`` must be publishable on its own
(``samzoo publish PACKAGE`` reads the card from the package), so every package carries the card it
was made with. The files are declared as BioImage.IO ``attachments``, so they are sha256-pinned in
rdf.yaml like every other file and checked before use (:mod:`samzoo.packaging.integrity`).

The embedded card is the validated card (``samzoo.publishing.card``), written again as YAML; its
cover -- which must lie inside the card's folder -- is copied next to it under a fixed name, and the
card's ``cover`` field names that copy, so the card inside the package refers only to files inside
the package.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import InputError

#: the card's file name inside a package (and inside a publication)
CARD_FILENAME = "samzoo_card.yaml"
COVER_STEM = "samzoo_card_cover"


def _pruned(value: Any) -> Any:
    """Plain data without empty values (None, "", [], {}): the YAML a person would write."""
    if isinstance(value, Mapping):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, (list, tuple)):
        return [_pruned(v) for v in value]
    return value


def stage_card_files(card: str | os.PathLike | Mapping[str, Any], folder: Path) -> list[Path]:
    """Write ``samzoo_card.yaml`` (and the cover, when the card names one) into ``folder``; return
    the written paths, to be declared as the package's attachments. ``card``: the card's YAML path
    or a card mapping (a mapping cannot name a cover: there is no folder to find it in)."""
    from ..publishing.card import load_card, validate_card

    if isinstance(card, (str, os.PathLike)):
        loaded = load_card(card)
    else:
        loaded = validate_card(dict(card))
    data = loaded.to_dict()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    cover = loaded.cover_path  # validated: inside the card's folder
    if cover is not None:
        if loaded.source is None:
            raise InputError(f"the model card names the cover {loaded.cover!r} but was given as a mapping: "
                             "pass the card's YAML file so the cover can be found next to it")
        target = folder / (COVER_STEM + cover.suffix.lower())
        shutil.copyfile(cover, target)
        data["cover"] = target.name
        written.append(target)
    card_file = folder / CARD_FILENAME
    card_file.write_text(yaml.safe_dump(_pruned(data), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return [card_file, *written]
