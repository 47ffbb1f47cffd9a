"""BioImage.IO 0.5 packages of any family's model, and loading packages back.

``package_model(model, outdir, **options) -> {kind: zip}`` hands the model to its family's
``FamilySpec.package`` (μSAM: :mod:`samzoo.families.microsam.packaging`; the options are the
family's: card, formats, sample_image, kinds); ``load_package_model(path)`` rebuilds the model of
a package (:mod:`samzoo.packaging.load`). Shared helpers for families: the card inside a package
(:mod:`.card_files`), card metadata (:mod:`.metadata`), file integrity (:mod:`.integrity`), the
rdf.yaml bioimage.io's runtime accepts (:mod:`.portable_rdf`), a synthetic sample (:mod:`.samples`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .load import load_package_model


def package_model(model: Any, outdir: str | os.PathLike, **options: Any) -> dict[str, Path]:
    """Packages of ``model`` (a loaded model, or anything ``samzoo.load_model`` takes; None = the
    shipped default) written by its family into ``outdir``; returns ``{kind: zip path}``."""
    import torch

    from ..errors import InputError
    from ..families import family_of

    if not isinstance(model, torch.nn.Module):
        if options.get("card") is not None:  # a bad card fails before a (possibly large) model loads
            from .metadata import checked_card

            checked_card(options["card"])
        from ..api import load_model

        model = load_model(model)
    family = family_of(model)
    if family.package is None:
        raise InputError(f"{family.title} models cannot be packaged as BioImage.IO packages yet")
    return family.package(model, outdir, **options)


__all__ = ["load_package_model", "package_model"]
