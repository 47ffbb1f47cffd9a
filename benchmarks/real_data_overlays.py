"""Overlay pictures for the docs: one val image (crop) per real set, segmented automatically.

    SAMZOO_DATA_ROOT=/path/to/data PYTHONPATH=src python benchmarks/real_data_overlays.py \
        --lm MODEL --em MODEL -o docs/images

Writes ``real_<set>.png`` (outlines of the AIS result on the image crop; small PNGs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import samzoo
from samzoo.training.split_data import load_split
from samzoo.visualize import save_overlay

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
        name, image, _ = load_split(set_name, "val")[index]
        crop = image[rows, cols]
        options = {} if diameter is None else {"diameter": diameter}
        labels = samzoo.segment(crop, models[which], progress=False, **options)
        path = save_overlay(args.output / f"real_{set_name}.png", crop, labels)
        print(f"wrote {path} ({set_name}/val/{name}, {int(labels.max())} objects)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
