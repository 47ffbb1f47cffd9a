"""Issue 11, one consistent CLI and API, and the fine-tuning journey's presets."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import samzoo
from samzoo.cli import main

from conftest import one_line_exit_2  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_cache")



def test_cache_list_and_clear_see_embeddings(capsys, tmp_path, disks, tiny_checkpoint, isolated_cache):
    tifffile.imwrite(tmp_path / "i.tif", disks[0])
    assert main(["segment", str(tmp_path / "i.tif"), "-o", str(tmp_path / "l.tif"), "-m", str(tiny_checkpoint),
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "embeddings" in out and "(empty)" not in out
    assert main(["cache", "clear", "embeddings"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not (isolated_cache / "embeddings").exists()
    assert main(["cache", "list"]) == 0
    assert "(empty)" in capsys.readouterr().out


def test_ambiguous_two_or_three_slice_arrays_need_a_decision(capsys, tmp_path, disks, tiny_checkpoint):
    stack = np.stack([disks[0]] * 3)
    np.save(tmp_path / "s.npy", stack)
    base = ["segment", tmp_path / "s.npy", "-m", tiny_checkpoint, "-q"]
    one_line_exit_2(capsys, [*base, "-o", tmp_path / "a.tif"], "ambiguous", "--channel-axis", "--volume")
    assert main([str(a) for a in [*base, "-o", tmp_path / "c.tif", "--channel-axis", "0"]]) == 0
    assert tifffile.imread(tmp_path / "c.tif").shape == disks[0].shape
    assert main([str(a) for a in [*base, "-o", tmp_path / "v.tif", "--volume"]]) == 0
    assert tifffile.imread(tmp_path / "v.tif").shape == stack.shape
    with pytest.raises(samzoo.InputError, match="ambiguous"):
        samzoo.segment(np.stack([disks[0]] * 2), tiny_checkpoint, progress=False)


def test_channel_first_with_is_volume_false_is_decided_once(tiny_model, disks):
    """Review item of the last session: (4, H, W) with is_volume=False was read as a volume later."""
    four = np.stack([disks[0]] * 4)
    labels = samzoo.segment(four, tiny_model, is_volume=False, progress=False)
    assert labels.shape == disks[0].shape


@pytest.mark.parametrize("device,needle", [("bogus", "--device"), ("cuda:7", "cuda"), ("tpu", "--device")])
def test_device_errors_are_one_line(capsys, tmp_path, disks, tiny_checkpoint, device, needle, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tifffile.imwrite(tmp_path / "i.tif", disks[0])
    one_line_exit_2(capsys, ["segment", tmp_path / "i.tif", "-o", tmp_path / "l.tif", "-m", tiny_checkpoint,
                              "--device", device], needle)


def test_device_cpu_and_api_device(tmp_path, disks, tiny_checkpoint):
    from samzoo.devices import inference_device

    assert inference_device("cpu").type == "cpu"
    assert inference_device("auto").type in ("cpu", "cuda")
    labels = samzoo.segment(disks[0], tiny_checkpoint, device="cpu", progress=False)
    assert labels.shape == disks[0].shape
    assert main(["segment", str(_tif(tmp_path, disks)), "-o", str(tmp_path / "l.tif"), "-m", str(tiny_checkpoint),
                 "--device", "cpu", "-q"]) == 0


def _tif(tmp_path, disks):
    tifffile.imwrite(tmp_path / "i.tif", disks[0])
    return tmp_path / "i.tif"


def test_old_spellings_still_work_with_a_note(capsys, tmp_path, disks, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr("samzoo.cli_options._warned", set())  # the note is printed once per process
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    tifffile.imwrite(images / "a.tif", disks[0])
    tifffile.imwrite(labels / "a.tif", np.zeros(disks[0].shape, np.uint16))
    assert main(["evaluate", str(tiny_checkpoint), str(images), str(labels), "-q"]) == 0
    err = capsys.readouterr().err
    assert "deprecated" in err and "-m/--model" in err
    assert main(["evaluate", str(images), str(labels), "-m", str(tiny_checkpoint), "-q"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    one_line_exit_2(capsys, ["evaluate", tiny_checkpoint, images, labels, "-m", tiny_checkpoint], "once")


def test_top_level_api_has_the_whole_journey():
    for name in ("fetch", "package", "publish", "train", "evaluate", "tune", "segment", "segment_from_prompts",
                 "load_model", "architecture"):
        function = getattr(samzoo, name)
        assert name in samzoo.__all__
        assert function.__doc__ and (">>>" in function.__doc__ or name == "architecture"), name
    assert samzoo.architecture("test") == samzoo.preset("test")


def test_segment_from_prompts_takes_masks_and_returns_scores(tiny_model, disks):
    image = disks[0]
    rough = np.zeros(image.shape, bool)
    rough[20:40, 30:50] = True
    labels, scores = samzoo.segment_from_prompts(image, tiny_model, masks=rough, return_scores=True)
    assert labels.shape == image.shape and scores.shape == (1,) and np.isfinite(scores).all()
    labels, scores = samzoo.segment_from_prompts(image, tiny_model, boxes=[[20, 10, 60, 50], [70, 40, 110, 80]],
                                                 return_scores=True)
    assert scores.shape == (2,)
    with pytest.raises(samzoo.InputError, match="one object"):
        samzoo.segment_from_prompts(image, tiny_model, masks=rough, boxes=[[0, 0, 9, 9], [10, 10, 20, 20]])


def test_tuned_amg_parameters_are_used(monkeypatch, fresh_model, disks):
    from samzoo.families.microsam import segment as family_segment

    fresh_model.metadata["amg_params"] = {"points_per_side": 4, "pred_iou_thresh": 0.5}
    seen = []
    monkeypatch.setattr(family_segment, "automatic_mask_generation",
                        lambda predictor, params: seen.append(params) or np.zeros(disks[0].shape, np.uint32))
    samzoo.segment(disks[0], fresh_model, mode="amg", progress=False)
    samzoo.segment(disks[0], fresh_model, mode="amg", amg_params={"pred_iou_thresh": 0.7}, progress=False)
    assert seen[0].points_per_side == 4 and seen[0].pred_iou_thresh == 0.5
    assert seen[1].points_per_side == 4 and seen[1].pred_iou_thresh == 0.7


def test_training_presets_say_what_they_are(capsys):
    from samzoo.families.microsam.training.config import PRESETS, preset_config

    assert preset_config("finetune-cpu").init_checkpoint == "samzoo-lm-tiny"
    assert preset_config("finetune").init_checkpoint == "vit_b"
    assert preset_config("finetune-cpu").iterations <= 300
    assert preset_config("tiny-cpu") == PRESETS["tiny-from-scratch"]
    assert "tiny-from-scratch" in capsys.readouterr().err


def test_finetune_cpu_runs_on_user_folders(tmp_path, disks, capsys):
    from samzoo.families.microsam.training.config import preset_config
    from samzoo.families.microsam.training.trainer import Trainer

    for split in ("train", "val"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir(parents=True)
        for i in range(2):
            image = np.zeros((256, 256), np.uint8) + 30
            labels = np.zeros((256, 256), np.uint16)
            rows, cols = np.ogrid[:256, :256]
            for k, (r, c) in enumerate(((60 + 10 * i, 70), (160, 150 + 10 * i)), start=1):
                disk = (rows - r) ** 2 + (cols - c) ** 2 <= 20 ** 2
                image[disk], labels[disk] = 200, k
            tifffile.imwrite(tmp_path / split / "images" / f"{i}.tif", image)
            tifffile.imwrite(tmp_path / split / "labels" / f"{i}.tif", labels)
    folder = lambda split: [{"kind": "folder", "weight": 1.0, "images": str(tmp_path / split / "images"),  # noqa: E731
                             "labels": str(tmp_path / split / "labels")}]
    config = preset_config("finetune-cpu", out_dir=str(tmp_path / "run"), iterations=2, n_val=1, val_every=2,
                           save_every=2, data=folder("train"), val_data=folder("val"))
    trainer = Trainer(config, progress=False)
    assert trainer.model.metadata["parent"]["name"] == "samzoo-lm-tiny"  # starts from the shipped model
    trainer.fit()
    assert (trainer.ckpt_dir / "best.pt").is_file()


def test_evaluate_writes_metrics_into_a_checkpoint(capsys, tmp_path, disks, tiny_checkpoint):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    tifffile.imwrite(images / "a.tif", disks[0])
    tifffile.imwrite(labels / "a.tif", np.zeros(disks[0].shape, np.uint16))
    out = tmp_path / "with-metrics.pt"
    assert main(["evaluate", str(images), str(labels), "-m", str(tiny_checkpoint), "-q",
                 "--write-metrics", str(out)]) == 0
    capsys.readouterr()
    metrics = samzoo.load_checkpoint(out).metadata["metrics"]
    assert metrics["ais on images"]["n_images"] == 1 and "msa" in metrics["ais on images"]
    from samzoo.packaging.metadata import metrics_table

    assert "ais on images / msa" in metrics_table(samzoo.load_checkpoint(out).metadata)
    one_line_exit_2(capsys, ["evaluate", images, labels, "-m", tiny_checkpoint, "--write-metrics", tiny_checkpoint,
                              "--overwrite"], "input")
