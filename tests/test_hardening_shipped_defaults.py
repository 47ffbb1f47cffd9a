"""What the shipped models and presets promise out of the box (issue 11): AMG with the shipped
default model finds objects on the shipped sample (its tuned ``amg_params`` are in the checkpoint and
used by ``segment --mode amg``), and ``finetune-cpu`` takes minutes, not hours."""

from __future__ import annotations

import numpy as np
import pytest

import samzoo
from samzoo.default_model import default_checkpoint_path
from samzoo.demo import sample_image_path
from samzoo.io import read_image


@pytest.fixture(scope="module")
def shipped():
    return samzoo.load_checkpoint(default_checkpoint_path())


def test_shipped_model_carries_tuned_amg_params(shipped):
    from samzoo.families.microsam.segment import resolve_amg_params

    stored = shipped.metadata["amg_params"]
    assert stored["pred_iou_thresh"] < 0.88 and stored["points_per_side"] == 16  # not SAM's 1024 px defaults
    assert resolve_amg_params(shipped).to_dict() == stored  # what segment --mode amg runs with
    assert "crops" in shipped.metadata["tuning"]["amg"]["data"]  # tuned on generated images, recorded


def test_amg_with_the_shipped_model_finds_objects_on_the_sample(shipped):
    """One model input of the sample (256 px, untiled: seconds); SAM's defaults found 0 objects."""
    crop = read_image(sample_image_path())[128:384, 128:384]
    labels = samzoo.segment(crop, shipped, mode="amg", progress=False, embedding_cache=False)
    assert len(np.unique(labels[labels > 0])) >= 3


def test_finetune_cpu_is_minutes():
    from samzoo.families.microsam.training.config import preset_config

    config = preset_config("finetune-cpu")
    assert config.max_minutes is not None and config.max_minutes <= 10  # then it validates and keeps best.pt
    assert config.iterations <= 300 and config.val_every <= config.iterations // 2
