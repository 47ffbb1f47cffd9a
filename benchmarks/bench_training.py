"""Training throughput: samzoo's trainer against micro-sam's ``JointSamTrainer`` on the same tiny
model and data, then a micro-sam training checkpoint continuing to train in samzoo.

    python benchmarks/bench_training.py --micro-sam-python /work/msam-venv/bin/python \
        [--iterations 30] [--workdir DIR]

1. Data: 16 training and 4 validation images (256 x 256 uint8, generated fluorescence nuclei)
   written as TIFF folders; both trainers read the same files, 256 px patches, batch size 1.
2. Model: the shipped default model (``samzoo-lm-tiny``, SAM layout with a TinyViT-sized ViT and
   μSAM's UNETR). micro-sam gets its ``sam`` module wrapped in its ``TrainableSAM`` and its UNETR,
   so both trainers update the very same architecture.
3. Both run μSAM's iterative prompt training with the AIS decoder: 4 objects per image, 8
   sub-iterations, mask prompt p=0.5, Adam(W) lr 1e-5, 2 threads. Iteration time is measured
   after warm-up iterations, data loading included, validation and checkpointing excluded.
   Each trainer runs in float32 and with mixed precision (micro-sam's default
   ``mixed_precision=True``, samzoo's ``mixed_precision: true``: bfloat16 autocast on CPU).
4. micro-sam's own training checkpoint (``checkpoints/NAME/latest.pt``, torch-em's format with
   optimizer state) is given to samzoo as ``init_checkpoint``; samzoo checks the loaded weights
   against micro-sam's tensors and trains on, reporting validation before and after.

micro-sam lives in its own venv (see README, "micro-sam interoperability"); its child imports
samzoo from this checkout's ``src`` only to build the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
N_OBJECTS, N_SUB_ITERATIONS, PATCH, LR = 4, 8, 256, 1e-5


def make_data(root: Path, n_train: int = 16, n_val: int = 4) -> dict[str, str]:
    import tifffile

    from samzoo.training.synthetic import SyntheticConfig, generate_dataset

    look = SyntheticConfig(shape=(PATCH, PATCH), styles={"fluorescence": 1.0}, kinds={"nuclei": 1.0},
                           dtypes={"uint8": 1.0}, empty_probability=0.0, radius_range=(6.0, 20.0))
    folders = {}
    for split, n, seed in (("train", n_train, 11), ("val", n_val, 12)):
        images, labels = root / split / "images", root / split / "labels"
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(generate_dataset(n, seed=seed, config=look)):
            tifffile.imwrite(images / f"{i:03d}.tif", image.astype("uint8"))
            tifffile.imwrite(labels / f"{i:03d}.tif", label.astype("uint32"))
        folders[split] = str(root / split)
    return folders


CHILD_SAMZOO = r"""
import json, sys, time
import torch
torch.set_num_threads(2)
from samzoo.default_model import default_checkpoint_path
from samzoo.families.microsam.training.config import preset_config
from samzoo.families.microsam.training.trainer import Trainer
root, out, warmup, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
init = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "default" else str(default_checkpoint_path())
validate = len(sys.argv) > 6 and sys.argv[6] == "validate"
mixed = len(sys.argv) > 7 and sys.argv[7] == "1"
recompute = len(sys.argv) > 8 and sys.argv[8] == "recompute"
folder = lambda split: [{"kind": "folder", "weight": 1.0, "images": f"{root}/{split}/images",
                         "labels": f"{root}/{split}/labels", "pattern": "*.tif"}]
config = preset_config("tiny-from-scratch", out_dir=out, model_changes={}, init_checkpoint=init,
                       data=folder("train"), val_data=folder("val"), n_val=4, patch_size=%(patch)d,
                       n_objects=%(objects)d, n_sub_iterations=%(subs)d, lr=%(lr)g, warmup_iterations=0,
                       ais_weight=1.0, val_every=10**9, save_every=10**9, max_minutes=None, threads=2,
                       mixed_precision=mixed, recompute_encoder=recompute)
trainer = Trainer(config, resume=False, progress=False)
before = trainer.validate() if validate else {}
trainer.fit(warmup)
start = time.perf_counter()
for _ in range(n):  # the training steps only: fit() would add its final validation and checkpoint
    trainer.step()
