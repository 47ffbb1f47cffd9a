"""Model cards and publishing: Zenodo (DOIs) and Hugging Face (version tags).

- ``card``: the model card schema (``load_card``, ``validate_card``, ``render_card``, ``write_readme``)
- ``zenodo``: ``publish_zenodo`` (deposit API, resumable, checksum-verified, new versions)
- ``huggingface``: ``publish_hf`` (huggingface_hub client, README header, ``vX.Y.Z`` tags)
- ``cli``: ``register(subparsers)`` adds ``samzoo publish`` and ``samzoo card``
"""

from .card import ModelCard, load_card, render_card, validate_card, write_readme
from .huggingface import publish_hf
from .zenodo import publish_zenodo

__all__ = [
    "ModelCard",
    "load_card",
    "publish_hf",
    "publish_zenodo",
    "render_card",
    "validate_card",
    "write_readme",
]
