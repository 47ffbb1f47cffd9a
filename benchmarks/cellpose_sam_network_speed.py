"""Cellpose-SAM network forward on CPU: samzoo's CpsamNet vs cellpose's CPSAM, same random weights.

Run by hand: PYTHONPATH=src python benchmarks/cellpose_sam_network_speed.py [--arch cpsam] [--tiles 1]
[--reps 2] [--threads 1]. Both networks live in one process and run alternately on the same
(tiles, 3, 256, 256) input, so machine load hits both alike; reported: wall and process-CPU seconds
per rep (with one thread the CPU time is what the forward costs, whatever else the machine runs), the
ratios of the summed times samzoo/cellpose and the largest output difference. For ViT-L the whole pipeline at
512^2 is 9 such tiles, so this ratio is what the network stage of ``cellpose_sam_speed.py`` gives.
Results: benchmarks/results/cellpose_sam_network_<arch>.json."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="cpsam")
    parser.add_argument("--tiles", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    import samzoo  # noqa: F401  (torchvision fix before cellpose imports it)
    from samzoo.families.cellpose_sam import build, save_checkpoint

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.arch)
    weights = save_checkpoint(model, Path(tempfile.mkdtemp()) / "weights", cellpose_layout=True)
    if args.arch == "cpsam":
        from cellpose.vit import CPSAM

        reference = CPSAM()
        reference.load_model(str(weights), device=torch.device("cpu"), strict=True)
    else:
        from cellpose_sam_speed import _cellpose_small

        reference = _cellpose_small(str(weights)).net
    nets = {"cellpose": reference.eval(), "samzoo": model.net.eval()}
    x = torch.rand(args.tiles, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    seconds = {name: [] for name in nets}
    cpu_seconds = {name: [] for name in nets}
    outputs = {}
    with torch.no_grad():
        for _ in range(args.reps):
            for name, net in nets.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                out = net(x)
                seconds[name].append(time.perf_counter() - started)
                cpu_seconds[name].append(time.process_time() - cpu_started)
                outputs[name] = out[0] if isinstance(out, tuple) else out
            print(json.dumps({k: (v[-1], cpu_seconds[k][-1]) for k, v in seconds.items()}), flush=True)
    result = {"arch": args.arch, "tiles": args.tiles, "threads": args.threads, "seconds": seconds,
              "cpu_seconds": cpu_seconds, "ratio": sum(seconds["samzoo"]) / sum(seconds["cellpose"]),
              "cpu_ratio": sum(cpu_seconds["samzoo"]) / sum(cpu_seconds["cellpose"]),
              "max_abs_difference": float((outputs["samzoo"] - outputs["cellpose"]).abs().max())}
    print(json.dumps(result))
    path = Path(__file__).with_name("results") / f"cellpose_sam_network_{args.arch}.json"
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
