"""A fine-tuned model describes itself: its checkpoint, packages and default card carry its own name,
description, training data and measured metrics, name the parent, and never show the parent's metrics."""

from __future__ import annotations

import os
import zipfile

import pytest
import yaml

import samzoo  # noqa: F401  (torchvision fix first)
from samzoo import SamzooModel, load_checkpoint, preset, save_checkpoint
from samzoo.errors import InputError
from samzoo.packaging import package_model
from samzoo.packaging.samples import synthetic_sample
from samzoo.families.microsam.training.config import TrainConfig
from samzoo.training.provenance import run_metadata
from samzoo.families.microsam.training.trainer import Trainer

os.environ.setdefault("BIOIMAGEIO_LOG_WARNINGS", "false")

PARENT_MSA = 0.987654  # a number only the parent's metadata holds
SMALL = {"radius_range": [4.0, 9.0], "density_range": [0.2, 0.4], "empty_probability": 0.0}


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """A parent with its own name, metrics and tuning, fine-tuned for 2 iterations."""
    tmp = tmp_path_factory.mktemp("finetune")
    parent = SamzooModel(preset("test", img_size=64), metadata={
        "name": "parent-model", "version": "1.2.0", "description": "the parent's own description",
        "authors": [{"name": "Parent Author"}], "license": "CC-BY-4.0",
        "metrics": {"synthetic_test": {"model_msa": PARENT_MSA}}, "tuning": {"ais": {"msa": PARENT_MSA}}})
    parent_path = save_checkpoint(parent, tmp / "parent.pt")
    cfg = TrainConfig(name="child-model", out_dir=str(tmp / "run"), init_checkpoint=str(parent_path),
                      patch_size=64, data=[{"kind": "synthetic", "weight": 1.0, "synthetic": SMALL}],
                      iterations=2, lr=1e-3, n_objects=2, n_sub_iterations=1, n_val=1, val_every=2,
                      save_every=2, log_every=1, min_objects=1, seed=3, threads=1)
    Trainer(cfg, progress=False).fit()
    return load_checkpoint(tmp / "run" / "checkpoints" / "latest.pt"), parent_path, tmp


def test_checkpoint_metadata_is_the_childs_own(child):
    model, parent_path, _ = child
    meta = model.metadata
    assert meta["name"] == "child-model"
    assert meta["parent"] == {"id": str(parent_path), "name": "parent-model", "version": "1.2.0"}
    assert "fine-tuned by samzoo from parent-model" in meta["description"]
    assert "synthetic images" in meta["training_data"]["description"]
    assert meta["license"] == "CC-BY-4.0"  # derived weights keep the parent's licence
    assert "authors" not in meta and "tuning" not in meta
    assert str(PARENT_MSA) not in yaml.safe_dump(meta)
    validation = meta["metrics"]["validation"]  # measured by this run
    assert validation["iteration"] == 2 and validation["n_images"] == 1
    assert 0.0 <= validation["dice_box"] <= 1.0 and validation["ais_loss"] > 0


def test_package_without_card_describes_the_child(child):
    model, parent_path, tmp = child
    assert "bioimageio_id" not in model.metadata["parent"]  # a local parent has none
    model.metadata["parent"]["bioimageio_id"] = "diplomatic-bug/1.2"  # as for a registry parent (below)
    zips = package_model(model, tmp / "pkg", sample_image=synthetic_sample(64, seed=2),
                         formats=["pytorch_state_dict"], kinds=["interactive"])
    with zipfile.ZipFile(zips["interactive"]) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        doc = zf.read(rdf["documentation"]).decode()
    assert rdf["name"].startswith("child-model")
    assert rdf["parent"] == {"id": "diplomatic-bug", "version": "1.2"}  # BioImage.IO's own parent field
    assert "fine-tuned by samzoo from parent-model" in rdf["description"]
    samzoo_cfg = rdf["config"]["samzoo"]
    assert samzoo_cfg["metadata"]["parent"]["name"] == "parent-model"
    assert samzoo_cfg["card"]["parent_model"] == {"id": str(parent_path)}
    assert samzoo_cfg["card"]["training_data"]["description"].startswith("100% synthetic images")
    assert f"Parent model: {parent_path}" in doc and "Training data: 100% synthetic images" in doc
    assert "validation / dice_box" in doc
    assert str(PARENT_MSA) not in doc and str(PARENT_MSA) not in yaml.safe_dump(rdf)


def test_registry_parent_is_named_by_its_bioimageio_id():
    cfg = TrainConfig(name="lm-finetuned", init_checkpoint="vit_b_lm")
    meta = run_metadata(cfg, {"name": "vit_b_lm", "metrics": {"msa": PARENT_MSA}}, "vit_b_lm")
    assert meta["parent"] == {"id": "vit_b_lm", "name": "vit_b_lm", "bioimageio_id": "diplomatic-bug/1.2"}
    assert "metrics" not in meta and meta["name"] == "lm-finetuned"
    scratch = run_metadata(TrainConfig(name="scratch"))
    assert "parent" not in scratch and "trained from scratch" in scratch["description"]


def test_the_parents_card_is_refused_for_the_child(child, tmp_path):
    model, _, _ = child
    card = {
        "id": "parent-model", "name": "parent-model", "version": "1.2.0", "license": "MIT",
        "description": "the parent", "modality": "light microscopy", "architecture": {"encoder": "vit"},
        "authors": [{"name": "Ada Lovelace"}], "tags": ["test"], "training_data": {"description": "x"},
        "intended_use": "tests", "limitations": ["none"],
        "metrics": [{"name": "mSA", "value": PARENT_MSA}],
        "citations": [{"text": "Archit et al. 2025", "doi": "10.1038/s41592-024-02580-4"},
                      {"text": "Kirillov et al. 2023", "doi": "10.1109/ICCV51070.2023.00371"}],
    }
    with pytest.raises(InputError, match="names no parent_model.*the card is the parent model's") as info:
        package_model(model, tmp_path / "out", card=card, formats=["pytorch_state_dict"], kinds=["interactive"])
    assert "\n" not in str(info.value) and not any((tmp_path / "out").glob("*.zip"))
