"""Short CPU training of the small Cellpose-SAM architecture on dsb2018-nuclei; held-out mSA before/after.

Run by hand (one thread is what the recorded run used):
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/cellpose_sam_train_cpu.py [STEPS] [BATCH]
Defaults: the ``cpsam-small-cpu`` preset. Needs ../shared/data (not part of samzoo). Writes
benchmarks/results/cellpose_sam_train_cpu.json, docs/images/cellpose_sam_train_cpu_loss.png (the loss
curve) and the trained checkpoint to /tmp/cpsam_small_dsb.pt (the recorded run's, cast to float16,
is tests/data/cpsam_small_dsb.pt: the trained-weight tests and ``cellpose_sam_trained_agreement.py``
use it)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

import samzoo  # noqa: F401
from samzoo.families.cellpose_sam import build, save_checkpoint
from samzoo.families.cellpose_sam.training import PRESETS, mean_msa, read_pairs, train

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAMZOO_DATA_ROOT", ROOT.parent.parent / "shared" / "data")) / "dsb2018-nuclei"
if not DATA.exists():
    DATA = Path("/work/shared/data/dsb2018-nuclei")
CHECKPOINT = Path("/tmp/cpsam_small_dsb.pt")


def plot_curve(curve: list[list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 2.8), dpi=100)
    ax.plot([c[0] for c in curve], [c[1] for c in curve], lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    preset = PRESETS["cpsam-small-cpu"]
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else preset.steps
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else preset.batch_size
    changes = {"steps": steps, "batch_size": batch}
    if steps != preset.steps:  # keep the decay phase at the same fraction of the run
        changes["decay_steps"] = preset.decay_steps * steps // preset.steps
    train_images, train_labels = read_pairs(DATA / "train", limit=24, max_side=256)
    val_images, val_labels = read_pairs(DATA / "val", limit=6, max_side=256)
    torch.manual_seed(0)
    model = build("cpsam_small", name="cpsam-small-dsb")
    started = time.time()
    before = mean_msa(model, val_images, val_labels)
    log = train(model, train_images, train_labels, "cpsam-small-cpu", **changes)
    after = mean_msa(model, val_images, val_labels)
    save_checkpoint(model, CHECKPOINT)
    result = {"threads": torch.get_num_threads(), "val_images": len(val_images), "train_images": len(train_images),
              "msa_before": round(before, 4), "msa_after": round(after, 4), "train_log": log,
              "total_seconds": round(time.time() - started, 1)}
    out = ROOT / "benchmarks" / "results" / "cellpose_sam_train_cpu.json"
    out.write_text(json.dumps(result, indent=2))
    plot_curve(log["loss_curve"], ROOT / "docs" / "images" / "cellpose_sam_train_cpu_loss.png",
               f"cpsam_small on dsb2018 (CPU, 1 thread): val mSA {before:.2f} -> {after:.2f}")
    print(json.dumps({k: v for k, v in result.items() if k != "train_log"}, indent=2))
