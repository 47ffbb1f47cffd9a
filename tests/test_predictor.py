"""Predictor: prompts -> masks like segment-anything's SamPredictor, validation, tiling, cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import samzoo
from samzoo import InputError, SamzooModel, preset
from samzoo.segmentation.embedding_cache import EmbeddingCache, image_digest, model_fingerprint
from samzoo.families.microsam.predictor import Predictor, resolve_tiling, zoom_window

from conftest import disk_image

pytestmark = pytest.mark.usefixtures("isolated_cache")


def count_encoder_calls(model: SamzooModel) -> list[int]:
    calls = [0]

    def hook(module, inputs, output):
        calls[0] += 1

    model.sam.image_encoder.register_forward_hook(hook)
    return calls


@pytest.fixture
def minmax_model(tiny_model):
    """The tiny model with minmax normalisation: uint8 images go to the encoder unchanged, as in
    segment-anything (so both predictors see identical inputs)."""
    model = SamzooModel(preset("test", normalization="minmax"))
    model.load_state_dict(tiny_model.state_dict())
    return model.eval()


def sam_reference(model: SamzooModel, image: np.ndarray):
    from segment_anything import SamPredictor

    reference = SamPredictor(model.sam)
    reference.set_image(np.repeat(image[..., None], 3, axis=-1))
    return reference


def test_matches_segment_anything_predictor(minmax_model):
    image = disk_image((96, 128))  # longest side == img_size: SAM's PIL resize is the identity
    ours = Predictor(minmax_model).set_image(image)
    ref = sam_reference(minmax_model, image)
    torch.testing.assert_close(ours.get_image_embedding(), ref.get_image_embedding(), atol=1e-5, rtol=0)

    point = np.array([[40.0, 30.0]])
    masks, scores, low = ours.predict(points=point, point_labels=[1])
    ref_masks, ref_scores, ref_low = ref.predict(point_coords=point, point_labels=np.array([1]))
    assert masks.shape == (3, 96, 128) and masks.dtype == bool  # one point: multimask by default
    np.testing.assert_array_equal(masks, ref_masks)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(low, ref_low, atol=1e-4)

    box = np.array([20.0, 10.0, 60.0, 50.0])
    masks, scores, _ = ours.predict(points=[[40, 30], [90, 60]], point_labels=[1, 0], boxes=box)
    ref_masks, ref_scores, _ = ref.predict(point_coords=np.array([[40, 30], [90, 60]]), point_labels=np.array([1, 0]),
                                           box=box, multimask_output=False)
    np.testing.assert_array_equal(masks, ref_masks)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)

    # several boxes: one mask per box, batched like SamPredictor.predict_torch
    boxes = np.array([[20, 10, 60, 50], [70, 40, 110, 80], [0, 0, 128, 96]], dtype=float)
    masks, scores, _ = ours.predict(boxes=boxes)
    assert masks.shape == (3, 96, 128) and scores.shape == (3,)
    ref_boxes = ref.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), (96, 128))
    ref_masks, ref_scores, _ = ref.predict_torch(None, None, boxes=ref_boxes, multimask_output=False)
    np.testing.assert_array_equal(masks, ref_masks[:, 0].numpy())
    np.testing.assert_allclose(scores, ref_scores[:, 0].numpy(), atol=1e-5)

    # a low-res mask prompt from a previous call
    masks, _, low = ours.predict(points=point, multimask=False)
    again, _, _ = ours.predict(points=point, mask_input=low, multimask=False)
    ref_again, _, _ = ref.predict(point_coords=point, point_labels=np.array([1]), mask_input=low,
                                  multimask_output=False)
    np.testing.assert_array_equal(again, ref_again)


def test_resized_coordinates_match_segment_anything(minmax_model):
    # Non-square, larger than img_size: coordinates and masks go through the resize both ways
    # (one tile as large as the image: encoded whole, downscaled, as SAM's predictor does).
    image = disk_image((120, 180), centers=((50, 60), (90, 140)), radius=15)
    ours = Predictor(minmax_model).set_image(image, tile_shape=(120, 180))
    assert not ours.is_tiled
    from segment_anything.utils.transforms import ResizeLongestSide

    transform = ResizeLongestSide(128)
    points = np.array([[60.0, 50.0], [140.0, 90.0]])
    emb = ours.window_embedding()
    np.testing.assert_allclose(ours.transform_coords(points, emb), transform.apply_coords(points, (120, 180)))
    masks, _, low = ours.predict(points=points[:1], multimask=False)
    expected = minmax_model.sam.postprocess_masks(torch.as_tensor(low[None]), emb.input_shape, (120, 180)) > 0
    np.testing.assert_array_equal(masks, expected[0].numpy())


def test_full_resolution_mask_prompt(tiny_model, disks):
    image, centers, radius = disks
    predictor = Predictor(tiny_model).set_image(image)
    binary = np.zeros(image.shape, dtype=bool)
    binary[20:40, 30:50] = True
    masks, scores, low = predictor.predict(mask_input=binary)
    assert masks.shape == (1, *image.shape) and low.shape == (1, 32, 32)
    logits = predictor.mask_to_logits(binary, predictor.window_embedding())
    assert logits.shape == (1, 1, 32, 32)
    assert logits[0, 0, 7, 10] > 5 and logits[0, 0, 0, 0] < -5  # inside / outside the square
    assert float(logits[0, 0, 31, 31]) == 0.0  # padding (below the 96-row image) is zero logits


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": [[500, 10]]}, "outside"),
        ({"points": [[-1, 10]]}, "outside"),
        ({"points": [[10, float("nan")]]}, "NaN"),
        ({"points": [1, 2, 3]}, "shape"),
        ({"points": [[10, 10], [20, 20]], "point_labels": [1]}, "2 points but 1 point labels"),
        ({"points": [[10, 10]], "point_labels": [2]}, "point labels must be"),
        ({"boxes": [50, 10, 20, 40]}, "x1 < x0"),
        ({"boxes": [10, 40, 20, 10]}, "y1 < y0"),
        ({"boxes": [10, 10, 20, 400]}, "outside"),
        ({"boxes": [[10, 10, 20]]}, "shape"),
        ({"boxes": [[1, 2, 3, 4], [1, 2, 3, 4]], "points": [[2, 3]]}, "2 boxes but 1 point prompts"),
        ({"mask_input": np.zeros((7, 7))}, "mask_input"),
        ({}, "no prompt"),
        ({"point_labels": [1]}, "without points"),
    ],
)
def test_prompt_validation(tiny_model, disks, kwargs, message):
    predictor = Predictor(tiny_model).set_image(disks[0])
    with pytest.raises(InputError, match=message):
        predictor.predict(**kwargs)


def test_image_validation(tiny_model):
    predictor = Predictor(tiny_model)
    with pytest.raises(InputError, match="set_image"):
        predictor.predict(points=[[1, 1]])
    with pytest.raises(InputError, match="volume"):
        predictor.set_image(np.zeros((6, 64, 64), dtype=np.uint8))
    with pytest.raises(InputError, match="NaN"):
        predictor.set_image(np.full((64, 64), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="empty"):
        predictor.set_image(np.zeros((0, 64)))


@pytest.mark.parametrize("layout", ["gray_u16", "rgb", "two_channel", "float"])
def test_input_layouts(tiny_model, layout):
    base = disk_image((64, 80), centers=((30, 40),), radius=10)
    image = {
        "gray_u16": base.astype(np.uint16) * 16,
        "rgb": np.stack([base, base // 2, base], axis=-1),
        "two_channel": np.stack([base, base], axis=0),
        "float": base.astype(np.float32) / 255.0,
    }[layout]
    masks, scores, _ = Predictor(tiny_model).set_image(image).predict(points=[[40, 30]])
    assert masks.shape == (3, 64, 80)


def test_resolve_tiling():
    assert resolve_tiling((128, 128), 128) == (None, None)  # not above img_size
    assert resolve_tiling((100, 129), 128) == ((96, 96), (16, 16))  # window = img_size exactly
    assert resolve_tiling((4096, 4096), 1024) == ((768, 768), (128, 128))
    assert resolve_tiling((300, 300), 128, tile_shape=64) == ((64, 64), (16, 16))
    assert resolve_tiling((300, 300), 128, tile_shape=(64, 80), halo=8) == ((64, 80), (8, 8))
    assert resolve_tiling((300, 300), 128, tile_shape=300) == (None, None)  # a single tile
    with pytest.raises(InputError, match="more than half"):
        resolve_tiling((300, 300), 128, tile_shape=32, halo=20)
    with pytest.raises(InputError, match="tile_shape"):
        resolve_tiling((300, 300), 128, tile_shape=(1, 2, 3))


def test_tiled_prompts_use_one_tile_and_match_a_crop(minmax_model):
    image = disk_image((300, 400), centers=((150, 200), (40, 40)), radius=12)
    calls = count_encoder_calls(minmax_model)
    predictor = Predictor(minmax_model).set_image(image)
    assert predictor.is_tiled and calls[0] == 0  # tiles are encoded lazily
    masks, scores, _ = predictor.predict(boxes=[185, 135, 215, 165])
    assert calls[0] == 1 and len(predictor._memory) == 1
    window, padding = predictor._window_for((185, 135, 215, 165))
    assert padding == ((0, 0), (0, 0))  # an inner tile: its window lies inside the image
    inside = np.zeros((300, 400), dtype=bool)
    inside[window] = True
    assert not masks[0][~inside].any()  # pasted into the full frame at the tile's place
    # Same as running on the crop (uint8 + minmax: the crop is normalised identically).
    crop = Predictor(minmax_model).set_image(image[window])
    crop_masks, crop_scores, _ = crop.predict(boxes=[185 - window[1].start, 135 - window[0].start,
                                                     215 - window[1].start, 165 - window[0].start])
    np.testing.assert_array_equal(masks[0][window], crop_masks[0])
    np.testing.assert_allclose(scores, crop_scores, atol=1e-6)
    # A second prompt in the same tile reuses the embedding; another tile replaces it in memory.
    before = predictor.encoder_calls
    predictor.predict(points=[[200, 150]])
    assert predictor.encoder_calls == before == 1
    predictor.predict(points=[[40, 40]])
    assert predictor.encoder_calls == 2 and len(predictor._memory) == 1
    # Boxes in different tiles are decoded on their own tiles, each pasted into the full frame.
    masks, _, _ = predictor.predict(boxes=[[185, 135, 215, 165], [25, 25, 55, 55]])
    assert masks.shape == (2, 300, 400)
    # A prompt in a border tile: its window is padded symmetric past the image (bioimageio.core's
    # block layout), the same as prompting that padded crop.
    box = [25, 25, 55, 55]
    window, padding = predictor._window_for(tuple(box))
    assert padding == ((16, 0), (16, 0)) and window == (slice(0, 112), slice(0, 112))
    padded = np.pad(image[window], padding, mode="symmetric")
    crop = Predictor(minmax_model).set_image(padded)
    crop_masks, crop_scores, _ = crop.predict(boxes=[25 + 16, 25 + 16, 55 + 16, 55 + 16])
    masks, scores, _ = predictor.predict(boxes=box)
    np.testing.assert_array_equal(masks[0][window], crop_masks[0][16:, 16:])
    np.testing.assert_allclose(scores, crop_scores, atol=1e-6)


def test_prompt_spanning_more_than_a_tile_is_decoded_on_a_downscaled_window(tiny_model):
    image = disk_image((300, 400))
    predictor = Predictor(tiny_model).set_image(image)
    assert predictor.is_tiled
    box = [0, 0, 390, 290]  # far larger than one 128 px tile
    masks, scores, _ = predictor.predict(boxes=box)
    window, padding = predictor._window_for(tuple(box))
    assert window == (slice(0, 300), slice(0, 400))  # the box plus margin, clipped to the image
    assert padding == ((0, 0), (0, 0))
    # the same as prompting the whole image encoded at once (it is downscaled to the model's input)
    whole = Predictor(tiny_model).set_image(image, tile_shape=(300, 400))
    assert not whole.is_tiled
    whole_masks, whole_scores, _ = whole.predict(boxes=box)
    np.testing.assert_array_equal(masks, whole_masks)
    np.testing.assert_allclose(scores, whole_scores, atol=1e-6)
    # a box between grid tiles gets its own tile-sized window
    masks, _, _ = predictor.predict(boxes=[70, 70, 170, 170])
    assert masks.shape == (1, 300, 400)


def test_large_prompt_window_holds_the_prompt_with_a_margin():
    from samzoo.families.microsam.predictor import LARGE_PROMPT_MARGIN, large_prompt_window

    rows, cols = large_prompt_window((100, 150, 400, 350), (1000, 1200), (128, 128))
    assert cols.start <= 100 and cols.stop >= 400 and rows.start <= 150 and rows.stop >= 350
    side = 300 * (1 + 2 * LARGE_PROMPT_MARGIN)
    assert rows.stop - rows.start == cols.stop - cols.start == int(np.ceil(side))
    # at the image border the window is shifted inside, never cut below the prompt
    rows, cols = large_prompt_window((0, 0, 300, 200), (320, 1200), (128, 128))
    assert rows == slice(0, 320) and cols.start == 0 and cols.stop >= 300



def test_zoom_window_shows_the_object_at_the_trained_diameter():
    from samzoo.families.microsam.predictor import LARGE_PROMPT_MARGIN, MAX_PROMPT_ZOOM, zoom_window

    # a 10 px object for a model trained on 20 px objects with a 128 px input: a 64 px window,
    # which the encoder enlarges 2x, centred on the prompt
    rows, cols = zoom_window((100, 200, 110, 206), (400, 500), 128, 20.0)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (64, 64)
    assert (rows.start + rows.stop) / 2 == 203 and (cols.start + cols.stop) / 2 == 105
    # a 60 px object: a 384 px window, shrunk 3x; at the border it is moved inside the image
    rows, cols = zoom_window((0, 0, 60, 40), (400, 500), 128, 20.0)
    assert rows == slice(0, 384) and cols == slice(0, 384)
    # longer than the image on one axis: that axis is the whole image
    rows, cols = zoom_window((0, 0, 60, 40), (300, 500), 128, 20.0)
    assert rows == slice(0, 300) and cols.stop - cols.start == 384
    # a 2 px speck is enlarged at most MAX_PROMPT_ZOOM times
    rows, cols = zoom_window((50, 50, 52, 52), (400, 500), 128, 20.0)
    assert rows.stop - rows.start == int(np.ceil(128 / MAX_PROMPT_ZOOM))
    # never smaller than the prompt plus its margin (a model trained on huge objects)
    rows, cols = zoom_window((100, 100, 200, 150), (400, 500), 128, 1000.0)
    assert cols.stop - cols.start == int(np.ceil(100 * (1 + 2 * LARGE_PROMPT_MARGIN)))


def test_prompt_zoom_decodes_a_small_box_on_its_enlarged_window(tiny_model, tmp_path):
    # noise-free: the crop's normalisation statistics equal the whole image's (two grey levels)
    image = disk_image((96, 128), centers=((30, 40), (60, 90)), radius=6, noise=0.0)
    model = SamzooModel(tiny_model.config, metadata={"object_diameter": {"median": 24.0}})
    model.load_state_dict(tiny_model.state_dict())
    calls = count_encoder_calls(model)
    predictor = Predictor(model).set_image(image)  # the model states its object size: zoom is on
    assert predictor.zoom_prompts and predictor.prompt_windows_vary and not predictor.is_tiled
    box = [34, 24, 47, 37]
    masks, scores, _ = predictor.predict(boxes=box)
    assert calls[0] == 2  # the whole image at set_image, then the box's own window
    window = zoom_window(tuple(box), (96, 128), model.config.img_size, 24.0)
    assert window[0].stop - window[0].start < 96  # an enlarged crop, not the whole image
    # the same as prompting that crop as an image of its own (the encoder enlarges it)
    crop = Predictor(model, zoom_prompts=False).set_image(image[window])
    shifted = [box[0] - window[1].start, box[1] - window[0].start, box[2] - window[1].start, box[3] - window[0].start]
    crop_masks, crop_scores, _ = crop.predict(boxes=shifted)
    np.testing.assert_array_equal(masks[0][window], crop_masks[0])
    assert not masks[0].sum() - masks[0][window].sum()  # nothing outside the window
    np.testing.assert_allclose(scores, crop_scores, atol=1e-6)
    # a point prompt has no size: it is decoded on the whole image's embedding
    groups = predictor._group_by_window(np.array([[[90.0, 60.0]]]), np.array([[1]]), None, None, 1)
    assert groups == [(predictor.full_window, ((0, 0), (0, 0)), [0], True)]
    # low-resolution logits belong to one window: refused, a binary mask prompt works
    with pytest.raises(InputError, match="zoom_prompts"):
        predictor.predict(boxes=box, mask_input=np.zeros((1, predictor.low_res_size, predictor.low_res_size)))
    predictor.predict(boxes=box, mask_input=masks[0])
    # a zoom window serves one prompt: it stays out of the disk cache (one entry per box otherwise)
    cached = Predictor(model).set_image(image, embedding_cache=tmp_path / "emb")
    cached.predict(boxes=box)
    assert sorted(p.name for p in (tmp_path / "emb").rglob("*") if p.is_file()) == [
        "full.json", "full.npy", "manifest.json"]
    # off on request, and off by default for a model that does not state its size
    assert not Predictor(model, zoom_prompts=False).zoom_prompts
    assert not Predictor(tiny_model).zoom_prompts
    with pytest.raises(InputError, match="zoom_prompts"):
        Predictor(model, zoom_prompts="yes")
    # a model that states a prompt diameter of its own is zoomed to that size, not to its median
    model.metadata["object_diameter"]["prompt"] = 36.0
    zoomed = Predictor(model).set_image(image)
    groups = zoomed._group_by_window(None, None, np.asarray([box], dtype=float), None, 1)
    assert [g[0] for g in groups] == [zoom_window(tuple(box), (96, 128), model.config.img_size, 36.0)]
    assert groups[0][0] != window


def test_box_masks_are_clipped_to_their_boxes_for_models_that_state_their_size(tiny_model):
    from samzoo.families.microsam.predictor import clip_masks_to_boxes

    # two touching disks: an unclipped mask of the left one may spill into the right one
    image = disk_image((96, 128), centers=((48, 50), (48, 72)), radius=12, noise=0.0)
    model = SamzooModel(tiny_model.config, metadata={"object_diameter": {"median": 24.0}})
    model.load_state_dict(tiny_model.state_dict())
    boxes = np.array([[38.0, 36.0, 61.0, 59.0], [0.0, 0.0, 20.0, 10.0]])
    clipped = Predictor(model, zoom_prompts=False).set_image(image)
    free = Predictor(model, zoom_prompts=False, clip_to_boxes=False).set_image(image)
    assert clipped.clip_to_boxes and not free.clip_to_boxes and not Predictor(tiny_model).clip_to_boxes
    masks, scores, logits = clipped.predict(boxes=boxes)
    free_masks, free_scores, free_logits = free.predict(boxes=boxes)
    for b, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        inside = np.zeros((96, 128), dtype=bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True  # the box's last row and column count as inside
        assert not masks[b][~inside].any()
        np.testing.assert_array_equal(masks[b][inside], free_masks[b][inside])
    np.testing.assert_array_equal(logits, free_logits)  # the decoder's output itself is not touched
    np.testing.assert_array_equal(scores, free_scores)
    # random weights leak somewhere: the test has teeth only if clipping removed pixels
    assert free_masks.sum() > masks.sum()
    # points alone are not clipped (no box states the object's extent)
    point_masks, _, _ = clipped.predict(points=[[50.0, 48.0]])
    np.testing.assert_array_equal(point_masks, free.predict(points=[[50.0, 48.0]])[0])
    # in place, per prompt, several candidates per box
    stack = np.ones((6, 10, 10), dtype=bool)
    clip_masks_to_boxes(stack, np.array([[2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 9.0, 9.0]]), 3)
    assert stack[:3].sum() == 3 * 3 * 3 and stack[:3, 3:6, 2:5].all() and stack[3:].all()
    with pytest.raises(InputError, match="clip_to_boxes"):
        Predictor(model, clip_to_boxes="yes")


# ------------------------------------------------------------------------------ embedding cache


def test_embedding_cache_skips_encoder(tiny_checkpoint, disks, tmp_path):
    image = disks[0]
    model = samzoo.load_checkpoint(tiny_checkpoint)
    calls = count_encoder_calls(model)
    first = Predictor(model).set_image(image, embedding_cache=tmp_path / "emb")
    masks1, scores1, _ = first.predict(points=[[40, 30]])
    assert calls[0] == 1

    # A new process would load the model anew: same weights -> same fingerprint -> cache hit.
    model2 = samzoo.load_checkpoint(tiny_checkpoint)
    calls2 = count_encoder_calls(model2)
    second = Predictor(model2).set_image(image, embedding_cache=tmp_path / "emb")
    masks2, scores2, _ = second.predict(points=[[40, 30]])
    assert calls2[0] == 0
    np.testing.assert_array_equal(masks1, masks2)
    np.testing.assert_allclose(scores1, scores2)

    files = sorted(p.name for p in (tmp_path / "emb").rglob("*") if p.is_file())
    assert files == ["full.json", "full.npy", "manifest.json"]
    manifest = json.loads(next((tmp_path / "emb").rglob("manifest.json")).read_text())
    assert manifest["image_sha256"] == image_digest(image)
    assert manifest["model_sha256"] == model_fingerprint(model2)
    assert manifest["normalization"] == "percentile" and manifest["tiling"] == "none"

    # Another image, other weights or another tiling -> miss.
    Predictor(model2).set_image(image[:, ::-1], embedding_cache=tmp_path / "emb")
    assert calls2[0] == 1
    with torch.no_grad():
        model2.sam.image_encoder.neck[0].weight.add_(1.0)  # in-place change: fingerprint updates
    Predictor(model2).set_image(image, embedding_cache=tmp_path / "emb")
    assert calls2[0] == 2


def test_embedding_cache_recovers_from_corrupt_files(fresh_model, disks, tmp_path):
    image = disks[0]
    cache = EmbeddingCache(tmp_path)
    Predictor(fresh_model).set_image(image, embedding_cache=cache)
    npy = next(tmp_path.rglob("full.npy"))
    npy.write_bytes(b"garbage")
    calls = count_encoder_calls(fresh_model)
    Predictor(fresh_model).set_image(image, embedding_cache=cache)
    assert calls[0] == 1 and cache.misses >= 1
    assert np.load(npy, allow_pickle=False).shape == (32, 8, 8)  # rewritten


def test_embedding_cache_default_location_and_tiles(fresh_model, isolated_cache):
    image = disk_image((200, 250))
    calls = count_encoder_calls(fresh_model)
    tiling = dict(tile_shape=(100, 125), halo=16)
    predictor = Predictor(fresh_model).set_image(image, embedding_cache=True, **tiling)
    predictor.predict(points=[[200, 150]])
    out = predictor.ais_outputs()
    assert out.shape == (3, 200, 250)
    n_tiles = len(predictor.grid)
    assert calls[0] == n_tiles  # the prompt's tile was encoded once, then loaded from disk
    entries = list((isolated_cache / "embeddings").rglob("y*_x*.npy"))
    assert len(entries) == n_tiles
    again = Predictor(fresh_model).set_image(image, embedding_cache=True, **tiling).ais_outputs()
    assert calls[0] == n_tiles
    np.testing.assert_allclose(again, out, atol=1e-6)


def test_model_fingerprint_is_cached(tiny_model):
    first = model_fingerprint(tiny_model)
    assert model_fingerprint(tiny_model) == first
    assert getattr(tiny_model, "_samzoo_fingerprint")[1] == first


def test_fast_attention_chunked_matches_reference():
    """Global attention computed in query chunks equals segment-anything's attention."""
    from segment_anything.modeling.image_encoder import Attention

    from samzoo.families.microsam.fast_attention import FastAttention

    torch.manual_seed(0)
    ref = Attention(dim=48, num_heads=3, use_rel_pos=True, input_size=(12, 10))
    torch.nn.init.normal_(ref.rel_pos_h, std=0.5)
    torch.nn.init.normal_(ref.rel_pos_w, std=0.5)
    fast = Attention(dim=48, num_heads=3, use_rel_pos=True, input_size=(12, 10))
    fast.load_state_dict(ref.state_dict())
    fast.__class__ = FastAttention
    fast.query_chunk = 35  # 120 tokens -> 4 chunks, the last one partial
    x = torch.randn(2, 12, 10, 48)
    torch.testing.assert_close(fast(x), ref(x), atol=1e-5, rtol=1e-5)

