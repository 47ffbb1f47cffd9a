"""Cellpose-SAM inference speed and peak memory: samzoo vs cellpose, same weights, same images, CPU.

Run by hand: PYTHONPATH=src python benchmarks/cellpose_sam_speed.py [--arch cpsam|cpsam_small]
[--sizes 512 2048] [--threads 2] [--strong-head] [--flow-threshold 0.4]. Each (implementation, size)
runs in its own process so peak RSS is that run's alone; wall and process-CPU seconds are recorded. cellpose runs with float32 weights (use_bfloat16=False) so labels can be
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


def _cellpose_small(weights: str):
    from functools import partial

    import torch
    from cellpose.models import CellposeModel
    from cellpose.vit import CPSAM
    from segment_anything.modeling import ImageEncoderViT

    from samzoo.families.cellpose_sam.checkpoint import infer_config

    state = torch.load(weights, weights_only=True)
    c = infer_config(state)
    net = CPSAM.__new__(CPSAM)
    torch.nn.Module.__init__(net)
    net._dtype, net.rdrop, net.nout, net.ps = torch.float32, 0.0, c.nout, c.patch_size
    net.encoder = ImageEncoderViT(img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.embed_dim, depth=c.depth,
                                  num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, out_chans=c.neck_dim, qkv_bias=True,
                                  norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=0,
                                  global_attn_indexes=())
    for block, rows in zip(net.encoder.blocks, c.rel_pos_rows):
        block.attn.rel_pos_h = torch.nn.Parameter(torch.zeros(rows, c.head_dim))
        block.attn.rel_pos_w = torch.nn.Parameter(torch.zeros(rows, c.head_dim))
    net.out = torch.nn.Conv2d(c.neck_dim, c.nout * c.patch_size ** 2, 1)
    net.W2 = torch.nn.Parameter(state["W2"].clone(), requires_grad=False)
    net.diam_labels = torch.nn.Parameter(state["diam_labels"].clone(), requires_grad=False)
    net.diam_mean = torch.nn.Parameter(state["diam_mean"].clone(), requires_grad=False)
    net.load_state_dict(state, strict=True)
    model = CellposeModel.__new__(CellposeModel)
    model.device, model.gpu, model.backbone, model.net = torch.device("cpu"), False, "sam_vitl", net.eval()
    return model


def _worker(impl: str, arch: str, weights: str, side: int, threads: int, out: str, flow_threshold: float) -> None:
    import torch

    import samzoo  # noqa: F401
    torch.set_num_threads(threads)
    image = _image(side)
    if impl == "cellpose":
        from cellpose.models import CellposeModel

        if arch == "cpsam":
            model = CellposeModel(pretrained_model=weights, use_bfloat16=False)
        else:  # cellpose's CPSAM/CellposeModel code with the small ViT (CellposeModel builds ViT-L only)
            model = _cellpose_small(weights)
        started, cpu_started = time.perf_counter(), time.process_time()
        labels, flows, _ = model.eval(image, flow_threshold=flow_threshold)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        np.save(out.replace(".npy", "_flows.npy"), np.concatenate([flows[1], flows[2][None]]).astype(np.float32))
    else:
        from samzoo.families.cellpose_sam import load
        from samzoo.families.cellpose_sam.inference import segment_image

        model = load(weights)
        started, cpu_started = time.perf_counter(), time.process_time()
        labels = segment_image(image, model, params={"flow_threshold": flow_threshold}, progress=False)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    np.save(out, labels.astype(np.uint32))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak,
                      "objects": int(labels.max())}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="cpsam")
    parser.add_argument("--weights", default=None, help="cellpose-layout file (default: random weights)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strong-head", action="store_true",
                        help="random weights with the head scaled so that the whole image is foreground and the "
                             "flows make hundreds of masks (realistic post-processing load)")
    parser.add_argument("--flow-threshold", type=float, default=0.4,
                        help="flow-error QC threshold for both tools (a large value runs the QC but keeps "
                             "the masks of random flows, so the labels can be compared)")
    parser.add_argument("--parallel", action="store_true",
                        help="run the cellpose and samzoo processes at the same time (use with --threads 1 on a "
                             ">= 2-core machine: both then see the same load, so their CPU times compare)")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()
    import torch

    import samzoo  # noqa: F401
    from samzoo.evaluation.metrics import mean_segmentation_accuracy
    from samzoo.families.cellpose_sam import build, load, save_checkpoint

    tmp = Path(tempfile.mkdtemp())
    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        model = build(args.arch)
        if args.strong_head:  # as tests' labelling_model: strong flows, foreground everywhere
            with torch.no_grad():
                model.net.out.weight.mul_(20)
                model.net.out.bias[2::3].fill_(3.0)
        weights = str(save_checkpoint(model, tmp / f"{args.arch}_random", cellpose_layout=True))
    elif not weights.endswith("_cellpose"):
        weights = str(save_checkpoint(load(weights), tmp / "weights_cellpose", cellpose_layout=True))
    rows = []
    for side in args.sizes:
        row = {"size": side}
        commands = {impl: [sys.executable, __file__, "--worker", impl, args.arch, weights, str(side),
                           str(args.threads), str(tmp / f"{impl}_{side}.npy"), str(args.flow_threshold)]
                    for impl in ("cellpose", "samzoo")}
        if args.parallel:  # both at once, one core each: they share whatever else the machine runs
            running = {impl: subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for impl, cmd in commands.items()}
            outputs = {impl: process.communicate()[0] for impl, process in running.items()}
            if any(process.returncode for process in running.values()):
                raise SystemExit(f"a worker failed: { {k: p.returncode for k, p in running.items()} }")
        else:
            outputs = {impl: subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                       for impl, cmd in commands.items()}
        for impl, stdout in outputs.items():
            row[impl] = json.loads(stdout.strip().splitlines()[-1])
        row["ratio"] = row["samzoo"]["seconds"] / row["cellpose"]["seconds"]
        # with --threads 1 the process CPU time is the work done, whatever else the machine runs
        row["cpu_ratio"] = row["samzoo"]["cpu_seconds"] / row["cellpose"]["cpu_seconds"]
        ref, own = np.load(tmp / f"cellpose_{side}.npy"), np.load(tmp / f"samzoo_{side}.npy")
        row["msa_agreement"] = mean_segmentation_accuracy(ref, own)[0] if ref.max() or own.max() else 1.0
        # random weights give chaotic flows, where 1e-6 rounding differences of the network move end
        # points across histogram bins; the same flows must give exactly the same labels
        from samzoo.families.cellpose_sam.pipeline import flows_to_labels

        ref_flows = np.load(tmp / f"cellpose_{side}_flows.npy")
        same_flows = flows_to_labels(ref_flows, flow_threshold=args.flow_threshold)
        row["labels_equal_on_cellpose_flows"] = bool(np.array_equal(same_flows, ref))
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"arch": args.arch, "parallel": args.parallel, "weights": args.weights or ("random, strong head" if args.strong_head else "random"),
              "threads": args.threads, "flow_threshold": args.flow_threshold, "rows": rows}
    suffix = ("_strong" if args.strong_head else "") + (f"_{args.tag}" if args.tag else "")
    path = Path(__file__).with_name("results") / f"cellpose_sam_speed_{args.arch}{suffix}.json"
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7],
                float(sys.argv[8]))
    else:
        main()
