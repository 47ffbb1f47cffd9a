"""Box-prompt IoU of decoding variants on TRAIN images: is the box gap in the decoding, or deeper?

    SAMZOO_DATA_ROOT=/path/to/data PYTHONPATH=src python benchmarks/box_decoding_variants.py \
        usiigaci-phase 10 samzoo-lm-tiny

Each object's box is decoded on its prompt-zoom window (``zoom_window``, as ``Predictor`` does by
default for models that state ``object_diameter``), then:

* ``single``: one mask (what samzoo returns);
* ``best_of_3``: SAM's three candidates, the one with the highest predicted IoU;
* ``oracle_of_3``: the candidate closest to the annotation (an upper bound for any selection rule);
* ``refined_1`` / ``refined_2``: the box again with the previous low-res logits as mask prompt;
* ``best_of_3_refined``: ``best_of_3``, then one refinement;
* ``clipped_0`` / ``_5`` / ``_10`` / ``_20``: ``single`` with the pixels outside the box plus a margin
  of 0, 5, 10 or 20 % of the box's sides removed (``clip_to_boxes`` is the 0 % rule).

Images: ``n`` drawn from the train split with seed 7 (the zoom-size check's picks); up to 10 objects
each, drawn with seed 0. Val splits are not read.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import samzoo  # noqa: F401  (torchvision fix first)
from samzoo import Predictor
from samzoo.evaluation.interactive import object_box
from samzoo.families.microsam.predictor import NO_PADDING, clip_masks_to_boxes, zoom_window
from samzoo.segmentation.api import resolve_model
from samzoo.segmentation.diameter import model_prompt_diameter
from samzoo.training.split_data import load_split

MARGINS = (0, 5, 10, 20)  # percent of the box's sides
VARIANTS = ("single", "best_of_3", "oracle_of_3", "refined_1", "refined_2", "best_of_3_refined",
            *(f"clipped_{m}" for m in MARGINS))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def clipped(mask: np.ndarray, box: np.ndarray, window, margin: float) -> np.ndarray:
    """``mask`` (window coordinates) without the pixels outside ``box`` (image coordinates) grown
    by ``margin`` of its sides: ``clip_to_boxes``'s rule on a grown box."""
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    top, left = window[0].start, window[1].start
    grown = np.asarray([[x0 - dx - left, y0 - dy - top, x1 + dx - left, y1 + dy - top]])
    out = mask[None].copy()
    clip_masks_to_boxes(out, grown, 1)
    return out[0]


def object_variants(predictor: Predictor, labels: np.ndarray, object_id: int) -> dict[str, float]:
    mask = labels == object_id
    box = np.asarray([object_box(mask)], dtype=float)
    window = zoom_window(tuple(box[0]), labels.shape, predictor.config.img_size,
                         model_prompt_diameter(predictor.model))
    emb = predictor.window_embedding(window, NO_PADDING, False)
    truth = mask[window]

    def decode(logits=None, multimask=False):
        with torch.inference_mode():
            low, scores = predictor.decode(emb, None, None, box, logits, multimask)
            binary = (predictor.upscale_logits(low, emb) > 0).cpu().numpy().reshape(-1, *emb.window_shape)
        return binary, scores.float().cpu().numpy().ravel(), low

    one, _, one_low = decode()
    three, three_scores, three_low = decode(multimask=True)
    best = int(np.argmax(three_scores))
    refined, _, refined_low = decode(one_low)
    twice, _, _ = decode(refined_low)
    best_refined, _, _ = decode(three_low[:, best:best + 1])
    return {"single": iou(one[0], truth), "best_of_3": iou(three[best], truth),
            "oracle_of_3": max(iou(m, truth) for m in three), "refined_1": iou(refined[0], truth),
            "refined_2": iou(twice[0], truth), "best_of_3_refined": iou(best_refined[0], truth),
            **{f"clipped_{m}": iou(clipped(one[0], box[0], window, m / 100), truth) for m in MARGINS}}


def main(argv: list[str]) -> int:
    set_name, n, model_id = argv[0], int(argv[1]), argv[2]
    model = resolve_model(model_id)
    pairs = load_split(set_name, "train", None)
    picks = sorted(np.random.default_rng(7).choice(len(pairs), size=min(n, len(pairs)), replace=False))
    per_image = {v: [] for v in VARIANTS}
    for index in picks:
        name, image, labels = pairs[index]
        predictor = Predictor(model).set_image(image)
        ids = np.unique(labels)[1:]
        ids = np.random.default_rng(0).choice(ids, size=min(10, len(ids)), replace=False)
        rows = [object_variants(predictor, labels, int(i)) for i in ids]
        for v in VARIANTS:
            per_image[v].append(float(np.mean([r[v] for r in rows])))
        print(name, {v: round(per_image[v][-1], 3) for v in VARIANTS}, flush=True)
    print("mean", set_name, model_id, {v: round(float(np.mean(per_image[v])), 3) for v in VARIANTS})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
