"""Turn a finished real-data training run into a shipped model file (float16 storage).

    python -m samzoo.families.microsam.training.build_real RUN_CHECKPOINT OUT.pt --name samzoo-em-tiny \
        --object-diameter 24.5 [--object-diameter-range 12 54] [--prompt-diameter 37.5] --description "..." \
        [--metrics results.json]

Records in the model's metadata: name, description, the median training-object diameter (what
``segment(..., diameter=)`` rescales to) and the trained range (where ``diameter=0`` leaves an
image at its size; ``segmentation.diameter``), the size prompt zoom shows a prompted object at
where it is not the median (chosen on train images: ``segmentation.diameter.model_prompt_diameter``),
the run's recipe / iterations / CPU seconds (stamped by the trainer) and, when given, the val-split
results; the AIS parameters stay those of the run's checkpoint. The choice of checkpoint is made
before, by validation only (``benchmarks/real_data_val.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ....errors import InputError
from ..checkpoint import load_checkpoint, save_checkpoint


def build(checkpoint: str | Path, out: str | Path, *, name: str, description: str, object_diameter: float,
          object_diameter_range: tuple[float, float] | None = None, prompt_diameter: float | None = None,
          metrics: dict | None = None, version: str | None = None) -> Path:
    if object_diameter <= 0:
        raise InputError(f"object diameter must be > 0 px, got {object_diameter}")
    diameter = {"median": float(object_diameter)}
    if object_diameter_range is not None:
        low, high = (float(v) for v in object_diameter_range)
        if not 0 < low <= object_diameter <= high:
            raise InputError(f"object diameter range must hold the median: 0 < low <= {object_diameter} <= high, "
                             f"got {low}..{high}")
        diameter.update(low=low, high=high)
    if prompt_diameter is not None:
        if not prompt_diameter > 0:
            raise InputError(f"prompt diameter must be > 0 px, got {prompt_diameter}")
        diameter["prompt"] = float(prompt_diameter)
    model = load_checkpoint(checkpoint)
    meta = dict(model.metadata)
    meta.pop("tuning", None)  # the warm start's synthetic tuning record does not describe this model
    meta.pop("fp16_check", None)
    meta.pop("sample_image", None)
    meta.update({"name": name, "description": description, "object_diameter": diameter})
    if version:
        meta["version"] = version
    if metrics is not None:
        meta["metrics"] = metrics
    model.metadata = meta
    return save_checkpoint(model, out, half=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--name", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--object-diameter", type=float, required=True)
    parser.add_argument("--object-diameter-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="10th..90th percentile of the training images' median object diameters (px)")
    parser.add_argument("--prompt-diameter", type=float, default=None,
                        help="object size (px) prompt zoom shows a box's object at (default: the median)")
    parser.add_argument("--version", default=None)
    parser.add_argument("--metrics", type=Path, default=None, help="JSON of val-split results to record")
    args = parser.parse_args(argv)
    metrics = json.loads(args.metrics.read_text()) if args.metrics else None
    path = build(args.checkpoint, args.out, name=args.name, description=args.description,
                 object_diameter=args.object_diameter, object_diameter_range=args.object_diameter_range,
                 prompt_diameter=args.prompt_diameter, metrics=metrics, version=args.version)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    import samzoo  # noqa: F401  (torchvision fix)

    raise SystemExit(main())
