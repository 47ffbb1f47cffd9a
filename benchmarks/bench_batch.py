"""Images per second of ``samzoo segment FOLDER -o DIR`` with the shipped default model on the CPU.

Writes ``--count`` synthetic 256x256 uint8 nuclei-like images (bright disks) into a folder, runs
the batch command in-process (``samzoo.cli.main``) and reports images/s and the exit code.
The issue asks for 200 images; on the shared 2-core machine that is ~10 min, so ``--count``
says how many were run (the rate does not depend on the count: every image is independent).

    python benchmarks/bench_batch.py --count 200 --out benchmarks/results/batch_images.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import tifffile
    import torch

    from samzoo.cli import main as cli

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="samzoo-batch-"))
    rng = np.random.default_rng(0)
    rows, cols = np.ogrid[:256, :256]
    for i in range(args.count):
        image = np.full((256, 256), 30.0)
        for r, c in rng.integers(15, 241, size=(12, 2)):
            image[(rows - r) ** 2 + (cols - c) ** 2 <= 100] = 200.0
        image += rng.normal(0, 5, image.shape)
        tifffile.imwrite(work / f"img{i:04d}.tif", np.clip(image, 0, 255).astype(np.uint8))
    start = time.perf_counter()
    code = cli(["segment", str(work), "-o", str(work / "labels"), "-q", "--no-embedding-cache"])
    seconds = time.perf_counter() - start
    result = {"images": args.count, "shape": [256, 256], "model": "samzoo-lm-tiny (shipped)", "device": "cpu",
              "threads": args.threads, "exit_code": code, "seconds": round(seconds, 1),
              "images_per_second": round(args.count / seconds, 3), "load_average": os.getloadavg()}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
