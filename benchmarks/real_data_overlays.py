"""Overlay pictures for the docs: one val image (crop) per real set, segmented automatically and
from one box prompt per annotated object.

    SAMZOO_DATA_ROOT=/path/to/data PYTHONPATH=src python benchmarks/real_data_overlays.py \
        --lm MODEL --em MODEL -o docs/images

Writes ``real_<set>.png`` (outlines of the AIS result on the image crop) and ``real_<set>_boxes.png``
(the masks from the boxes of up to ``BOX_OBJECTS`` annotated objects wholly inside the crop, boxes
drawn in yellow, with the mean IoU against the annotation and the filled box's in the log); small PNGs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import samzoo
from samzoo.evaluation.interactive import object_box
from samzoo.training.split_data import load_split
from samzoo.visualize import save_overlay

BOX_OBJECTS = 12

# (set, val image index, crop rows, crop cols, which model, diameter option)
PICKS = (
    ("dsb2018-nuclei", 0, slice(0, 256), slice(0, 256), "lm", None),
    ("usiigaci-phase", 0, slice(0, 512), slice(0, 512), "lm", 0.0),
    ("axondeepseg-sem", 0, slice(0, 384), slice(0, 384), "em", None),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lm", required=True)
    parser.add_argument("--em", required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    models = {"lm": samzoo.load_model(args.lm), "em": samzoo.load_model(args.em)}
    for set_name, index, rows, cols, which, diameter in PICKS:
        name, image, truth = load_split(set_name, "val")[index]
        crop = image[rows, cols]
        options = {} if diameter is None else {"diameter": diameter}
        labels = samzoo.segment(crop, models[which], progress=False, **options)
        path = save_overlay(args.output / f"real_{set_name}.png", crop, labels)
        print(f"wrote {path} ({set_name}/val/{name}, {int(labels.max())} objects)")
        save_box_overlay(args.output / f"real_{set_name}_boxes.png", crop, truth[rows, cols], models[which])
    return 0


def whole_objects(truth: np.ndarray) -> list[int]:
    """Annotated objects that do not touch the crop's border (a cut object's box is not its box)."""
    border = np.unique(np.concatenate([truth[0], truth[-1], truth[:, 0], truth[:, -1]]))
    return [int(i) for i in np.unique(truth) if i and i not in border]


def save_box_overlay(path: Path, crop: np.ndarray, truth: np.ndarray, model) -> None:
    ids = whole_objects(truth)
    ids = [ids[i] for i in np.random.default_rng(0).choice(len(ids), size=min(BOX_OBJECTS, len(ids)), replace=False)]
    boxes = np.asarray([object_box(truth == i) for i in ids], dtype=float)
    labels = samzoo.segment_from_prompts(crop, model, boxes=boxes)
    ious, filled = [], []
    for k, i in enumerate(ids, start=1):
        mask, found = truth == i, labels == k
        ious.append((mask & found).sum() / max((mask | found).sum(), 1))
        x0, y0, x1, y1 = boxes[k - 1].astype(int)
        filled.append(mask.sum() / ((x1 - x0) * (y1 - y0)))
    # visualize draws boxes with inclusive corners; object_box's x1, y1 are exclusive
    save_overlay(path, crop, labels, boxes=boxes - np.asarray([0, 0, 1, 1]))
    print(f"wrote {path} ({len(ids)} box prompts: mean IoU {np.mean(ious):.3f}, filled box {np.mean(filled):.3f})")


if __name__ == "__main__":
    raise SystemExit(main())
