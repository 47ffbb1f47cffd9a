"""CellSAM equals the reference's computations: hand-derived intermediates and the whole pipeline
against a literal, per-box restatement of the reference (tests/cellsam_reference.py) on random weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import samzoo  # noqa: F401
from samzoo.families.cellsam import TINY, CellSAMParams, build_cellsam
from samzoo.families.cellsam.anchor_detr import AnchorDetrTransformer, inverse_sigmoid, sine_embedding_1d
from samzoo.families.cellsam.detections import rank_detections, score_threshold, select_boxes, two_means_centers
from samzoo.families.cellsam.masks import decode_boxes, fill_holes_and_remove_small, merge_masks
from samzoo.families.cellsam.preprocess import detector_input, embedding_input, format_channels
from samzoo.families.cellsam.rcda import RowColumnAttention
from samzoo.families.cellsam.segment import segment_block

from cellsam_reference import (reference_detector_input, reference_embedding_input, reference_filter,
                               reference_postprocess, reference_predict)


def test_row_column_attention_equals_hand_derivation():
    """out[q] = sum_{h,w} softmax_w(q_row . k_row[w]) * softmax_h(q_col . k_col[h]) * v[h, w], per head,
    with k_row[w] = mean_h of projected keys and k_col[h] = mean_w; computed here in float64 loops."""
    torch.manual_seed(0)
    e, heads, b, length, h, w = 8, 2, 2, 3, 4, 5
    attn = RowColumnAttention(e, heads).double()
    torch.nn.init.normal_(attn.in_proj_bias)
    qr, qc = torch.randn(b, length, e, dtype=torch.float64), torch.randn(b, length, e, dtype=torch.float64)
    kr, kc, v = (torch.randn(b, h, w, e, dtype=torch.float64) for _ in range(3))
    out = attn(qr, qc, kr, kc, v).detach().numpy()

    W = attn.in_proj_weight.detach().numpy()
    B = attn.in_proj_bias.detach().numpy()
    proj = [lambda x, i=i: x @ W[i * e:(i + 1) * e].T + B[i * e:(i + 1) * e] for i in range(5)]
    hd = e // heads
    expected = np.zeros((b, length, e))
    for bi in range(b):
        Qr, Qc = proj[0](qr[bi].numpy()), proj[1](qc[bi].numpy())
        Kr = proj[2](kr[bi].numpy()).mean(0)          # (w, e)
        Kc = proj[3](kc[bi].numpy()).mean(1)          # (h, e)
        V = proj[4](v[bi].numpy())                    # (h, w, e)
        for q in range(length):
            for n in range(heads):
                s = slice(n * hd, (n + 1) * hd)
                lr = np.array([Qr[q, s] @ Kr[j, s] for j in range(w)]) / math.sqrt(hd)
                lc = np.array([Qc[q, s] @ Kc[i, s] for i in range(h)]) / math.sqrt(hd)
                ar, ac = np.exp(lr - lr.max()), np.exp(lc - lc.max())
                ar, ac = ar / ar.sum(), ac / ac.sum()
                expected[bi, q, s] = sum(ac[i] * ar[j] * V[i, j, s] for i in range(h) for j in range(w))
    expected = expected @ attn.out_proj.weight.detach().numpy().T + attn.out_proj.bias.detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    # the contraction order (shorter side first) does not change the result
    out_t = attn(qr, qc, kr.transpose(1, 2), kc.transpose(1, 2), v.transpose(1, 2))
    assert out_t.shape == (b, length, e)


def test_sine_embedding_values():
    # feature 2i uses sin(2*pi*p / T^(2i/d)), feature 2i+1 cos(...) with the same frequency
    emb = sine_embedding_1d(torch.tensor([0.25]), 8)[0].numpy()
    freqs = [10000 ** (2 * (k // 2) / 8) for k in range(8)]
    expected = [math.sin(2 * math.pi * 0.25 / freqs[k]) if k % 2 == 0 else math.cos(2 * math.pi * 0.25 / freqs[k])
                for k in range(8)]
    np.testing.assert_allclose(emb, expected, atol=1e-6)
    assert emb[0] == pytest.approx(1.0) and emb[1] == pytest.approx(0.0, abs=1e-6)


def test_anchor_points_and_box_decoding():
    """With a zero box head the predicted centres are the learned anchors exactly (offset added in
    logit space) and w = h = sigmoid(-2) from the initial bias; class logits = the 1 % prior."""
    torch.manual_seed(0)
    t = AnchorDetrTransformer(dim=32, heads=4, enc_layers=1, dec_layers=2, ffn=64, num_queries=10).eval()
    anchors = t.position.weight.detach().clone()
    assert anchors.min() >= 0 and anchors.max() <= 1
    logits, boxes = t(torch.randn(1, 32, 5, 6))
    assert logits.shape == (2, 1, 10, 2) and boxes.shape == (2, 1, 10, 4)
    np.testing.assert_allclose(boxes[-1, 0, :, :2].detach().numpy(), anchors.numpy(), atol=1e-6)
    np.testing.assert_allclose(boxes[-1, 0, :, 2:].detach().numpy(), 1 / (1 + math.e ** 2), atol=1e-6)
    prior = -math.log(99)
    assert torch.allclose(t.class_embed[0].bias, torch.full((2,), prior))
    assert t.class_embed[0] is t.class_embed[1] and t.bbox_embed[0] is t.bbox_embed[1]
    # an offset of +1 in x-logit space moves the centre to sigmoid(logit(a) + 1)
    with torch.no_grad():
        t.bbox_embed[0].layers[-1].bias[0] = 1.0
    _, boxes = t(torch.randn(1, 32, 5, 6))
    np.testing.assert_allclose(boxes[-1, 0, :, 0].detach().numpy(),
                               torch.sigmoid(inverse_sigmoid(anchors[:, 0]) + 1).numpy(), atol=1e-5)


def test_rank_detections_by_hand():
    logits = torch.logit(torch.tensor([[0.2, 0.9], [0.7, 0.1], [0.3, 0.8]]))
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.1, 0.1], [0.1, 0.1, 0.2, 0.2]])
    scores, xyxy = rank_detections(logits, boxes, 100)
    # top 3 of the 6 (query, class) scores: 0.9 (q0), 0.8 (q2), 0.7 (q1)
    np.testing.assert_allclose(scores.numpy(), [0.9, 0.8, 0.7], atol=1e-6)
    np.testing.assert_allclose(xyxy.numpy(), [[40, 30, 60, 70], [0, 0, 20, 20], [20, 70, 30, 80]], atol=1e-4)
    # a query can appear twice (once per class), as in DETR's PostProcess
    logits = torch.logit(torch.tensor([[0.9, 0.8], [0.1, 0.2]]))
    _, xyxy = rank_detections(logits, boxes[:2], 10)
    assert torch.equal(xyxy[0], xyxy[1])


def test_two_cluster_threshold_by_hand_and_against_sklearn():
    assert two_means_centers(np.array([0.1, 0.12, 0.9, 0.95])) == pytest.approx((0.11, 0.925))
    for exact in (True, False):
        got = score_threshold(np.array([0.1, 0.12, 0.9, 0.95]), 0.4, exact=exact)
        assert got == pytest.approx(0.66 * 0.4 + 0.33 * 0.5175, rel=1e-6)
    assert score_threshold(np.array([0.3]), 0.4) == 0.4
    assert score_threshold(np.array([0.1, 0.9]), 0.4, cluster_blend=False) == 0.4
    KMeans = pytest.importorskip("sklearn.cluster").KMeans
    rng = np.random.default_rng(0)
    for trial in range(20):
        # bimodal scores as a detector gives them: many near 0, some cells high
        n = int(rng.integers(20, 3500))
        lows = rng.beta(0.5, 30, n) if trial % 2 else rng.normal(0.03, 0.02, n).clip(0, 1)
        x = np.concatenate([lows, rng.normal(0.8, 0.08, int(rng.integers(1, 300))).clip(0, 1)]).astype(np.float32)
        ref = np.sort(KMeans(n_clusters=2, random_state=42).fit(x.reshape(-1, 1)).cluster_centers_.ravel())
        np.testing.assert_allclose(two_means_centers(x), ref, rtol=1e-4, atol=1e-6)


def test_select_boxes_keeps_scores_above_blended_threshold():
    scores = torch.tensor([0.95, 0.9, 0.5, 0.12, 0.1])
    boxes = torch.arange(20.0).reshape(5, 4)
    thr = score_threshold(scores.numpy(), 0.4)
    kept_scores, kept = select_boxes(scores, boxes, 0.4)
    assert torch.equal(kept, boxes[scores.double() > thr])
    assert kept_scores.tolist() == pytest.approx([0.95, 0.9, 0.5])


def test_mask_merge_fill_holes_and_min_size_by_hand():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, 1:6, 1:6] = True          # object 1
    masks[1, 4:9, 4:9] = True          # object 2 overlaps 1: later index wins the overlap
    masks[1, 6, 6] = False             # a one-pixel hole inside object 2
    masks[2, 0, 9] = True              # object 3: one pixel, below min size
    labels = merge_masks(masks)
    assert labels[4, 4] == 2 and labels[2, 2] == 1 and labels[6, 6] == 0 and labels[0, 9] == 3
    out = fill_holes_and_remove_small(labels, min_size=2)
    assert out[6, 6] == 2 and out[0, 9] == 0 and out[2, 2] == 1
    assert set(np.unique(out)) == {0, 1, 2}


def test_channel_convention():
    gray = np.ones((6, 7))
    assert format_channels(gray)[..., 2].sum() == 42 and format_channels(gray)[..., :2].sum() == 0
    two = np.stack([np.full((6, 7), 1.0), np.full((6, 7), 2.0)])  # (C, H, W)
    out = format_channels(two)
    assert out.shape == (6, 7, 3) and out[0, 0].tolist() == [0, 1, 2]
    from samzoo.errors import InputError

    with pytest.raises(InputError, match="at most 3 channels"):
        format_channels(np.zeros((5, 10, 10)).transpose(1, 2, 0)[..., :4].repeat(2, -1))


@pytest.mark.parametrize("adv", [True, False])
def test_model_input_transforms_equal_reference(adv):
    model = build_cellsam(TINY, with_model_cp=adv, seed=0)
    rng = np.random.default_rng(1)
    img = rng.random((3, 90, 150)).astype(np.float32)
    img[0] = 0  # blank channel, as in the channel convention
    if adv:
        img[1] = 0  # empty nuclear channel: CellFinder gets the whole-cell one copied in
    t = torch.from_numpy(img)
    ref_det = reference_detector_input(t.clone(), TINY.img_size, adv, model.networks.model)
    ours_det = detector_input(t[None], TINY.img_size, adv)[0]
    torch.testing.assert_close(ours_det, ref_det, rtol=1e-5, atol=1e-5)
    ref_emb = reference_embedding_input(t.clone(), TINY.img_size, adv, model.networks.model)
    ours_emb = embedding_input(t[None], TINY.img_size, adv)[0]
    torch.testing.assert_close(ours_emb, ref_emb, rtol=1e-5, atol=1e-4)


@torch.no_grad()
def _center_iou_predictions(model, image):
    """Shift the IoU head so about half of this image's boxes pass an IoU threshold of 0.5."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    _, boxes = model.detect(x)
    sam = model.sam
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes[:, None], masks=None)
    _, iou = sam.mask_decoder(image_embeddings=model.embed(x), image_pe=sam.prompt_encoder.get_dense_pe(),
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    values = iou[:, 0].sort().values
    k = len(values) // 2  # threshold half-way between two neighbouring predictions: no ties with 0.5
    sam.mask_decoder.iou_prediction_head.layers[-1].bias += 0.5 - (values[k - 1] + values[k]) / 2


def _lively_model(adv: bool, seed: int):
    """A random TINY CellSAM whose detector scores spread around 0.5 (random weights with the 1 % prior
    would keep nothing)."""
    model = build_cellsam(TINY, with_model_cp=adv, seed=seed)
    head = model.networks.cellfinder.decode_head.transformer
    sam = model.sam
    with torch.no_grad():
        head.class_embed[0].bias.zero_()
        head.class_embed[0].weight.normal_(0, 0.5)
        head.bbox_embed[0].layers[-1].weight.normal_(0, 0.05)
        # queries that differ from each other: a random pattern (samzoo's init leaves it at zero) and
        # position MLPs at 10x the default init (samzoo's init is already 6x)
        head.pattern.weight.copy_(torch.randn(head.pattern.weight.shape, generator=torch.Generator().manual_seed(seed)))
        for mlp in (head.adapt_pos2d, head.adapt_pos1d):
            mlp[2].weight.mul_(10 / 6)
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:  # mask logits with some contrast
            mlp.layers[-1].weight.mul_(30)
        sam.mask_decoder.iou_prediction_head.layers[-1].weight.mul_(20)
    return model


@pytest.mark.parametrize("adv,seed", [(True, 0), (True, 1), (False, 2)])
def test_pipeline_equals_reference_on_random_weights(adv, seed):
    """Boxes, scores and the final labels of samzoo's batched pipeline equal the per-box reference
    restatement on several images."""
    pytest.importorskip("sklearn")
    pytest.importorskip("kornia")
    model = _lively_model(adv, seed)
    rng = np.random.default_rng(seed)
    params = CellSAMParams(bbox_threshold=0.4, iou_threshold=0.5, mask_threshold=0.5, min_size=5,
                           normalization="none", tiling=False)
    compared = 0
    for shape in [(96, 96), (80, 130), (140, 100)]:
        image = rng.random(shape + (3,)).astype(np.float32)
        image[..., 0] = 0
        _center_iou_predictions(model, image)
        ref_labels, ref_scores, ref_boxes = reference_predict(model, image, params.bbox_threshold,
                                                              params.iou_threshold, params.mask_threshold,
                                                              params.min_size)
        ours = segment_block(model, image, params)
        assert ref_labels is not None and ref_labels.max() >= 1
        # the per-box binary masks before merging, too
        x = torch.from_numpy(image).permute(2, 0, 1)[None]
        boxes = select_boxes(*model.detect(x), 0.4)[1]
        masks, _ = decode_boxes(model.sam, model.embed(x), boxes, shape, iou_threshold=0.5, mask_threshold=0.5)
        ref_masks = reference_predict.last_masks
        assert masks.shape == ref_masks.shape and masks.shape[0] > 1
        assert np.mean(masks != ref_masks.astype(bool)) < 1e-3
        n_boxes = len(select_boxes(*model.detect(torch.from_numpy(image).permute(2, 0, 1)[None]), 0.4)[0])
        assert 0 < len(ours.scores) < n_boxes  # the IoU filter dropped some masks and kept others
        np.testing.assert_allclose(ours.scores, ref_scores.numpy(), rtol=1e-5)
        scale = np.array([shape[1], shape[0], shape[1], shape[0]]) / TINY.img_size
        np.testing.assert_allclose(ours.boxes, ref_boxes.numpy() * scale, rtol=1e-4, atol=1e-3)
        mismatch = float(np.mean(ours.labels != ref_labels))
        assert mismatch < 1e-3, f"{mismatch:.2%} pixels differ"
        compared += 1
    assert compared == 3
