"""samzoo's Cellpose-SAM labels against cellpose's own ``CellposeModel.eval`` on TRAINED weights.

Equality on random weights (tests/test_cellpose_sam_reference.py) covers few, chaotic objects; a
trained model gives converging flows and many cells, which is where users compare. This runs both
on the same weights (the ``cpsam_small`` model trained by ``cellpose_sam_train_cpu.py``) and the same
real dsb2018-nuclei val images (held out from its training; chosen for many nuclei, one RGB, one
520x696 = 6 tiles), with cellpose's default settings (cellprob 0, flow threshold 0.4, min size 15,
no resizing) and with the flow-error QC off (flow threshold 0: every converging group becomes a
mask, the harder case for equality), and reports per image: object counts, mSA agreement (samzoo
vs cellpose, and each vs the truth), differing pixels, max |flow difference|.

Run by hand (default weights: tests/data/cpsam_small_dsb.pt, cellpose_sam_train_cpu.py's model in float16):
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/cellpose_sam_trained_agreement.py [WEIGHTS]
Writes benchmarks/results/cellpose_sam_trained_agreement.json."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import samzoo  # noqa: F401  (torchvision fix before cellpose imports torchvision)
from samzoo.evaluation.metrics import mean_segmentation_accuracy
from samzoo.families.cellpose_sam import load
from samzoo.families.cellpose_sam.inference import predict_flows, segment_image
from samzoo.families.cellpose_sam.packaging import network_kwargs
from samzoo.families.cellpose_sam.params import resolve_params
from samzoo.io import read_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from cellpose_small_reference import cellpose_model  # noqa: E402

DATA = Path(os.environ.get("SAMZOO_DATA_ROOT", ROOT.parent.parent / "shared" / "data")) / "dsb2018-nuclei"
if not DATA.exists():
    DATA = Path("/work/shared/data/dsb2018-nuclei")
IMAGES = ("1e8408fbb1619e7a", "27c30f9011492f23", "64eeef16fdc4e265", "c75139ef0546d224", "ed4b8e0d756836be",
          "4d14a3629b6af6de", "53ad09e4348767be")
SETTINGS = {"cellpose defaults": {}, "flow QC off": {"flow_threshold": 0.0}}


def main() -> None:
    weights = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "tests" / "data" / "cpsam_small_dsb.pt")
    model = load(weights)
    reference = cellpose_model(network_kwargs(model), model.net.state_dict())
    rows = []
    for name, setting in [(n, s) for s in SETTINGS for n in IMAGES]:
        image = read_image(DATA / "val" / "images" / f"{name}.tif")
        truth = read_image(DATA / "val" / "labels" / f"{name}.tif").astype(np.uint32)
        axis = 2 if image.ndim == 3 else None
        start = time.perf_counter()
        ref_labels, ref_flows, _ = reference.eval(image, channel_axis=axis, **SETTINGS[setting])
        ref_s = time.perf_counter() - start
        start = time.perf_counter()
        own = segment_image(image, model, params=SETTINGS[setting], progress=False)
        own_s = time.perf_counter() - start
        flows = predict_flows(model, image, resolve_params(model.params))
        row = {"image": name, "setting": setting, "shape": list(image.shape), "objects_truth": int(truth.max()),
               "objects_cellpose": int(ref_labels.max()), "objects_samzoo": int(own.max()),
               "msa_samzoo_vs_cellpose": round(mean_segmentation_accuracy(ref_labels.astype(np.uint32), own)[0], 4),
               "msa_cellpose_vs_truth": round(mean_segmentation_accuracy(truth, ref_labels.astype(np.uint32))[0], 4),
               "msa_samzoo_vs_truth": round(mean_segmentation_accuracy(truth, own)[0], 4),
               "pixels_differing": int((ref_labels.astype(np.uint32) != own).sum()),
               "flows_max_abs_diff": float(np.abs(flows[:2] - ref_flows[1]).max()),
               "cellprob_max_abs_diff": float(np.abs(flows[2] - ref_flows[2]).max()),
               "cellpose_s": round(ref_s, 2), "samzoo_s": round(own_s, 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"weights": str(weights), "threads": torch.get_num_threads(), "settings": SETTINGS, "rows": rows,
              "min_msa_samzoo_vs_cellpose": min(r["msa_samzoo_vs_cellpose"] for r in rows),
              "identical_label_images": sum(r["pixels_differing"] == 0 for r in rows), "label_images": len(rows)}
    (ROOT / "benchmarks" / "results" / "cellpose_sam_trained_agreement.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
