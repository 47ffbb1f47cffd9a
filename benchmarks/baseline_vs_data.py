"""The bar to beat: mSA of the Otsu + watershed baseline on synthetic and real images.

    PYTHONPATH=src python benchmarks/baseline_vs_data.py [--n 20] [--seed 2024] [--cache-dir DIR]
                                                         [--no-real] [--json FILE]

(a) ``--n`` synthetic 512x512 images per style (default SyntheticConfig with the style forced),
    plus the fluorescence-nuclei subset that the model build reports (styles fluorescence,
    kinds nuclei);
(b) the real fluorescence nuclei images from :mod:`samzoo.evaluation.real_data` (downloaded once
    from PyPI into ``--cache-dir``, default ``<samzoo cache>/real_data``).

Prints one line per set: mean mSA (and its spread over images), mean SA at IoU 0.5, objects per
image and seconds per image. A trained model is only worth shipping when it beats the real-image
line, because that is the only line not drawn from our own generator.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from samzoo.evaluation.baseline import otsu_watershed
from samzoo.evaluation.metrics import mean_segmentation_accuracy
from samzoo.training.synthetic import STYLES, SyntheticConfig, generate_dataset


def _score(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    msa, sa50, objects, seconds = [], [], [], []
    for image, labels in pairs:
        start = time.perf_counter()
        prediction = otsu_watershed(image)
        seconds.append(time.perf_counter() - start)
        mean, per_threshold = mean_segmentation_accuracy(labels, prediction)
        msa.append(mean)
        sa50.append(per_threshold[0])
        objects.append(len(np.unique(labels)) - 1)
    return {
        "n_images": len(pairs),
        "msa": float(np.mean(msa)),
        "msa_std": float(np.std(msa)),
        "sa50": float(np.mean(sa50)),
        "objects_per_image": float(np.mean(objects)),
        "seconds_per_image": float(np.mean(seconds)),
    }


def _line(name: str, result: dict[str, float]) -> str:
    return (
        f"{name:<22} n={result['n_images']:<3d} mSA {result['msa']:.3f} ± {result['msa_std']:.3f}   "
        f"SA@0.5 {result['sa50']:.3f}   objects/img {result['objects_per_image']:7.1f}   "
        f"{result['seconds_per_image']:.2f} s/img"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="synthetic images per style")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the real images are cached")
    parser.add_argument("--no-real", action="store_true", help="skip the real images (no download)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)

    results: dict[str, dict[str, float]] = {}
    sets = {style: {"styles": {style: 1.0}} for style in STYLES}
    sets["fluorescence-nuclei"] = {"styles": {"fluorescence": 1.0}, "kinds": {"nuclei": 1.0}}
    for name, options in sets.items():
        pairs = list(generate_dataset(args.n, args.seed, SyntheticConfig(**options)))
        results[f"synthetic/{name}"] = _score(pairs)
        print(_line(f"synthetic/{name}", results[f"synthetic/{name}"]), flush=True)

    if not args.no_real:
        from samzoo.cache import cache_dir
        from samzoo.evaluation.real_data import fetch_stardist_nuclei

        folder = args.cache_dir or cache_dir() / "real_data"
        real = fetch_stardist_nuclei(folder)
        for image, labels in real:
            print(f"real image: shape {image.shape}, dtype {image.dtype}, {len(np.unique(labels)) - 1} objects")
        results["real/stardist-dsb2018"] = _score(real)
        print(_line("real/stardist-dsb2018", results["real/stardist-dsb2018"]), flush=True)

    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
