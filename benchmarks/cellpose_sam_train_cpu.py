"""Short CPU training of the small Cellpose-SAM architecture on dsb2018-nuclei; held-out mSA before/after.

Run by hand: PYTHONPATH=src python benchmarks/cellpose_sam_train_cpu.py [STEPS]
Needs ../shared/data (not part of samzoo). Writes benchmarks/results/cellpose_sam_train_cpu.json and
the trained checkpoint to /tmp/cpsam_small_dsb.pt."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import samzoo  # noqa: F401
from samzoo.families.cellpose_sam import build, save_checkpoint
from samzoo.families.cellpose_sam.training import mean_msa, read_pairs, train

DATA = Path(__file__).resolve().parents[1].parent.parent / "shared" / "data" / "dsb2018-nuclei"
if not DATA.exists():
    DATA = Path("/work/shared/data/dsb2018-nuclei")

if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    torch.set_num_threads(2)
    train_images, train_labels = read_pairs(DATA / "train", limit=24, max_side=256)
    val_images, val_labels = read_pairs(DATA / "val", limit=6, max_side=256)
    torch.manual_seed(0)
    model = build("cpsam_small", name="cpsam-small-dsb")
    started = time.time()
    before = mean_msa(model, val_images, val_labels)
    log = train(model, train_images, train_labels, "cpsam-small-cpu", steps=steps, batch_size=batch)
    after = mean_msa(model, val_images, val_labels)
    save_checkpoint(model, "/tmp/cpsam_small_dsb.pt")
    result = {"val_images": len(val_images), "train_images": len(train_images), "msa_before": before,
              "msa_after": after, "train_log": log, "total_seconds": round(time.time() - started, 1)}
    out = Path(__file__).with_name("results") / "cellpose_sam_train_cpu.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
