"""`samzoo train` for Cellpose-SAM: cellpose's objective in the shared training loop."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import yaml

import samzoo
from samzoo.cli import main
from samzoo.families.cellpose_sam import CellposeSamModel
from samzoo.families.cellpose_sam.train_objective import CpsamObjective, config_from
from samzoo.training.loop import TrainingLoop

from conftest import disk_image, disk_labels, one_line_exit_2


def _folder(root, n, seed):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        centers = [tuple(int(v) for v in rng.integers(30, 170, 2)) for _ in range(3)]
        tifffile.imwrite(root / "images" / f"im{i}.tif", disk_image((200, 200), centers, 20, seed=i))
        tifffile.imwrite(root / "labels" / f"im{i}.tif", disk_labels((200, 200), centers, 20).astype(np.uint16))
    return root


@pytest.fixture
def settings(tmp_path):
    return {"family": "cellpose_sam", "init_checkpoint": "cpsam_test", "out_dir": str(tmp_path / "run"),
            "train_images": str(_folder(tmp_path / "train", 3, 0) / "images"), "train_labels": str(tmp_path / "train" / "labels"),
            "val_images": str(_folder(tmp_path / "val", 2, 1) / "images"), "val_labels": str(tmp_path / "val" / "labels"),
            "iterations": 6, "batch_size": 2, "lr": 2e-3, "warmup_iterations": 1, "n_val": 2,
            "val_every": 3, "save_every": 3, "log_every": 3, "device": "cpu", "threads": 1}


@pytest.mark.slow  # about 25 s: three short runs of the test architecture
def test_cli_trains_cellpose_sam_in_the_shared_loop_and_resumes_exactly(settings, tmp_path, capsys):
    config_path = tmp_path / "cpsam.yaml"
    config_path.write_text(yaml.safe_dump({**settings, "iterations": 3}))
    assert main(["train", str(config_path)]) == 0
    assert "Cellpose-SAM training: best checkpoint" in capsys.readouterr().out
    best = samzoo.load_model(tmp_path / "run" / "checkpoints" / "best.pt")  # a Cellpose-SAM checkpoint
    assert isinstance(best, CellposeSamModel) and best.metadata["training"]["iteration"] == 3
    assert best.metadata["metrics"]["validation"]["loss"] > 0

    resumed = TrainingLoop(CpsamObjective(config_from(settings), progress=False), progress=False)
    assert resumed.iteration == 3
    resumed.fit()
    straight = TrainingLoop(CpsamObjective(config_from({**settings, "out_dir": str(tmp_path / "straight")}),
                                           progress=False), progress=False)
    straight.fit()
    assert [r for r in straight.history if "val_metric" in r] == [r for r in resumed.history if "val_metric" in r]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    first, last = (r["val_metric"] for r in (straight.history[1], straight.history[-1]))
    assert last < first  # validation loss falls


def test_cellpose_sam_settings_errors_name_the_problem(settings, capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**settings, "iteratons": 3}))
    one_line_exit_2(capsys, ["train", str(path)], "iteratons")
    path.write_text(yaml.safe_dump({k: v for k, v in settings.items() if k != "val_images"}))
    one_line_exit_2(capsys, ["train", str(path)], "val_images")
    path.write_text(yaml.safe_dump({**settings, "init_checkpoint": "samzoo-lm-tiny"}))
    one_line_exit_2(capsys, ["train", str(path)], "not a Cellpose-SAM model")
