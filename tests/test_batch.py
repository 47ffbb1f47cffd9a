"""``samzoo segment`` on many images: inputs, names, resume, failures, exit codes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from conftest import disk_image
from samzoo.cli import main
from samzoo.errors import InputError
from samzoo.families import family_of
from samzoo.segmentation.api import segment
from samzoo.segmentation.batch import expand_inputs, output_name, plan_outputs


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        tifffile.imwrite(images / f"cell{i}.tif", disk_image((96, 128), seed=i))
    (images / "notes.md").write_text("not an image")
    return images


def test_inputs_from_folders_globs_and_lists(folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# two of them\nimages/cell2.tif\n\nimages/cell0.tif\n")
    assert [p.name for p in expand_inputs([str(folder)])] == ["cell0.tif", "cell1.tif", "cell2.tif"]
    assert [p.name for p in expand_inputs([str(folder / "cell[12].tif")])] == ["cell1.tif", "cell2.tif"]
    assert [p.name for p in expand_inputs([str(listing), str(folder / "cell2.tif")])] == ["cell2.tif", "cell0.tif"]
    with pytest.raises(InputError, match="matches no image files"):
        expand_inputs([str(folder / "*.png")])
    assert output_name("{parent}_{stem}_{index}.tif", folder / "a.tif", 4) == "images_a_4.tif"
    with pytest.raises(InputError, match="known fields"):
        output_name("{nope}.tif", folder / "a.tif", 0)
    with pytest.raises(InputError, match="would both be written"):
        plan_outputs([folder / "a.tif", tmp_path / "a.tif"], tmp_path / "out", "{stem}.tif")


def test_batch_cli_resumes_reports_failures_and_exit_codes(folder, tmp_path, tiny_checkpoint, capsys):
    (folder / "broken.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    argv = ["segment", str(folder), str(tmp_path / "missing.tif"), "-o", str(out), "--model", str(tiny_checkpoint),
            "-q", "--no-embedding-cache", "--name-pattern", "{stem}_seg.tif"]
    assert main(argv) == 1  # two inputs failed, the others were segmented
    captured = capsys.readouterr()
    assert "cannot read image" in captured.out and "image file not found" in captured.out
    assert captured.err.count("samzoo: failed:") == 2
    written = sorted(p.name for p in out.iterdir())
    assert written == ["cell0_seg.tif", "cell1_seg.tif", "cell2_seg.tif"]  # no temporary files left

    model = __import__("samzoo").load_checkpoint(tiny_checkpoint)
    np.testing.assert_array_equal(tifffile.imread(out / "cell1_seg.tif"),
                                  segment(tifffile.imread(folder / "cell1.tif"), model, progress=False))

    stamp = (out / "cell0_seg.tif").stat().st_mtime_ns
    (folder / "broken.tif").unlink()
    assert main(argv[:2] + argv[3:]) == 0  # resumed: everything exists
    assert "3 skipped" in capsys.readouterr().out
    assert (out / "cell0_seg.tif").stat().st_mtime_ns == stamp
    assert main(argv[:2] + argv[3:] + ["--overwrite"]) == 0
    assert "3 segmented" in capsys.readouterr().out


def test_batch_cli_cannot_run_exits_2(folder, tmp_path, tiny_checkpoint, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["segment", str(folder), "-o", str(blocker / "out"), "--model", str(tiny_checkpoint), "-q"]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "empty*.tif"), "-o", str(tmp_path / "o"), "-q"]) == 2
    assert "matches no image files" in capsys.readouterr().err
    assert main(["segment", str(folder), "-o", str(tmp_path / "o"), "--device", "tpu", "-q"]) == 2
    assert "is not a device" in capsys.readouterr().err


def test_batched_encoder_calls_give_the_same_labels(tiny_model):
    """The GPU batching path (several images per encoder call), run here on the CPU."""
    images = [disk_image((96, 128), seed=i) for i in range(3)]
    params = {"center_distance_threshold": 0.6, "boundary_distance_threshold": 0.6}
    batched = family_of(tiny_model).block_model(tiny_model, params, batch_size=3)
    stats = [batched.intensity_stats(lambda r, c, im=im: im[r, c], im.shape, im.dtype) for im in images]
    maps = batched.predict_maps(images, stats)
    for image, m in zip(images, maps):
        expected = segment(image, tiny_model, ais_params=params, progress=False)
        np.testing.assert_array_equal(batched.labels_from_maps(m), expected)
