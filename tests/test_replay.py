"""Replay: a fine-tune draws part of its samples from its parent's own recorded training data."""

from __future__ import annotations

import pytest

import samzoo  # noqa: F401  (torchvision fix first)
from samzoo.errors import InputError
from samzoo.training.replay import mix_replay, recorded_training_data

from test_training import SMALL, small_config

OWN = [{"kind": "folder", "weight": 3.0, "images": "a", "labels": "b"}]
PARENT = [{"kind": "synthetic", "weight": 2.0}, {"kind": "split", "set": "usiigaci-phase", "weight": 1.0}]


def test_mix_replay_splits_the_weights_and_leaves_out_unreadable_sources(capsys):
    mixed = mix_replay(OWN, PARENT, 0.25, readable=lambda s: s["kind"] == "synthetic")
    assert [s["kind"] for s in mixed] == ["folder", "synthetic"]
    assert mixed[0]["weight"] == pytest.approx(0.75) and mixed[1]["weight"] == pytest.approx(0.25)
    assert mixed[1]["replay"] is True and "replay" not in mixed[0]
    assert "leaves out the parent's source split usiigaci-phase" in capsys.readouterr().err
    both = mix_replay(OWN, PARENT, 0.5, readable=lambda s: True)
    assert [round(s["weight"], 4) for s in both] == [0.5, round(0.5 * 2 / 3, 4), round(0.5 / 3, 4)]
    assert mix_replay(OWN, PARENT, 0.0, readable=lambda s: False) == OWN


def test_mix_replay_errors_name_the_problem():
    with pytest.raises(InputError, match="none of the initial model's training data can be read here"):
        mix_replay(OWN, PARENT, 0.3, readable=lambda s: False)
    with pytest.raises(InputError, match="records no training data"):
        mix_replay(OWN, [], 0.3, readable=lambda s: True)
    with pytest.raises(InputError, match=r"replay must be a fraction in \[0, 1\)"):
        mix_replay(OWN, PARENT, 1.0, readable=lambda s: True)


def test_replay_needs_an_initial_model(tmp_path):
    with pytest.raises(InputError, match="set init_checkpoint"):
        small_config(tmp_path, replay=0.3)
    with pytest.raises(InputError, match="replay must be a fraction"):
        small_config(tmp_path, replay=-0.1, init_checkpoint="x.pt")


def test_a_replayed_fine_tune_samples_from_the_parents_data(tmp_path):
    """A parent trained on synthetic cells, a child fine-tuned on a folder with replay: the
    child's sampler draws from both, and the child's card says so."""
    import numpy as np
    import tifffile

    from samzoo.families.microsam.training.trainer import Trainer
    from samzoo.training.synthetic import SyntheticConfig, generate_sample

    parent_cfg = small_config(tmp_path, out_dir=str(tmp_path / "parent"), iterations=2)
    parent = Trainer(parent_cfg, progress=False)
    parent.fit()
    parent_ckpt = parent.ckpt_dir / "latest.pt"
    assert recorded_training_data(samzoo.load_checkpoint(parent_ckpt).metadata)[0]["synthetic"] == SMALL

    rng = np.random.default_rng(0)
    for i in range(2):
        image, labels = generate_sample(rng, SyntheticConfig(shape=(64, 64), radius_range=(4, 9)))
        for kind, array in (("images", image), ("labels", labels)):
            (tmp_path / kind).mkdir(exist_ok=True)
            tifffile.imwrite(tmp_path / kind / f"{i}.tif", array)
    folder = {"kind": "folder", "weight": 1.0, "images": str(tmp_path / "images"), "labels": str(tmp_path / "labels")}
    child_cfg = small_config(tmp_path, out_dir=str(tmp_path / "child"), iterations=1, data=[folder],
                             init_checkpoint=str(parent_ckpt), replay=0.4)
    child = Trainer(child_cfg, progress=False)
    child.fit()
    sampler = child.objective.sampler
    assert len(sampler.sources) == 2
    assert list(np.round(sampler.weights, 3)) == [0.6, 0.4]
    described = samzoo.load_checkpoint(child.ckpt_dir / "latest.pt").metadata["training_data"]["description"]
    assert described.startswith("60% annotated images from the folder") and "40% synthetic images" in described
