"""The samzoo CLI: segment (automatic, prompts, volumes), demo, and one-line errors with exit 2."""

from __future__ import annotations

import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from samzoo.cli import main, parse_params, parse_points

from conftest import disk_image

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def image_tif(tmp_path):
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, disk_image((96, 128)))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_segment_ais_with_overlay(capsys, tmp_path, image_tif, tiny_checkpoint, isolated_cache):
    out = tmp_path / "res" / "labels.tif"
    code, stdout, stderr = run(capsys, "segment", image_tif, "-o", out, "--model", tiny_checkpoint,
                               "--overlay", tmp_path / "overlay.png", "--param", "foreground_threshold=0.6",
                               "min_size=4", "--quiet")
    assert code == 0, stderr
    labels = tifffile.imread(out)
    assert labels.shape == (96, 128) and labels.dtype.kind == "u"
    assert iio.imread(tmp_path / "overlay.png").shape == (96, 128, 3)
    assert f"wrote {out}" in stdout and "objects" in stdout
    assert list((isolated_cache / "embeddings").rglob("full.npy"))  # the CLI caches embeddings by default


def test_segment_amg_npy_without_cache(capsys, tmp_path, tiny_checkpoint, isolated_cache):
    np.save(tmp_path / "img.npy", disk_image((64, 80), centers=((30, 40),), radius=10, dtype=np.uint16))
    code, stdout, stderr = run(capsys, "segment", tmp_path / "img.npy", "-o", tmp_path / "l.tiff", "--model",
                               tiny_checkpoint, "--mode", "amg", "--param", "points_per_side=4",
                               "pred_iou_thresh=0", "--no-embedding-cache", "-q")
    assert code == 0, stderr
    assert tifffile.imread(tmp_path / "l.tiff").shape == (64, 80)
    assert not (isolated_cache / "embeddings").exists()


def test_segment_with_prompts(capsys, tmp_path, tiny_checkpoint):
    iio.imwrite(tmp_path / "img.png", disk_image((96, 128)))
    code, stdout, stderr = run(capsys, "segment", tmp_path / "img.png", "-o", tmp_path / "p.tif", "--model",
                               tiny_checkpoint, "--points", "40,30;90,60;45,35,0", "--boxes",
                               "25,15,55,45;75,45,105,75", "--overlay", tmp_path / "p.png", "-q")
    assert code == 0, stderr
    labels = tifffile.imread(tmp_path / "p.tif")
    assert labels.shape == (96, 128) and set(np.unique(labels)) <= {0, 1, 2}
    # the shipped model states its object size, so its boxes are zoomed unless told not to
    # and their masks clipped to the box unless told not to
    for flag, name in (([], "zoomed.tif"), (["--no-zoom-prompts"], "plain.tif"), (["--no-clip-to-boxes"], "free.tif")):
        code, stdout, stderr = run(capsys, "segment", tmp_path / "img.png", "-o", tmp_path / name, "--model",
                                   "samzoo-lm-tiny", "--offline", "--boxes", "25,15,55,45", *flag, "-q")
        assert code == 0, stderr
        assert tifffile.imread(tmp_path / name).max() == 1
    outside = np.ones((96, 128), dtype=bool)
    outside[15:46, 25:56] = False
    assert not tifffile.imread(tmp_path / "zoomed.tif")[outside].any()


def test_segment_volume(capsys, tmp_path, tiny_checkpoint):
    volume = np.stack([disk_image((64, 64), centers=((30, 30),), radius=10, seed=s) for s in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", volume, photometric="minisblack")
    code, stdout, stderr = run(capsys, "segment", tmp_path / "stack.tif", "-o", tmp_path / "v.tif", "--model",
                               tiny_checkpoint, "--volume", "-q")
    assert code == 0, stderr
    assert tifffile.imread(tmp_path / "v.tif").shape == (3, 64, 64)


def write_bad_inputs(folder):
    (folder / "garbage.tif").write_bytes(b"this is not a tiff")
    np.save(folder / "empty.npy", np.zeros((0, 5)))
    np.save(folder / "nan.npy", np.full((32, 32), np.nan, dtype=np.float32))
    np.save(folder / "four_d.npy", np.zeros((2, 3, 32, 32), dtype=np.uint8))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["segment", "{tmp}/missing.tif", "-o", "{tmp}/o.tif"], "image file not found"),
        (["segment", "{tmp}/garbage.tif", "-o", "{tmp}/o.tif"], "cannot read image"),
        (["segment", "{tmp}/empty.npy", "-o", "{tmp}/o.tif"], "empty"),
        (["segment", "{tmp}/nan.npy", "-o", "{tmp}/o.tif"], "NaN"),
        (["segment", "{tmp}/four_d.npy", "-o", "{tmp}/o.tif"], "4D"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--points", "1000,5"], "outside"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--boxes", "50,10,20,40"], "x1 < x0"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--points", "4;5"], "not x,y"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--param", "foo=1"], "unknown AIS parameter"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--mode", "amg", "--param", "min_size=1"], "unknown AMG"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--param", "min_size"], "not key=value"),
        (["segment", "{img}", "-o", "{tmp}/o.png"], "--output must end with"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--tile-shape", "ab"], "--tile-shape"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--points", "5,5", "--volume"], "2D images"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--no-zoom-prompts"], "applies to --points/--boxes"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--points", "5,5", "--no-clip-to-boxes"], "applies to --boxes"),
        (["segment", "{img}"], "required: -o/--output"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--bogus"], "unrecognized arguments"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--model", "{tmp}/nope.pt"], "not found"),
        (["segment", "{img}", "-o", "{tmp}/o.tif", "--model", "{tmp}/garbage.tif"], "checkpoint"),
    ],
)
def test_errors_are_one_line_exit_2(capsys, tmp_path, image_tif, tiny_checkpoint, args, message):
    write_bad_inputs(tmp_path)
    argv = [a.format(tmp=tmp_path, img=image_tif) for a in args]
    if "--model" not in argv:
        argv += ["--model", str(tiny_checkpoint)]
    code, stdout, stderr = run(capsys, *argv, "-q") if "-o" in argv else run(capsys, *argv)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("samzoo: error: "), stderr
    assert message in lines[0]
    assert not (tmp_path / "o.tif").exists()


def test_error_in_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "samzoo.cli", "segment", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o.tif")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"samzoo: error: image file not found: {tmp_path / 'missing.tif'}"]
    assert "Traceback" not in result.stderr


def test_help_version_and_no_command(capsys):
    assert main(["--help"]) == 0
    assert "segment" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert main([]) == 2


def test_demo(capsys, tmp_path, tiny_checkpoint):
    tifffile.imwrite(tmp_path / "sample.tif", disk_image((96, 128)))
    code, stdout, stderr = run(capsys, "demo", "-o", tmp_path / "demo", "--model", tiny_checkpoint,
                               "--image", tmp_path / "sample.tif", "-q")
    assert code == 0, stderr
    assert (tmp_path / "demo" / "labels.tif").is_file() and (tmp_path / "demo" / "overlay.png").is_file()
    assert "objects" in stdout and str(tmp_path / "demo" / "labels.tif") in stdout
    # The random test model finds nothing, so the BioImage.IO step reports why it made no package
    # (the packaged path itself is covered in test_packaging.py).
    assert "package: not made (the model finds no object" in stdout


def test_parsers():
    assert parse_points("1,2; 3.5,4,0;") == ([[1.0, 2.0], [3.5, 4.0]], [1, 0])
    assert parse_params(["a=1", "b=0.5"]) == {"a": 1, "b": 0.5}
