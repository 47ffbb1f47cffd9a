"""samzoo: Segment-Anything microscopy models as a model zoo.

Importing samzoo first makes torchvision importable when its compiled ops are broken (see
``samzoo._torchvision_fix``); on a healthy install that step does nothing.
"""

from ._torchvision_fix import ensure_torchvision_importable

ensure_torchvision_importable()

from .errors import CheckpointError, InputError, ModelNotFoundError, SamzooError  # noqa: E402
from .families.microsam.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .families.microsam.config import ModelConfig, architecture, preset  # noqa: E402
from .families.microsam.model import SamzooModel  # noqa: E402
from .api import load_model  # noqa: E402
from .segmentation.api import segment, segment_from_prompts  # noqa: E402
from .families.microsam.predictor import Predictor  # noqa: E402
from .workflows import evaluate, fetch, package, publish, train, tune  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "InputError",
    "ModelConfig",
    "ModelNotFoundError",
    "Predictor",
    "SamzooError",
    "SamzooModel",
    "architecture",
    "evaluate",
    "fetch",
    "load_checkpoint",
    "load_model",
    "package",
    "preset",
    "publish",
    "save_checkpoint",
    "segment",
    "segment_from_prompts",
    "train",
    "tune",
]
