"""CellSAM as a samzoo family: load_model, segment (API and CLI), prompts, tiling, parameters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import samzoo
from samzoo.errors import InputError
from samzoo.families import detect_family, family_of, get_family
from samzoo.families.cellsam import TINY, CellSAMModel, CellSAMParams, build_cellsam, detect_boxes, save_cellsam
from samzoo.families.cellsam.tiling import band_links, block_grid, segment_tiled

from conftest import disk_image


@pytest.fixture(scope="module")
def cellsam_checkpoint(tmp_path_factory):
    model = build_cellsam(TINY, seed=0)
    head = model.networks.cellfinder.decode_head.transformer
    with torch.no_grad():  # scores spread around 0.5 so random weights keep some boxes
        head.class_embed[0].bias.zero_()
        head.class_embed[0].weight.normal_(0, 0.5)
    model.params = CellSAMParams(iou_threshold=0.0, min_size=0)
    return save_cellsam(model, tmp_path_factory.mktemp("cellsam") / "cellsam-tiny.pt")


def test_family_registered_and_detected(cellsam_checkpoint):
    family = get_family("cellsam")
    assert family.title == "CellSAM" and "non-commercial" in family.licence
    model = samzoo.load_model(cellsam_checkpoint)
    assert isinstance(model, CellSAMModel) and family_of(model) is family
    assert model.params.iou_threshold == 0.0  # tuned parameters travel with the checkpoint
    assert detect_family(torch.load(cellsam_checkpoint, weights_only=True)).name == "cellsam"
    # a published-layout dict (no samzoo wrapper) is recognised too, and μSAM does not claim it
    published = {f"model.{k}": v for k, v in {"image_encoder.pos_embed": torch.zeros(1)}.items()}
    published["cellfinder.decode_head.transformer.pattern.weight"] = torch.zeros(1, 2)
    assert detect_family(published).name == "cellsam"


def test_segment_api_and_params(cellsam_checkpoint):
    model = samzoo.load_model(cellsam_checkpoint)
    image = disk_image((100, 120), centers=((30, 40), (60, 90)), radius=12)
    labels = samzoo.segment(image, model, progress=False)
    assert labels.dtype == np.uint32 and labels.shape == image.shape and labels.max() >= 1
    strict = samzoo.segment(image, model, params={"bbox_threshold": 1.0}, progress=False)
    assert strict.max() == 0  # nothing scores above 1
    with pytest.raises(InputError, match="unknown CellSAM parameter"):
        samzoo.segment(image, model, params={"center_distance_threshold": 0.5}, progress=False)
    with pytest.raises(InputError, match="CellSAM has no mode='amg'"):
        samzoo.segment(image, model, mode="amg", progress=False)
    with pytest.raises(InputError, match="mask_threshold must be in"):
        CellSAMParams(mask_threshold=1.5)


def test_segment_cli(cellsam_checkpoint, tmp_path):
    import tifffile

    image = disk_image((90, 110))
    tifffile.imwrite(tmp_path / "in.tif", image)
    out = tmp_path / "labels.tif"
    proc = subprocess.run([sys.executable, "-m", "samzoo.cli", "segment", str(tmp_path / "in.tif"), "--model",
                           str(cellsam_checkpoint), "-o", str(out), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert tifffile.imread(out).shape == image.shape


def test_detected_boxes_prompt_any_sam_model(cellsam_checkpoint, tiny_model):
    model = samzoo.load_model(cellsam_checkpoint)
    image = disk_image((100, 120))
    boxes, scores = detect_boxes(model, image, return_scores=True)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) == len(scores) > 0
    assert np.all(np.diff(scores) <= 0)  # best first
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 2] <= 120) and np.all(boxes[:, 3] <= 100)
    usable = boxes[(boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)][:3]
    labels = samzoo.segment_from_prompts(image, tiny_model, boxes=usable, progress=False)  # a μSAM model
    assert labels.shape == image.shape and labels.dtype == np.uint32
    own = samzoo.segment_from_prompts(image, model, boxes=usable)  # CellSAM's own SAM
    assert own.shape == image.shape and set(np.unique(own)) <= set(range(len(usable) + 1))
    point = samzoo.segment_from_prompts(image, model, points=[[40, 30]])
    assert point.max() <= 1


def test_block_grid_and_band_links():
    grid = block_grid((1000, 450), 400)
    assert [[c[:2] for c in row][0] for row in grid] == [(0, 400), (400, 800), (800, 1000)]
    assert [c[2:] for c in grid[0]] == [(0, 400), (400, 450)]
    a = np.array([[1, 1, 0, 2], [1, 1, 0, 2]])
    b = np.array([[5, 5, 0, 0], [5, 6, 0, 7]])
    links = band_links(a, b, 0.5)
    assert links.T.tolist() == [[1, 5], [2, 7]]  # IoU(1,5) = 3/4, IoU(2,7) = 1/2; background never links
    assert band_links(a, b, 0.6).T.tolist() == [[1, 5]]


def test_tiling_links_objects_across_blocks():
    """A real per-block segmenter (threshold + connected components) on an image whose objects
    straddle block boundaries: after linking, each object has one label, as on the whole image."""
    from scipy import ndimage

    image = np.zeros((150, 170, 3), np.float32)
    rows, cols = np.ogrid[:150, :170]
    centers = [(30, 40), (75, 64), (120, 130), (64, 140), (20, 100)]
    for r, c in centers:
        image[(rows - r) ** 2 + (cols - c) ** 2 <= 13 ** 2, 2] = 1.0

    def segment(window):
        return ndimage.label(window[..., 2] > 0.5)[0]

    params = CellSAMParams(block_size=64, overlap=20, iou_depth=10)
    labels = segment_tiled(None, image, params, segment=segment)
    whole = segment(image)
    assert labels.max() == whole.max() == len(centers)
    # same partition as the untiled result
    pairs = {(int(a), int(b)) for a, b in zip(labels.ravel(), whole.ravel())}
    assert len(pairs) == len(centers) + 1
    # without linking, objects cut by block boundaries get several labels
    unlinked = segment_tiled(None, image, params.replace(iou_depth=0), segment=segment)
    assert unlinked.max() > len(centers)


def test_grid_search_picks_the_best_thresholds(cellsam_checkpoint):
    from samzoo.families.cellsam.tuning import grid_search

    model = samzoo.load_model(cellsam_checkpoint)
    image = disk_image((100, 120), centers=((30, 40), (60, 90)), radius=12)
    gt = np.zeros(image.shape, np.uint32)
    best, rows = grid_search(model, [image], [gt], {"bbox_threshold": (0.2, 1.0), "min_size": (0, 25)},
                             progress=False)
    assert len(rows) == 4 and all(0 <= r["msa"] <= 1 for r in rows)
    # with an empty ground truth, predicting nothing (threshold 1.0) is the only perfect answer
    assert best.bbox_threshold == 1.0 and model.params.bbox_threshold == 1.0
    assert max(r["msa"] for r in rows) == 1.0
    with pytest.raises(InputError, match="mask_threshold must be in"):
        grid_search(model, [image], [gt], {"mask_threshold": (2.0,)}, progress=False)
