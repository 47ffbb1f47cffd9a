"""The μSAM model inside a package samzoo wrote: its ``config.samzoo`` (model config, AIS parameters,
metadata) and the flat ``{sam.*, ais_decoder.*}`` weights, so the round trip is exact. Reached through
``FAMILY.load(path, state, package_config=...)`` from :mod:`samzoo.packaging.load`, which has
already checked the package's files and hashes."""

from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from ..model import SamzooModel
from .weights import DECODER_PREFIX, load_packaged_state


def model_from_package(state: Mapping[str, Any], package_config: Mapping[str, Any],
                       architecture_kwargs: Mapping[str, Any] | None, where: str) -> SamzooModel:
    """``state``: the package's weights; ``package_config``: its ``config.samzoo``;
    ``architecture_kwargs``: the rdf's architecture kwargs (their ``ais_params`` win, as in
    bioimageio.core, so parameters edited in rdf.yaml are the ones used)."""
    from ..ais import AisParams

    config = ModelConfig.from_dict(dict(package_config["model_config"]))
    ais_params = dict((architecture_kwargs or {}).get("ais_params") or package_config.get("ais_params") or {})
    if ais_params:
        ais_params = AisParams.from_dict(ais_params).to_dict()
    has_decoder = any(str(k).startswith(DECODER_PREFIX) for k in state)
    model = SamzooModel(config, with_ais_decoder=has_decoder, ais_params=ais_params,
                        metadata=dict(package_config.get("metadata") or {}))
    load_packaged_state(model, state, f"weights of {where}")
    return model.eval()
