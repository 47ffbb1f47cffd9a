"""Tune the AMG parameters of a shipped model and store them in its checkpoint (weights untouched).

``python -m samzoo.families.microsam.training.ship_amg_defaults --model src/samzoo/data/samzoo-lm-tiny.pt``

SAM's AMG defaults (``pred_iou_thresh`` 0.88, ``stability_score_thresh`` 0.95, 32 points per
side) suit SAM's 1024 px input; the tiny shipped models (256 px input) rarely score masks that
high, so ``segment --mode amg`` with those defaults finds nothing. This grid-searches the two
thresholds (``families.microsam.grid_search.amg_grid_search``) on a few generated training-like images
of the model's own look -- never on real validation data -- with 16 points per side (the same
point spacing relative to the input as SAM's 32 at 1024 px, and a quarter of the work), and
stores the best in ``metadata["amg_params"]``, which ``segment --mode amg`` uses. The AIS
parameters, the weights and the float16 storage stay as they are; the script checks that.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: per shipped model: the generated look it was trained on (samzoo.training.synthetic fields).
#: samzoo-em-tiny is not here yet: its look comes from synthetic_em, whose phantoms follow other rules.
LOOKS: dict[str, dict[str, Any]] = {
    "samzoo-lm-tiny": {"styles": {"fluorescence": 1.0}, "kinds": {"nuclei": 1.0}},
}
TUNE_SEED = 555  # the AIS tuning seed of build_default: never drawn by training (which seeds per step)
GRID = {"pred_iou_thresh": (0.5, 0.6, 0.7, 0.75, 0.8, 0.85),
        "stability_score_thresh": (0.5, 0.6, 0.7, 0.8, 0.85, 0.9)}
BASE = {"points_per_side": 16, "box_nms_thresh": 0.7, "min_mask_region_area": 0}


def sample_like_pairs(n: int, side: int, look: dict[str, Any], start: int = TUNE_SEED) -> list:
    """The first ``n`` generated images from seed ``start`` on that pass the sample image's rule."""
    from ....training.assess import synthetic_pairs

    pairs = []
    for seed in range(start, start + 200):
        image, labels = synthetic_pairs(1, seed, shape=(side, side), synthetic=look)[0]
        sizes = np.bincount(labels.ravel())[1:]
        sizes = sizes[sizes > 0]
        if 40 <= len(sizes) <= 150 and np.sqrt(np.median(sizes) / np.pi) >= 8:
            pairs.append((image, labels))
            if len(pairs) == n:
                return pairs
    raise SystemExit(f"only {len(pairs)} generated images from seed {start} look like the sample")


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float16).clone() for k, v in model.state_dict().items()}


def main(argv: list[str] | None = None) -> int:
    import samzoo  # noqa: F401  (torchvision fix)
    from ..grid_search import amg_grid_search, store_result
    from ..checkpoint import load_checkpoint, save_checkpoint
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="shipped checkpoint to update in place (float16)")
    ap.add_argument("--n", type=int, default=2, help="generated tuning images (each cut into 4 crops)")
    ap.add_argument("--size", type=int, default=256, help="crop side in pixels (one model input: no tiling)")
    ap.add_argument("--look", default=None, help="name in LOOKS (default: the model's metadata name)")
    args = ap.parse_args(argv)
    path = Path(args.model)
    model = load_checkpoint(path)
    name = args.look or str(model.metadata.get("name"))
    if name not in LOOKS:
        raise SystemExit(f"no generated look known for {name!r}; pass --look one of {', '.join(LOOKS)}")
    before = _weights(model)
    ais_before = dict(model.ais_params)
    # images like the sample (512^2, 40-150 objects, median radius >= 8 px: build_default's rule for
    # the sample), cut into model-input-sized quadrants so that AMG runs untiled and each candidate
    # mask pool is computed once per crop
    pairs = [(img[y:y + args.size, x:x + args.size], gt[y:y + args.size, x:x + args.size])
             for img, gt in sample_like_pairs(args.n, 2 * args.size, LOOKS[name])
             for y in (0, args.size) for x in (0, args.size)]
    started = time.time()
    result = amg_grid_search(model, [p[0] for p in pairs], [p[1] for p in pairs], GRID, base=BASE)
    print(f"AMG: best mSA {result.best_msa:.4f} (SA50 {result.best_sa50:.4f}) on {len(pairs)} images "
          f"in {time.time() - started:.0f} s: {result.best.to_dict()}", flush=True)
    store_result(model, result)
    model.metadata["tuning"]["amg"]["data"] = (
        f"generated {name} look: the first {args.n} images from seed {TUNE_SEED} (shape {2 * args.size}^2) with "
        f"40-150 objects of median radius >= 8 px, cut into {len(pairs)} crops of {args.size}^2; "
        f"grid {dict((k, list(v)) for k, v in GRID.items())}, base {BASE}")
    save_checkpoint(model, path, half=True)
    reloaded = load_checkpoint(path)
    after = _weights(reloaded)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), "weights changed"
    assert dict(reloaded.ais_params) == ais_before, "AIS parameters changed"
    print(f"wrote {path} ({path.stat().st_size} bytes); weights and AIS parameters unchanged; "
          f"amg_params {reloaded.metadata['amg_params']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
