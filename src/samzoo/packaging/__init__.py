"""BioImage.IO 0.5 export of samzoo / micro-sam / SAM models, and loading packages back.

``package_model(model, outdir, card=None, formats=("pytorch_state_dict", "torchscript", "onnx"),
sample_image=None) -> {kind: zip}`` writes the ``ais``, ``ais_network`` and ``interactive``
packages (see :mod:`samzoo.packaging.export`); ``load_package_model(path)`` rebuilds the model.
"""

from .export import FORMATS, KINDS, package_model
from .load import load_package_model

__all__ = ["FORMATS", "KINDS", "load_package_model", "package_model"]
