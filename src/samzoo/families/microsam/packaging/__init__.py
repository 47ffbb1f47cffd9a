"""μSAM's BioImage.IO packages: ``ais``, ``ais_network`` and ``interactive`` (:mod:`.export`), the
weights file they share (:mod:`.weights`), the TorchScript / ONNX network files (:mod:`.network_export`)
and the model rebuilt from a samzoo package (:mod:`.load`). Shared code reaches these only through
``FAMILY.package`` / ``FAMILY.load``.
"""

from .export import FORMATS, KINDS, package_model

__all__ = ["FORMATS", "KINDS", "package_model"]
