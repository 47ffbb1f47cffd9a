"""Val-split scores of models on the real annotated sets, beside the classical baseline.

    SAMZOO_DATA_ROOT=/path/to/data PYTHONPATH=src python benchmarks/real_data_val.py \
        -m samzoo-lm-tiny [-m runs/lm/checkpoints/latest.pt ...] [--sets dsb2018-nuclei ...] \
        [--split val] [--max-objects 40] [--json benchmarks/results/real_data_val.json]

Per set and model (the data layout: ``samzoo.training.split_data``):

* ``msa`` / ``sa50``: automatic instance segmentation (AIS, the model's stored parameters);
* ``baseline_msa`` / ``baseline_sa50``: Otsu + distance-transform watershed
  (``samzoo.evaluation.baseline.otsu_watershed``, defaults);
* ``box_iou``: one box prompt per object (``evaluation.interactive``, iteration 0, up to
  ``--max-objects`` objects per image, the same objects for every model; with the model's own
  prompt-zoom and box-clipping defaults, ``--no-zoom-prompts`` / ``--no-clip-to-boxes`` turn them
  off) and ``filled_box_iou``:
  the IoU of each of those objects with its own filled bounding box (what a model that returns
  the box would score). A useful box prompt beats the filled box.

Every number is a mean over images (box IoUs: over objects of an image, then over images).
The val splits are for model selection and reporting only; nothing is tuned on them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import samzoo  # noqa: F401  (torchvision fix first)
from samzoo import Predictor
from samzoo.evaluation.baseline import otsu_watershed
from samzoo.evaluation.evaluate import score
from samzoo.evaluation.interactive import interactive_evaluation, object_box
from samzoo.segmentation.api import resolve_model, segment
from samzoo.training.split_data import load_split

SETS = ("dsb2018-nuclei", "usiigaci-phase", "axondeepseg-sem")


def filled_box_iou(labels: np.ndarray, ids: np.ndarray) -> float:
    """Mean IoU of each object with its filled bounding box (object_box: x0, y0, x1, y1 exclusive)."""
    ious = []
    for i in ids:
        mask = labels == i
        x0, y0, x1, y1 = object_box(mask).astype(int)
        box_area = (x1 - x0) * (y1 - y0)
        ious.append(mask.sum() / box_area if box_area else 0.0)
    return float(np.mean(ious))


def baseline_scores(pairs) -> list[dict]:
    return [score(labels, otsu_watershed(image)) for _, image, labels in pairs]


def model_scores(model, pairs, max_objects: int, params: dict | None = None, diameter=None,
                 zoom_prompts: bool | None = None, clip_to_boxes: bool | None = None) -> list[dict]:
    rows = []
    for name, image, labels in pairs:
        options = {"diameter": diameter} if diameter is not None else {}
        pred = segment(image, model, mode="ais", progress=False, ais_params=params, **options)
        row = {"image": name, **score(labels, pred)}
        prompted = Predictor(model, zoom_prompts=zoom_prompts, clip_to_boxes=clip_to_boxes).set_image(image)
        inter = interactive_evaluation(None, labels, prompted, start="box", n_iterations=0,
                                       max_objects=max_objects, seed=0, progress=False)
        row["box_iou"] = inter.iterations[0].mean_iou
        row["filled_box_iou"] = filled_box_iou(labels, inter.object_ids)
        rows.append(row)
    return rows


def _mean(rows, key):
    return float(np.mean([r[key] for r in rows]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", action="append", required=True, help="model ID or checkpoint (repeatable)")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--split", default="val")
    parser.add_argument("--root", default=None, help="data root (default $SAMZOO_DATA_ROOT)")
    parser.add_argument("--max-objects", type=int, default=40)
    parser.add_argument("--max-images", type=int, default=None, help="first N images per set (quick looks)")
    parser.add_argument("--diameter", type=float, default=None, help="pass diameter= to segment (0: automatic)")
    parser.add_argument("--no-zoom-prompts", action="store_true",
                        help="decode each box on the whole image or its tile, not on a window sized to its object")
    parser.add_argument("--no-clip-to-boxes", action="store_true",
                        help="keep the pixels of each box's mask that lie outside the box")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    zoom_prompts = False if args.no_zoom_prompts else None
    clip_to_boxes = False if args.no_clip_to_boxes else None
    out: dict = {"split": args.split, "max_objects": args.max_objects, "zoom_prompts": zoom_prompts,
                 "clip_to_boxes": clip_to_boxes, "sets": {}}
    for set_name in args.sets:
        pairs = load_split(set_name, args.split, args.root)[: args.max_images]
        base = baseline_scores(pairs)
        entry = {"n_images": len(pairs), "baseline_msa": _mean(base, "msa"), "baseline_sa50": _mean(base, "sa50"),
                 "models": {}}
        print(f"{set_name} ({len(pairs)} images): baseline mSA {entry['baseline_msa']:.3f} SA50 {entry['baseline_sa50']:.3f}",
              flush=True)
        for spec in args.model:
            model = resolve_model(spec)
            started = time.perf_counter()
            rows = model_scores(model, pairs, args.max_objects, diameter=args.diameter, zoom_prompts=zoom_prompts,
                                clip_to_boxes=clip_to_boxes)
            result = {k: _mean(rows, k) for k in ("msa", "sa50", "box_iou", "filled_box_iou")}
            result["seconds"] = time.perf_counter() - started
            result["per_image"] = rows
            entry["models"][spec] = result
            print(f"  {spec}: mSA {result['msa']:.3f} SA50 {result['sa50']:.3f} box IoU {result['box_iou']:.3f} "
                  f"(filled box {result['filled_box_iou']:.3f}) [{result['seconds']:.0f} s]", flush=True)
        out["sets"][set_name] = entry
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
