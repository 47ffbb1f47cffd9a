"""Images per second of ``samzoo segment FOLDER -o DIR`` with the shipped default model on the CPU.

Fills a folder (outside the repository) with ``--count`` images, runs the batch command
in-process (``samzoo.cli.main``) and reports images/s (wall and process CPU time), the exit code,
and a second run over the same folder, which must skip every image (resume after a crash).

Images: with ``--data DIR`` (e.g. /work/shared/data/dsb2018-nuclei/train/images) the first
``--count`` TIFFs there, each cut to at most ``--max-side`` px per side (top-left crop; their
own sizes otherwise, so the batch has mixed shapes); without it, synthetic 256x256 uint8
nuclei-like images (bright disks). ``--precision int8`` times the fast CPU path.

    python benchmarks/bench_batch.py --count 200 --data /work/shared/data/dsb2018-nuclei/train/images \
        --threads 1 --out benchmarks/results/batch_200_dsb2018.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_images(folder: Path, count: int, data: str | None, max_side: int) -> list[list[int]]:
    import tifffile

    shapes = []
    if data:
        sources = sorted(Path(data).glob("*.tif"))[:count]
        if len(sources) < count:
            sys.exit(f"{data} holds {len(sources)} TIFFs, fewer than --count {count}")
        for i, source in enumerate(sources):
            image = tifffile.imread(source)[:max_side, :max_side]
            tifffile.imwrite(folder / f"img{i:04d}.tif", image)
            shapes.append(list(image.shape))
        return shapes
    rng = np.random.default_rng(0)
    rows, cols = np.ogrid[:256, :256]
    for i in range(count):
        image = np.full((256, 256), 30.0)
        for r, c in rng.integers(15, 241, size=(12, 2)):
            image[(rows - r) ** 2 + (cols - c) ** 2 <= 100] = 200.0
        image += rng.normal(0, 5, image.shape)
        tifffile.imwrite(folder / f"img{i:04d}.tif", np.clip(image, 0, 255).astype(np.uint8))
        shapes.append([256, 256])
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=None, help="folder of TIFFs to take the images from (default: synthetic)")
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import tifffile
    import torch

    from samzoo.cli import main as cli

    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="samzoo-batch-"))
    (work / "images").mkdir(parents=True, exist_ok=True)
    shapes = write_images(work / "images", args.count, args.data, args.max_side)
    command = ["segment", str(work / "images"), "-o", str(work / "labels"), "-q", "--no-embedding-cache",
               "--precision", args.precision]
    start, cpu = time.perf_counter(), _cpu_seconds()
    code = cli(command)
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu
    start = time.perf_counter()
    resume_code = cli(command)
    resume_seconds = time.perf_counter() - start
    written = sorted((work / "labels").glob("*.tif"))
    objects = [int(tifffile.imread(p).max()) for p in written]
    pixels = sum(int(np.prod(s[:2])) for s in shapes)
    result = {"images": args.count, "source": args.data or "synthetic 256x256", "max_side": args.max_side,
              "shapes_distinct": sorted({"x".join(map(str, s)) for s in shapes}), "megapixels": round(pixels / 1e6, 2),
              "model": "samzoo-lm-tiny (shipped)", "device": "cpu", "precision": args.precision,
              "threads": args.threads, "exit_code": code, "seconds": round(seconds, 1),
              "cpu_seconds": round(cpu_seconds, 1), "images_per_second": round(args.count / seconds, 3),
              "images_per_cpu_second": round(args.count / cpu_seconds, 3), "labels_written": len(written),
              "objects_total": sum(objects), "resume_exit_code": resume_code,
              "resume_seconds_all_skipped": round(resume_seconds, 2), "load_average": os.getloadavg()}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
