"""Speed of the packaged (scikit-image-free) watershed beside scikit-image's, on 1024² maps.

    python benchmarks/packaged_watershed.py [--size 1024] [--repeats 2] [--against REV] [--out JSON]

μSAM's architecture file (shipped in every package, no scikit-image) re-implements scikit-image
0.26's ``watershed`` exactly (tests bind it byte for byte). This measures the price of doing it in
pure Python on two kinds of decoder-like maps with the inputs samzoo's AIS hands it (8-connected
seed labels, foreground mask, smoothed boundary distances):

* ``random``: smooth random maps, seeds covering most of the foreground (the slowest case: the
  seeds' equal heights keep the exact tie handling busy for most of the flood);
* ``crowded cells``: μSAM's AIS training target of a crowded synthetic image (what a well-trained
  decoder outputs).

Reference: scikit-image's own ``watershed`` in the same run (ratio = packaged / scikit-image,
best of ``--repeats``). ``--against REV`` also times the heapq flood of the architecture file at
git revision REV (before the exact version: its ``priority_flood``), and counts its wrong pixels.
Each packaged result is checked equal to scikit-image's; the script exits 1 if not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from skimage.segmentation import watershed as skimage_watershed  # noqa: E402

from samzoo.families.microsam import bioimageio_architecture as arch  # noqa: E402
from samzoo.families.microsam.ais import AisParams, watershed_inputs  # noqa: E402

ARCH_FILE = "src/samzoo/families/microsam/bioimageio_architecture.py"


def _maps(size: int) -> dict[str, tuple[np.ndarray, AisParams]]:
    from samzoo.families.microsam.training.targets import ais_target
    from samzoo.training.synthetic import SyntheticConfig, generate_sample

    rng = np.random.default_rng(0)
    raw = np.stack([ndimage.gaussian_filter(rng.random((size, size)), 6) for _ in range(3)]).astype(np.float32)
    raw = (raw - raw.min((1, 2), keepdims=True)) / np.ptp(raw, axis=(1, 2), keepdims=True)
    config = SyntheticConfig(shape=(size, size), radius_range=(8.0, 16.0), density_range=(0.4, 0.5),
                             clump_probability=1.0, empty_probability=0.0)
    _, labels = generate_sample(np.random.default_rng(1), config)
    return {"random": (raw, AisParams(foreground_threshold=0.4, center_distance_threshold=0.6,
                                      boundary_distance_threshold=0.6)),
            "crowded cells": (ais_target(labels)[1], AisParams())}


def _old_flood(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:{ARCH_FILE}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_architecture.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_architecture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.priority_flood


def _best(function, repeats: int) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--against", default=None, metavar="REV")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "packaged_watershed_1024.json"))
    args = parser.parse_args()
    old = _old_flood(args.against) if args.against else None
    rows, ok = [], True
    for name, (maps, params) in _maps(args.size).items():
        mask, seeds, boundary = watershed_inputs(maps[0], maps[1], maps[2], params)
        markers, count = ndimage.label(seeds, structure=np.ones((3, 3), dtype=bool))
        t_ref, expected = _best(lambda: skimage_watershed(boundary, markers=markers, mask=mask), args.repeats)
        t_new, got = _best(lambda: arch.watershed(boundary, markers, mask), args.repeats)
        row = {"maps": name, "size": args.size, "seeds": int(count), "seed_pixels": int(seeds.sum()),
               "foreground_pixels": int(mask.sum()), "skimage_s": round(t_ref, 3), "packaged_s": round(t_new, 2),
               "packaged_vs_skimage": round(t_new / t_ref, 1), "identical": bool(np.array_equal(got, expected))}
        ok &= row["identical"]
        if old is not None:
            t_old, labels = _best(lambda: old(boundary, markers, mask), args.repeats)
            row.update(old_heapq_s=round(t_old, 2), packaged_vs_old=round(t_new / t_old, 2),
                       old_wrong_pixels=int((labels != expected).sum()))
        rows.append(row)
        print(json.dumps(row))
    Path(args.out).write_text(json.dumps({"against": args.against, "rows": rows}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