seconds = time.perf_counter() - start
after = trainer.validate() if validate else {}
import resource
print(json.dumps({"seconds_per_iteration": seconds / n, "iterations": n, "val_before": before, "val_after": after,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
""" % {"patch": PATCH, "objects": N_OBJECTS, "subs": N_SUB_ITERATIONS, "lr": LR}

CHILD_MICRO_SAM = r"""
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("_samzoo_tv_fix", sys.argv[6])
fix = importlib.util.module_from_spec(spec); spec.loader.exec_module(fix); fix.ensure_torchvision_importable()
import torch
torch.set_num_threads(2)
import torch_em
from micro_sam.training import JointSamTrainer
from micro_sam.training.joint_sam_trainer import JointSamLogger
from micro_sam.training.trainable_sam import TrainableSAM
from micro_sam.training.training import default_sam_loader
from micro_sam.training.util import ConvertToSamInputs
sys.path.insert(0, sys.argv[7])
import samzoo
from samzoo.default_model import default_checkpoint_path

root, save_root, warmup, n, mixed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
init = sys.argv[8] if len(sys.argv) > 8 else str(default_checkpoint_path())
torch.manual_seed(0)
model = samzoo.load_checkpoint(init)
sam = TrainableSAM(model.sam.float())
unetr = model.ais_decoder.float()
loader = lambda split, count: default_sam_loader(
    raw_paths=f"{root}/{split}/images", raw_key="*.tif", label_paths=f"{root}/{split}/labels", label_key="*.tif",
    patch_shape=(%(patch)d, %(patch)d), with_segmentation_decoder=True, batch_size=1, n_samples=count,
    is_train=split == "train", shuffle=True, num_workers=0)
params = list(sam.parameters()) + [p for name, p in unetr.named_parameters() if not name.startswith("encoder")]
optimizer = torch.optim.AdamW(params, lr=%(lr)g)

class Timed(JointSamTrainer):
    stamps = []
    def _interactive_train_iteration(self, x, y):
        self.stamps.append(time.perf_counter())
        return super()._interactive_train_iteration(x, y)

trainer = Timed(
    name="bench", save_root=save_root, train_loader=loader("train", warmup + n + 1), val_loader=loader("val", 2),
    model=sam, optimizer=optimizer, device=torch.device("cpu"),
    lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.9, patience=10),
    logger=None, log_image_interval=10**9, mixed_precision=mixed, convert_inputs=ConvertToSamInputs(
        transform=sam.transform, box_distortion_factor=0.025),
    n_objects_per_batch=%(objects)d, n_sub_iteration=%(subs)d, compile_model=False, unetr=unetr,
    instance_loss=torch_em.loss.DiceBasedDistanceLoss(mask_distances_in_bg=True),
    instance_metric=torch_em.loss.DiceBasedDistanceLoss(mask_distances_in_bg=True), early_stopping=None, mask_prob=0.5)
trainer.fit(iterations=warmup + n + 1)
stamps = Timed.stamps
per_iteration = (stamps[warmup + n] - stamps[warmup]) / n
import resource
print(json.dumps({"seconds_per_iteration": per_iteration, "iterations": n, "mixed_precision": mixed,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                  "checkpoint": f"{save_root}/checkpoints/bench/latest.pt"}))
""" % {"patch": PATCH, "objects": N_OBJECTS, "subs": N_SUB_ITERATIONS, "lr": LR}

CHILD_COMPARE = r"""
import json, sys, torch
import samzoo
from samzoo.families.microsam.checkpoint import read_state
state = read_state(sys.argv[1])  # torch-em pickles the model object too: tensors only, nothing runs
model = samzoo.load_model(sys.argv[1])
sam_ok = all(torch.equal(model.sam.state_dict()[k[len("sam."):]], v) for k, v in state["model_state"].items())
dec = {k: v for k, v in model.ais_decoder.state_dict().items() if not k.startswith("encoder.")}
dec_ok = all(torch.equal(dec[k], v) for k, v in state["decoder_state"].items())
print(json.dumps({"keys": sorted(state), "sam_tensors": len(state["model_state"]), "sam_identical": sam_ok,
                  "decoder_tensors": len(state["decoder_state"]), "decoder_identical": dec_ok,
                  "config": model.config.name}))
"""


def run(python: str, code: str, args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro-sam-python", required=True, help="python of a venv with micro-sam installed")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--continue-iterations", type=int, default=60)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--model", choices=["default", "vit_b"], default="default",
                        help="default: the shipped tiny model; vit_b: a random-init SAM ViT-B with μSAM's decoder "
                             "(the real architecture; minutes per iteration on a CPU, use few iterations)")
    parser.add_argument("--trainers", default="samzoo,samzoo_bf16,samzoo_recompute,micro_sam_fp32,micro_sam_default_bf16",
                        help="comma-separated subset of the trainer runs")
    parser.add_argument("--parts", default="throughput,continue",
                        help="comma-separated: throughput, continue (results.json keeps earlier parts)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-training-"))
    data = work / "data"
    if not (data / "train").exists():
        make_data(data)
    results_path = work / "results.json"
    results: dict = json.loads(results_path.read_text()) if results_path.exists() else {}
    init: list[str] = []
    if args.model == "vit_b":
        init = [str(work / "vit_b_random.pt")]
        if not Path(init[0]).exists():
            run(sys.executable, "import sys, torch, samzoo\ntorch.manual_seed(0)\n"
                "samzoo.save_checkpoint(samzoo.SamzooModel(samzoo.preset('vit_b')), sys.argv[1])\nprint('{}')", init)
    results["config"] = {"objects": N_OBJECTS, "sub_iterations": N_SUB_ITERATIONS, "patch": PATCH,
                         "lr": LR, "batch": 1, "threads": 2,
                         "model": "samzoo-lm-tiny" if args.model == "default" else "vit_b (random init) + UNETR"}
    fix = str(REPO / "src" / "samzoo" / "_torchvision_fix.py")
    steps = [("samzoo", sys.executable, CHILD_SAMZOO, [str(data), str(work / "samzoo_run"), str(args.warmup),
                                                         str(args.iterations), *(init or ["default"])]),
             ("samzoo_bf16", sys.executable, CHILD_SAMZOO, [str(data), str(work / "samzoo_bf16_run"), str(args.warmup),
                                                            str(args.iterations), *(init or ["default"]), "-", "1"]),
             ("samzoo_recompute", sys.executable, CHILD_SAMZOO,
              [str(data), str(work / "samzoo_recompute_run"), str(args.warmup), str(args.iterations),
               *(init or ["default"]), "-", "0", "recompute"]),
             ("micro_sam_fp32", args.micro_sam_python, CHILD_MICRO_SAM,
              [str(data), str(work / "msam_fp32"), str(args.warmup), str(args.iterations), "0", fix, str(REPO / "src"),
               *init]),
             ("micro_sam_default_bf16", args.micro_sam_python, CHILD_MICRO_SAM,
              [str(data), str(work / "msam_bf16"), str(args.warmup), str(args.iterations), "1", fix, str(REPO / "src"),
               *init])]
    steps = [step for step in steps if step[0] in args.trainers.split(",")]
    for name, python, code, child_args in steps if "throughput" in parts else []:
        print(f"{name}: {args.warmup} warm-up + {args.iterations} timed iterations ...", flush=True)
        results[name] = run(python, code, child_args)
        print(f"  {results[name]['seconds_per_iteration']:.2f} s/iteration, peak RSS "
              f"{results[name]['peak_rss_gb']:.1f} GB", flush=True)
        results_path.write_text(json.dumps(results, indent=2))

    if "continue" in parts:
        checkpoint = results["micro_sam_fp32"]["checkpoint"]
        print("micro-sam checkpoint -> samzoo: load and compare ...", flush=True)
        results["continue_load"] = run(sys.executable, CHILD_COMPARE, [checkpoint])
        print(f"  {results['continue_load']}", flush=True)
        print(f"micro-sam checkpoint -> samzoo: {args.continue_iterations} more iterations ...", flush=True)
        results["continue_train"] = run(sys.executable, CHILD_SAMZOO, [str(data), str(work / "continue_run"), "0",
                                                                       str(args.continue_iterations), checkpoint, "validate"])
        results_path.write_text(json.dumps(results, indent=2))

    s = results["samzoo"]["seconds_per_iteration"]
    print()
    print(f"{'trainer':28}{'s/iteration':>12}{'it/s':>8}{'samzoo speed-up':>18}")
    for name in [n for n in ("samzoo", "samzoo_bf16", "samzoo_recompute", "micro_sam_fp32", "micro_sam_default_bf16")
                 if n in results]:
        t = results[name]["seconds_per_iteration"]
        print(f"{name:28}{t:>12.2f}{1 / t:>8.2f}{t / s:>17.2f}x")
    if "continue_train" in results:
        before, after = results["continue_train"]["val_before"], results["continue_train"]["val_after"]
        print("\ncontinued training of the micro-sam checkpoint in samzoo (validation):")
        for key in before:
            print(f"  {key:20} {before[key]:.4f} -> {after[key]:.4f}")
    print(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
