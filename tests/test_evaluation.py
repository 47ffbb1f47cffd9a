"""Evaluation: the μSAM interactive protocol, AIS/AMG grid search, ``evaluate`` and its CLI."""

import csv

import samzoo  # noqa: F401  (torchvision fix first)

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from samzoo import cli
from samzoo.errors import InputError
from samzoo.families.microsam import grid_search as gs
from samzoo.evaluation.evaluate import evaluate, format_table, resolve_pairs, score
from samzoo.evaluation.interactive import (
    corrective_points,
    interactive_evaluation,
    largest_region_point,
    object_box,
    object_point,
)
from samzoo.evaluation.metrics import mean_segmentation_accuracy
from samzoo.families.microsam.checkpoint import load_checkpoint, save_checkpoint
from samzoo.families.microsam.config import preset
from samzoo.families.microsam.model import SamzooModel
from samzoo.families.microsam.ais import AisParams, watershed_from_decoder_outputs
from samzoo.families.microsam.amg import AmgParams, generate_masks, masks_to_labels
from samzoo.families.microsam.predictor import Predictor

SHAPE = (96, 128)
DISKS = [((30, 30), 12), ((60, 80), 15), ((20, 100), 8), ((75, 25), 10)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny test model is far faster single-threaded on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disks(shape=SHAPE, items=DISKS):
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for i, ((cy, cx), r) in enumerate(items):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i + 1
    return labels


def image_of(labels, seed=0):
    rng = np.random.default_rng(seed)
    return ((labels > 0) * 180.0 + 30 + rng.normal(0, 8, labels.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SamzooModel(preset("test"))


# ----------------------------------------------------------------------------- prompt derivation


def test_box_and_point_from_object():
    mask = disks(items=[((40, 50), 10)]) > 0
    assert object_box(mask).tolist() == [40, 30, 61, 51]  # x0, y0, x1, y1; exclusive ends
    assert object_point(mask).tolist() == [50, 40]  # the center is farthest from the boundary
    with pytest.raises(InputError):
        object_box(np.zeros((5, 5), bool))


def test_largest_region_point_picks_largest_component_at_its_deepest_pixel():
    region = np.zeros((40, 60), bool)
    region[5:10, 5:10] = True  # small
    region[10:31, 30:51] = True  # large 21x21 square, deepest at its center (20, 40)
    assert largest_region_point(region) == (20, 40)
    assert largest_region_point(np.zeros((4, 4), bool)) is None


def test_corrective_points_from_errors():
    gt = disks(items=[((40, 40), 15)]) > 0
    pred = np.roll(gt, 10, axis=1)  # shifted right: missed on the left, wrong on the right
    points, labels, sources = corrective_points(gt, pred)
    assert labels.tolist() == [1, 0] and sources == ("missed", "wrong")
    (px, py), (nx, ny) = points.astype(int)
    assert gt[py, px] and not pred[py, px] and px < 40
    assert pred[ny, nx] and not gt[ny, nx] and nx > 40


def test_corrective_points_without_errors_fall_back():
    gt = disks(items=[((40, 40), 15)]) > 0
    points, labels, sources = corrective_points(gt, gt.copy())
    assert sources == ("covered", "background") and labels.tolist() == [1, 0]
    (px, py), (nx, ny) = points.astype(int)
    assert gt[py, px] and not gt[ny, nx]
    assert 25 - 3 <= nx < 56 + 3 and 25 - 3 <= ny < 56 + 3  # in the box grown by 3 px
    full = np.ones((20, 20), bool)  # object fills the image: no background -> padded negative
    _, labels, sources = corrective_points(full, full)
    assert labels.tolist() == [1, -1] and sources[1] == "none"


# ----------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("start", ["box", "point"])
def test_protocol_iterations_and_points(model, start):
    gt = disks()
    result = interactive_evaluation(image_of(gt), gt, model, start=start, progress=False, batch_size=3)
    assert len(result.iterations) == 8
    assert [it.iteration for it in result.iterations] == list(range(8))
    first = 1 if start == "point" else 0
    assert [it.n_positive for it in result.iterations] == [first + i for i in range(8)]
    assert [it.n_negative for it in result.iterations] == list(range(8))
    n_obj = len(DISKS)
    assert result.points.shape == (n_obj, first + 14, 2)
    assert (result.point_labels == 1).sum(axis=1).tolist() == [first + 7] * n_obj
    assert ((result.point_labels == 0) | (result.point_labels == -1)).sum(axis=1).tolist() == [7] * n_obj
    xs, ys = result.points[..., 0], result.points[..., 1]
    assert (xs >= 0).all() and (xs < SHAPE[1]).all() and (ys >= 0).all() and (ys < SHAPE[0]).all()
    # positives lie on their object, negatives off it: both come from that object's errors
    for i, obj in enumerate(result.object_ids):
        mask = gt == obj
        for (x, y), label in zip(result.points[i].astype(int), result.point_labels[i]):
            if label == 1:
                assert mask[y, x]
            elif label == 0:
                assert not mask[y, x]
        assert len(result.point_sources[i]) == 7
    if start == "box":
        assert result.boxes.shape == (n_obj, 4)
    else:
        assert result.boxes is None
        centers = [(cx, cy) for (cy, cx), _ in DISKS]
        assert result.points[:, 0].tolist() == [list(c) for c in centers]
    for it in result.iterations:
        assert 0 <= it.mean_iou <= 1 and 0 <= it.msa <= 1 and 0 <= it.sa50 <= 1 and 0 <= it.mean_dice <= 1
    assert result.ious.shape == (8, n_obj)


class _OraclePredictor(Predictor):
    """Returns an eroded ground truth at iteration 0 and the exact object afterwards; records calls."""

    def __init__(self, model, gt):
        super().__init__(model)
        self.gt = gt
        self.calls = []

    def predict(self, points=None, point_labels=None, boxes=None, mask_input=None, multimask=None):
        self.calls.append(dict(points=points, point_labels=point_labels, boxes=boxes, mask_input=mask_input,
                               multimask=multimask))
        masks = []
        for box in boxes:
            x0, y0, x1, y1 = box.astype(int)
            ids = np.unique(self.gt[y0:y1, x0:x1])
            ids = ids[ids > 0]
            best = max(ids, key=lambda i: np.count_nonzero(self.gt[y0:y1, x0:x1] == i))
            mask = self.gt == best
            masks.append(ndimage.binary_erosion(mask, iterations=3) if mask_input is None else mask)
        n, low = len(masks), self.low_res_size
        logits = np.full((n, low, low), float(len(self.calls)), np.float32)
        return np.stack(masks), np.ones(n, np.float32), logits


def test_protocol_metrics_and_mask_prompt_with_an_oracle(model):
    gt = disks()
    oracle = _OraclePredictor(model, gt).set_image(image_of(gt))
    result = interactive_evaluation(None, gt, oracle, start="box", progress=False, return_labels=True)
    assert len(oracle.calls) == 8
    assert oracle.calls[0]["mask_input"] is None and oracle.calls[0]["points"] is None
    for step, call in enumerate(oracle.calls[1:], start=1):
        # the previous iteration's low-res logits come back as the mask prompt
        assert np.all(call["mask_input"] == step)
        assert call["points"].shape == (len(DISKS), 2 * step, 2) and call["multimask"] is False
    first, last = result.iterations[0], result.final
    assert first.mean_iou < 0.9 and last.mean_iou == 1.0 and last.mean_dice == 1.0
    assert last.msa == 1.0 and last.sa50 == 1.0
    assert first.msa == pytest.approx(mean_segmentation_accuracy(gt, result.labels[0])[0])
    # all corrections after the first are "nothing missed / nothing wrong" fallbacks
    assert result.point_sources[0][0] == ("missed", "background")
    assert result.point_sources[0][-1] == ("covered", "background")
    no_mask = interactive_evaluation(None, gt, _OraclePredictor(model, gt).set_image(image_of(gt)),
                                     use_mask_prompt=False, n_iterations=2, progress=False)
    assert len(no_mask.iterations) == 3


def test_protocol_on_a_tiled_image(model):
    """Images larger than the model input are tiled; mask prompts then go in as binary masks."""
    items = [((30, 30), 12), ((100, 180), 15), ((180, 60), 10), ((104, 128), 9)]
    gt = disks((208, 256), items)
    predictor = Predictor(model).set_image(image_of(gt))
    assert predictor.is_tiled
    result = interactive_evaluation(None, gt, predictor, start="point", n_iterations=2, progress=False)
    assert len(result.iterations) == 3 and result.points.shape == (4, 5, 2)


def test_protocol_with_prompt_zoom(model):
    """A model that states its object size decodes each box on its own window (prompt zoom);
    mask prompts then go in as binary masks, as on a tiled image."""
    gt = disks()
    zooming = SamzooModel(model.config, metadata={"object_diameter": {"median": 20.0}})
    zooming.load_state_dict(model.state_dict())
    predictor = Predictor(zooming).set_image(image_of(gt))
    assert predictor.zoom_prompts and not predictor.is_tiled
    result = interactive_evaluation(None, gt, predictor, start="box", n_iterations=2, progress=False)
    assert len(result.iterations) == 3 and result.points.shape == (len(DISKS), 4, 2)
    assert predictor.encoder_calls > 1  # the image, then the boxes' windows


def test_protocol_input_errors(model):
    gt = disks()
    image = image_of(gt)
    with pytest.raises(InputError, match="start"):
        interactive_evaluation(image, gt, model, start="circle", progress=False)
    with pytest.raises(InputError, match="no objects"):
        interactive_evaluation(image, np.zeros_like(gt), model, progress=False)
    with pytest.raises(InputError, match="shape"):
        interactive_evaluation(image, gt[:50], model, progress=False)
    with pytest.raises(InputError, match="n_iterations"):
        interactive_evaluation(image, gt, model, n_iterations=-1, progress=False)


# ----------------------------------------------------------------------------- grid search


def crafted_outputs():
    """Two touching disks plus a faint blob. Only center_distance_threshold <= 0.7 separates the
    disks (their shared border has center distance 0.8) and only foreground_threshold 0.6 drops
    the blob (foreground 0.55). The boundary map is flat inside: it cannot help."""
    shape = (64, 96)
    yy, xx = np.indices(shape)
    centers, r = [(32, 30), (32, 54)], 15.0  # 24 px apart: borders touch at 12 px = 0.8 r
    d = np.stack([np.hypot(yy - cy, xx - cx) for cy, cx in centers])
    inside = d.min(axis=0) <= r
    gt = np.where(inside, d.argmin(axis=0) + 1, 0).astype(np.int32)
    fg = inside.astype(np.float32)
    center = np.where(inside, d.min(axis=0) / r, 1.0).astype(np.float32)
    blob = np.hypot(yy - 12, xx - 84) <= 6
    fg[blob] = 0.55
    center[blob] = np.hypot(yy - 12, xx - 84)[blob] / 6
    boundary = np.where(inside | blob, 0.0, 1.0).astype(np.float32)
    return np.stack([fg, center, boundary]), gt


def test_grid_search_picks_the_separating_thresholds():
    outputs, gt = crafted_outputs()
    grid = {"center_distance_threshold": [0.5, 0.9], "boundary_distance_threshold": [0.5],
            "foreground_threshold": [0.5, 0.6], "min_size": [0], "foreground_smoothing": [0.0],
            "distance_smoothing": [0.0]}
    result = gs.ais_grid_search_on_outputs([outputs], [gt], grid, progress=False)
    assert len(result.table) == 4
    assert result.best.center_distance_threshold == 0.5 and result.best.foreground_threshold == 0.6
    assert result.best_msa > 0.9
    by_key = {(r["center_distance_threshold"], r["foreground_threshold"]): r["msa"] for r in result.table}
    assert by_key[(0.5, 0.6)] > by_key[(0.5, 0.5)] and by_key[(0.5, 0.6)] > by_key[(0.9, 0.6)]
    assert by_key[(0.9, 0.5)] == min(by_key.values())
    assert result.table[0]["msa"] == result.best_msa  # sorted best first


def test_grid_search_scores_equal_the_plain_watershed():
    """Pre-smoothing and min_size reuse must not change any result."""
    outputs, gt = crafted_outputs()
    rng = np.random.default_rng(1)
    noisy = np.clip(outputs + rng.normal(0, 0.15, outputs.shape), 0, 1).astype(np.float32)
    grid = {"center_distance_threshold": [0.4, 0.7], "boundary_distance_threshold": [0.3, 0.6],
            "foreground_threshold": [0.5], "min_size": [0, 30], "foreground_smoothing": [0.0, 1.0],
            "distance_smoothing": [1.6]}
    result = gs.ais_grid_search_on_outputs([noisy, outputs], [gt, gt], grid, progress=False)
    assert len(result.table) == 16
    for row in result.table[::3]:
        params = AisParams.from_dict({k: row[k] for k in AisParams().to_dict()})
        expected = [mean_segmentation_accuracy(gt, watershed_from_decoder_outputs(*o, params))[0]
                    for o in (noisy, outputs)]
        assert row["msa_0"] == pytest.approx(expected[0]) and row["msa_1"] == pytest.approx(expected[1])
        assert row["msa"] == pytest.approx(np.mean(expected))


def test_grid_search_ties_keep_the_defaults():
    """When no combination is better than another (here: nothing is ever found), keep the defaults."""
    outputs, gt = crafted_outputs()
    empty = np.stack([np.zeros_like(outputs[0]), np.ones_like(outputs[0]), np.ones_like(outputs[0])])
    result = gs.ais_grid_search_on_outputs([empty], [gt], {"min_size": [0, 50]}, progress=False)
    assert result.best_msa == 0.0 and len(result.table) == 5 * 5 * 3 * 2 * 2
    assert result.best == AisParams(distance_smoothing=1.6, foreground_smoothing=1.0)


def test_grid_search_errors():
    outputs, gt = crafted_outputs()
    with pytest.raises(InputError, match="unknown AIS parameter"):
        gs.ais_grid_search_on_outputs([outputs], [gt], {"centre": [0.5]}, progress=False)
    with pytest.raises(InputError, match="foreground_threshold"):
        gs.ais_grid_search_on_outputs([outputs], [gt], {"foreground_threshold": [1.5]}, progress=False)
    with pytest.raises(InputError, match="2 images but 1"):
        gs.ais_grid_search_on_outputs([outputs, outputs], [gt], progress=False)


def test_tune_model_stores_params_that_travel(model, tmp_path):
    torch.manual_seed(0)
    tuned = SamzooModel(preset("test"))
    gt = disks()
    grid = {"center_distance_threshold": [0.5, 0.7], "boundary_distance_threshold": [0.5],
            "foreground_threshold": [0.5], "min_size": [0, 10], "distance_smoothing": [1.6]}
    out = gs.tune_model(tuned, [image_of(gt)], [gt], grid=grid, progress=False)
    assert out is tuned
    best = AisParams.from_dict(tuned.ais_params)
    assert tuned.metadata["ais_params"] == best.to_dict()
    assert tuned.metadata["tuning"]["ais"]["n_combinations"] == 4
    loaded = load_checkpoint(save_checkpoint(tuned, tmp_path / "tuned.pt"))
    assert loaded.ais_params == best.to_dict()


def test_amg_grid_reuses_masks_exactly(model):
    gt = disks()
    predictor = Predictor(model).set_image(image_of(gt))
    base = AmgParams(points_per_side=4, points_per_batch=16)
    pool = generate_masks(predictor, base.replace(pred_iou_thresh=0.0, stability_score_thresh=0.0))
    assert len(pool["iou_preds"]) > 0
    iou = pool["iou_preds"].numpy()
    for p in (0.0, float(np.median(iou))):
        for s in (0.0, 0.5):
            params = base.replace(pred_iou_thresh=p, stability_score_thresh=s)
            expected = masks_to_labels(generate_masks(predictor, params), gt.shape)
            reused = masks_to_labels(gs._filter_masks(pool, params), gt.shape)
            assert np.array_equal(expected, reused)
    result = gs.amg_grid_search(model, [image_of(gt)], [gt], {"pred_iou_thresh": [0.0, 0.5],
                                "stability_score_thresh": [0.0]}, base=base, progress=False)
    assert len(result.table) == 2 and result.best.points_per_side == 4


# ----------------------------------------------------------------------------- evaluate + CLI


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("eval")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i, shift in enumerate((0, 5)):
        gt = np.roll(disks(), shift, axis=1)
        tifffile.imwrite(root / "images" / f"img{i}.tif", image_of(gt, seed=i))
        tifffile.imwrite(root / "labels" / f"img{i}.tif", gt.astype(np.uint16))
    save_checkpoint(model, root / "model.pt")
    return root


def _cli(monkeypatch, *argv):
    modules = cli.PLUGIN_MODULES
    if "samzoo.evaluation.cli" not in modules:
        monkeypatch.setattr(cli, "PLUGIN_MODULES", (*modules, "samzoo.evaluation.cli"))
    return cli.main([str(a) for a in argv])


def test_score_and_evaluate_api(model):
    gt = disks()
    row = score(gt, gt)
    assert row == {"msa": 1.0, "sa50": 1.0, "dice": 1.0, "n_gt": 4, "n_pred": 4}
    result = evaluate(model, [image_of(gt)], [gt], progress=False)
    assert [r["image"] for r in result.table] == ["image_0", "mean"]
    from samzoo.segmentation.api import segment

    expected = mean_segmentation_accuracy(gt, segment(image_of(gt), model, progress=False))[0]
    assert result.rows[0]["msa"] == pytest.approx(expected)
    assert "msa" in format_table(result.table).splitlines()[0]


def test_cli_evaluate_table_and_csv(monkeypatch, capsys, dataset, tmp_path):
    out = tmp_path / "scores.csv"
    code = _cli(monkeypatch, "evaluate", dataset / "model.pt", dataset / "images", dataset / "labels",
                "--csv", out, "-q", "--param", "min_size=5")
    assert code == 0
    text = capsys.readouterr().out
    assert "img0.tif" in text and "img1.tif" in text and "mean" in text and "msa" in text
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == ["img0.tif", "img1.tif", "mean"]
    assert float(rows[2]["msa"]) == pytest.approx((float(rows[0]["msa"]) + float(rows[1]["msa"])) / 2)
    # a glob and a single file work as well
    assert _cli(monkeypatch, "evaluate", dataset / "model.pt", dataset / "images" / "img*.tif",
                dataset / "labels" / "img*.tif", "-q") == 0
    assert _cli(monkeypatch, "evaluate", dataset / "model.pt", dataset / "images" / "img1.tif",
                dataset / "labels" / "img1.tif", "-q") == 0


def test_cli_evaluate_interactive(monkeypatch, capsys, dataset, tmp_path):
    out = tmp_path / "inter.csv"
    code = _cli(monkeypatch, "evaluate", dataset / "model.pt", dataset / "images", dataset / "labels",
                "--mode", "interactive", "--start", "point", "--iterations", "2", "--csv", out, "-q")
    assert code == 0
    assert "iou_2" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 * 3 and {r["start"] for r in rows} == {"point"}
    assert [int(r["n_positive"]) for r in rows[:3]] == [1, 2, 3]


def test_cli_evaluate_errors(monkeypatch, capsys, dataset, tmp_path):
    model_path = dataset / "model.pt"
    extra = tmp_path / "images"
    extra.mkdir()
    for name in ("img0.tif", "img1.tif", "img2.tif"):
        tifffile.imwrite(extra / name, np.zeros(SHAPE, np.uint8))
    assert _cli(monkeypatch, "evaluate", model_path, extra, dataset / "labels", "-q") == 2
    err = capsys.readouterr().err
    assert "3 images but 2 label files" in err and "img2.tif" in err

    small = tmp_path / "small"
    small.mkdir()
    tifffile.imwrite(small / "img0.tif", np.zeros((40, 40), np.uint16))
    assert _cli(monkeypatch, "evaluate", model_path, dataset / "images" / "img0.tif", small / "img0.tif",
                "-q") == 2
    err = capsys.readouterr().err
    assert "shape mismatch" in err and "img0.tif" in err and "(40, 40)" in err

    assert _cli(monkeypatch, "evaluate", model_path, dataset / "images", dataset / "labels", "--param",
                "centre=0.3", "-q") == 2
    assert "unknown AIS parameter" in capsys.readouterr().err
    assert _cli(monkeypatch, "evaluate", model_path, dataset / "images", dataset / "labels", "--csv",
                tmp_path / "x.txt", "-q") == 2
    assert "--csv" in capsys.readouterr().err
    assert _cli(monkeypatch, "evaluate", model_path, tmp_path / "nope", dataset / "labels", "-q") == 2
    assert "not found" in capsys.readouterr().err
    assert _cli(monkeypatch, "evaluate", model_path, dataset / "images" / "*.png", dataset / "labels", "-q") == 2
    assert "matches no file" in capsys.readouterr().err


def test_resolve_pairs_names_lonely_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("x.tif", "y.tif"):
        tifffile.imwrite(tmp_path / "a" / name, np.zeros((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "b" / "x.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"images without a label file: .*y\.tif"):
        resolve_pairs(tmp_path / "a", tmp_path / "b")
    tifffile.imwrite(tmp_path / "b" / "y.tif", np.zeros((4, 4), np.uint8))
    pairs = resolve_pairs(tmp_path / "a", tmp_path / "b")
    assert [(i.name, l.name) for i, l in pairs] == [("x.tif", "x.tif"), ("y.tif", "y.tif")]


def test_cli_tune_writes_tuned_checkpoint(monkeypatch, capsys, dataset, tmp_path):
    out = tmp_path / "tuned.pt"
    table = tmp_path / "grid.csv"
    code = _cli(monkeypatch, "tune", dataset / "model.pt", dataset / "images", dataset / "labels", "-o", out,
                "--grid", "center_distance_threshold=0.4,0.6", "boundary_distance_threshold=0.5",
                "foreground_threshold=0.5", "min_size=0", "distance_smoothing=1.6", "--csv", table, "-q")
    assert code == 0, capsys.readouterr().err
    tuned = load_checkpoint(out)
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 2
    assert tuned.ais_params["center_distance_threshold"] == float(rows[0]["center_distance_threshold"])
    assert _cli(monkeypatch, "tune", dataset / "model.pt", dataset / "images", dataset / "labels", "-o", out,
                "--grid", "pred_iou_thresh=0.5", "-q", "--overwrite") == 2
    assert "--amg" in capsys.readouterr().err
