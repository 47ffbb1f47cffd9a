"""Issue 11, data loss and half-done work: no output over an input, no surprise overwrite, output
paths checked before the work, an overlay failure after the labels is a warning, and the
embedding cache is optional and checksummed."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from samzoo.cli import main
from samzoo.io import read_image, write_png

from conftest import one_line_exit_2  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated_cache")




def test_segment_refuses_to_write_over_its_input(capsys, tmp_path, image_tif, tiny_checkpoint):
    before = image_tif.read_bytes()
    one_line_exit_2(capsys, ["segment", image_tif, "-o", image_tif, "-m", tiny_checkpoint], "input")
    one_line_exit_2(capsys, ["segment", image_tif, "-o", image_tif, "-m", tiny_checkpoint, "--overwrite"], "input")
    assert image_tif.read_bytes() == before
    png = tmp_path / "img.png"
    write_png(png, np.zeros((96, 128), np.uint8))
    png_bytes = png.read_bytes()
    one_line_exit_2(capsys, ["segment", png, "-o", tmp_path / "l.tif", "--overlay", png, "-m", tiny_checkpoint,
                            "--overwrite"], "--overlay", "input")
    assert png.read_bytes() == png_bytes and not (tmp_path / "l.tif").exists()
    # a hard link is the same file under another name
    link = tmp_path / "link.tif"
    os.link(image_tif, link)
    one_line_exit_2(capsys, ["segment", image_tif, "-o", link, "-m", tiny_checkpoint, "--overwrite"], "input")


def test_segment_existing_output_needs_overwrite(capsys, tmp_path, image_tif, tiny_checkpoint):
    out = tmp_path / "labels.tif"
    out.write_bytes(b"keep me")
    one_line_exit_2(capsys, ["segment", image_tif, "-o", out, "-m", tiny_checkpoint, "-q"], "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert main(["segment", str(image_tif), "-o", str(out), "-m", str(tiny_checkpoint), "-q", "--overwrite"]) == 0
    assert read_image(out).shape == (96, 128)
    one_line_exit_2(capsys, ["segment", image_tif, "-o", tmp_path / "a.tif", "--overlay", tmp_path / "a.tif",
                            "-m", tiny_checkpoint], "--overlay")


@pytest.mark.parametrize("where", ["file-as-folder", "folder-as-output"])
def test_unwritable_outputs_fail_before_any_work(capsys, tmp_path, image_tif, where, monkeypatch):
    loaded = []
    monkeypatch.setattr("samzoo.segmentation.api.resolve_model", lambda *a, **k: loaded.append(1))
    if where == "file-as-folder":
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where a folder is expected")
        target = blocker / "labels.tif"
    else:
        target = tmp_path / "x.tif"
        target.mkdir()
    one_line_exit_2(capsys, ["segment", image_tif, "-o", target], "--output")
    assert not loaded  # nothing was computed


def test_every_writing_command_checks_its_output_first(capsys, tmp_path, tiny_checkpoint, disks):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    tifffile.imwrite(images / "a.tif", disks[0])
    tifffile.imwrite(labels / "a.tif", np.zeros((96, 128), np.uint16))
    bad = blocker / "out"
    cases = [
        ["evaluate", images, labels, "-m", tiny_checkpoint, "--csv", f"{bad}.csv"],
        ["tune", images, labels, "-m", tiny_checkpoint, "-o", f"{bad}.pt"],
        ["demo", "-o", bad, "-m", tiny_checkpoint],
        ["package", "-m", tiny_checkpoint, "-o", bad],
        ["train", "--preset", "test", "-o", bad],
        ["card", "render", "model_cards/samzoo-lm-tiny.yaml", "-o", f"{bad}.md"],
    ]
    for argv in cases:
        one_line_exit_2(capsys, argv, str(blocker))
    # an existing CSV / checkpoint is kept unless --overwrite
    csv = tmp_path / "t.csv"
    csv.write_text("keep")
    one_line_exit_2(capsys, ["evaluate", images, labels, "-m", tiny_checkpoint, "--csv", csv], "--overwrite")
    one_line_exit_2(capsys, ["tune", images, labels, "-m", tiny_checkpoint, "-o", tiny_checkpoint, "--overwrite"],
                   "input")
    assert csv.read_text() == "keep"


def test_fetch_into_unwritable_cache_is_one_line(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "cachefile"
    blocker.write_text("x")
    monkeypatch.setenv("SAMZOO_CACHE_DIR", str(blocker))
    one_line_exit_2(capsys, ["fetch", "https://127.0.0.1:9/model.pt"], "cache")


def test_overlay_failure_after_labels_is_a_warning(capsys, tmp_path, image_tif, tiny_checkpoint, monkeypatch):
    out, png = tmp_path / "labels.tif", tmp_path / "ov.png"

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("samzoo.visualize.save_overlay", disk_full)
    code = main(["segment", str(image_tif), "-o", str(out), "--overlay", str(png), "-m", str(tiny_checkpoint), "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.is_file() and not png.exists()
    assert "warning" in captured.err and str(out) in captured.err and "No space left" in captured.err


def test_unwritable_embedding_cache_does_not_abort_segment(capsys, tmp_path, image_tif, tiny_checkpoint,
                                                           monkeypatch, caplog):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("SAMZOO_CACHE_DIR", str(blocker))
    out = tmp_path / "labels.tif"
    with caplog.at_level("WARNING"):
        code = main(["segment", str(image_tif), "-o", str(out), "-m", str(tiny_checkpoint), "-q"])
    assert code == 0, capsys.readouterr().err
    assert out.is_file()
    warnings = [r for r in caplog.records if "not writable" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("damage", ["zeros", "nan", "truncated", "flipped-byte"])
def test_corrupt_cached_embedding_is_recomputed(tmp_path, tiny_model, disks, damage):
    from samzoo import Predictor
    from samzoo.segmentation.embedding_cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "emb")
    image = disks[0]
    first = Predictor(tiny_model).set_image(image, embedding_cache=cache)
    reference = first.window_embedding().embedding.clone()
    (npy,) = list(cache.directory.rglob("full.npy"))
    array = np.load(npy)
    if damage == "zeros":
        np.save(npy, np.zeros_like(array))
    elif damage == "nan":
        array[0, 0, 0] = np.nan
        np.save(npy, array)
    elif damage == "truncated":
        npy.write_bytes(npy.read_bytes()[:200])
    else:
        raw = bytearray(npy.read_bytes())
        raw[-5] ^= 0xFF
        npy.write_bytes(bytes(raw))
    second = Predictor(tiny_model)
    second.set_image(image, embedding_cache=cache)
    assert second.encoder_calls == 1  # recomputed, not used
    assert cache.corrupt == 1
    np.testing.assert_allclose(second.window_embedding().embedding.numpy(), reference.numpy(), atol=1e-6)
    # and the entry was repaired: a third run uses it
    third = Predictor(tiny_model).set_image(image, embedding_cache=cache)
    assert third.encoder_calls == 0
    meta = json.loads(npy.with_suffix(".json").read_text())
    assert len(meta["sha256"]) == 64
