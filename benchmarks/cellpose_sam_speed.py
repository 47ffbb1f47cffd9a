"""Cellpose-SAM inference speed and peak memory: samzoo vs cellpose, same weights, same images, CPU.

Run by hand: PYTHONPATH=src python benchmarks/cellpose_sam_speed.py [--arch cpsam|cpsam_small]
[--sizes 512 2048] [--threads 2]. Each (implementation, size) runs in its own process so peak RSS
is that run's alone. cellpose runs with float32 weights (use_bfloat16=False) so labels can be
compared; its bfloat16 default is slower on CPUs without bf16 units. Results:
benchmarks/results/cellpose_sam_speed_<arch>.json (seconds, ratio samzoo/cellpose, peak RSS, mSA
agreement of the labels)."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _image(side: int) -> np.ndarray:
    rng = np.random.default_rng(side)
    rows, cols = np.ogrid[:side, :side]
    image = np.full((side, side), 20.0)
    for _ in range(side * side // 900):
        r, c, radius = rng.integers(0, side), rng.integers(0, side), rng.uniform(5, 11)
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = 180.0
    return (image + rng.normal(0, 8, image.shape)).astype(np.float32)


def _worker(impl: str, weights: str, side: int, threads: int, out: str) -> None:
    import torch

    import samzoo  # noqa: F401
    torch.set_num_threads(threads)
    image = _image(side)
    if impl == "cellpose":
        from cellpose.models import CellposeModel

        model = CellposeModel(pretrained_model=weights, use_bfloat16=False)
        started = time.perf_counter()
        labels = model.eval(image)[0]
    else:
        from samzoo.families.cellpose_sam import load
        from samzoo.families.cellpose_sam.inference import segment_image

        model = load(weights)
        started = time.perf_counter()
        labels = segment_image(image, model, progress=False)
    seconds = time.perf_counter() - started
    np.save(out, labels.astype(np.uint32))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "objects": int(labels.max())}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="cpsam")
    parser.add_argument("--weights", default=None, help="cellpose-layout file (default: random weights)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    import samzoo  # noqa: F401
    from samzoo.evaluation.metrics import mean_segmentation_accuracy
    from samzoo.families.cellpose_sam import build, load, save_checkpoint

    tmp = Path(tempfile.mkdtemp())
    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        weights = str(save_checkpoint(build(args.arch), tmp / f"{args.arch}_random", cellpose_layout=True))
    elif not weights.endswith("_cellpose"):
        weights = str(save_checkpoint(load(weights), tmp / "weights_cellpose", cellpose_layout=True))
    rows = []
    for side in args.sizes:
        row = {"size": side}
        for impl in ("cellpose", "samzoo"):
            out = tmp / f"{impl}_{side}.npy"
            done = subprocess.run([sys.executable, __file__, "--worker", impl, weights, str(side),
                                   str(args.threads), str(out)], capture_output=True, text=True, check=True)
            row[impl] = json.loads(done.stdout.strip().splitlines()[-1])
        row["ratio"] = row["samzoo"]["seconds"] / row["cellpose"]["seconds"]
        ref, own = np.load(tmp / f"cellpose_{side}.npy"), np.load(tmp / f"samzoo_{side}.npy")
        row["msa_agreement"] = mean_segmentation_accuracy(ref, own)[0] if ref.max() or own.max() else 1.0
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"arch": args.arch, "weights": args.weights or "random", "threads": args.threads, "rows": rows}
    path = Path(__file__).with_name("results") / f"cellpose_sam_speed_{args.arch}.json"
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        main()
